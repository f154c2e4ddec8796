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


def test_silence_trimming_keeps_the_sound_and_does_not_depend_on_padding(waves):
    compute = StaticDynamicFeatures(trim_db=40)
    tone = waves[0, :8000]  # 0.5 s of sound between 0.8 s and 0.6 s of digital silence
    wav = torch.cat([torch.zeros(12800), tone, torch.zeros(9600)])
    static, dynamic, lens = compute(wav.unsqueeze(0), return_lengths=True)
    assert 48 <= static.shape[1] <= 56  # 50 frames of sound, give or take the window's reach
    assert lens.item() == 1.0
    untrimmed, _ = StaticDynamicFeatures()(wav.unsqueeze(0))
    assert untrimmed.shape[1] == 191
    # in a padded batch beside a longer utterance, the trimmed frames are the same
    batch = torch.zeros(2, 40000)
    batch[0] = waves[0, :24000].repeat(2)[:40000]
    batch[1, : wav.numel()] = wav
    b_static, b_dynamic, b_lens = compute(batch, torch.tensor([1.0, wav.numel() / 40000]), True)
    n = static.shape[1]
    assert round(b_lens[1].item() * b_static.shape[1]) == n
    torch.testing.assert_close(b_static[1, :n], static[0], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(b_dynamic[1, :n], dynamic[0], rtol=1e-5, atol=1e-4)


def test_silence_trimming_of_silence_only_keeps_a_frame():
    static, _, lens = StaticDynamicFeatures(trim_db=40)(torch.zeros(1, 4000), None, True)
    assert static.shape[1] >= 1 and lens.item() == 1.0
