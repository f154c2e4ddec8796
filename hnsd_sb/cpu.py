"""CPU fast paths for HNSD, opt-in: ``accelerate(model)``.

The model itself (``hnsd_sb.model``, ``hnsd_sb.fusion``) is plain PyTorch. ``accelerate`` swaps in,
on a built model, an equivalent computation of its two streams that keeps HNSD's CPU cost close
to that of its two LSTMs, which PyTorch already runs through oneDNN's fused LSTM:

- ``linear``: a fp32 linear layer through oneDNN instead of the default BLAS. On some CPUs
  (AMD Zen among them) MKL's sgemm runs at well under half the speed of oneDNN's, and the GMU's
  projections hold a third of HNSD's multiply-adds. Same fp32 arithmetic; where oneDNN is not
  available it is ``torch.nn.functional.linear``.
- ``run_branches``: runs independent branches (HNSD's static and dynamic streams: an LSTM each and
  that stream's GMU projections) at the same time, each on its own thread with its share of the
  intra-op threads, forward and backward. An LSTM time step is a small matrix product: splitting
  it across cores costs a thread barrier per time step, and on a machine shared with other jobs
  a barrier waits for whichever core was taken away (we measured 2-thread LSTMs running 5 to 12
  times slower than 1-thread ones under load). A core per stream needs no barrier at all.
- The GMU in split form: each stream's two projections are one matrix product
  (``W_c [f_s, f_d] = W_c,s f_s + W_c,d f_d``) with ``tanh`` applied in place, and the gate's
  combination has a written-out backward (autograd's slices would each cost a zero-filled copy).

By default the branches share the intra-op threads (``torch.get_num_threads()``; on 2 cores, one
each) and everything else uses them all. On a machine shared with other jobs, every multi-threaded
operation waits at its barriers for the slowest thread; there, ``torch.set_num_threads(1)`` with
``accelerate(model, branch_cores=2)`` (the recipe's ``--cpu_branch_cores=2`` with
``OMP_NUM_THREADS=1``) keeps the two LSTMs on two cores and runs everything else on one thread,
with no barrier anywhere.

This module is the only one that uses PyTorch's private operators (``mkldnn._linear_pointwise``,
``tanh_backward``, ``sigmoid_backward``); oneDNN's is checked against ``F.linear`` before its
first use and not used where the check fails. Off CPU, under autocast, scripting, tracing or
compilation, the accelerated model computes the plain way. Its backward is first-order only: a
second derivative through it (e.g. a gradient penalty) raises, rather than silently dropping the
second-order terms; compute those inside ``plain_pytorch(model)``.
"""

import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager

import torch
from torch.autograd.function import once_differentiable

from hnsd_sb.fusion import ConcatFusion, GatedMultiFeatureUnit
from hnsd_sb.model import HNSD, SequenceEncoder, repeat_steps, shared_stack_frames

_STATE = {"onednn": None, "cores": None}
_POOL = {"executor": None, "pid": None, "size": 0}
_POOL_LOCK = threading.Lock()


# ----------------------------------------------------------------------------------------------
# oneDNN linear layer
# ----------------------------------------------------------------------------------------------
def _onednn_op():
    """oneDNN's fp32 linear op, checked once against ``F.linear``; None where unusable."""
    if _STATE["onednn"] is None:
        _STATE["onednn"] = False
        try:
            op = torch.ops.mkldnn._linear_pointwise
            gen = torch.Generator().manual_seed(0)
            x = torch.randn(5, 7, generator=gen, dtype=torch.float64)
            w = torch.randn(3, 7, generator=gen, dtype=torch.float64)
            ref = x @ w.t()
            x, w = x.float(), w.float()
            got = op(x, w, None, "none", [], "")
            # the backward passes transposed views: strides must be honoured
            got_t = op(x.t().contiguous().t(), w.t().contiguous().t(), None, "none", [], "")
            if torch.backends.mkldnn.is_available() and all(
                torch.allclose(g.double(), ref, atol=1e-4) for g in (got, got_t)
            ):
                _STATE["onednn"] = op
        except (AttributeError, RuntimeError, TypeError):
            pass
    return _STATE["onednn"] or None


