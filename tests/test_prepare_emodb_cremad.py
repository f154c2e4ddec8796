"""Tests of the EmoDB and CREMA-D data preparations on tiny generated trees."""

import csv
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from hnsd_sb.corpora.cremad import prepare_cremad
from hnsd_sb.corpora.emodb import prepare_emodb

EMODB_SPEAKERS = ["03", "08", "09", "10", "11", "12", "13", "14", "15", "16"]
EMODB_LETTERS = {"W": "ang", "L": "bor", "E": "dis", "A": "fea", "F": "hap", "T": "sad", "N": "neu"}
CREMAD_CODES = ["ANG", "DIS", "FEA", "HAP", "NEU", "SAD"]


def split_rows(save_folder):
    """The manifest rows by split."""
    rows = {}
    for split in ("train", "valid", "test"):
        with open(Path(save_folder) / f"{split}.csv", newline="") as handle:
            rows[split] = list(csv.DictReader(handle))
    return rows


def split_speakers(save_folder):
    return {split: {r["spk_id"] for r in rows} for split, rows in split_rows(save_folder).items()}


def write_wavs(folder, stems, sample_rate=16000):
    """Short silent wavs whose lengths grow with their index (0.1 s, 0.2 s, ...)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, stem in enumerate(stems):
        sf.write(folder / f"{stem}.wav", np.zeros(sample_rate * (i % 5 + 1) // 10), sample_rate)


@pytest.fixture
def emodb(tmp_path):
    """An EmoDB release with one file per speaker and emotion under ``wav/``."""
    stems = [f"{spk}a01{letter}a" for spk in EMODB_SPEAKERS for letter in EMODB_LETTERS]
    write_wavs(tmp_path / "emodb" / "wav", stems + ["03b10Nc"])
    (tmp_path / "emodb" / "wav" / "readme.wav").write_bytes(b"")
    return tmp_path / "emodb"


@pytest.fixture
def cremad(tmp_path):
    """A CREMA-D release with two files per emotion for 12 of the speakers, in ``AudioWAV/``."""
    speakers = [1001, 1010, 1019, 1020, 1030, 1037, 1038, 1050, 1056, 1060, 1074, 1091]
    stems = [
        f"{spk}_{sentence}_{code}_{level}"
        for spk in speakers
        for code in CREMAD_CODES
        for sentence, level in (("DFA", "XX"), ("IEO", "HI"))
    ]
    write_wavs(tmp_path / "cremad" / "AudioWAV", stems)
    return tmp_path / "cremad"


def test_emodb_labels_and_fields(emodb, tmp_path):
    prepare_emodb(emodb, tmp_path / "save", fold=1)
    rows = {row["ID"]: row for split in split_rows(tmp_path / "save").values() for row in split}
    assert len(rows) == 71
    assert Counter(row["emo"] for row in rows.values())["neu"] == 11
    for row in rows.values():
        assert row["emo"] == EMODB_LETTERS[row["ID"][5]] == row["raw_emo"]
        assert row["spk_id"] == row["ID"][:2]
        assert row["wav"] == f"$data_root/wav/{row['ID']}.wav"
    assert rows["03b10Nc"]["text"] == "b10" and rows["03b10Nc"]["version"] == "c"
    assert {r["gender"] for r in rows.values() if r["spk_id"] in ("08", "09", "16")} == {"F"}
    assert rows["03a01Wa"]["gender"] == "M"
    assert float(rows["03a01La"]["duration"]) == pytest.approx(0.2)


def test_emodb_wavs_directly_in_data_folder(emodb, tmp_path):
    prepare_emodb(emodb / "wav", tmp_path / "save", fold=2, label_map={"ang": "anger"})
    rows = split_rows(tmp_path / "save")
    assert [row["wav"] for row in rows["test"]] == ["$data_root/08a01Wa.wav"]
    assert {row["emo"] for split in rows.values() for row in split} == {"anger"}


@pytest.mark.parametrize("fold", range(1, 11))
def test_emodb_leave_one_speaker_out(emodb, tmp_path, fold):
    prepare_emodb(emodb, tmp_path / "save", fold=fold)
    speakers = split_speakers(tmp_path / "save")
    assert speakers["test"] == {EMODB_SPEAKERS[fold - 1]}
    assert speakers["valid"] == {EMODB_SPEAKERS[fold % 10]}
    assert speakers["train"] == set(EMODB_SPEAKERS) - speakers["test"] - speakers["valid"]


def test_emodb_five_folds(emodb, tmp_path):
    prepare_emodb(emodb, tmp_path / "save", fold=5, n_folds=5)
    speakers = split_speakers(tmp_path / "save")
    assert speakers["test"] == {"15", "16"} and speakers["valid"] == {"03", "08"}
    assert len(speakers["train"]) == 6


def test_emodb_label_map_and_errors(emodb, tmp_path):
    label_map = {"ang": "ang", "hap": "hap", "sad": "sad", "neu": "neu"}
    prepare_emodb(emodb, tmp_path / "save", fold=1, label_map=label_map)
    emotions = {row["emo"] for split in split_rows(tmp_path / "save").values() for row in split}
    assert emotions == {"ang", "hap", "sad", "neu"}
    with pytest.raises(ValueError, match="fold"):
        prepare_emodb(emodb, tmp_path / "save", fold=11)
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nope"))):
        prepare_emodb(tmp_path / "nope", tmp_path / "save")


@pytest.mark.parametrize("fold", range(1, 6))
def test_cremad_folds(cremad, tmp_path, fold):
    prepare_cremad(cremad, tmp_path / "save", fold=fold)
    speakers = split_speakers(tmp_path / "save")
    groups = [(1001, 1019), (1020, 1037), (1038, 1055), (1056, 1073), (1074, 1091)]
    for split, (low, high) in (("test", groups[fold - 1]), ("valid", groups[fold % 5])):
        assert speakers[split] and all(low <= int(spk) <= high for spk in speakers[split])
    assert not speakers["train"] & (speakers["test"] | speakers["valid"])
    assert len(speakers["train"] | speakers["test"] | speakers["valid"]) == 12


def test_cremad_labels_and_fields(cremad, tmp_path):
    prepare_cremad(cremad / "AudioWAV", tmp_path / "save", fold=1)
    rows = [row for split in split_rows(tmp_path / "save").values() for row in split]
    assert Counter(row["emo"] for row in rows) == {emo.lower(): 24 for emo in CREMAD_CODES}
    row = next(row for row in rows if row["ID"] == "1030_IEO_HAP_HI")
    assert (row["spk_id"], row["emo"], row["sentence"], row["level"]) == (
        "1030",
        "hap",
        "IEO",
        "HI",
    )
    assert row["wav"] == "$data_root/1030_IEO_HAP_HI.wav"


def test_cremad_unreadable_wav_is_named(cremad, tmp_path):
    broken = cremad / "AudioWAV" / "1076_MTI_SAD_XX.wav"
    broken.write_bytes(b"")
    with pytest.raises(RuntimeError, match=re.escape(str(broken))):
        prepare_cremad(cremad, tmp_path / "save", fold=1)
