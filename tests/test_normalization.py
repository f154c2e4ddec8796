"""Tests of speaker-level normalisation."""

import numpy as np
import pytest
import torch
from speechbrain.utils.checkpoints import Checkpointer

from hnsd_sb import SpeakerNormalization
from hnsd_sb.normalization import PooledSpeakerNormalization, real_frame_mask


def padded_batches(seed=0):
    """Two batches of padded sequences from three speakers, with their real frames."""
    gen = torch.Generator().manual_seed(seed)
    batches, real = [], {}
    for speakers, n_frames in ((["a", "b", "a"], [30, 12, 21]), (["c", "b"], [17, 40])):
        max_len = max(n_frames)
        offset = torch.tensor([ord(s) - 97.0 for s in speakers]).view(-1, 1, 1)
        feats = torch.randn(len(speakers), max_len, 4, generator=gen) * (1 + offset) + 5 * offset
        feats[:, :, 1] *= 10
        for i, n in enumerate(n_frames):
            feats[i, n:] = 1e6  # padding that would ruin any statistic that read it
            real.setdefault(speakers[i], []).append(feats[i, :n].double().numpy())
        batches.append((feats, torch.tensor(n_frames) / max_len, speakers))
    return batches, {s: np.concatenate(v) for s, v in real.items()}


def test_speaker_statistics_match_numpy_on_padded_batches():
    batches, real = padded_batches()
    norm = SpeakerNormalization()
    for feats, lens, spk in batches:
        norm.accumulate(feats, lens, spk)
    assert norm.speakers == ["a", "b", "c"]
    for spk, frames in real.items():
        mean, std = norm.speaker_moments(spk)
        np.testing.assert_allclose(mean.numpy(), frames.mean(0), rtol=1e-10)
        np.testing.assert_allclose(std.numpy(), frames.std(0), rtol=1e-8)
    pooled = np.concatenate(list(real.values()))
    mean, std = norm.global_moments()
    np.testing.assert_allclose(mean.numpy(), pooled.mean(0), rtol=1e-10)
    np.testing.assert_allclose(std.numpy(), pooled.std(0), rtol=1e-8)


def test_normalised_speakers_have_zero_mean_unit_std_and_zero_padding():
    batches, real = padded_batches()
    norm = SpeakerNormalization()
    for feats, lens, spk in batches:
        norm.accumulate(feats, lens, spk)
    out = {s: [] for s in real}
    for feats, lens, spk in batches:
        y = norm(feats, lens, spk)
        mask = real_frame_mask(lens, feats.shape[1])
        assert y[~mask].abs().max() == 0
        for i, s in enumerate(spk):
            out[s].append(y[i][mask[i]].double())
    for frames in out.values():
        frames = torch.cat(frames)
        assert frames.mean(0).abs().max() < 1e-4
        assert (frames.std(0, unbiased=False) - 1).abs().max() < 1e-4


def test_statistics_survive_checkpoint_round_trip(tmp_path):
    batches, _ = padded_batches()
    norm = SpeakerNormalization()
    for feats, lens, spk in batches:
        norm.accumulate(feats, lens, spk)
    Checkpointer(tmp_path, {"normalizer": norm}).save_checkpoint()
    restored = SpeakerNormalization()
    Checkpointer(tmp_path, {"normalizer": restored}).recover_if_possible()
    assert restored.speakers == norm.speakers
    feats, lens, spk = batches[1]
    torch.testing.assert_close(restored(feats, lens, spk), norm(feats, lens, spk))
    saved = next(tmp_path.glob("CKPT*/normalizer.ckpt"))
    torch.load(saved, weights_only=True)  # plain tensors and strings only


def test_unseen_speaker_utterance_fallback_cancels_recording_gain():
    batches, _ = padded_batches()
    norm = SpeakerNormalization(unseen="utterance")
    feats, lens, spk = batches[0]
    norm.accumulate(feats, lens, spk)
    new = torch.randn(1, 25, 4) * 3 + 2
    # A gain change multiplies the waveform, i.e. adds a constant to log-Mel energies.
    torch.testing.assert_close(norm(new, None, ["new"]), norm(new + 7.5, None, ["new"]))
    y = norm(new, None, ["new"])[0]
    assert y.mean(0).abs().max() < 1e-5


def test_unseen_speaker_global_fallback_uses_pooled_statistics():
    batches, _ = padded_batches()
    norm = SpeakerNormalization(unseen="global")
    for feats, lens, spk in batches:
        norm.accumulate(feats, lens, spk)
    new = torch.randn(1, 25, 4)
    mean, std = norm.global_moments()
    expected = (new - mean.float()) / std.float()
    torch.testing.assert_close(norm(new, None, ["stranger"]), expected)


def test_enrolling_a_speaker_switches_from_fallback_to_speaker_statistics():
    norm = SpeakerNormalization()
    reference = torch.randn(3, 40, 4) * 2 + 1
    utt = torch.randn(1, 10, 4) + 4
    before = norm(utt, None, ["new"])
    norm.accumulate(reference, torch.ones(3), ["new"] * 3)
    after = norm(utt, None, ["new"])
    mean, std = norm.speaker_moments("new")
    torch.testing.assert_close(after, (utt - mean.float()) / std.float())
    assert not torch.allclose(before, after)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="unseen"):
        SpeakerNormalization(unseen="speaker")
    with pytest.raises(ValueError, match="speakers"):
        SpeakerNormalization().accumulate(torch.zeros(2, 3, 1), torch.ones(2), ["a"])
    with pytest.raises(RuntimeError, match="accumulate"):
        SpeakerNormalization().global_moments()


