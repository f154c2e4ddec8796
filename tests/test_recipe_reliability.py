"""Messy input given to the IEMOCAP recipe's train.py: bad audio, bad rows, bad manifests.

The recipe runs on manifests of a generated corpus to which bad rows are added. Each bad row
must stop the run before anything is trained, with an error naming the manifest, the row's line
and ID, the file and the problem; with ``--skip_bad_rows=True`` the run trains without them and
reports how many it skipped. Audio that is merely unusual (8 and 24 bit, stereo, 44.1 and 48 kHz,
a 60 s utterance) trains and is evaluated like any other. ``tests/test_audio.py`` and
``tests/test_manifest.py`` test the loading and validation functions themselves.
"""

import contextlib
import csv
import io
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from hnsd_sb.corpora.iemocap import prepare_iemocap
from hnsd_sb.synthetic import make_synthetic_iemocap

pytestmark = pytest.mark.slow  # end-to-end runs of the recipe

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = os.path.join(ROOT, "recipes", "IEMOCAP", "hnsd")
TINY = ["--number_of_epochs=1", "--lstm_size=16", "--fc_size=8", "--num_workers=0"]

# Bad files of the training manifest: name -> (writer, what the error must say).
BAD_TRAIN_FILES = {
    "empty": (lambda p: p.write_bytes(b""), "unreadable as audio"),
    "not_audio": (lambda p: p.write_text("RIFF? no, a text file\n"), "unreadable as audio"),
    "truncated": (lambda p: p.write_bytes(wav_bytes(16000)[:16000]), "truncated: the WAV header"),
    "no_samples": (lambda p: sf.write(str(p), np.zeros(0), 16000), "empty file (0 samples)"),
    "too_short": (lambda p: sf.write(str(p), np.zeros(300), 16000), "too short: 0.01875 s"),
    "nan": (lambda p: write_float(p, np.nan), "1 samples are NaN"),
    "inf": (lambda p: write_float(p, np.inf), "1 samples are Inf"),
    "loud": (lambda p: write_float(p, 1e29), "samples reach 1e+29: float audio is nominally"),
    "half_flac": (lambda p: write_half_flac(p), "cannot decode samples"),
    "float_1hz": (  # float samples, so the decoding check reads it too: one report, not two
        lambda p: sf.write(str(p), np.zeros(100, np.float32), 1, subtype="FLOAT"),
        "implausible sampling rate 1 Hz",
    ),
    "duration_lie": (
        lambda p: sf.write(str(p), np.zeros(48000), 16000),
        "the duration column says 0.5 s but the file holds 3 s",
    ),
    "fifo": (lambda p: os.mkfifo(p), "not a regular file"),  # must not block preflight
    "missing": (lambda p: None, "file not found"),
}
# Rows whose duration column lies about their (good) file.
LISTED_DURATIONS = {"duration_lie": "0.5"}


def wav_bytes(n):
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros(n), 16000, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def write_half_flac(path):
    """The first half of a FLAC file: its header still promises every sample."""
    samples = np.random.default_rng(0).normal(0, 0.1, 32000)
    sf.write(str(path), samples, 16000, format="FLAC")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def write_float(path, value):
    samples = np.full(16000, 0.1, dtype=np.float32)
    samples[8000] = value
    sf.write(str(path), samples, 16000, subtype="FLOAT")


