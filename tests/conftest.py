"""Session fixtures shared by the test modules: one generated IEMOCAP-format corpus, and one tiny
HNSD trained on it by the IEMOCAP recipe (one epoch) and exported to a model folder; and
``compare_rows``, which runs the RAVDESS recipe's ``compare_rows.py``.

The modules that need a trained model (``test_inference``, ``test_finetune``) read these and
never change them: a test that edits a folder copies it first.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hnsd_sb.synthetic import make_synthetic_iemocap

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "IEMOCAP" / "hnsd"
# The shared model's sizes, which a fine-tuning run from it must repeat.
TINY_SIZES = ["--lstm_size=32", "--fc_size=16"]


def compare_rows(*args):
    """Runs the RAVDESS recipe's ``compare_rows.py`` with ``args``; returns its exit status and
    its stdout and stderr together."""
    proc = subprocess.run(
        [sys.executable, "compare_rows.py", *map(str, args)],
        cwd=ROOT / "recipes" / "RAVDESS" / "hnsd",
        capture_output=True,
        text=True,
    )
    return proc.returncode, proc.stdout + proc.stderr


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """A 3-session IEMOCAP-format corpus, one utterance per emotion and speaker (~1 s each)."""
    corpus = tmp_path_factory.mktemp("shared") / "IEMOCAP_full_release"
    make_synthetic_iemocap(
        corpus, n_sessions=3, utterances_per_emotion=1, dropped_per_speaker=0,
        min_duration=0.8, max_duration=1.6,
    )  # fmt: skip
    return corpus


@pytest.fixture(scope="session")
def tiny_run(tiny_corpus):
    """A one-epoch run of the IEMOCAP recipe on ``tiny_corpus`` (its folder ``run`` beside the
    corpus, with the run's console output in ``stdout.txt`` and ``stderr.txt``)."""
    base = tiny_corpus.parent
    out = base / "run"
    proc = subprocess.run(
        [sys.executable, str(RECIPE / "train.py"), str(RECIPE / "hparams" / "hnsd.yaml"),
         f"--data_folder={tiny_corpus}", f"--output_folder={out}", *TINY_SIZES,
         "--num_workers=0", "--number_of_epochs=1"],
        env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    (base / "stdout.txt").write_text(proc.stdout)
    (base / "stderr.txt").write_text(proc.stderr)
    return out


@pytest.fixture(scope="session")
def tiny_model(tiny_run):
    """``tiny_run`` exported to a model folder (``model`` beside the run)."""
    from hnsd_sb.export import export_model

    return export_model(tiny_run, tiny_run.parent / "model")