def _use_onednn(x, weight):
    """Whether ``linear`` can take oneDNN for these tensors here."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and x.numel() > 0
        and torch.backends.mkldnn.enabled
        and not torch.is_autocast_enabled("cpu")
        and not torch.jit.is_scripting()
        and not torch.compiler.is_compiling()
        and _onednn_op() is not None
    )


class _OneDNNLinear(torch.autograd.Function):
    """``y = x W^T + b``, ``tanh`` on its first ``n_tanh`` outputs, and the gradients, every
    matrix product through oneDNN."""

    @staticmethod
    def forward(ctx, x, weight, bias, n_tanh):
        """The layer's output, its matrix product through oneDNN."""
        op = _onednn_op()
        y = op(x.reshape(-1, x.shape[-1]), weight, bias, "none", [], "")
        if n_tanh:
            y[:, :n_tanh].tanh_()
        ctx.save_for_backward(x, weight, y if n_tanh else None)
        ctx.has_bias, ctx.n_tanh = bias is not None, n_tanh
        return y.reshape(*x.shape[:-1], weight.shape[0])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        """The gradients of ``x``, ``weight`` and ``bias``, each matrix product through oneDNN."""
        op = _onednn_op()
        x, weight, y = ctx.saved_tensors
        grad = grad.reshape(-1, grad.shape[-1])
        n = ctx.n_tanh
        if n:
            pre = torch.empty_like(grad)
            torch.ops.aten.tanh_backward.grad_input(grad[:, :n], y[:, :n], grad_input=pre[:, :n])
            pre[:, n:].copy_(grad[:, n:])
            grad = pre
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            # grad @ W, written as a linear layer whose weight is W^T (a view; oneDNN takes strides)
            grad_x = op(grad, weight.t(), None, "none", [], "").reshape(x.shape)
        if ctx.needs_input_grad[1]:
            # (x^T grad)^T: oneDNN copies a transposed input, and x is the narrower of the two
            grad_w = op(x.reshape(-1, x.shape[-1]).t(), grad.t(), None, "none", [], "").t()
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum(0)
        return grad_x, grad_w, grad_b, None


def linear(x, weight, bias=None, n_tanh=0):
    """``torch.nn.functional.linear`` that runs its fp32 CPU matrix products on oneDNN.

    Arguments
    ---------
    x : torch.Tensor
        Input ``[..., in_features]``.
    weight : torch.Tensor
        ``[out_features, in_features]``.
    bias : torch.Tensor
        ``[out_features]`` or None.
    n_tanh : int
        Apply ``tanh`` to the first ``n_tanh`` outputs (in place, saving a copy).

    Returns
    -------
    torch.Tensor
        ``[..., out_features]``, as ``torch.nn.functional.linear`` (fp32 arithmetic either way).

    Example
    -------
    >>> x, w = torch.randn(2, 5, 8), torch.randn(3, 8)
    >>> y = linear(x, w)
    >>> y.shape
    torch.Size([2, 5, 3])
    >>> bool(torch.allclose(y, torch.nn.functional.linear(x, w), atol=1e-5))
    True
    >>> bool(torch.allclose(linear(x, w, n_tanh=2)[..., :2], torch.tanh(y[..., :2]), atol=1e-5))
    True
    """
    if _use_onednn(x, weight):
        return _OneDNNLinear.apply(x, weight, bias, n_tanh)
    y = torch.nn.functional.linear(x, weight, bias)
    if n_tanh:
        y = torch.cat([torch.tanh(y[..., :n_tanh]), y[..., n_tanh:]], dim=-1)
    return y


# ----------------------------------------------------------------------------------------------
# side-by-side branches
# ----------------------------------------------------------------------------------------------
def _executor(workers):
    """A thread pool of at least ``workers`` threads, recreated after a fork."""
    with _POOL_LOCK:
        if _POOL["pid"] != os.getpid() or _POOL["size"] < workers:
            _POOL.update(
                executor=ThreadPoolExecutor(workers, thread_name_prefix="hnsd-branch"),
                pid=os.getpid(),
                size=workers,
            )
        return _POOL["executor"]


def _in_thread(fn, threads, grad, inference):
    """Runs ``fn()`` on a pool thread with the caller's autograd modes and ``threads`` threads."""
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    with torch.inference_mode(inference), torch.set_grad_enabled(grad):
        return fn()


