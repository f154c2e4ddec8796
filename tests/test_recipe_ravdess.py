"""End-to-end test of the RAVDESS recipe on a 3-actor subset of the real recordings.

Skips where the shared RAVDESS copy (``../shared/data/ravdess``) is absent, as on a user's machine.
The subset is a folder of symbolic links in a temporary directory: no audio is copied.
"""

import csv
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RAVDESS = os.path.join(os.path.dirname(ROOT), "shared", "data", "ravdess")
RECIPE = os.path.join(ROOT, "recipes", "RAVDESS", "hnsd")

pytestmark = pytest.mark.skipif(
    not os.path.isdir(RAVDESS), reason="RAVDESS copy not found at ../shared/data/ravdess"
)


@pytest.fixture(scope="module")
def subset(tmp_path_factory):
    root = tmp_path_factory.mktemp("ravdess")
    for actor in ("Actor_01", "Actor_05", "Actor_09"):  # one actor of each of folds 1, 2, 3
        (root / actor).mkdir()
        for name in os.listdir(os.path.join(RAVDESS, actor)):
            os.symlink(os.path.join(RAVDESS, actor, name), root / actor / name)
    return root


def test_two_epoch_run_on_three_actors(subset, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [
        sys.executable,
        "train.py",
        "hparams/hnsd.yaml",
        f"--data_folder={subset}",
        f"--output_folder={tmp_path}",
        "--fold=1",
        "--label_set=four",
        "--n_classes=4",
        "--number_of_epochs=2",
        "--lstm_size=16",
        "--fc_size=8",
        "--num_workers=0",
    ]
    proc = subprocess.run(cmd, cwd=RECIPE, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

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
