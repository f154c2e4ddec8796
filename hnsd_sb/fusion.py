"""Frame-level fusion of HNSD's static and dynamic streams.

``GatedMultiFeatureUnit`` is the paper's GMU; ``ConcatFusion`` is the ungated baseline used by the
ablation recipes.
"""

import torch

from hnsd_sb.cpu import linear


class _GatedCombine(torch.autograd.Function):
    """``h = z h_s + (1 - z) h_d``, ``z = sigmoid(c_s + c_d)`` from the stream parts
    ``[h_s, c_s]`` and ``[h_d, c_d]``, returning ``(h, z)``. The backward is written out: a few
    fused elementwise passes straight into the two gradients, instead of autograd's zero-filled
    copies for every slice (the GMU's elementwise work is memory-bound, so passes are time)."""

    @staticmethod
    def forward(ctx, static_part, dynamic_part):
        out = static_part.shape[-1] // 2
        h_s, h_d = static_part[..., :out], dynamic_part[..., :out]
        z = torch.add(static_part[..., out:], dynamic_part[..., out:]).sigmoid_()
        h = torch.addcmul(h_d, z, h_s - h_d)  # z h_s + (1 - z) h_d, faster than lerp on CPU
        ctx.save_for_backward(static_part, dynamic_part, z)
        ctx.set_materialize_grads(False)
        return h, z

    @staticmethod
    def backward(ctx, grad_h, grad_z):
        static_part, dynamic_part, z = ctx.saved_tensors
        out = z.shape[-1]
        grad_static = torch.empty_like(static_part)
        grad_dynamic = torch.empty_like(dynamic_part)
        if grad_h is None:
            grad_h = torch.zeros_like(z)
        torch.mul(grad_h, z, out=grad_static[..., :out])
        torch.sub(grad_h, grad_static[..., :out], out=grad_dynamic[..., :out])
        gate = torch.sub(static_part[..., :out], dynamic_part[..., :out]).mul_(grad_h)
        if grad_z is not None:
            gate.add_(grad_z)
        torch.ops.aten.sigmoid_backward.grad_input(gate, z, grad_input=grad_static[..., out:])
        grad_dynamic[..., out:].copy_(grad_static[..., out:])
        return grad_static, grad_dynamic