def _run_together(calls, threads):
    """Runs ``calls[0]`` here and the others on pool threads, all at once, each with ``threads``
    intra-op threads; returns their results in order."""
    grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()
    all_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        pool = _executor(len(calls) - 1)
        futures = [pool.submit(_in_thread, c, threads, grad, inference) for c in calls[1:]]
        try:
            first = calls[0]()
        finally:
            wait(futures)
        return [first] + [f.result() for f in futures]
    finally:
        torch.set_num_threads(all_threads)


class _Branches(torch.autograd.Function):
    """Runs the branches side by side forward, and their backward side by side too."""

    @staticmethod
    def forward(ctx, plan, *tensors):
        """Runs the branches side by side, keeping their graphs for the backward."""
        fns, params, threads = plan
        inputs = [x.detach().requires_grad_(x.requires_grad) for x in tensors[: len(fns)]]

        def branch(i):
            """Branch ``i``'s forward, as a call without arguments."""

            def call():
                """Runs the branch with autograd recording."""
                with torch.enable_grad():
                    return fns[i](inputs[i])

            return call

        outputs = _run_together([branch(i) for i in range(len(fns))], threads)
        ctx.plan, ctx.inputs, ctx.outputs = plan, inputs, outputs
        return tuple(out.detach() for out in outputs)

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads):
        """Runs the branches' backward side by side; returns the inputs' and parameters'
        gradients."""
        _, params, threads = ctx.plan
        inputs, outputs = ctx.inputs, ctx.outputs

        def branch(i):
            """Branch ``i``'s backward, as a call without arguments."""

            def call():
                """The gradients of the branch's input and parameters."""
                wanted = ([inputs[i]] if inputs[i].requires_grad else []) + list(params[i])
                if not wanted or not outputs[i].requires_grad:
                    return [None] * len(wanted)
                return list(torch.autograd.grad(outputs[i], wanted, grads[i], allow_unused=True))

            return call

        # torch.autograd.grad frees each branch's graph as it goes: backward runs once per
        # forward (retain_graph is not supported through the branches)
        results = _run_together([branch(i) for i in range(len(outputs))], threads)
        input_grads, param_grads = [], []
        for i, got in enumerate(results):
            input_grads.append(got.pop(0) if inputs[i].requires_grad else None)
            param_grads.extend(got)
        return (None, *input_grads, *param_grads)


def set_branch_cores(cores):
    """Sets how many cores ``run_branches`` shares among the branches.

    By default (``None``) the branches share the intra-op threads, ``torch.get_num_threads()``.
    Setting it lets the branches use more cores than the rest of the model: for example
    ``torch.set_num_threads(1)`` with ``set_branch_cores(2)`` runs the two LSTMs on two cores and
    every other operation on one, which never waits on a thread barrier, the robust choice on a
    machine shared with other jobs.

    Arguments
    ---------
    cores : int or None
        Cores for the branches; ``None`` follows ``torch.get_num_threads()``.

    Returns
    -------
    int or None
        The previous setting.

    Example
    -------
    >>> previous = set_branch_cores(2)
    >>> branch_cores() == 2
    True
    >>> _ = set_branch_cores(previous)
    """
    if cores is not None and int(cores) < 1:
        raise ValueError(f"cores must be None or at least 1, got {cores}")
    previous = _STATE["cores"]
    _STATE["cores"] = None if cores is None else int(cores)
    return previous


def branch_cores():
    """Cores ``run_branches`` shares among the branches (see ``set_branch_cores``).

    Returns
    -------
    int
        The set number, or ``torch.get_num_threads()`` when none is set.

    Example
    -------
    >>> previous = set_branch_cores(3)
    >>> branch_cores()
    3
    >>> _ = set_branch_cores(None)
    >>> branch_cores() == torch.get_num_threads()
    True
    >>> _ = set_branch_cores(previous)
    """
    return _STATE["cores"] or torch.get_num_threads()


