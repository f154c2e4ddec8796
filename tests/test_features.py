"""Tests of the static and dynamic feature streams."""

import numpy as np
import pytest
import torch
from speechbrain.lobes.features import Fbank

from hnsd_sb import StaticDynamicFeatures


def numpy_deltas(x, big_m=2):
    """The paper's regression formula, edges replicated, written directly in NumPy."""
    padded = np.concatenate([np.repeat(x[:1], big_m, 0), x, np.repeat(x[-1:], big_m, 0)])
    denom = 2 * sum(n * n for n in range(1, big_m + 1))
    out = np.zeros_like(x)
    for i in range(len(x)):
        j = i + big_m
        out[i] = sum(n * (padded[j + n] - padded[j - n]) for n in range(1, big_m + 1)) / denom
    return out


@pytest.fixture
def waves():
    gen = torch.Generator().manual_seed(0)
    t = torch.arange(24000) / 16000
    tone = torch.sin(2 * np.pi * 220 * t * (1 + 0.3 * t))
    return tone.unsqueeze(0) + 0.1 * torch.randn(2, 24000, generator=gen)


def test_static_stream_is_speechbrain_fbank_26(waves):
    static, _ = StaticDynamicFeatures()(waves)
    reference = Fbank(n_mels=26)(waves)
    assert static.shape == (2, 151, 26)
    torch.testing.assert_close(static, reference)


def test_dynamic_stream_matches_numpy_regression_formula(waves):
    static, dynamic = StaticDynamicFeatures()(waves)
    for b in range(2):
        x = static[b].double().numpy()
        y = numpy_deltas(x)
        z = numpy_deltas(y)
        np.testing.assert_allclose(dynamic[b, :, :26].numpy(), y, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(dynamic[b, :, 26:].numpy(), z, rtol=1e-4, atol=1e-4)


def test_wider_delta_window_matches_formula(waves):
    static, dynamic = StaticDynamicFeatures(delta_window=9)(waves[:1])
    y = numpy_deltas(static[0].double().numpy(), big_m=4)
    np.testing.assert_allclose(dynamic[0, :, :26].numpy(), y, rtol=1e-4, atol=1e-4)


def test_features_of_real_frames_do_not_depend_on_padding(waves):
    compute = StaticDynamicFeatures()
    short = waves[1, :13333]  # not a multiple of the hop
    alone_s, alone_d = compute(short.unsqueeze(0))
    batch = torch.zeros(2, 24000)
    batch[0] = waves[0]
    batch[1, : short.numel()] = short
    lens = torch.tensor([1.0, short.numel() / 24000])
    static, dynamic, frame_lens = compute(batch, lens, return_lengths=True)
    n = alone_s.shape[1]
    assert round(frame_lens[1].item() * static.shape[1]) == n
    torch.testing.assert_close(static[1, :n], alone_s[0], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(dynamic[1, :n], alone_d[0], rtol=1e-5, atol=1e-4)


def test_frame_counts_follow_centred_stft():
    compute = StaticDynamicFeatures()
    for n_samples in (400, 1599, 1600, 16000, 16001):
        static, _ = compute(torch.randn(1, n_samples))
        assert compute.frame_counts(torch.ones(1), n_samples).item() == static.shape[1]
