"""Tests of the HNSD model: padding invariance, gradients, size, options."""

import pytest
import torch

from hnsd_sb import HNSD, SpeakerNormalization, StaticDynamicFeatures

VARIANTS = [
    {},
    {"fusion": "concat"},
    {"pooling": "mean"},
    {"streams": "static"},
    {"streams": "dynamic"},
    {"streams": "early"},
    {"bidirectional": True, "num_layers": 2},
]


@pytest.mark.parametrize("options", VARIANTS)
def test_utterance_gives_same_output_alone_and_in_padded_batch(options):
    torch.manual_seed(0)
    model = HNSD(hidden_size=32, fc_size=16, n_classes=4, **options).eval()
    static, dynamic = torch.randn(3, 50, 26), torch.randn(3, 50, 52)
    lens = torch.tensor([1.0, 0.62, 0.3])
    static[1:, 31:] = 1e3  # garbage padding must not leak in
    dynamic[1:, 31:] = -1e3
    with torch.no_grad():
        batch = model(static, dynamic, lens)
        for b, n in enumerate((50, 31, 15)):
            alone = model(static[b : b + 1, :n], dynamic[b : b + 1, :n])
            torch.testing.assert_close(batch[b : b + 1], alone, rtol=1e-5, atol=1e-5)


def test_waveform_to_prediction_pipeline_is_padding_invariant():
    torch.manual_seed(0)
    compute, norm = StaticDynamicFeatures(), SpeakerNormalization()
    model = HNSD(hidden_size=32, fc_size=16).eval()
    wavs = torch.randn(2, 32000)
    wavs[1, 20011:] = 0
    lens = torch.tensor([1.0, 20011 / 32000])

    def predict(w, ln):
        static, dynamic, flens = compute(w, ln, return_lengths=True)
        feats = norm(torch.cat([static, dynamic], -1), flens, ["x"] * w.shape[0])
        return model(feats[..., :26], feats[..., 26:], flens)

    with torch.no_grad():
        batch = predict(wavs, lens)
        alone = predict(wavs[1:, :20011], torch.ones(1))
    torch.testing.assert_close(batch[1:], alone, rtol=1e-5, atol=1e-5)


def test_gradients_reach_both_encoders_and_the_gate():
    model = HNSD(hidden_size=16, fc_size=8)
    logp = model(torch.randn(2, 12, 26), torch.randn(2, 12, 52), torch.tensor([1.0, 0.5]))
    torch.nn.functional.nll_loss(logp, torch.tensor([0, 3])).backward()
    for part in (model.static_encoder, model.dynamic_encoder, model.fusion, model.pooling):
        grads = [p.grad for p in part.parameters()]
        assert all(g is not None and g.abs().sum() > 0 for g in grads), part


def test_paper_settings_parameter_count():
    model = HNSD()
    count = sum(p.numel() for p in model.parameters())
    lstm = lambda n_in: 4 * 512 * (n_in + 512) + 2 * 4 * 512  # noqa: E731
    expected = lstm(26) + lstm(52) + 3 * 512 * 512 + 512 * 512  # GMU: W_s, W_d and W_c
    expected += 512 * 16 + 16 + 16 + 512 * 128 + 128 + 128 * 4 + 4
    assert count == expected == 3_388_068


def test_return_attention_gives_weights_over_real_frames():
    model = HNSD(hidden_size=16).eval()
    _, alpha = model(torch.randn(2, 10, 26), torch.randn(2, 10, 52), torch.tensor([1.0, 0.4]), True)
    torch.testing.assert_close(alpha.sum(1), torch.ones(2))
    assert (alpha[1, 4:] == 0).all()


def test_unknown_options_are_rejected():
    with pytest.raises(ValueError, match="fusion"):
        HNSD(fusion="sum")
    with pytest.raises(ValueError, match="streams"):
        HNSD(streams="three")
