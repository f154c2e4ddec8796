"""End-to-end test of the RAVDESS recipe on a 3-actor subset of the real recordings.

Skips where the shared RAVDESS copy (``../shared/data/ravdess``) is absent, as on a user's machine.
The subset is a folder of symbolic links in a temporary directory: no audio is copied.
"""

import csv
import json
import os
import re
import subprocess
import sys

import pytest
from conftest import compare_rows as compare

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RAVDESS = os.path.join(os.path.dirname(ROOT), "shared", "data", "ravdess")
RECIPE = os.path.join(ROOT, "recipes", "RAVDESS", "hnsd")

pytestmark = [
    pytest.mark.slow,  # end-to-end runs of the recipe
    pytest.mark.skipif(
        not os.path.isdir(RAVDESS), reason="RAVDESS copy not found at ../shared/data/ravdess"
    ),
]


@pytest.fixture(scope="module")
def subset(tmp_path_factory):
    root = tmp_path_factory.mktemp("ravdess")
    for actor in ("Actor_01", "Actor_05", "Actor_09"):  # one actor of each of folds 1, 2, 3
        (root / actor).mkdir()
        for name in os.listdir(os.path.join(RAVDESS, actor)):
            os.symlink(os.path.join(RAVDESS, actor, name), root / actor / name)
    return root