class GatedMultiFeatureUnit(torch.nn.Module):
    """Gated Multi-feature Unit: fuses two feature streams frame by frame.

    ``h_s = tanh(W_s f_s)``, ``h_d = tanh(W_d f_d)``, ``z = sigmoid(W_c [f_s, f_d])`` and
    ``h = z * h_s + (1 - z) * h_d``. The paper writes the projections without biases and so does
    this module by default (``bias=True`` adds them).

    Arguments
    ---------
    static_size : int
        Size of the static stream ``f_s``.
    dynamic_size : int
        Size of the dynamic stream ``f_d``.
    out_size : int
        Size of the fused output ``h``.
    bias : bool
        Whether the three projections have biases.

    Example
    -------
    >>> gmu = GatedMultiFeatureUnit(8, 6, 4)
    >>> h, z = gmu(torch.randn(2, 10, 8), torch.randn(2, 10, 6), return_gate=True)
    >>> h.shape, z.shape
    (torch.Size([2, 10, 4]), torch.Size([2, 10, 4]))
    >>> bool(((z > 0) & (z < 1)).all())
    True
    """

    def __init__(self, static_size, dynamic_size, out_size, bias=False):
        super().__init__()
        self.out_size = out_size
        self.static_proj = torch.nn.Linear(static_size, out_size, bias=bias)
        self.dynamic_proj = torch.nn.Linear(dynamic_size, out_size, bias=bias)
        self.gate_proj = torch.nn.Linear(static_size + dynamic_size, out_size, bias=bias)

    def project_static(self, static):
        """The static stream's share of the GMU: ``[tanh(W_s f_s), W_c,s f_s]`` (plus biases).

        ``W_c [f_s, f_d] = W_c,s f_s + W_c,d f_d``, so each stream's projections are one matrix
        product that needs nothing from the other stream (HNSD runs them beside its LSTMs).

        Arguments
        ---------
        static : torch.Tensor
            ``[..., static_size]``.

        Returns
        -------
        torch.Tensor
            ``[..., 2 * out_size]``: ``h_s``, then the static part of the gate's pre-activation.

        Example
        -------
        >>> gmu = GatedMultiFeatureUnit(8, 6, 4)
        >>> gmu.project_static(torch.randn(2, 10, 8)).shape
        torch.Size([2, 10, 8])
        """
        n = static.shape[-1]
        weight = torch.cat([self.static_proj.weight, self.gate_proj.weight[:, :n]])
        bias = None
        if self.static_proj.bias is not None:
            bias = torch.cat([self.static_proj.bias, self.gate_proj.bias])
        return linear(static, weight, bias, n_tanh=self.out_size)

    def project_dynamic(self, dynamic):
        """The dynamic stream's share of the GMU: ``[tanh(W_d f_d), W_c,d f_d]`` (plus bias).

        Arguments
        ---------
        dynamic : torch.Tensor
            ``[..., dynamic_size]``.

        Returns
        -------
        torch.Tensor
            ``[..., 2 * out_size]``: ``h_d``, then the dynamic part of the gate's pre-activation.

        Example
        -------
        >>> gmu = GatedMultiFeatureUnit(8, 6, 4)
        >>> gmu.project_dynamic(torch.randn(2, 10, 6)).shape
        torch.Size([2, 10, 8])
        """
        n = dynamic.shape[-1]
        weight = torch.cat([self.dynamic_proj.weight, self.gate_proj.weight[:, -n:]])
        bias = None
        if self.dynamic_proj.bias is not None:
            bias = torch.cat([self.dynamic_proj.bias, torch.zeros_like(self.gate_proj.bias)])
        return linear(dynamic, weight, bias, n_tanh=self.out_size)

    def combine(self, static_part, dynamic_part, return_gate=False):
        """Fuses the outputs of ``project_static`` and ``project_dynamic``.

        Arguments
        ---------
        static_part : torch.Tensor
            ``[..., 2 * out_size]`` from ``project_static``.
        dynamic_part : torch.Tensor
            ``[..., 2 * out_size]`` from ``project_dynamic``.
        return_gate : bool
            Also return the gate ``z``.

        Returns
        -------
        h : torch.Tensor
            ``[..., out_size]``.
        z : torch.Tensor
            The gate, only when ``return_gate``.

        Example
        -------
        >>> gmu = GatedMultiFeatureUnit(8, 6, 4)
        >>> f_s, f_d = torch.randn(3, 8), torch.randn(3, 6)
        >>> h = gmu.combine(gmu.project_static(f_s), gmu.project_dynamic(f_d))
        >>> bool(torch.allclose(h, gmu(f_s, f_d)))
        True
        """
        h, z = _GatedCombine.apply(static_part, dynamic_part)
        return (h, z) if return_gate else h

    def forward(self, static, dynamic, return_gate=False):
        """Fuses the two streams.

        Arguments
        ---------
        static : torch.Tensor
            ``[..., static_size]``.
        dynamic : torch.Tensor
            ``[..., dynamic_size]`` (same leading dimensions).
        return_gate : bool
            Also return the gate ``z``.

        Returns
        -------
        h : torch.Tensor
            ``[..., out_size]``.
        z : torch.Tensor
            The gate, only when ``return_gate``.
        """
        return self.combine(self.project_static(static), self.project_dynamic(dynamic), return_gate)


class ConcatFusion(torch.nn.Module):
    """Ungated fusion: concatenates the two streams (the ablation of the GMU).

    Arguments
    ---------
    static_size : int
        Size of the static stream.
    dynamic_size : int
        Size of the dynamic stream.

    Example
    -------
    >>> fuse = ConcatFusion(8, 6)
    >>> fuse(torch.randn(2, 10, 8), torch.randn(2, 10, 6)).shape
    torch.Size([2, 10, 14])
    """

    def __init__(self, static_size, dynamic_size):
        super().__init__()
        self.out_size = static_size + dynamic_size

    def forward(self, static, dynamic):
        """Returns ``[static, dynamic]`` along the last dimension.

        Arguments
        ---------
        static : torch.Tensor
            ``[..., static_size]``.
        dynamic : torch.Tensor
            ``[..., dynamic_size]``.

        Returns
        -------
        torch.Tensor
            ``[..., static_size + dynamic_size]``.
        """
        return torch.cat([static, dynamic], dim=-1)
