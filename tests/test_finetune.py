"""Tests of fine-tuning: from an exported model to EmoDB (7 emotions) and to generic manifests."""

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import TINY_SIZES

from hnsd_sb.checkpoints import find_checkpoint
from hnsd_sb.export import export_model
from hnsd_sb.inference import EmotionRecognizer
from hnsd_sb.synthetic import synthesize_utterance
from hnsd_sb.weights import VECTOR_NORMALIZER_FILE, find_model_file

pytestmark = pytest.mark.slow  # end-to-end runs of the recipe

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "IEMOCAP" / "hnsd"
SIZES = [*TINY_SIZES, "--num_workers=0"]  # those of the shared pretrained model
# Small batches, so a tiny corpus gives several optimiser steps per epoch.
SMALL_BATCHES = "--dynamic_batch_sampler={max_batch_length: 6, num_buckets: 4}"
# EmoDB emotion code -> synthetic speaking style (seven distinct ones).
EMODB_STYLES = {"W": "ang", "L": "xxx", "E": "fru", "A": "exc", "F": "hap", "T": "sad", "N": "neu"}


def make_synthetic_emodb(root, speakers=("03", "08", "09", "10"), per_emotion=3, seed=0):
    """Writes learnable EmoDB-named recordings (``03a01Wa.wav``...) under ``root/wav``."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "wav"
    folder.mkdir(parents=True)
    for spk in speakers:
        female = spk in ("08", "09")
        voice = dict(
            f0=rng.uniform(185, 240) if female else rng.uniform(95, 135),
            formants=1.15 if female else 1.0,
            gain=rng.uniform(-6, 6),
            tempo=rng.uniform(0.85, 1.15),
            breath=rng.uniform(0.05, 0.2),
        )
        for code, style in EMODB_STYLES.items():
            for k in range(per_emotion):
                audio = synthesize_utterance(rng, voice, style, rng.uniform(0.8, 1.2))
                sf.write(folder / f"{spk}a{k + 1:02d}{code}a.wav", audio, 16000)


def train(hparams, *args, recipe=RECIPE):
    """Runs a recipe's train.py; returns its output, failing the test on an error."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, str(recipe / "train.py"), str(recipe / "hparams" / hparams), *args],
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def epoch_stats(output_folder):
    """Per-epoch (train loss, valid loss, valid UA) from a run's train_log.txt."""
    text = (Path(output_folder) / "train_log.txt").read_text()
    pattern = r"epoch: \d+.*train loss: ([\d.]+).*valid loss: ([\d.]+).*valid UA: ([\d.]+)"
    return [tuple(map(float, m)) for m in re.findall(pattern, text)]


@pytest.fixture(scope="module")
def pretrained(tiny_model, tiny_run):
    """A model folder exported from a one-epoch IEMOCAP run, and the run (``conftest.py``)."""
    return tiny_model, tiny_run


@pytest.fixture(scope="module")
def emodb(tmp_path_factory):
    root = tmp_path_factory.mktemp("emodb")
    make_synthetic_emodb(root)
    return root


def test_finetune_emodb_from_exported_model_learns_seven_emotions(pretrained, emodb, tmp_path):
    model_folder, _ = pretrained
    out = tmp_path / "emodb_run"
    train(
        "finetune.yaml", f"--pretrained_model={model_folder}", f"--data_folder={emodb}",
        f"--output_folder={out}", "--number_of_epochs=6", "--lr=0.01", SMALL_BATCHES, *SIZES,
        recipe=ROOT / "recipes" / "EmoDB" / "hnsd",
    )  # fmt: skip
    log = (out / "log.txt").read_text()
    transferred = rf"Transferred \d+ tensors .*{re.escape(str(model_folder))}.*newly initialised"
    assert re.search(transferred + ": classifier.output", log)
    # the pretrained folder has no vector statistics, and vector_normalization follows it
    assert f"vector_normalization: False, as {model_folder}" in log
    assert "was trained with" not in log
    stats = epoch_stats(out)
    assert len(stats) == 6
    first, last = stats[0], stats[-1]
    assert last[0] < first[0]  # training loss
    assert min(s[1] for s in stats) < first[1]  # validation loss
    assert max(s[2] for s in stats) > first[2]  # validation UA
    labels = (out / "save" / "label_encoder.txt").read_text()
    assert all(f"'{lab}'" in labels for lab in ("ang", "bor", "dis", "fea", "hap", "neu", "sad"))
    # The fine-tuned run exports and classifies like any other.
    recognizer = EmotionRecognizer.from_folder(export_model(out, tmp_path / "emodb_model"))
    assert recognizer.labels == ["ang", "bor", "dis", "fea", "hap", "neu", "sad"]
    probs, _, _, _ = recognizer.classify_file(emodb / "wav" / "03a01Wa.wav")
    assert probs.shape == (1, 7)