def train_two_epochs(hparams_file, data_folder, output_folder):
    """Runs the recipe's train.py, tiny model, fold 1 of the 4-class set; fails on an error."""
    cmd = [
        sys.executable,
        "train.py",
        hparams_file,
        f"--data_folder={data_folder}",
        f"--output_folder={output_folder}",
        "--fold=1",
        "--label_set=four",
        "--n_classes=4",
        "--number_of_epochs=2",
        "--lstm_size=16",
        "--fc_size=8",
        "--num_workers=0",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=RECIPE, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_two_epoch_run_on_three_actors(subset, tmp_path):
    train_two_epochs("hparams/hnsd.yaml", subset, tmp_path)

    def actors(split):
        with open(tmp_path / f"{split}.csv", newline="", encoding="utf-8") as f:
            return {row["spk_id"] for row in csv.DictReader(f)}

    # Fold 1 tests actors 1-4 and validates on actors 5-8; the rest train.
    assert (actors("train"), actors("valid"), actors("test")) == (
        {"Actor_09"},
        {"Actor_05"},
        {"Actor_01"},
    )
    results = json.load(open(tmp_path / "test_results.json", encoding="utf-8"))
    assert results["labels"] == ["ang", "hap", "neu", "sad"]
    assert results["n"] == 28  # 4 neutral + 8 each of happy, sad, angry
    log = open(tmp_path / "train_log.txt", encoding="utf-8").read()
    assert log.count("epoch:") == 2 and "test UA" in log


def test_improved_settings_weight_classes_and_checkpoint_the_schedule(subset, tmp_path):
    """hnsd_improved.yaml: class-balanced loss, augmentation and NewBob annealing all run, the
    weights follow the training set's counts, and the schedule is part of the checkpoint."""
    train_two_epochs("hparams/hnsd_improved.yaml", subset, tmp_path)
    log = open(tmp_path / "log.txt", encoding="utf-8").read()
    # Actor 9 trains: 4 neutral and 8 each of ang, hap, sad -> 28 / (4 * count), sorted labels.
    assert "Class weights: [0.875, 0.875, 1.75, 0.875]" in log
    checkpoints = [d for d in os.listdir(tmp_path / "save") if d.startswith("CKPT")]
    assert checkpoints
    assert os.path.exists(tmp_path / "save" / checkpoints[0] / "lr_annealing.ckpt")
    assert json.load(open(tmp_path / "test_results.json", encoding="utf-8"))["n"] == 28


def test_run_experiments_trains_folds_in_parallel_and_reports_the_missing(subset, tmp_path):
    """run_experiments.sh: two folds at once (JOBS=2), then a report naming the folds not run."""
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        PYTHON=sys.executable,
        ROWS="four/mean_pooling",
        FOLDS="1 2",
        JOBS="2",
        EXP=str(tmp_path),
        EPOCHS="1",
        ARGS="--lstm_size=8 --fc_size=4 --num_workers=0",
    )
    cmd = ["bash", "run_experiments.sh", str(subset)]
    proc = subprocess.run(cmd, cwd=RECIPE, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "done four/mean_pooling fold 1" in proc.stdout
    assert "done four/mean_pooling fold 2" in proc.stdout
    row = tmp_path / "four" / "mean_pooling"
    hparams = open(row / "fold1" / "hyperparams.yaml", encoding="utf-8").read()
    assert re.search(r"\npooling: (&\w+ )?!name:hnsd_sb.MeanPooling\n", hparams)
    assert "number_of_epochs: 1" in hparams
    report = open(row / "cv_results.md", encoding="utf-8").read()
    assert "Not finished: fold(s) 3, 4, 5, 6" in report
    assert (row / "confusion_sum.png").exists()
    # The reference comparison reads the same folders.
    code, out = compare(row, row)
    assert code == 0 and "| 2 |" in out and "reference" in out, out
    # An ensemble.py output is a row too (UA only); --validation and --timing read the logs.
    ensemble = tmp_path / "ensemble.jsonl"
    lines = [{"fold": k, "ensemble test UA": 50.0, "ensemble valid UA": 40.0} for k in (1, 2)]
    ensemble.write_text("".join(json.dumps(line) + "\n" for line in lines + [{"mean": 1}]))

    code, out = compare(row, ensemble)
    assert code == 0 and "| 2 | n/a | 50.00 ± 0.00 |" in out, out
    # Rows joined by "+" are their mean per fold: a row with itself is the row, paired 0.
    code, out = compare(row, f"{row}+{row}")
    own = re.search(r"\| 2 \| ([\d.]+ ± [\d.]+) \| ([\d.]+ ± [\d.]+) \| reference", out)
    assert code == 0 and own and f"| 2 | {own[1]} | {own[2]} | 0.00 ± 0.00 | 0 / 2 |" in out, out
    uas = [json.load(open(row / f"fold{k}" / "test_results.json"))["UA"] for k in (1, 2)]
    mean = sum(100 * (ua + 0.5) / 2 for ua in uas) / 2  # with the ensemble's 50 %, no WA
    code, out = compare(row, f"{row}+{ensemble}")
    assert code == 0 and f"| 2 | n/a | {mean:.2f} ± " in out, out
    code, own = compare("--validation", 1, row)
    # best and last-K validation UA, then the last K epochs' training and validation losses
    assert re.search(r"\| 2 \| [\d.]+ \| [\d.]+ \| \d+\.\d{3} \| \d+\.\d{3} \| 1: ", own), own
    code, out = compare("--validation", 1, f"{row}+{row}")
    assert code == 0 and own.split("| 2 |")[1] == out.split("| 2 |")[1], out
    # Only the folds that every row finished count, and the others are named; "A+" is refused.
    partial = tmp_path / "partial.jsonl"
    partial.write_text(json.dumps({"fold": 1, "ensemble test UA": 60.0}) + "\n")
    code, out = compare(f"{row}+{partial}", row)
    assert code == 0 and "fold(s) [2] left out" in out and "reference" in out, out
    code, out = compare(row, f"{row}+")
    assert code == 1 and "an empty row between the + signs" in out, out
    code, out = compare("--validation", 1, row)
    assert code == 0 and re.search(r"1: [\d.]+ / [\d.]+ \(1 ep\), 2: ", out), out
    code, out = compare("--timing", row)
    assert code == 0 and re.search(r"\| fold1 \| 1 \| [\d.]+ \| \d+ \|", out), out
    code, out = compare("--curves", 1, row)
    span = r"\| 1-1 \| [\d.]+ \| [\d.]+ \| [\d.]+ \| [\d.]+ \|  \|"
    assert code == 0 and re.search(rf"\| 1 {span}", out) and re.search(rf"\| 2 {span}", out), out
    code, out = compare("--curves", 1, f"{row}+{row}")  # a mean of rows: each run's curves
    assert code == 0 and len(re.findall(rf"\| 1 {span}", out)) == 2, out
    code, out = compare("--curves", 1, ensemble)
    assert code == 1 and "no fold<k>/train_log.txt with epoch lines" in out, out
    code, out = compare("--curves", 0, row)
    assert code == 2 and "K >= 1" in out
    # A fold without its test results is still running: no time, no validation mean from it.
    (row / "fold2" / "test_results.json").unlink()
    code, out = compare("--timing", row)
    assert code == 0 and "| fold2 | | running | |" in out, out
    code, out = compare("--validation", 1, row)
    assert code == 0 and "(1 ep, running)" in out and re.search(r"\| 1 \| [\d.]+ \|", out), out
    # Bad input: a test figure never printed for --validation 0, errors name the file.
    code, out = compare("--validation", 0, row)
    assert code == 2 and "K >= 1" in out and "| reference |" not in out
    ensemble.write_text(ensemble.read_text() + "oops\n")
    code, out = compare(row, ensemble)
    assert code == 1 and f"{ensemble}, line 4: not a JSON line" in out
    code, out = compare("--metric", "WA", row, tmp_path / "missing.jsonl")
    assert code != 0 and "missing.jsonl" in out


def test_run_experiments_leaves_a_fold_that_another_run_is_training(subset, tmp_path):
    """A second run_experiments.sh on the same folder skips, and names, a fold whose lock a first
    run holds, and leaves its log alone; once the lock is released the fold trains."""
    import fcntl
    import shutil

    if shutil.which("flock") is None:
        pytest.skip("flock(1) is not installed: the script trains without fold locks")
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        PYTHON=sys.executable,
        ROWS="four/mean_pooling",
        FOLDS="1",
        EXP=str(tmp_path),
        EPOCHS="1",
        ARGS="--lstm_size=8 --fc_size=4 --num_workers=0",
    )
    row = tmp_path / "four" / "mean_pooling"
    row.mkdir(parents=True)
    (row / "fold1.out").write_text("the first run's log\n")
    cmd = ["bash", "run_experiments.sh", str(subset)]
    with open(row / "fold1.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what the first run holds
        proc = subprocess.run(cmd, cwd=RECIPE, env=env, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "SKIPPED four/mean_pooling fold 1: another run is training it" in proc.stdout
    assert (row / "fold1.out").read_text() == "the first run's log\n"
    assert not (row / "fold1" / "test_results.json").exists()
    proc = subprocess.run(cmd, cwd=RECIPE, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "done four/mean_pooling fold 1" in proc.stdout


def test_run_experiments_fails_loudly_when_a_fold_fails(subset, tmp_path):
    """A fold whose training fails is named, and the script's exit status says so."""
    env = dict(
        os.environ,
        PYTHON=sys.executable,
        ROWS="four/mean_pooling",
        FOLDS="1",
        EXP=str(tmp_path),
        ARGS="--no_such_key=1",  # train.py stops: the override is not in the hparams file
    )
    cmd = ["bash", "run_experiments.sh", str(subset)]
    proc = subprocess.run(cmd, cwd=RECIPE, env=env, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "FAILED four/mean_pooling fold 1" in proc.stdout
    assert (tmp_path / "four" / "mean_pooling" / "fold1.out").exists()


def test_diagnose_reads_a_trained_model_as_the_recognizer_does(subset, tmp_path):
    """diagnose.py --model_folder: the accuracy is the recognizer's on the same files, with the
    actor enrolled on its files of the model's classes; mean pooling reads as uniform."""
    import torch

    from hnsd_sb import HNSD, EmotionRecognizer
    from hnsd_sb.export import write_model_folder

    labels = ["ang", "hap", "neu", "sad"]

    def diagnose(folder, *actors):
        cmd = [sys.executable, "diagnose.py", f"--data_folder={subset}"]
        cmd += ["--model_folder", str(folder), "--actors", *actors]
        env = dict(os.environ, OMP_NUM_THREADS="1")
        proc = subprocess.run(cmd, cwd=RECIPE, env=env, capture_output=True, text=True)
        return proc.returncode, proc.stdout, proc.stderr

    for pooling in ("attention", "mean"):
        sizes = {"hidden_size": 8, "n_classes": 4, "pooling": pooling}
        torch.manual_seed(0)  # weights scaled up: outputs far from uniform, so they tell
        state = {key: 4 * value for key, value in HNSD(**sizes).state_dict().items()}
        folder = write_model_folder(
            tmp_path / pooling, labels, state, modules={"model": ("hnsd_sb.HNSD", sizes)}
        )
        code, out, err = diagnose(folder, "1")
        assert code == 0, err[-3000:]
        stats = json.loads(out.splitlines()[-1])
        assert stats["files"] == 28  # Actor_01: 4 neutral + 8 each of happy, sad, angry
        recognizer = EmotionRecognizer.from_folder(folder)
        paths = sorted(
            os.path.join(subset, "Actor_01", name)
            for name in os.listdir(os.path.join(subset, "Actor_01"))
            if name.split("-")[2] in ("01", "03", "04", "05")
        )
        recognizer.enroll("Actor_01", paths)
        codes = {"01": "neu", "03": "hap", "04": "sad", "05": "ang"}
        right, loss = [], 0.0
        for path in paths:
            probabilities, _, _, predicted = recognizer.classify_file(path, "Actor_01")
            truth = codes[os.path.basename(path).split("-")[2]]
            right.append(predicted[0] == truth)
            loss -= float(probabilities[0, labels.index(truth)].log()) / len(paths)
        assert stats["acc"] == round(sum(right) / len(right), 4)
        assert abs(stats["loss"] - loss) < 2e-4
        attention = stats["attention"]
        assert 0 < attention["relative_entropy"] <= 1
        assert 0 < attention["silent_frames"] < 1
        if pooling == "mean":
            assert attention["relative_entropy"] == 1.0
            assert attention["on_silence"] == attention["silent_frames"]
    # --speaker_probe: a linear speaker classifier on the pooled vectors, learnt from the first
    # repetitions and scored on the second (14 a speaker), against chance
    code, out, err = diagnose(folder, "1", "5", "--speaker_probe")
    assert code == 0, err[-3000:]
    probe = json.loads(out.splitlines()[-1])["speaker_probe"]
    assert (probe["speakers"], probe["chance"], probe["scored"]) == (2, 0.5, 28)
    assert 0 <= probe["acc"] <= 1
    code, _, err = diagnose(folder, "7")  # not in the subset
    assert code != 0 and "no file of the actors [7]" in err
    sizes = {"hidden_size": 8, "n_classes": 4, "fusion": "concat"}  # no gate to read
    concat = write_model_folder(
        tmp_path / "concat",
        labels,
        HNSD(**sizes).state_dict(),
        modules={"model": ("hnsd_sb.HNSD", sizes)},
    )
    code, _, err = diagnose(concat, "1")
    assert code != 0 and f"{concat}: the statistics need a model with the GMU" in err


def test_a_run_with_the_functionals_expert_exports_and_reproduces_its_test_predictions(
    subset, tmp_path
):
    """The recipe trained with ``--expert``: ``hnsd export`` writes the expert into the model
    folder, and the recognizer gives the run's own test probabilities (``predictions.csv``),
    each actor enrolled on its own utterances as in training."""
    import importlib.util

    import torch

    from hnsd_sb import EmotionRecognizer, FunctionalsExpert

    run = tmp_path / "run"
    cmd = [sys.executable, "train.py", "hparams/hnsd_improved.yaml", f"--data_folder={subset}",
           f"--output_folder={run}", "--fold=1", "--label_set=four", "--n_classes=4",
           "--number_of_epochs=2", "--lstm_size=16", "--fc_size=8", "--num_workers=0",
           "--expert=!name:hnsd_sb.FunctionalsExpert"]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=RECIPE, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    proc = subprocess.run(
        [sys.executable, "-m", "hnsd_sb.cli", "export", str(run), str(tmp_path / "model")],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads((tmp_path / "model" / "model_info.json").read_text())
    assert info["architecture"]["model"]["expert"] is True
    recognizer = EmotionRecognizer.from_folder(tmp_path / "model")
    assert isinstance(recognizer.mods.model.expert, FunctionalsExpert)
    spec = importlib.util.spec_from_file_location("ensemble", os.path.join(RECIPE, "ensemble.py"))
    ensemble = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ensemble)
    rows = ensemble.read_manifest(run / "test.csv", str(subset))
    got = ensemble.probabilities(recognizer, rows)[0]
    with open(run / "predictions.csv", newline="", encoding="utf-8") as f:
        recorded = {row["ID"]: row for row in csv.DictReader(f)}
    expected = torch.tensor(
        [[float(recorded[r["ID"]][f"p_{c}"]) for c in recognizer.labels] for r in rows]
    )
    torch.testing.assert_close(got, expected, atol=2e-6, rtol=0)
