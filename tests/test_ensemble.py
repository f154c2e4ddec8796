"""Tests of ensembles: ``HNSDEnsemble``, ``EmotionRecognizer.from_folders`` and
``hnsd predict --model A --model B``."""

import importlib.util
import json
import os

import numpy as np
import pytest
import soundfile as sf
import torch
from speechbrain.augment.time_domain import SpeedPerturb

from hnsd_sb import HNSD, SpeakerNormalization
from hnsd_sb.cli import main
from hnsd_sb.ensemble import HNSDEnsemble
from hnsd_sb.export import write_model_folder
from hnsd_sb.inference import EmotionRecognizer
from hnsd_sb.synthetic import synthesize_utterance

LABELS = ["ang", "hap", "neu", "sad"]
SIZES = {"hidden_size": 16, "fc_size": 8, "n_classes": 4}
VOICE = dict(f0=120.0, formants=1.0, gain=0.0, tempo=1.0, breath=0.1)


def normalizer_state(seed=0):
    torch.manual_seed(seed)
    norm = SpeakerNormalization()
    norm.accumulate(torch.randn(1, 50, 78), torch.ones(1), ["spk1"])
    return norm.state()


def export(folder, seed, labels=LABELS, state=None, modules=None):
    """A model folder of a randomly initialised HNSD (``seed``), the shared statistics."""
    torch.manual_seed(seed)
    weights = HNSD(**SIZES).state_dict()
    modules = modules or {"model": ("hnsd_sb.HNSD", SIZES)}
    return write_model_folder(folder, labels, weights, state or normalizer_state(), modules=modules)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    base = tmp_path_factory.mktemp("ensemble")
    return [export(base / f"seed{seed}", seed) for seed in (1, 2, 3)]


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    path = tmp_path_factory.mktemp("audio") / "angry.wav"
    rng = np.random.default_rng(0)
    sf.write(path, synthesize_utterance(rng, VOICE, "ang", 1.5), 16000)
    return path


def padded_batch():
    generator = torch.Generator().manual_seed(0)
    return torch.randn(3, 16000, generator=generator), torch.tensor([1.0, 0.7, 0.4])


def test_ensemble_is_the_mean_of_its_members_probabilities_and_attention():
    torch.manual_seed(0)
    members = [HNSD(hidden_size=8, n_classes=3).eval() for _ in range(3)]
    x = torch.randn(2, 12, 26), torch.randn(2, 12, 52), torch.tensor([1.0, 0.5])
    log_probs, attention = HNSDEnsemble(members)(*x, return_attention=True)
    outs = [m(*x, return_attention=True) for m in members]
    expected = torch.stack([lp.exp() for lp, _ in outs]).mean(0)
    assert torch.allclose(log_probs.exp(), expected, atol=1e-6)
    assert torch.allclose(attention, torch.stack([a for _, a in outs]).mean(0))
    assert torch.allclose(attention.sum(1), torch.ones(2))
    assert float(attention[1, 6:].abs().max()) == 0.0  # padding gets no weight
    # One member: exactly that member.
    alone, weights = HNSDEnsemble(members[:1])(*x, return_attention=True)
    assert torch.allclose(alone, outs[0][0], atol=1e-6) and torch.equal(weights, outs[0][1])
    with pytest.raises(ValueError, match="at least one member"):
        HNSDEnsemble([])


def test_from_folders_averages_the_members_on_a_padded_batch(folders):
    wavs, lens = padded_batch()
    speakers = ["spk1", "someone", "spk1"]  # a known speaker and an unseen one
    both = EmotionRecognizer.from_folders(folders, run_opts={"device": "cpu"})
    assert isinstance(both.mods.model, HNSDEnsemble) and len(both.mods.model.members) == 3
    probs, score, index, labels = both.classify_batch(wavs, lens, speakers)
    alone = [EmotionRecognizer.from_folder(f, run_opts={"device": "cpu"}) for f in folders]
    expected = sum(r.classify_batch(wavs, lens, speakers)[0] for r in alone) / len(alone)
    assert torch.allclose(probs, expected, atol=1e-6)
    assert labels == [LABELS[i] for i in expected.argmax(1).tolist()]
    # The members disagree, or the test would not tell an ensemble from one model.
    assert not torch.allclose(alone[0].classify_batch(wavs, lens, speakers)[0], expected)
    single = EmotionRecognizer.from_folders(folders[:1], run_opts={"device": "cpu"})
    assert not isinstance(single.mods.model, HNSDEnsemble)


def test_from_folders_with_other_backends(folders, tmp_path):
    wavs, lens = padded_batch()
    both = EmotionRecognizer.from_folders(folders[:2], backend="torch-int8")
    alone = [EmotionRecognizer.from_folder(f, backend="torch-int8") for f in folders[:2]]
    expected = sum(r.classify_batch(wavs, lens)[0] for r in alone) / 2
    assert torch.allclose(both.classify_batch(wavs, lens)[0], expected, atol=1e-6)
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    onnx_folders = [
        write_model_folder(
            tmp_path / f"onnx{seed}", LABELS, HNSD(**SIZES).state_dict(), normalizer_state(),
            modules={"model": ("hnsd_sb.HNSD", SIZES)}, onnx=True,
        )
        for seed in (1, 2)
    ]  # fmt: skip
    fp32 = EmotionRecognizer.from_folders(onnx_folders).infer_batch(wavs, lens)[0]
    onnx = EmotionRecognizer.from_folders(onnx_folders, backend="onnx")
    assert [type(m).__name__ for m in onnx.mods.model.members] == ["OnnxNetwork"] * 2
    assert torch.allclose(onnx.infer_batch(wavs, lens)[0], fp32, atol=1e-4)