def _side_by_side_possible(inputs):
    """Whether ``run_branches`` may use threads: CPU tensors, cores to share, plain eager."""
    return (
        branch_cores() >= 2
        and all(x.device.type == "cpu" for x in inputs)
        and not torch.is_autocast_enabled("cpu")
        and not torch.jit.is_scripting()
        and not torch.jit.is_tracing()
        and not torch.compiler.is_compiling()
    )


def run_branches(functions, inputs, parameters):
    """Computes ``functions[i](inputs[i])`` for every branch, side by side on CPU.

    On CPU with at least two intra-op threads, each branch runs on its own thread with an equal
    share of the threads (one each on a 2-core machine), forward and, under autograd, backward;
    anywhere else (GPU, one thread, autocast, scripting) the branches run one
    after the other. The results and gradients are the same either way.

    Arguments
    ---------
    functions : list of callable
        Branch ``i`` maps a tensor to a tensor; branches must not share state.
    inputs : list of torch.Tensor
        The input of each branch.
    parameters : list of list of torch.Tensor
        Every tensor requiring gradients that branch ``i`` uses besides its input (its modules'
        parameters): backward returns the gradients of exactly these.

    Returns
    -------
    list of torch.Tensor
        The output of each branch.

    Example
    -------
    >>> a, b = torch.nn.Linear(3, 2), torch.nn.Linear(4, 2)
    >>> xa, xb = torch.randn(5, 3), torch.randn(5, 4)
    >>> ya, yb = run_branches([a, b], [xa, xb], [list(a.parameters()), list(b.parameters())])
    >>> bool(torch.allclose(ya, a(xa))), bool(torch.allclose(yb, b(xb)))
    (True, True)
    >>> (ya.sum() + yb.sum()).backward()
    >>> a.weight.grad.shape, b.weight.grad.shape
    (torch.Size([2, 3]), torch.Size([2, 4]))
    """
    functions, inputs = list(functions), list(inputs)
    if len(functions) < 2 or not _side_by_side_possible(inputs):
        return [fn(x) for fn, x in zip(functions, inputs)]
    threads = max(1, branch_cores() // len(functions))
    params = [[p for p in group if p.requires_grad] for group in parameters]
    needs_grad = torch.is_grad_enabled() and (any(x.requires_grad for x in inputs) or any(params))
    if not needs_grad:
        return _run_together([lambda f=f, x=x: f(x) for f, x in zip(functions, inputs)], threads)
    plan = (functions, params, threads)
    flat = [p for group in params for p in group]
    return list(_Branches.apply(plan, *inputs, *flat))


# ----------------------------------------------------------------------------------------------
# the GMU in split form, and HNSD's streams side by side
# ----------------------------------------------------------------------------------------------
class _GatedCombine(torch.autograd.Function):
    """``h = z h_s + (1 - z) h_d``, ``z = sigmoid(c_s + c_d)`` from the stream parts
    ``[h_s, c_s]`` and ``[h_d, c_d]``, returning ``(h, z)``. The backward is written out: a few
    fused elementwise passes straight into the two gradients, instead of autograd's zero-filled
    copies for every slice (the GMU's elementwise work is memory-bound, so passes are time)."""

    @staticmethod
    def forward(ctx, static_part, dynamic_part):
        """The fused output and the gate."""
        out = static_part.shape[-1] // 2
        h_s, h_d = static_part[..., :out], dynamic_part[..., :out]
        z = torch.add(static_part[..., out:], dynamic_part[..., out:]).sigmoid_()
        h = torch.addcmul(h_d, z, h_s - h_d)  # z h_s + (1 - z) h_d, faster than lerp on CPU
        ctx.save_for_backward(static_part, dynamic_part, z)
        ctx.set_materialize_grads(False)
        return h, z

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_h, grad_z):
        """The gradients of the two stream parts, in a few fused elementwise passes."""
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


