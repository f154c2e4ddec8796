"""Tests of the RAVDESS data preparation: the shared 16 kHz copy and generated 48 kHz trees."""

import csv
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from hnsd_sb.corpora.ravdess import prepare_ravdess

SHARED_RAVDESS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ravdess"
needs_shared = pytest.mark.skipif(
    not SHARED_RAVDESS.is_dir(), reason=f"no RAVDESS copy at {SHARED_RAVDESS}"
)


def manifest_rows(save_folder):
    """All rows of the three manifests, with a ``split`` field added."""
    rows = []
    for split in ("train", "valid", "test"):
        with open(Path(save_folder) / f"{split}.csv", newline="") as handle:
            rows += [dict(row, split=split) for row in csv.DictReader(handle)]
    return rows


def actors_by_split(rows):
    actors = {"train": set(), "valid": set(), "test": set()}
    for row in rows:
        actors[row["split"]].add(int(row["actor"]))
    return actors


@pytest.fixture(scope="module")
def shared_folds(tmp_path_factory):
    """Manifest rows of the 6 default folds of the shared copy, all 8 labels."""
    if not SHARED_RAVDESS.is_dir():
        pytest.skip(f"no RAVDESS copy at {SHARED_RAVDESS}")
    folds = {}
    for fold in range(1, 7):
        save = tmp_path_factory.mktemp(f"fold{fold}")
        prepare_ravdess(SHARED_RAVDESS, save, fold=fold)
        folds[fold] = manifest_rows(save)
    return folds


@needs_shared
def test_shared_copy_counts(shared_folds):
    rows = shared_folds[1]
    assert len(rows) == 1440
    assert len({row["ID"] for row in rows}) == 1440
    assert len({row["spk_id"] for row in rows}) == 24
    per_actor = Counter((row["spk_id"], row["emo"]) for row in rows)
    for (_, emo), count in per_actor.items():
        assert count == (4 if emo == "neu" else 8)
    assert len(per_actor) == 24 * 8
    assert {row["gender"] for row in rows if int(row["actor"]) % 2} == {"M"}
    durations = [float(row["duration"]) for row in rows]
    assert 2.9 < min(durations) and max(durations) < 5.3
    assert sum(durations) == pytest.approx(5329, abs=1)


@needs_shared
def test_shared_copy_four_classes(tmp_path):
    prepare_ravdess(SHARED_RAVDESS, tmp_path, fold=3, label_set="four")
    counts = Counter(row["emo"] for row in manifest_rows(tmp_path))
    assert counts == {"neu": 96, "hap": 192, "sad": 192, "ang": 192}


@needs_shared
def test_shared_copy_folds_are_disjoint(shared_folds):
    tested = set()
    for fold, rows in shared_folds.items():
        actors = actors_by_split(rows)
        assert not actors["train"] & actors["valid"]
        assert not actors["train"] & actors["test"]
        assert not actors["valid"] & actors["test"]
        assert actors["test"] == set(range(4 * fold - 3, 4 * fold + 1))
        assert actors["valid"] == set(range(4 * (fold % 6) + 1, 4 * (fold % 6) + 5))
        assert len(actors["train"]) == 16
        for split in ("valid", "test"):
            assert {actor % 2 for actor in actors[split]} == {0, 1}
        tested |= actors["test"]
    assert tested == set(range(1, 25))


@needs_shared
@pytest.mark.parametrize("train_groups", [3, 2])
def test_shared_copy_fewer_training_actors(tmp_path, shared_folds, train_groups):
    """A learning curve over training actors: the first groups after the validation group
    train, the test and validation actors stay those of the full fold."""
    for fold in range(1, 7):
        save = tmp_path / f"fold{fold}"
        prepare_ravdess(SHARED_RAVDESS, save, fold=fold, train_groups=train_groups)
        actors = actors_by_split(manifest_rows(save))
        full = actors_by_split(shared_folds[fold])
        assert actors["test"] == full["test"] and actors["valid"] == full["valid"]
        groups = [(fold + j - 1) % 6 for j in range(2, 2 + train_groups)]
        assert actors["train"] == {4 * g + a for g in groups for a in range(1, 5)}
        assert actors["train"] < full["train"]


