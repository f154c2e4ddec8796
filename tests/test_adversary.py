"""Tests of speaker-adversarial training (``hnsd_sb.adversary``)."""

import copy

import pytest
import torch

from hnsd_sb import HNSD
from hnsd_sb.adversary import SpeakerAdversary, reverse_gradient


def small_model():
    torch.manual_seed(0)
    return HNSD(hidden_size=8, fc_size=4, n_classes=4)


def test_reverse_gradient_is_the_identity_forward_and_scales_the_gradient_by_minus_scale():
    x = torch.randn(3, 5, requires_grad=True)
    y = reverse_gradient(x, 0.3)
    assert torch.equal(y, x)
    upstream = torch.randn(3, 5)
    y.backward(upstream)
    torch.testing.assert_close(x.grad, -0.3 * upstream)


def test_the_head_reads_the_classifiers_input_and_the_model_gets_the_reversed_gradient():
    """The head's own gradient is the plain one; the model's is ``-weight`` times what the same
    speaker loss would give it without the reversal."""
    model = small_model()
    adversary = SpeakerAdversary(weight=0.3, hidden_size=6)
    adversary.attach(model, ["b", "a", "c", "a"])
    assert adversary.speakers == ["a", "b", "c"] and adversary.enabled
    static, dynamic = torch.randn(4, 12, 26), torch.randn(4, 12, 52)
    lens = torch.tensor([1.0, 0.9, 0.6, 1.0])
    speakers = adversary.speaker_indices(["c", "a", "b", "a"])
    assert speakers.tolist() == [2, 0, 1, 0]

    model.eval()  # no dropout: the two passes below see the same network
    model(static, dynamic, lens)
    loss, correct = adversary(speakers)
    loss.backward()
    reversed_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    head_grads = [p.grad.clone() for p in adversary.head.parameters()]
    assert 0 <= correct <= 4

    # by hand: the pooled vector straight from the model's parts, no reversal
    model.zero_grad()
    adversary.zero_grad()
    u, _ = model.pooling(model.frames(static, dynamic, lens), lens, True)
    plain = torch.nn.functional.cross_entropy(adversary.head(u), speakers)
    torch.testing.assert_close(loss, plain)
    plain.backward()
    assert set(reversed_grads) == {
        n for n, p in model.named_parameters() if not n.startswith("classifier")
    }  # the encoders, fusion and pooling; the emotion head is not on the speaker path
    for name, p in model.named_parameters():
        if name in reversed_grads:
            torch.testing.assert_close(reversed_grads[name], -0.3 * p.grad)
    for got, p in zip(head_grads, adversary.head.parameters()):
        torch.testing.assert_close(got, p.grad)


def test_a_copy_of_the_model_does_not_copy_the_adversary():
    """The weight average deep-copies the model: the copy's forward passes still reach the one
    adversary (the hook is a plain function), which is not duplicated."""
    model = small_model()
    adversary = SpeakerAdversary(weight=0.5)
    adversary.attach(model, ["a", "b"])
    twin = copy.deepcopy(model).eval()
    twin(torch.randn(2, 5, 26), torch.randn(2, 5, 52))
    loss, _ = adversary(adversary.speaker_indices(["a", "b"]))
    assert loss.shape == ()
    with pytest.raises(RuntimeError, match="run a forward pass"):
        adversary(adversary.speaker_indices(["a", "b"]))  # each pass's vectors are used once


def test_off_by_default_and_bad_settings_are_clear_errors():
    assert not SpeakerAdversary().enabled
    for weight in (True, -0.1, "0.3", float("nan")):
        with pytest.raises(ValueError, match="weight must be a number >= 0"):
            SpeakerAdversary(weight=weight)
    for size in (0, 1.5, True):
        with pytest.raises(ValueError, match="hidden_size must be an int >= 1"):
            SpeakerAdversary(weight=0.1, hidden_size=size)
    adversary = SpeakerAdversary(weight=0.1)
    with pytest.raises(RuntimeError, match="attach it to the model"):
        adversary(torch.tensor([0]))
    with pytest.raises(ValueError, match="at least 2 training speakers"):
        adversary.attach(small_model(), ["a", "a"])
    adversary.attach(small_model(), ["a", "b"])
    with pytest.raises(ValueError, match=r"not in the training set: \['z'\]"):
        adversary.speaker_indices(["a", "z"])


def test_the_head_reads_the_pooled_vector_before_the_classifiers_dropout_in_training():
    """In training the classifier drops part of its input; the speaker head must see the whole
    pooled vector, as the pooling gave it. A second ``attach`` replaces the hook, and the
    modules' training modes are kept as they were."""
    torch.manual_seed(0)
    model = HNSD(hidden_size=8, fc_size=4, n_classes=4, dropout=0.5).train()
    model.fusion.eval()  # a part left in eval mode stays so
    adversary = SpeakerAdversary(weight=0.3)
    adversary.attach(model, ["a", "b"])
    adversary.attach(model, ["a", "b"])
    assert len(model.classifier._forward_pre_hooks) == 1
    assert model.training and model.classifier.training and not model.fusion.training
    static, dynamic = torch.randn(2, 9, 26), torch.randn(2, 9, 52)
    model(static, dynamic)
    kept = adversary._pooled["u"]
    u, _ = model.pooling(model.frames(static, dynamic), None, True)
    torch.testing.assert_close(kept, u)
    assert (kept != 0).all()  # dropout at 0.5 would have zeroed some


def load_diagnose():
    import importlib.util
    import os

    path = os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        "recipes", "RAVDESS", "hnsd", "diagnose.py",
    )  # fmt: skip
    spec = importlib.util.spec_from_file_location("ravdess_diagnose", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_speaker_probe_learns_from_one_set_and_is_scored_on_the_other():
    """``diagnose.py --speaker_probe``: separable speakers are told apart on held-out
    utterances; held-out utterances whose vectors belong to other speakers are all wrong, so
    the score is on the held-out set alone."""
    probe = load_diagnose().speaker_probe
    gen = torch.Generator().manual_seed(1)
    centres = 4 * torch.randn(3, 6, generator=gen)
    speakers = ["a", "b", "c"] * 8
    pooled = centres.repeat(8, 1) + 0.3 * torch.randn(24, 6, generator=gen)
    held_out = torch.arange(24) >= 12
    assert probe(pooled, speakers, held_out)["acc"] == 1.0
    swapped = pooled.clone()
    swapped[12:] = centres[[1, 2, 0]].repeat(4, 1)  # each held-out vector is another speaker's
    result = probe(swapped, speakers, held_out)
    assert (result["acc"], result["scored"], result["speakers"]) == (0.0, 12, 3)
