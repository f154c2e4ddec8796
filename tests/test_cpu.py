"""Tests of the CPU fast paths: oneDNN linear layer, side-by-side streams, fused GMU backward."""

import threading

import pytest
import torch

from hnsd_sb import HNSD, GatedMultiFeatureUnit, SequenceEncoder, cpu


@pytest.fixture
def two_threads():
    """Two intra-op threads, so run_branches takes its threaded path; restored afterwards."""
    threads = torch.get_num_threads()
    cores = cpu.set_branch_cores(None)
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)
    cpu.set_branch_cores(cores)


@pytest.mark.parametrize("n_tanh", [0, 40])
def test_linear_matches_float64_reference_and_its_gradients(n_tanh):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 40, 64, generator=gen).mul_(0.1).requires_grad_()
    w = torch.randn(96, 64, generator=gen, requires_grad=True)
    b = torch.randn(96, generator=gen, requires_grad=True)
    y = cpu.linear(x, w, b, n_tanh=n_tanh)
    g = torch.randn(y.shape, generator=gen)
    y.backward(g)
    xd, wd, bd = (t.detach().double().requires_grad_() for t in (x, w, b))
    yd = torch.nn.functional.linear(xd, wd, bd)
    yd = torch.cat([torch.tanh(yd[..., :n_tanh]), yd[..., n_tanh:]], -1)
    yd.backward(g.double())
    torch.testing.assert_close(y.double(), yd, rtol=1e-5, atol=1e-4)
    for got, ref in ((x.grad, xd.grad), (w.grad, wd.grad), (b.grad, bd.grad)):
        torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-4)


def test_linear_falls_back_off_the_fast_path():
    x, w = torch.randn(4, 5, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64)
    torch.testing.assert_close(cpu.linear(x, w), x @ w.T)  # float64: plain F.linear


def test_branches_run_on_two_threads_at_once(two_threads):
    seen, barrier = set(), threading.Barrier(2, timeout=10)

    def branch(x):
        seen.add(threading.get_ident())
        barrier.wait()  # both branches must be running at the same time to get past this
        return x * 2

    a, b = cpu.run_branches([branch, branch], [torch.ones(2), torch.ones(3)], [[], []])
    assert len(seen) == 2
    assert a.tolist() == [2.0, 2.0] and b.tolist() == [2.0, 2.0, 2.0]
    assert torch.get_num_threads() == 2  # restored


def test_branch_errors_propagate_and_threads_are_restored(two_threads):
    def fail(x):
        raise ValueError("branch failed")

    with pytest.raises(ValueError, match="branch failed"):
        cpu.run_branches([lambda x: x, fail], [torch.ones(1), torch.ones(1)], [[], []])
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("stack_frames", [1, 3])
@pytest.mark.parametrize("bias", [False, True])
def test_model_gradients_are_the_same_side_by_side_and_sequential(two_threads, bias, stack_frames):
    torch.manual_seed(0)
    model = HNSD(hidden_size=24, fc_size=8, n_classes=3, stack_frames=stack_frames)
    if bias:
        model.fusion = GatedMultiFeatureUnit(24, 24, 24, bias=True)
    static, dynamic = torch.randn(3, 17, 26), torch.randn(3, 17, 52)
    lens = torch.tensor([1.0, 0.7, 0.4])
    targets = torch.tensor([0, 2, 1])

    def grads(fast):
        cpu.accelerate(model, enabled=fast)
        assert cpu.is_accelerated(model) == fast
        model.zero_grad()
        logp = model(static, dynamic, lens)
        torch.nn.functional.nll_loss(logp, targets).backward()
        return logp.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    logp_fast, fast = grads(True)
    logp_slow, slow = grads(False)
    torch.testing.assert_close(logp_fast, logp_slow, rtol=1e-5, atol=1e-6)
    assert fast.keys() == slow.keys()
    for name in fast:
        torch.testing.assert_close(fast[name], slow[name], rtol=1e-4, atol=1e-6, msg=name)


