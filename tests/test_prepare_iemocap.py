"""Tests of the IEMOCAP data preparation on synthetic and hand-written release trees."""

import csv
import os
import re

import numpy as np
import pytest
import soundfile as sf

from hnsd_sb.corpora.iemocap import iemocap_fold_speakers, prepare_iemocap, read_emo_evaluation
from hnsd_sb.synthetic import make_synthetic_iemocap

ALL_SPEAKERS = {f"Ses{s:02d}{g}" for s in range(1, 6) for g in "FM"}
HEADER = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]"


def load_splits(save_folder):
    """The rows of the three manifests, by split name."""
    splits = {}
    for name in ("train", "valid", "test"):
        with open(os.path.join(save_folder, f"{name}.csv"), newline="") as handle:
            splits[name] = list(csv.DictReader(handle))
    return splits


def speakers_of(rows):
    return {row["spk_id"] for row in rows}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A tiny synthetic release (2 utterances per class per speaker) and its utterance list."""
    root = tmp_path_factory.mktemp("iemocap")
    utterances = make_synthetic_iemocap(
        root, utterances_per_emotion=2, dropped_per_speaker=2, min_duration=0.2, max_duration=0.4
    )
    return root, utterances


def record(start, utt_id, emo, vad="2.5000, 2.5000, 2.5000"):
    """One label-file record and its evaluator lines, as in the release."""
    return [
        f"[{start:.4f} - {start + 1:.4f}]\t{utt_id}\t{emo}\t[{vad}]",
        "C-E1:\tNeutral;\t()",
        "A-E1:\tval 3; act 2; dom  2;\t()",
        "",
    ]


def write_tree(root, dialogs, skip_wavs=()):
    """Writes a hand-made release: ``dialogs`` maps a dialog name to (utterance id, label)."""
    for dialog, turns in dialogs.items():
        session = int(dialog[3:5])
        label_folder = root / f"Session{session}" / "dialog" / "EmoEvaluation"
        label_folder.mkdir(parents=True, exist_ok=True)
        lines = [HEADER, ""]
        for i, (utt_id, emo) in enumerate(turns):
            lines += record(2.0 * i, utt_id, emo)
            wav_folder = root / f"Session{session}" / "sentences" / "wav" / dialog
            wav_folder.mkdir(parents=True, exist_ok=True)
            if utt_id not in skip_wavs:
                sf.write(wav_folder / f"{utt_id}.wav", np.zeros(1600 * (i + 1)), 16000)
        (label_folder / f"{dialog}.txt").write_text("\n".join(lines) + "\n")
    return root


EDGE_DIALOGS = {
    "Ses01F_impro01": [
        ("Ses01F_impro01_F000", "neu"),
        ("Ses01F_impro01_M000", "ang"),
        ("Ses01F_impro01_F001", "fru"),
    ],
    "Ses01M_script01_1": [("Ses01M_script01_1_F000", "exc"), ("Ses01M_script01_1_M000", "sad")],
    "Ses02F_impro02": [("Ses02F_impro02_F000", "hap"), ("Ses02F_impro02_M000", "xxx")],
}


@pytest.fixture
def edge_tree(tmp_path):
    return write_tree(tmp_path / "release", EDGE_DIALOGS)


def test_counts_and_default_label_map(corpus, tmp_path):
    root, utterances = corpus
    prepare_iemocap(root, tmp_path, fold=1)
    rows = [row for split in load_splits(tmp_path).values() for row in split]
    kept = [utt for utt in utterances if utt["raw_emo"] in ("neu", "ang", "sad", "hap", "exc")]
    assert len(rows) == len(kept) == 10 * 4 * 2
    assert {row["emo"] for row in rows} == {"neu", "ang", "sad", "hap"}
    assert {row["raw_emo"] for row in rows if row["emo"] == "hap"} == {"hap", "exc"}
    assert all(row["raw_emo"] not in ("fru", "xxx") for row in rows)
    assert len({row["ID"] for row in rows}) == len(rows)
    assert list(rows[0])[:5] == ["ID", "duration", "wav", "spk_id", "emo"]


def test_speaker_ids_and_fields(corpus, tmp_path):
    root, utterances = corpus
    prepare_iemocap(root, tmp_path, fold=2)
    truth = {utt["ID"]: utt for utt in utterances}
    rows = [row for split in load_splits(tmp_path).values() for row in split]
    for row in rows:
        assert row["spk_id"] == truth[row["ID"]]["spk_id"]
        assert row["spk_id"] == row["ID"][:5] + row["ID"].rsplit("_", 1)[1][0]
        assert row["utt_type"] == truth[row["ID"]]["utt_type"]
    # Male turns inside dialogs a female speaker leads belong to the male speaker.
    crossed = [row for row in rows if row["ID"][5] == "F" and row["spk_id"].endswith("M")]
    assert crossed


def test_durations_and_paths(corpus, tmp_path):
    root, utterances = corpus
    prepare_iemocap(root, tmp_path, fold=3)
    truth = {utt["ID"]: utt for utt in utterances}
    for row in load_splits(tmp_path)["test"]:
        path = row["wav"].replace("$data_root", str(root))
        assert row["wav"].startswith("$data_root/Session3/sentences/wav/")
        assert float(row["duration"]) == pytest.approx(sf.info(path).duration, abs=1e-5)
        assert float(row["duration"]) == pytest.approx(truth[row["ID"]]["duration"], abs=1e-5)


def test_improvised_only(corpus, tmp_path):
    root, utterances = corpus
    prepare_iemocap(root, tmp_path, fold=1, improvised_only=True)
    rows = [row for split in load_splits(tmp_path).values() for row in split]
    expected = [
        utt
        for utt in utterances
        if utt["utt_type"] == "impro" and utt["raw_emo"] in ("neu", "ang", "sad", "hap", "exc")
    ]
    assert {row["ID"] for row in rows} == {utt["ID"] for utt in expected}
    assert all("_impro" in row["ID"] for row in rows)


@pytest.mark.parametrize(
    "protocol, fold", [("session", k) for k in range(1, 6)] + [("speaker", k) for k in range(1, 11)]
)
def test_folds_never_leak_speakers(corpus, tmp_path, protocol, fold):
    root, _ = corpus
    prepare_iemocap(root, tmp_path, fold=fold, protocol=protocol)
    splits = {name: speakers_of(rows) for name, rows in load_splits(tmp_path).items()}
    assert not splits["train"] & splits["valid"]
    assert not splits["train"] & splits["test"]
    assert not splits["valid"] & splits["test"]
    assert splits["train"] | splits["valid"] | splits["test"] == ALL_SPEAKERS
    test, valid = iemocap_fold_speakers(fold, protocol)
    assert splits["test"] == set(test) and splits["valid"] == set(valid)
    if protocol == "session":
        assert splits["test"] == {f"Ses{fold:02d}F", f"Ses{fold:02d}M"}
        assert len(splits["train"]) == 7
    else:
        assert len(splits["test"]) == 1 and len(splits["train"]) == 8
        assert {spk[:5] for spk in splits["test"] | splits["valid"]} == {
            f"Ses{(fold + 1) // 2:02d}"
        }


def test_session_validation_alternates_gender():
    valid = [iemocap_fold_speakers(k)[1][0] for k in range(1, 6)]
    assert valid == ["Ses02F", "Ses03M", "Ses04F", "Ses05M", "Ses01F"]


def test_valid_speakers_override(corpus, tmp_path):
    root, _ = corpus
    prepare_iemocap(root, tmp_path, fold=1, valid_speakers=["Ses03F", "Ses03M"])
    assert speakers_of(load_splits(tmp_path)["valid"]) == {"Ses03F", "Ses03M"}
    with pytest.raises(ValueError, match="valid_speakers"):
        prepare_iemocap(root, tmp_path, fold=1, valid_speakers=["Ses01F"])


def test_skip_when_prepared_and_rebuild_on_change(corpus, tmp_path):
    root, _ = corpus
    train_csv = tmp_path / "train.csv"
    prepare_iemocap(root, tmp_path, fold=1)
    train_csv.write_text(train_csv.read_text() + "marker\n")
    prepare_iemocap(root, tmp_path, fold=1)
    assert train_csv.read_text().endswith("marker\n")
    prepare_iemocap(root, tmp_path, fold=1, label_map={"neu": "neu", "ang": "ang"})
    assert "marker" not in train_csv.read_text()
    assert {row["emo"] for row in load_splits(tmp_path)["train"]} == {"neu", "ang"}
    # A missing manifest also forces a rebuild.
    (tmp_path / "valid.csv").unlink()
    prepare_iemocap(root, tmp_path, fold=1, label_map={"neu": "neu", "ang": "ang"})
    assert (tmp_path / "valid.csv").is_file()
    prepare_iemocap(root, tmp_path / "nothing", fold=1, skip_prep=True)
    assert not (tmp_path / "nothing").exists()


def test_edge_tree_parsing(edge_tree, tmp_path):
    label_folder = edge_tree / "Session1" / "dialog" / "EmoEvaluation"
    # Decoys that would not parse as records: evaluator subfolders and macOS resource forks.
    (label_folder / "Categorical").mkdir()
    (label_folder / "Categorical" / "Ses01F_impro01_e1_cat.txt").write_text("[oops\n")
    (label_folder / "Attribute").mkdir()
    (label_folder / "Attribute" / "Ses01F_impro01_e1_atr.txt").write_text("[1 - 2] x\n")
    (label_folder / "._Ses01F_impro01.txt").write_bytes(b"\x00\x05[garbage\n")
    prepare_iemocap(edge_tree, tmp_path, fold=1, protocol="speaker")
    splits = load_splits(tmp_path)
    rows = {row["ID"]: row for split in splits.values() for row in split}
    assert set(rows) == {
        "Ses01F_impro01_F000",
        "Ses01F_impro01_M000",
        "Ses01M_script01_1_F000",
        "Ses01M_script01_1_M000",
        "Ses02F_impro02_F000",
    }
    assert rows["Ses01F_impro01_M000"]["spk_id"] == "Ses01M"
    assert rows["Ses01M_script01_1_F000"]["spk_id"] == "Ses01F"
    assert rows["Ses01M_script01_1_F000"]["emo"] == "hap"
    assert rows["Ses01M_script01_1_F000"]["utt_type"] == "script"
    assert rows["Ses01F_impro01_F000"]["duration"] == "0.10000"
    assert speakers_of(splits["test"]) == {"Ses01F"}
    assert speakers_of(splits["valid"]) == {"Ses01M"}


def test_read_emo_evaluation_fields(edge_tree):
    label_file = edge_tree / "Session1" / "dialog" / "EmoEvaluation" / "Ses01F_impro01.txt"
    records = read_emo_evaluation(label_file)
    assert [r["ID"] for r in records] == [utt for utt, _ in EDGE_DIALOGS["Ses01F_impro01"]]
    assert records[1]["raw_emo"] == "ang"
    assert (records[1]["start"], records[1]["end"]) == ("2.0000", "3.0000")
    assert (records[0]["valence"], records[0]["dominance"]) == ("2.5000", "2.5000")


def test_error_not_iemocap(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path))):
        prepare_iemocap(tmp_path, tmp_path / "save")
    (tmp_path / "Session1").mkdir()
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "Session1"))):
        prepare_iemocap(tmp_path, tmp_path / "save")
    with pytest.raises(FileNotFoundError, match="missing"):
        prepare_iemocap(tmp_path / "missing", tmp_path / "save")


def test_error_bad_record_line(edge_tree, tmp_path):
    label_file = edge_tree / "Session2" / "dialog" / "EmoEvaluation" / "Ses02F_impro02.txt"
    lines = label_file.read_text().splitlines()
    lines.insert(6, "[1.0 - 2.0]\tSes02F_impro02_F009\tneu")
    label_file.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError) as error:
        prepare_iemocap(edge_tree, tmp_path, fold=1, protocol="speaker")
    assert f"{label_file}:7" in str(error.value)


def test_error_missing_wav_only_when_kept(tmp_path):
    root = write_tree(tmp_path / "a", EDGE_DIALOGS, skip_wavs={"Ses01F_impro01_F001"})
    prepare_iemocap(root, tmp_path / "save_a", fold=1, protocol="speaker")  # fru: dropped
    root = write_tree(tmp_path / "b", EDGE_DIALOGS, skip_wavs={"Ses01F_impro01_M000"})
    missing = root / "Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_M000.wav"
    with pytest.raises(FileNotFoundError) as error:
        prepare_iemocap(root, tmp_path / "save_b", fold=1, protocol="speaker")
    assert str(missing) in str(error.value)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(fold=6),
        dict(fold=0),
        dict(fold=11, protocol="speaker"),
        dict(fold=1, protocol="dialog"),
        dict(label_map={"happy": "hap"}),
    ],
)
def test_error_bad_options(edge_tree, tmp_path, kwargs):
    with pytest.raises(ValueError):
        prepare_iemocap(edge_tree, tmp_path, **kwargs)