def write_ravdess_48k(root):
    """A few 48 kHz files in the RAVDESS layout, with known lengths, plus files to ignore."""
    lengths = {}
    for i, actor in enumerate((1, 2, 5, 6, 9, 10)):
        folder = root / f"Actor_{actor:02d}"
        folder.mkdir(parents=True)
        for emotion in (1, 2, 5):
            name = f"03-01-{emotion:02d}-01-01-01-{actor:02d}"
            n = 48000 + 4800 * (i + emotion)
            t = np.arange(n) / 48000
            sf.write(folder / f"{name}.wav", 0.1 * np.sin(2 * np.pi * 220 * t), 48000)
            lengths[name] = n / 48000
        # A song file and a stray file: neither is speech data.
        sf.write(folder / f"03-02-01-01-01-01-{actor:02d}.wav", np.zeros(480), 48000)
        sf.write(folder / "notes.wav", np.zeros(480), 48000)
    return lengths


def test_48k_release_durations(tmp_path):
    lengths = write_ravdess_48k(tmp_path / "ravdess")
    prepare_ravdess(tmp_path / "ravdess", tmp_path / "save", fold=1)
    rows = manifest_rows(tmp_path / "save")
    assert {row["ID"]: float(row["duration"]) for row in rows} == pytest.approx(lengths)
    assert Counter(row["emo"] for row in rows) == {"neu": 6, "cal": 6, "ang": 6}
    assert actors_by_split(rows) == {"test": {1, 2}, "valid": {5, 6}, "train": {9, 10}}
    wav = rows[0]["wav"]
    assert re.fullmatch(r"\$data_root/Actor_\d\d/03-01-[\d-]+\.wav", wav)
    assert (tmp_path / "ravdess" / wav.replace("$data_root/", "")).is_file()


def test_label_map_options_and_rebuild(tmp_path):
    write_ravdess_48k(tmp_path / "ravdess")
    save = tmp_path / "save"
    prepare_ravdess(tmp_path / "ravdess", save, fold=1, label_set="four")
    assert {row["emo"] for row in manifest_rows(save)} == {"neu", "ang"}
    (save / "test.csv").write_text("stale\n")
    prepare_ravdess(tmp_path / "ravdess", save, fold=1, label_set="four")
    assert (save / "test.csv").read_text() == "stale\n"
    prepare_ravdess(tmp_path / "ravdess", save, fold=1, label_map={"neu": "neu", "cal": "neu"})
    rows = manifest_rows(save)
    assert Counter(row["emo"] for row in rows) == {"neu": 12}
    assert {row["raw_emo"] for row in rows} == {"neu", "cal"}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(fold=7), "fold"),
        (dict(fold=1, n_folds=1), "n_folds"),
        (dict(label_set="three"), "label_set"),
        (dict(label_map={"happy": "hap"}), "happy"),
        (dict(train_groups=0), "train_groups must be null or an integer between 1 and 4"),
        (dict(train_groups=5), "train_groups"),
        (dict(train_groups=True), "train_groups"),
        (dict(n_folds=3, train_groups=2), "between 1 and 1"),
    ],
)
def test_bad_options(tmp_path, kwargs, message):
    write_ravdess_48k(tmp_path / "ravdess")
    with pytest.raises(ValueError, match=message):
        prepare_ravdess(tmp_path / "ravdess", tmp_path / "save", **kwargs)


def test_train_groups_rebuild(tmp_path):
    """Fewer training actors only in train.csv; changing the option prepares again."""
    write_ravdess_48k(tmp_path / "ravdess")
    for actor in (13, 17):
        folder = tmp_path / "ravdess" / f"Actor_{actor}"
        folder.mkdir()
        sf.write(folder / f"03-01-05-01-01-01-{actor}.wav", np.zeros(4800), 48000)
    save = tmp_path / "save"
    # fold 2: test actors 5-8, validation 9-12, training groups 13-16, 17-20, 21-24, 1-4
    for train_groups, train in [(1, {13}), (2, {13, 17}), (None, {1, 2, 13, 17})]:
        prepare_ravdess(tmp_path / "ravdess", save, fold=2, train_groups=train_groups)
        actors = actors_by_split(manifest_rows(save))
        assert actors == {"test": {5, 6}, "valid": {9, 10}, "train": train}


def test_bad_data_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "absent"))):
        prepare_ravdess(tmp_path / "absent", tmp_path / "save")
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path))):
        prepare_ravdess(tmp_path, tmp_path / "save")
    prepare_ravdess(tmp_path / "absent", tmp_path / "save", skip_prep=True)