@pytest.mark.parametrize("unseen", ["utterance", "global"])
def test_batched_normalisation_equals_each_utterance_alone(unseen):
    """The whole-batch forward gives each row what normalising it alone gives, for known and
    unknown speakers mixed, and follows the statistics when they change."""
    torch.manual_seed(0)
    norm = SpeakerNormalization(unseen=unseen)
    norm.accumulate(torch.randn(2, 30, 4) * 3 + 1, torch.tensor([1.0, 0.7]), ["a", "b"])
    feats = torch.randn(3, 20, 4) * 2 + 5
    lens = torch.tensor([1.0, 0.5, 0.8])
    speakers = ["b", "new", "a"]

    def alone():
        return torch.cat(
            [norm(feats[i : i + 1], lens[i : i + 1], [s]) for i, s in enumerate(speakers)]
        )

    torch.testing.assert_close(norm(feats, lens, speakers), alone())
    before = norm(feats, lens, speakers)
    norm.accumulate(torch.randn(1, 10, 4), torch.ones(1), ["a"])  # a's statistics change
    after = norm(feats, lens, speakers)
    assert not torch.equal(before[2], after[2]) and torch.equal(before[0], after[0])
    torch.testing.assert_close(after, alone())
    norm.stats.pop("b")  # segments.py drops a recording's own statistics this way
    torch.testing.assert_close(norm(feats, lens, speakers), alone())
    assert not torch.equal(norm(feats, lens, speakers)[0], after[0])


def test_repeated_enrolment_is_always_reflected():
    """Statistics that change again and again (enrolment recording by recording, merges,
    a speaker dropped and added back) are used at once: each forward equals that of a fresh
    normaliser holding the same statistics."""
    torch.manual_seed(1)
    norm = SpeakerNormalization()
    feats, lens = torch.randn(2, 12, 3), torch.ones(2)
    norm.accumulate(torch.randn(1, 8, 3), torch.ones(1), ["a"])
    for step in range(8):
        norm(feats, lens, ["a", "a"])  # builds the table from the current statistics
        if step % 3 == 2:
            norm.stats.pop("a")
        if step % 2:
            norm.merge_state(SpeakerNormalization().state() | {})  # an empty merge
        norm.accumulate(torch.randn(1, 5, 3) * (step + 2), torch.ones(1), ["a"])
        fresh = SpeakerNormalization()
        fresh.load_state(norm.state())
        torch.testing.assert_close(norm(feats, lens, ["a", "a"]), fresh(feats, lens, ["a", "a"]))


def pooled_setup():
    """A small HNSD with the pooled-vector normaliser attached, and a batch of two speakers."""
    from hnsd_sb import HNSD
    from hnsd_sb.normalization import PooledSpeakerNormalization

    torch.manual_seed(0)
    model = HNSD(hidden_size=8, fc_size=4, n_classes=3).eval()
    norm = PooledSpeakerNormalization()
    norm.attach(model)
    static, dynamic = torch.randn(5, 14, 26), torch.randn(5, 14, 52)
    lens = torch.tensor([1.0, 0.8, 0.6, 1.0, 0.9])
    return model, norm, (static, dynamic, lens), ["a", "b", "a", "a", "b"]


def test_pooled_vectors_are_z_scored_with_their_speakers_statistics():
    """The classifier reads ``(u - mean_s) / std_s``, the moments of the speaker's vectors
    gathered by ``collecting`` (population std, as for the features); a speaker without
    statistics gets those of all vectors together."""
    model, norm, (static, dynamic, lens), speakers = pooled_setup()
    with torch.no_grad():
        with norm.collecting(), norm.for_speakers(speakers):
            model(static, dynamic, lens)
        with norm.for_speakers(speakers + ["new"]):
            got = model(*(torch.cat([t, t[:1]]) for t in (static, dynamic, lens)))
        u, _ = model.pooling(model.frames(static, dynamic, lens), lens, True)
    u = u.double()
    expected = torch.empty(6, u.shape[1], dtype=torch.float64)
    for speaker in ("a", "b"):
        rows = [i for i, s in enumerate(speakers) if s == speaker]
        expected[rows] = (u[rows] - u[rows].mean(0)) / u[rows].std(0, unbiased=False)
    expected[5] = (u[0] - u.mean(0)) / u.std(0, unbiased=False)
    with torch.no_grad():
        plain = model.classifier.forward(expected.float())  # .forward: without the hook
        torch.testing.assert_close(got, plain, rtol=1e-4, atol=1e-4)


def test_pooled_normalisation_is_shared_by_a_copy_and_refuses_a_batch_without_speakers():
    """The weight average (a deep copy of the model) z-scores with the same statistics;
    ``collecting`` starts afresh; a second ``attach`` replaces the hook; a forward outside
    ``for_speakers`` names what to do; statistics whose fallback is an utterance's own are
    refused."""
    import copy

    model, norm, (static, dynamic, lens), speakers = pooled_setup()
    copied = copy.deepcopy(model)
    with torch.no_grad():
        with norm.collecting(), norm.for_speakers(speakers):
            copied(static, dynamic, lens)
        assert norm.statistics.speakers == ["a", "b"]
        with norm.for_speakers(speakers):
            torch.testing.assert_close(model(static, dynamic, lens), copied(static, dynamic, lens))
        with norm.collecting(), norm.for_speakers(["c"] * 5):
            model(static, dynamic, lens)
    assert norm.statistics.speakers == ["c"]
    norm.attach(model)
    assert len(model.classifier._forward_pre_hooks) == 1
    with pytest.raises(RuntimeError, match="inside for_speakers"):
        model(static, dynamic, lens)
    # the pooled vectors cannot fall back on an utterance's own statistics (one vector)
    with pytest.raises(ValueError, match="need unseen='global'"):
        PooledSpeakerNormalization(statistics=SpeakerNormalization(unseen="utterance"))
