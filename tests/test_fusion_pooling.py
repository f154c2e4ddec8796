"""Tests of the GMU and of the pooling layers."""

import torch

from hnsd_sb import (
    AdditiveAttentionPooling,
    AttentiveStatisticsPooling,
    GatedMultiFeatureUnit,
    MeanPooling,
)


def test_gmu_equals_its_formula():
    torch.manual_seed(0)
    gmu = GatedMultiFeatureUnit(5, 3, 4)
    f_s, f_d = torch.randn(2, 6, 5), torch.randn(2, 6, 3)
    h, z = gmu(f_s, f_d, return_gate=True)
    w_s, w_d, w_c = gmu.static_proj.weight, gmu.dynamic_proj.weight, gmu.gate_proj.weight
    h_s = torch.tanh(f_s @ w_s.T)
    h_d = torch.tanh(f_d @ w_d.T)
    gate = torch.sigmoid(torch.cat([f_s, f_d], -1) @ w_c.T)
    torch.testing.assert_close(z, gate)
    torch.testing.assert_close(h, gate * h_s + (1 - gate) * h_d)
    assert gmu.static_proj.bias is None  # the paper's formula has no biases
    assert ((z > 0) & (z < 1)).all()


def test_gmu_output_lies_between_its_two_branches():
    gmu = GatedMultiFeatureUnit(4, 4, 4)
    f_s, f_d = torch.randn(10, 4), torch.randn(10, 4)
    h = gmu(f_s, f_d)
    h_s, h_d = torch.tanh(gmu.static_proj(f_s)), torch.tanh(gmu.dynamic_proj(f_d))
    lo, hi = torch.minimum(h_s, h_d), torch.maximum(h_s, h_d)
    assert ((h >= lo - 1e-6) & (h <= hi + 1e-6)).all()


def test_attention_equals_bahdanau_formula_over_real_frames():
    torch.manual_seed(0)
    pool = AdditiveAttentionPooling(6, attention_size=16)
    x = torch.randn(3, 8, 6)
    lens = torch.tensor([1.0, 0.5, 0.25])
    u, alpha = pool(x, lens, return_weights=True)
    for b, n in enumerate((8, 4, 2)):
        s = torch.tanh(x[b, :n] @ pool.projection.weight.T + pool.projection.bias)
        s = s @ pool.score.weight.squeeze(0)
        a = torch.softmax(s, dim=0)
        torch.testing.assert_close(alpha[b, :n], a)
        assert (alpha[b, n:] == 0).all()
        torch.testing.assert_close(u[b], a @ x[b, :n])
    torch.testing.assert_close(alpha.sum(1), torch.ones(3))


def test_pooling_ignores_whatever_is_in_the_padding():
    pool, mean = AdditiveAttentionPooling(6), MeanPooling()
    stats = AttentiveStatisticsPooling(6)
    x = torch.randn(2, 8, 6)
    lens = torch.tensor([1.0, 0.375])
    noisy = x.clone()
    noisy[1, 3:] = 1e20  # large enough that 0 * (x - mean) ** 2 would not be 0
    torch.testing.assert_close(pool(x, lens), pool(noisy, lens))
    torch.testing.assert_close(stats(x, lens), stats(noisy, lens))
    torch.testing.assert_close(mean(x, lens), mean(noisy, lens))
    torch.testing.assert_close(mean(x, lens)[1], x[1, :3].mean(0))


def test_attentive_statistics_are_the_weighted_mean_and_std_of_the_same_attention():
    """The mean half is the paper's attention output (same weights, same frames); the other
    half the weighted standard deviation, e.g. a plain one when the attention is uniform."""
    torch.manual_seed(0)
    stats, plain = AttentiveStatisticsPooling(6), AdditiveAttentionPooling(6)
    plain.load_state_dict(stats.state_dict())
    x = torch.randn(3, 8, 6)
    lens = torch.tensor([1.0, 0.5, 0.25])
    u, alpha = stats(x, lens, return_weights=True)
    u_plain, alpha_plain = plain(x, lens, return_weights=True)
    assert u.shape == (3, 12) and stats.out_size == 12
    torch.testing.assert_close(alpha, alpha_plain)
    torch.testing.assert_close(u[:, :6], u_plain)
    for b, n in enumerate((8, 4, 2)):
        a = alpha[b, :n].unsqueeze(-1)
        var = (a * (x[b, :n] - u_plain[b]) ** 2).sum(0)
        torch.testing.assert_close(u[b, 6:], (var + stats.EPS).sqrt())
    torch.nn.init.zeros_(stats.score.weight)  # uniform attention: the plain statistics
    torch.testing.assert_close(stats(x)[:, 6:], x.std(1, unbiased=False), atol=1e-4, rtol=1e-4)
    # constant frames have no spread, and the gradient stays finite there
    flat = torch.ones(1, 5, 6, requires_grad=True)
    out = AttentiveStatisticsPooling(6)(flat)
    out.sum().backward()
    assert out[0, 6:].max() < 1e-2 and torch.isfinite(flat.grad).all()