def gmu_stream_part(gmu, x, stream):
    """One stream's share of a GMU: ``[tanh(W_s f_s), W_c,s f_s]`` for ``"static"``.

    ``W_c [f_s, f_d] = W_c,s f_s + W_c,d f_d``, so each stream's projections are one matrix
    product that needs nothing from the other stream (``accelerate`` runs it beside the stream's
    LSTM); ``gmu_combine`` joins the two parts.

    Arguments
    ---------
    gmu : hnsd_sb.fusion.GatedMultiFeatureUnit
        The GMU whose weights are used.
    x : torch.Tensor
        ``[..., size]``: the static or the dynamic stream.
    stream : str
        ``"static"`` or ``"dynamic"``.

    Returns
    -------
    torch.Tensor
        ``[..., 2 * out_size]``: ``h_s`` (or ``h_d``), then that stream's part of the gate's
        pre-activation (the gate's bias goes with the static part).

    Example
    -------
    >>> from hnsd_sb.fusion import GatedMultiFeatureUnit
    >>> gmu = GatedMultiFeatureUnit(8, 6, 4)
    >>> f_s, f_d = torch.randn(3, 8), torch.randn(3, 6)
    >>> parts = gmu_stream_part(gmu, f_s, "static"), gmu_stream_part(gmu, f_d, "dynamic")
    >>> parts[0].shape
    torch.Size([3, 8])
    >>> bool(torch.allclose(gmu_combine(*parts), gmu(f_s, f_d), atol=1e-6))
    True
    """
    n = x.shape[-1]
    if stream == "static":
        proj, gate_weight = gmu.static_proj, gmu.gate_proj.weight[:, :n]
        gate_bias = gmu.gate_proj.bias
    else:
        proj, gate_weight = gmu.dynamic_proj, gmu.gate_proj.weight[:, -n:]
        gate_bias = None if gmu.gate_proj.bias is None else torch.zeros_like(gmu.gate_proj.bias)
    weight = torch.cat([proj.weight, gate_weight])
    bias = None if proj.bias is None else torch.cat([proj.bias, gate_bias])
    return linear(x, weight, bias, n_tanh=gmu.out_size)


def gmu_combine(static_part, dynamic_part, return_gate=False):
    """Fuses the outputs of ``gmu_stream_part`` into the GMU's output.

    Arguments
    ---------
    static_part : torch.Tensor
        ``[..., 2 * out_size]``, the static stream's part.
    dynamic_part : torch.Tensor
        ``[..., 2 * out_size]``, the dynamic stream's part.
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
    >>> static_part = torch.tensor([[1.0, 1.0, 0.0, 0.0]])  # h_s = 1, gate part 0
    >>> h, z = gmu_combine(static_part, torch.zeros(1, 4), return_gate=True)  # h_d = 0
    >>> h.tolist(), z.tolist()
    ([[0.5, 0.5]], [[0.5, 0.5]])
    """
    h, z = _GatedCombine.apply(static_part, dynamic_part)
    return (h, z) if return_gate else h


def _fast_frames(model, static, dynamic, lengths=None):
    """``HNSD.frames`` of a two-stream model, its streams side by side: with a GMU, each
    stream's GMU projections go with its LSTM, so the two streams run apart up to the GMU's
    elementwise part."""
    encoders = (model.static_encoder, model.dynamic_encoder)
    params = [list(enc.parameters()) for enc in encoders]
    k = shared_stack_frames(*encoders)  # fused once a step, as HNSD.frames does
    steps = {"per_step": True} if k > 1 else {}
    if type(model.fusion) is GatedMultiFeatureUnit:
        gmu = model.fusion
        gate_params = list(gmu.gate_proj.parameters())
        params[0] += list(gmu.static_proj.parameters()) + gate_params
        params[1] += list(gmu.dynamic_proj.parameters()) + gate_params
        branches = [
            lambda x, enc=enc, stream=stream: gmu_stream_part(gmu, enc(x, lengths, **steps), stream)
            for enc, stream in zip(encoders, ("static", "dynamic"))
        ]
        fused = gmu_combine(*run_branches(branches, (static, dynamic), params))
    else:
        branches = [lambda x, enc=enc: enc(x, lengths, **steps) for enc in encoders]
        fused = model.fusion(*run_branches(branches, (static, dynamic), params))
    return repeat_steps(fused, k, static.shape[1])


