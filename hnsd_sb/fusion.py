"""Frame-level fusion of HNSD's static and dynamic streams.

``GatedMultiFeatureUnit`` is the paper's GMU; ``ConcatFusion`` is the ungated baseline used by the
ablation recipes.
"""

import torch


class GatedMultiFeatureUnit(torch.nn.Module):
    """Gated Multi-feature Unit: fuses two feature streams frame by frame.

    ``h_s = tanh(W_s f_s)``, ``h_d = tanh(W_d f_d)``, ``z = sigmoid(W_c [f_s, f_d])`` and
    ``h = z * h_s + (1 - z) * h_d``. The paper writes the projections without biases and so does
    this module by default (``bias=True`` adds them). This is the plain PyTorch form;
    ``hnsd_sb.cpu.accelerate`` runs an equivalent, faster one inside HNSD on CPU.

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
        h_s = torch.tanh(self.static_proj(static))
        h_d = torch.tanh(self.dynamic_proj(dynamic))
        z = torch.sigmoid(self.gate_proj(torch.cat([static, dynamic], dim=-1)))
        h = z * h_s + (1 - z) * h_d
        return (h, z) if return_gate else h


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