def read_manifest(path):
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def write_manifest(path, columns, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def variant(row, uid, wav, **changes):
    """A copy of a manifest row for another file."""
    new = dict(row, ID=uid, wav=str(wav), **changes)
    new["duration"] = "1.0"  # a bad file: its manifest row says 1 s
    if os.path.isfile(wav):  # not a FIFO: opening one would wait for a writer
        with contextlib.suppress(sf.LibsndfileError, RuntimeError):
            new["duration"] = f"{sf.info(str(wav)).duration:.3f}"
    return new


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Prepared manifests of a generated corpus, bad files and unusual but good files."""
    tmp = tmp_path_factory.mktemp("messy")
    corpus = tmp / "IEMOCAP_full_release"
    make_synthetic_iemocap(corpus, n_sessions=5, utterances_per_emotion=2, dropped_per_speaker=0)
    prepare_iemocap(corpus, tmp / "prep", fold=1)
    manifests = {s: read_manifest(tmp / "prep" / f"{s}.csv") for s in ("train", "valid", "test")}
    columns = manifests["train"][0]

    bad, good = tmp / "bad", tmp / "unusual"
    bad.mkdir()
    good.mkdir()
    template = manifests["train"][1][0]
    bad_rows = []
    for name, (write, _) in BAD_TRAIN_FILES.items():
        write(bad / f"{name}.wav")
        bad_rows.append(variant(template, f"bad_{name}", bad / f"{name}.wav"))
        if name in LISTED_DURATIONS:
            bad_rows[-1]["duration"] = LISTED_DURATIONS[name]

    # Unusual but usable versions of a real utterance.
    source = manifests["test"][1][0]
    speech, rate = sf.read(source["wav"].replace("$data_root", str(corpus)), dtype="float32")
    assert rate == 16000
    versions = {
        "pcm8": (speech, 16000, "PCM_U8"),
        "pcm24": (speech, 16000, "PCM_24"),
        "stereo": (np.stack([speech, 0.5 * speech], axis=1), 16000, "PCM_16"),
        "rate44k": (resample(speech, 44100), 44100, "PCM_16"),
        "rate48k": (resample(speech, 48000), 48000, "PCM_16"),
        "long60s": (np.resize(speech, 60 * 16000), 16000, "PCM_16"),
    }
    unusual_rows = []
    for name, (samples, sample_rate, subtype) in versions.items():
        sf.write(str(good / f"{name}.wav"), samples, sample_rate, subtype=subtype)
        unusual_rows.append(variant(source, f"unusual_{name}", good / f"{name}.wav"))

    paths = {}
    train = (
        manifests["train"][1] + bad_rows + [dict(r, ID="train_" + r["ID"]) for r in unusual_rows]
    )
    paths["train"] = write_manifest(tmp / "train.csv", columns, train)
    # valid: an emotion the training manifest lacks; test: a missing file.
    unknown = dict(manifests["valid"][1][0], ID="unknown_label", emo="fru")
    paths["valid"] = write_manifest(tmp / "valid.csv", columns, manifests["valid"][1] + [unknown])
    gone = variant(manifests["test"][1][1], "gone", bad / "gone.wav")
    test = manifests["test"][1] + unusual_rows + [gone]
    paths["test"] = write_manifest(tmp / "test.csv", columns, test)
    return {"corpus": corpus, "paths": paths, "columns": columns, "manifests": manifests}


def resample(samples, rate):
    return torchaudio.functional.resample(torch.from_numpy(samples), 16000, rate).numpy()


def train(data, out, *extra, paths=None):
    """Runs train.py on the given manifests; returns (return code, output)."""
    paths = paths or data["paths"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [
        sys.executable,
        "train.py",
        "hparams/hnsd.yaml",
        f"--data_folder={data['corpus']}",
        f"--output_folder={out}",
        "--prepare_data=null",
        f"--train_annotation={paths['train']}",
        f"--valid_annotation={paths['valid']}",
        f"--test_annotation={paths['test']}",
        *TINY,
        *extra,
    ]
    proc = subprocess.run(cmd, cwd=RECIPE, env=env, capture_output=True, text=True)
    return proc.returncode, proc.stdout + proc.stderr


def line_of(csv_path, uid):
    """Line number of a row in a CSV file (header on line 1)."""
    _, rows = read_manifest(csv_path)
    return 2 + [row["ID"] for row in rows].index(uid)


def assert_nothing_trained(out, output):
    assert "Speaker statistics" not in output and "Going into epoch" not in output
    assert not (out / "save").exists() or not list((out / "save").glob("CKPT+*"))


def test_every_bad_row_is_named_before_training(data, tmp_path):
    code, output = train(data, tmp_path)
    assert code == 2 and "Traceback" not in output
    assert_nothing_trained(tmp_path, output)
    paths = data["paths"]
    for name, (_, reason) in BAD_TRAIN_FILES.items():
        uid, wav = f"bad_{name}", os.path.dirname(paths["train"]) + f"/bad/{name}.wav"
        expected = f"line {line_of(paths['train'], uid)} (ID '{uid}'): {wav}: {reason}"
        assert output.count(expected) == 1, expected
    line = line_of(paths["valid"], "unknown_label")
    assert f"{paths['valid']}: 1 of " in output
    assert f"line {line} (ID 'unknown_label'): unknown emotion label 'fru'" in output
    line = line_of(paths["test"], "gone")
    assert f"{paths['test']}: 1 of " in output
    assert f"line {line} (ID 'gone'): " in output and "gone.wav: file not found" in output


def test_skip_bad_rows_trains_without_them_and_counts_them(data, tmp_path):
    code, output = train(data, tmp_path, "--skip_bad_rows=True")
    assert code == 0, output[-4000:]
    n_bad = len(BAD_TRAIN_FILES)
    assert re.search(rf"Skipped {n_bad} bad rows, using {tmp_path}/train\.clean\.csv", output)
    # The list of bad rows is logged once.
    assert output.count(f"Skipped them; wrote {tmp_path}/train.clean.csv") == 1
    assert f"Skipped 1 bad rows, using {tmp_path}/valid.clean.csv" in output
    assert f"Skipped 1 bad rows, using {tmp_path}/test.clean.csv" in output
    _, train_rows = read_manifest(tmp_path / "train.clean.csv")
    train_ids = {row["ID"] for row in train_rows}
    assert not any(uid.startswith("bad_") for uid in train_ids)
    assert len(train_ids) == len(data["manifests"]["train"][1]) + 6
    # The unusual files (8 / 24 bit, stereo, 44.1 / 48 kHz, 60 s) were trained on and tested.
    _, predictions = read_manifest(tmp_path / "predictions.csv")
    tested = {row["ID"] for row in predictions}
    unusual = {f"unusual_{n}" for n in ("pcm8", "pcm24", "stereo", "rate44k", "rate48k", "long60s")}
    assert unusual <= tested and "gone" not in tested
    assert len(tested) == len(data["manifests"]["test"][1]) + len(unusual)
    assert "test UA" in (tmp_path / "train_log.txt").read_text()


def test_missing_column_and_misspelt_label_are_named_before_training(data, tmp_path):
    columns, rows = data["manifests"]["train"]
    train_csv = write_manifest(
        tmp_path / "train.csv", columns, rows + [dict(rows[0], ID="typo", emo="Neu")]
    )
    valid_columns = [c for c in columns if c != "emo"]
    valid_rows = [{c: r[c] for c in valid_columns} for r in data["manifests"]["valid"][1]]
    valid_csv = write_manifest(tmp_path / "valid.csv", valid_columns, valid_rows)
    paths = dict(data["paths"], train=train_csv, valid=valid_csv)
    out = tmp_path / "out"
    code, output = train(data, out, "--skip_bad_rows=True", paths=paths)  # cannot be skipped
    assert code == 2 and "Traceback" not in output
    assert_nothing_trained(out, output)
    assert f"{train_csv}: 5 emotions, but n_classes is 4" in output
    assert f"'Neu': 1 row, first on line {len(rows) + 2}" in output
    assert f"{valid_csv}: missing column(s) emo" in output