class AcceleratedHNSD(HNSD):
    """An ``HNSD`` whose two streams run the CPU-fast way; ``accelerate`` gives a built model
    this class (same parameters and ``state_dict``), and ``accelerate(model, False)`` takes it
    back. A class rather than a per-instance method, so that copies, pickles and DataParallel
    replicas of an accelerated model compute with their own weights.

    Example
    -------
    >>> model = accelerate(HNSD(hidden_size=8, n_classes=2))
    >>> isinstance(model, AcceleratedHNSD), isinstance(model, HNSD)
    (True, True)
    """

    def frames(self, static, dynamic, lengths=None):
        """Encodes and fuses the streams, side by side on CPU (see ``HNSD.frames``).

        Arguments
        ---------
        static : torch.Tensor
            ``[batch, time, n_static]``.
        dynamic : torch.Tensor
            ``[batch, time, n_dynamic]``.
        lengths : torch.Tensor
            Relative lengths ``[batch]``.

        Returns
        -------
        torch.Tensor
            Fused frame vectors ``[batch, time, frame_size]``.
        """
        return _fast_frames(self, static, dynamic, lengths)


def _two_stream_models(model):
    """The ``HNSD`` and ``AcceleratedHNSD`` instances in ``model`` (itself included) built from
    hnsd_sb's own two-stream parts; subclasses of HNSD, and models with parts of one's own (whose
    state and computation the fast path cannot know), are left alone."""
    return [
        m
        for m in model.modules()
        if type(m) in (HNSD, AcceleratedHNSD)
        and type(m.static_encoder) is SequenceEncoder
        and type(m.dynamic_encoder) is SequenceEncoder
        and type(m.fusion) in (GatedMultiFeatureUnit, ConcatFusion)
    ]


def accelerate(model, enabled=True, branch_cores=None):
    """Makes the HNSD models in ``model`` compute their two streams the CPU-fast way.

    Same results as plain PyTorch (within float rounding; the tests compare outputs and
    gradients) and the same parameters and ``state_dict``: the models become
    ``AcceleratedHNSD``, which replaces ``HNSD.frames`` only. Models with one stream are left as
    they are; off CPU the accelerated model computes the plain way.

    Arguments
    ---------
    model : torch.nn.Module
        An ``hnsd_sb.HNSD``, or a module holding some.
    enabled : bool
        False puts the plain computation back.
    branch_cores : int or None
        If given, sets the cores the two streams share (``set_branch_cores``, process-wide).

    Returns
    -------
    torch.nn.Module
        ``model`` itself.

    Example
    -------
    >>> model = HNSD(hidden_size=8, fc_size=4, n_classes=2).eval()
    >>> x = torch.randn(2, 9, 26), torch.randn(2, 9, 52)
    >>> plain = model(*x)
    >>> is_accelerated(accelerate(model))
    True
    >>> bool(torch.allclose(model(*x), plain, atol=1e-6))
    True
    >>> is_accelerated(accelerate(model, enabled=False))
    False
    """
    for module in _two_stream_models(model):
        module.__class__ = AcceleratedHNSD if enabled else HNSD
    if branch_cores is not None:
        set_branch_cores(branch_cores)
    return model


def is_accelerated(model):
    """Whether ``accelerate`` is in effect on some HNSD in ``model``.

    Arguments
    ---------
    model : torch.nn.Module
        An ``hnsd_sb.HNSD``, or a module holding some.

    Returns
    -------
    bool
        True when at least one of its two-stream HNSD models is accelerated.

    Example
    -------
    >>> is_accelerated(HNSD(hidden_size=8))
    False
    """
    return any(isinstance(m, AcceleratedHNSD) for m in model.modules())


@contextmanager
def plain_pytorch(model):
    """Runs ``model`` the plain PyTorch way inside the block (e.g. for an exporter, which knows
    no private operators), restoring what it was after.

    Arguments
    ---------
    model : torch.nn.Module
        An ``hnsd_sb.HNSD``, or a module holding some.

    Yields
    ------
    torch.nn.Module
        ``model``, plain inside the block.

    Example
    -------
    >>> from hnsd_sb import HNSD
    >>> model = accelerate(HNSD(hidden_size=8))
    >>> with plain_pytorch(model):
    ...     is_accelerated(model)
    False
    >>> is_accelerated(model)
    True
    """
    accelerated = [m for m in model.modules() if isinstance(m, AcceleratedHNSD)]
    for module in accelerated:
        accelerate(module, enabled=False)
    try:
        yield model
    finally:
        for module in accelerated:
            accelerate(module)