def test_from_folders_refuses_members_that_do_not_match(folders, tmp_path):
    other_labels = export(tmp_path / "labels", 4, labels=["sad", "neu", "hap", "ang"])
    with pytest.raises(ValueError, match=f"{other_labels}: its labels .* differ from those of"):
        EmotionRecognizer.from_folders([folders[0], other_labels])
    other_speakers = export(tmp_path / "speakers", 4, state=normalizer_state(seed=5))
    with pytest.raises(ValueError, match=f"{other_speakers}: its speaker statistics differ"):
        EmotionRecognizer.from_folders([folders[0], other_speakers])
    trimmed = {"model": ("hnsd_sb.HNSD", SIZES)}
    trimmed["features"] = ("hnsd_sb.StaticDynamicFeatures", {"trim_db": 40.0})
    other_features = export(tmp_path / "features", 4, modules=trimmed)
    with pytest.raises(ValueError, match=f"{other_features}: its features .* differ"):
        EmotionRecognizer.from_folders([folders[0], other_features])
    with pytest.raises(ValueError, match="no model folder"):
        EmotionRecognizer.from_folders([])


def test_predict_with_several_models_writes_their_average(folders, recording, tmp_path, capsys):
    def predict(*models, extra=()):
        out = tmp_path / "out.jsonl"
        args = [a for m in models for a in ("--model", str(m))]
        assert main(["predict", *args, *extra, "-q", "-o", str(out), str(recording)]) == 0
        return [json.loads(line) for line in out.read_text().splitlines()]

    singles = [predict(folder)[0]["probabilities"] for folder in folders[:2]]
    record = predict(*folders[:2])[0]
    for label in LABELS:
        mean = (singles[0][label] + singles[1][label]) / 2
        assert record["probabilities"][label] == pytest.approx(mean, abs=2e-6)
    assert record["label"] == max(record["probabilities"], key=record["probabilities"].get)
    windows = predict(*folders[:2], extra=("--segment", "1", "--hop", "0.5"))
    assert windows[-1]["window"] == "summary" and len(windows) == 3
    # A bad second folder is named, and nothing is classified.
    assert main(["predict", "--model", str(folders[0]), "--model", "/no/such", str(recording)]) == 2
    assert "/no/such: not a model folder" in capsys.readouterr().err


def load_recipe_ensemble():
    """The RAVDESS recipe's ``ensemble.py``, imported as a module."""
    path = os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        "recipes",
        "RAVDESS",
        "hnsd",
        "ensemble.py",
    )
    spec = importlib.util.spec_from_file_location("ravdess_ensemble", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_playing_at_speeds_is_what_training_augmentation_plays(folders):
    recipe = load_recipe_ensemble()
    recognizer = EmotionRecognizer.from_folder(folders[0])
    wavs, lens = padded_batch()
    probs = recipe.at_speeds(recognizer, wavs, lens, ["spk1"] * 3, [100, 90, 110])
    assert probs.shape == (3, 3, len(LABELS))
    # at 100 % it is the plain recogniser; at 90 and 110 % what training's SpeedPerturb plays
    assert torch.allclose(probs[0], recognizer.classify_batch(wavs, lens, "spk1")[0], atol=1e-6)
    for k, speed in ((1, 90), (2, 110)):
        played = SpeedPerturb(16000, speeds=[speed])(wavs)
        expected = recognizer.classify_batch(played, lens, "spk1")[0]
        assert torch.allclose(probs[k], expected, atol=1e-6)
        assert not torch.allclose(probs[k], probs[0], atol=1e-3)


def test_scoring_over_some_classes_ignores_the_others():
    recipe = load_recipe_ensemble()
    labels = ["ang", "cal", "hap", "sad"]
    rows = [{"emo": e} for e in ("ang", "cal", "hap", "sad")]
    # calm is most probable for every utterance, so over all classes only calm is right
    probs = torch.tensor(
        [[0.3, 0.4, 0.2, 0.1], [0.1, 0.6, 0.2, 0.1], [0.1, 0.5, 0.3, 0.1], [0.3, 0.4, 0.1, 0.2]]
    )
    assert recipe.ua(probs, rows, labels) == 25.0
    # over angry and happy: the calm and sad utterances are left out, the other two are right
    assert recipe.ua(probs, rows, labels, ["ang", "hap"]) == 100.0
    # over angry and sad: the sad utterance now counts, and is taken for angry
    assert recipe.ua(probs, rows, labels, ["ang", "sad"]) == 50.0
    with pytest.raises(ValueError, match=r"\['sur'\]: not among the labels"):
        recipe.ua(probs, rows, labels, ["ang", "sur"])