def test_input_gradients_flow_through_the_branches(two_threads):
    torch.manual_seed(0)
    model = cpu.accelerate(HNSD(hidden_size=8, fc_size=4, n_classes=2))
    static = torch.randn(2, 6, 26, requires_grad=True)
    dynamic = torch.randn(2, 6, 52, requires_grad=True)
    model(static, dynamic).sum().backward()
    ref_s, ref_d = static.grad.clone(), dynamic.grad.clone()
    static.grad = dynamic.grad = None
    with cpu.plain_pytorch(model):
        model(static, dynamic).sum().backward()
    torch.testing.assert_close(ref_s, static.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(ref_d, dynamic.grad, rtol=1e-4, atol=1e-6)


def test_inference_mode_and_no_grad_work_side_by_side(two_threads):
    model = cpu.accelerate(HNSD(hidden_size=8, fc_size=4, n_classes=2).eval())
    static, dynamic = torch.randn(2, 9, 26), torch.randn(2, 9, 52)
    with torch.no_grad():
        a = model(static, dynamic)
    with torch.inference_mode():
        b = model(static, dynamic)
    torch.testing.assert_close(a, b)
    assert not a.requires_grad


def test_branch_cores_override_the_intra_op_threads():
    threads = torch.get_num_threads()
    previous = cpu.set_branch_cores(2)
    try:
        torch.set_num_threads(1)
        seen = set()

        def branch(x):
            seen.add((threading.get_ident(), torch.get_num_threads()))
            return x

        cpu.run_branches([branch, branch], [torch.ones(1), torch.ones(1)], [[], []])
        assert {n for _, n in seen} == {1} and len(seen) == 2
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
        cpu.set_branch_cores(previous)
    with pytest.raises(ValueError):
        cpu.set_branch_cores(0)


@pytest.mark.parametrize("bias", [False, True])
def test_gmu_split_form_and_its_written_out_gradient_are_exact(bias):
    gmu = GatedMultiFeatureUnit(3, 2, 4, bias=bias).double()
    f_s = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    f_d = torch.randn(5, 2, dtype=torch.float64, requires_grad=True)

    def split(a, b):
        parts = cpu.gmu_stream_part(gmu, a, "static"), cpu.gmu_stream_part(gmu, b, "dynamic")
        return cpu.gmu_combine(*parts, return_gate=True)

    for got, ref in zip(split(f_s, f_d), gmu(f_s, f_d, return_gate=True)):
        torch.testing.assert_close(got, ref)
    assert torch.autograd.gradcheck(split, (f_s, f_d))


def test_fast_paths_are_opt_in_and_keep_the_parameters(tmp_path):
    model = HNSD(hidden_size=8, fc_size=4, n_classes=2)
    assert not cpu.is_accelerated(model)  # nothing is switched on by importing or building
    keys = list(model.state_dict())
    cpu.accelerate(model)
    assert cpu.is_accelerated(model) and list(model.state_dict()) == keys
    # one-stream ablations have nothing to run side by side and stay plain
    assert not cpu.is_accelerated(cpu.accelerate(HNSD(hidden_size=8, streams="early")))
    # copies, pickles and DataParallel-style replicas compute with their own weights
    x = torch.randn(2, 7, 26), torch.randn(2, 7, 52)
    for copy in (__import__("copy").deepcopy(model), __import__("copy").copy(model)):
        assert cpu.is_accelerated(copy)
        torch.testing.assert_close(copy.frames(*x), model.frames(*x))
    torch.save(model, tmp_path / "model.pt")
    loaded = torch.load(tmp_path / "model.pt", weights_only=False)
    assert cpu.is_accelerated(loaded)
    torch.testing.assert_close(loaded.frames(*x), model.frames(*x))
    replica = model._replicate_for_data_parallel()  # as DataParallel makes them
    replica.static_encoder = SequenceEncoder(26, 8)  # the replica's own module, not the model's
    assert not torch.allclose(replica.frames(*x), model.frames(*x))


def test_models_with_parts_of_ones_own_stay_plain():
    """The fast path knows hnsd_sb's encoders and fusions only: a GMU subclass with its own
    forward (or any other part of one's own) keeps the model plain, so it computes as written."""
    from functools import partial

    from hnsd_sb import HNSD, GatedMultiFeatureUnit, SequenceEncoder, UtteranceClassifier
    from hnsd_sb.cpu import accelerate, is_accelerated
    from hnsd_sb.pooling import MeanPooling

    class HalfGate(GatedMultiFeatureUnit):
        def forward(self, static, dynamic):
            return 0.5 * (
                torch.tanh(self.static_proj(static)) + torch.tanh(self.dynamic_proj(dynamic))
            )

    lstm = partial(SequenceEncoder, hidden_size=8)
    parts = dict(static_encoder=lstm, dynamic_encoder=lstm, pooling=MeanPooling,
                 classifier=partial(UtteranceClassifier, fc_size=4, n_classes=2))  # fmt: skip
    mine = HNSD(fusion=partial(HalfGate, out_size=8), **parts)
    assert not is_accelerated(accelerate(mine))
    ours = HNSD(fusion=partial(GatedMultiFeatureUnit, out_size=8), **parts)
    assert is_accelerated(accelerate(ours))


def test_second_derivatives_raise_on_the_fast_path_and_work_plain(two_threads):
    """A gradient penalty differentiates the input gradient again: the fast path's backward
    is first-order only, so that must raise instead of dropping the second-order terms."""
    torch.manual_seed(0)
    model = cpu.accelerate(HNSD(hidden_size=8, fc_size=4, n_classes=2))
    static = torch.randn(2, 6, 26, requires_grad=True)
    dynamic = torch.randn(2, 6, 52, requires_grad=True)

    def penalty():
        (grad,) = torch.autograd.grad(model(static, dynamic).sum(), static, create_graph=True)
        return grad.pow(2).sum()

    with pytest.raises(RuntimeError, match="once_differentiable"):
        penalty().backward()
    model.zero_grad(set_to_none=True)
    with cpu.plain_pytorch(model):
        penalty().backward()
    assert all(p.grad is not None for p in model.parameters())