def test_finetune_on_generic_manifests_from_a_checkpoint(pretrained, emodb, tmp_path):
    """finetune.yaml on hand-written manifests (only the required columns, absolute and
    $data_root paths), three emotions, starting from the IEMOCAP run's checkpoint folder."""
    _, run = pretrained
    manifests = {}
    speakers = {"train": ("09", "10"), "valid": ("08",), "test": ("03",)}
    for split, spks in speakers.items():
        manifests[split] = tmp_path / f"{split}.csv"
        with open(manifests[split], "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["ID", "duration", "wav", "spk_id", "emo"])
            for path in sorted((emodb / "wav").glob("*.wav")):
                name = path.stem
                if name[:2] in spks and name[5] in "WTN":
                    wav = str(path) if split == "train" else f"$data_root/wav/{path.name}"
                    emo = {"W": "angry", "T": "sad", "N": "calm"}[name[5]]
                    writer.writerow([name, sf.info(path).duration, wav, name[:2], emo])
    checkpoint = find_checkpoint(run).path
    out = tmp_path / "generic_run"
    train(
        "finetune.yaml", f"--pretrained_model={checkpoint}", f"--data_folder={emodb}",
        f"--train_annotation={manifests['train']}", f"--valid_annotation={manifests['valid']}",
        f"--test_annotation={manifests['test']}", "--n_classes=3", f"--output_folder={out}",
        "--number_of_epochs=1", *SIZES,
    )  # fmt: skip
    log = (out / "log.txt").read_text()
    assert "Transferred" in log
    assert "does not say whether it was trained with the pooled vectors z-scored" in log
    assert (out / "save" / "label_encoder.txt").read_text().startswith("'angry' => 0")
    assert (out / "test_results.json").is_file()
    # The encoders started from the checkpoint: after one small step they are still close.
    tuned = torch.load(find_model_file(out), weights_only=True)
    start = torch.load(Path(checkpoint) / "model.ckpt", weights_only=True)
    key = "static_encoder.lstm.weight_ih_l0"
    assert (tuned[key] - start[key]).abs().max() < 0.01
    assert tuned["classifier.output.weight"].shape == (3, 16)


def test_find_model_file_accepts_folders_checkpoints_and_runs(pretrained, tmp_path):
    model_folder, run = pretrained
    best = str(find_checkpoint(run).path / "model.ckpt")
    assert find_model_file(model_folder) == str(model_folder / "model.ckpt")
    assert find_model_file(run) == find_model_file(run / "save") == best
    assert find_model_file(find_checkpoint(run).path) == best
    with pytest.raises(FileNotFoundError, match="no checkpoints"):
        find_model_file(tmp_path)


def test_finetune_follows_the_pretrained_models_vector_normalization(pretrained, emodb, tmp_path):
    """``--vector_normalization=True`` from a model folder trained without it: the log warns
    that the classifier starts on vectors unlike its own; the run gathers the new speakers'
    statistics of the pooled vectors, saves them with its selected checkpoint, and its model
    folder z-scores its vectors. Fine-tuning that folder in turn, with the default (null),
    keeps the z-score."""
    model_folder, _ = pretrained
    out = tmp_path / "vector_run"
    common = [f"--data_folder={emodb}", "--number_of_epochs=1", *SIZES]
    emodb_recipe = ROOT / "recipes" / "EmoDB" / "hnsd"
    train(
        "finetune.yaml", f"--pretrained_model={model_folder}", f"--output_folder={out}",
        "--vector_normalization=True", *common, recipe=emodb_recipe,
    )  # fmt: skip
    log = (out / "log.txt").read_text()
    warning = "trained without the pooled vectors z-scored per speaker, but vector_normalization"
    assert f"{warning} is True" in log
    assert (Path(find_checkpoint(out).path) / VECTOR_NORMALIZER_FILE).is_file()
    vector_model = export_model(out, tmp_path / "vector_model")
    recognizer = EmotionRecognizer.from_folder(vector_model)
    assert len(recognizer.vector_norms) == 1
    assert "03" in recognizer.vector_norms[0].statistics.speakers  # a test speaker of fold 1
    again = tmp_path / "again"
    train(
        "finetune.yaml", f"--pretrained_model={vector_model}", f"--output_folder={again}",
        *common, recipe=emodb_recipe,
    )  # fmt: skip
    log = (again / "log.txt").read_text()
    assert f"vector_normalization: True, as {vector_model}" in log
    assert "was trained with" not in log
    assert (Path(find_checkpoint(again).path) / VECTOR_NORMALIZER_FILE).is_file()
    # its hparams say null; the export goes by what the run saved
    again_model = EmotionRecognizer.from_folder(export_model(again, tmp_path / "again_model"))
    assert len(again_model.vector_norms) == 1
