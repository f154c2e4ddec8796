"""The recipes' ``tests_recipes.csv`` rows, run as SpeechBrain's recipe tests run them.

SpeechBrain runs each row of ``tests/recipes/<Dataset>.csv`` from the root of its source tree,
in the order of the row ids, with the files that it ships under ``tests/samples``. Here a root of
the same layout is built in a temporary folder: the recipe folders, and stand-ins for the two
sample annotations the rows name (``ASR_train.json``, ``ASR_dev.json``: the same JSON layout
and emotion labels, with generated audio).
"""

import csv
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from hnsd_sb.synthetic import synthesize_utterance

pytestmark = pytest.mark.slow  # end-to-end runs of the recipe

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").glob("*/hnsd"))
# SpeechBrain's sample annotations: 8 training utterances of 2 speakers with these emotions,
# 2 validation ones; each emotion gets one of the generator's speaking styles.
SAMPLES = {
    "ASR_train": [("anger", "ang")] * 3
    + [("sadness", "sad")] * 3
    + [("happiness", "hap")]
    + [("neutrality", "neu")],
    "ASR_dev": [("anger", "ang"), ("sadness", "sad")],
}


def read_rows(recipe):
    with open(recipe / "tests_recipes.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f, skipinitialspace=True))


def test_every_hparams_file_has_a_row_and_every_listed_file_exists():
    """SpeechBrain's consistency rules: one row per hparams file, and no row names a file the
    recipe lacks."""
    for recipe in RECIPES:
        rows = read_rows(recipe)
        listed = sorted(r["Hparam_file"] for r in rows)
        own = sorted(str(p.relative_to(ROOT)) for p in (recipe / "hparams").glob("*.yaml"))
        assert listed == own, recipe
        for row in rows:
            assert row["Dataset"] == recipe.parent.name
            for field in ("Script_file", "Hparam_file", "Data_prep_file", "Readme_file"):
                for name in row[field].split():
                    assert (ROOT / name).exists(), f"{recipe}: {field} {name}"


@pytest.fixture(scope="module")
def sb_root(tmp_path_factory):
    """A SpeechBrain-like root: recipes/ and tests/recipes/*.csv and tests/samples stand-ins."""
    root = tmp_path_factory.mktemp("speechbrain")
    for recipe in RECIPES:
        target = root / recipe.relative_to(ROOT)
        # links (RAVDESS's train.py is the IEMOCAP recipe's) stay links, into the copy
        shutil.copytree(recipe, target, symlinks=True, ignore=shutil.ignore_patterns("experiments"))
        tables = root / "tests" / "recipes"
        tables.mkdir(parents=True, exist_ok=True)
        shutil.copy(recipe / "tests_recipes.csv", tables / f"{recipe.parent.name}.csv")
    rng = np.random.default_rng(0)
    voices = {
        spk: dict(f0=f0, formants=1.0, gain=0.0, tempo=1.0, breath=0.1)
        for spk, f0 in (("spk1", 110.0), ("spk2", 210.0))
    }
    (root / "tests" / "samples" / "ASR").mkdir(parents=True)
    (root / "tests" / "samples" / "annotation").mkdir(parents=True)
    for name, items in SAMPLES.items():
        entries = {}
        for i, (emo, style) in enumerate(items):
            spk = "spk1" if i % 2 == 0 else "spk2"
            uid = f"{name}_{spk}_snt{i + 1}"
            audio = synthesize_utterance(rng, voices[spk], style, 1.5)
            sf.write(root / "tests" / "samples" / "ASR" / f"{uid}.wav", audio, 16000)
            entries[uid] = {
                "wav": "{data_root}/" + f"{uid}.wav",
                "duration": f"{len(audio) / 16000:.2f}",
                "spk_id": spk,
                "emo": emo,
            }
        path = root / "tests" / "samples" / "annotation" / f"{name}.json"
        path.write_text(json.dumps(entries, indent=1))
    return root


def test_rows_run_in_speechbrains_order_on_its_sample_layout(sb_root):
    """Every row's debug flags train, test and leave the files its checks list; the IEMOCAP
    fine-tuning row starts from the model the hnsd.yaml row trained (it runs after it)."""
    rows = {}
    for table in sorted((sb_root / "tests" / "recipes").glob("*.csv")):
        with open(table, newline="", encoding="utf-8") as f:
            for i, row in enumerate(csv.DictReader(f, skipinitialspace=True)):
                rows[f"{table.stem}_row_{i + 2:02d}"] = row
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for rid in sorted(rows):
        row = rows[rid]
        flags = shlex.split(row["test_debug_flags"])
        given = re.search(r"--output_folder\s*=?\s*(\S+)", row["test_debug_flags"])
        out = given.group(1) if given else f"tests/tmp/{rid}"
        if not given:
            flags.append(f"--output_folder={out}")
        cmd = [sys.executable, row["Script_file"], row["Hparam_file"], *flags, "--num_workers=0"]
        proc = subprocess.run(cmd, cwd=sb_root, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, f"{rid}: " + proc.stderr[-3000:]
        checks = re.search(r"file_exists=\[(.*?)\]", row["test_debug_checks"]).group(1)
        missing = [n for n in checks.split(",") if not (sb_root / out / n.strip()).exists()]
        assert not missing, f"{rid}: {missing}"
        if "--pretrained_model=tests/tmp/" in row["test_debug_flags"]:
            assert "Transferred" in (sb_root / out / "log.txt").read_text(), rid
