"""Tests of manifest validation: every bad row is reported with its line, or skipped."""

import csv
import json
import logging

import numpy as np
import pytest
import soundfile as sf

from hnsd_sb.manifest import ManifestError, validate_manifest

LABELS = ["neu", "hap", "sad", "ang"]
HEADER = ["ID", "duration", "wav", "spk_id", "emo"]


@pytest.fixture
def corpus(tmp_path):
    """A data root with two good files, one corrupt one and one too short."""
    root = tmp_path / "data"
    root.mkdir()
    for name in ("a.wav", "b.wav"):
        sf.write(str(root / name), np.zeros(16000), 16000)
    (root / "corrupt.wav").write_bytes(b"definitely not audio")
    sf.write(str(root / "short.wav"), np.zeros(100), 16000)
    return root


def write_csv(path, rows, header=HEADER):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def good_rows():
    return [
        ["u1", "1.0", "$data_root/a.wav", "s1", "neu"],
        ["u2", "1.0", "$data_root/b.wav", "s2", "hap"],
    ]


def check(csv_path, corpus, **kwargs):
    kwargs.setdefault("labels", LABELS)
    return validate_manifest(
        csv_path, replacements={"data_root": str(corpus)}, progress=False, **kwargs
    )


def test_good_manifest(tmp_path, corpus):
    result = check(write_csv(tmp_path / "ok.csv", good_rows()), corpus)
    assert (result.n_rows, result.n_skipped, result.problems) == (2, 0, [])
    assert result.clean_path is None and result.path == str(tmp_path / "ok.csv")


def test_missing_columns_name_file_and_columns(tmp_path, corpus):
    path = write_csv(tmp_path / "cols.csv", [["u1", "1.0", "x"]], header=["ID", "duration", "wav"])
    with pytest.raises(ManifestError, match=r"cols\.csv: missing column\(s\) spk_id, emo"):
        check(path, corpus)
    with pytest.raises(ManifestError, match="missing column"):
        check(path, corpus, skip_bad=True)  # file-level problems are never skipped


def test_missing_manifest_and_empty_manifest(tmp_path, corpus):
    with pytest.raises(ManifestError, match="nope.csv: manifest not found"):
        check(tmp_path / "nope.csv", corpus)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ManifestError, match="empty.csv: empty file"):
        check(tmp_path / "empty.csv", corpus)


def test_missing_audio_row(tmp_path, corpus):
    rows = good_rows() + [["u3", "2.0", "$data_root/gone.wav", "s1", "sad"]]
    with pytest.raises(ManifestError) as err:
        check(write_csv(tmp_path / "m.csv", rows), corpus)
    message = str(err.value)
    assert "m.csv: 1 of 3 rows are bad" in message
    assert f"line 4 (ID 'u3'): {corpus}/gone.wav: file not found" in message
    # Without reading headers the existence check still runs.
    with pytest.raises(ManifestError, match="gone.wav: file not found"):
        check(tmp_path / "m.csv", corpus, check_audio=False)


def test_unknown_label_row(tmp_path, corpus):
    rows = good_rows() + [["u3", "1.0", "$data_root/a.wav", "s1", "fear"]]
    with pytest.raises(ManifestError) as err:
        check(write_csv(tmp_path / "l.csv", rows), corpus)
    assert "line 4 (ID 'u3'): unknown emotion label 'fear' (known: ang, hap, neu, sad)" in str(
        err.value
    )
    assert check(tmp_path / "l.csv", corpus, labels=None).problems == []


def test_duplicate_id(tmp_path, corpus):
    rows = good_rows() + [["u1", "1.0", "$data_root/b.wav", "s1", "neu"]]
    with pytest.raises(
        ManifestError, match=r"line 4 \(ID 'u1'\): duplicate ID, first used on line 2"
    ):
        check(write_csv(tmp_path / "d.csv", rows), corpus)


def test_bad_audio_duration_and_placeholder(tmp_path, corpus):
    rows = good_rows() + [
        ["u3", "1.0", "$data_root/corrupt.wav", "s1", "neu"],
        ["u4", "0.006", "$data_root/short.wav", "s1", "neu"],
        ["u5", "-1", "$data_root/a.wav", "s1", "neu"],
        ["u6", "abc", "$data_root/a.wav", "s1", "neu"],
        ["u7", "1.0", "$elsewhere/a.wav", "s1", "neu"],
    ]
    with pytest.raises(ManifestError) as err:
        check(write_csv(tmp_path / "b.csv", rows), corpus)
    message = str(err.value)
    assert "5 of 7 rows are bad" in message
    assert "line 4 (ID 'u3'): " in message and "corrupt.wav: unreadable as audio" in message
    assert "short.wav: too short" in message
    assert "line 6 (ID 'u5'): duration '-1' is not a positive number" in message
    assert "line 7 (ID 'u6'): duration 'abc' is not a positive number" in message
    assert "no replacement given for $elsewhere" in message


def test_ragged_rows(tmp_path, corpus):
    path = tmp_path / "r.csv"
    path.write_text(
        "ID,duration,wav,spk_id,emo\n"
        "u1,1.0,$data_root/a.wav,s1,neu\n"
        "u2,1.0,$data_root/b.wav,s1,neu,extra\n"
        "u3,1.0\n"
    )
    with pytest.raises(ManifestError) as err:
        check(path, corpus)
    assert "line 3 (ID 'u2'): 6 fields, but the header has 5" in str(err.value)
    assert "line 4 (ID 'u3'): fewer fields" in str(err.value)


def test_long_error_lists_first_20_and_counts(tmp_path, corpus):
    rows = good_rows() + [[f"x{i}", "1.0", f"$data_root/{i}.wav", "s", "neu"] for i in range(25)]
    with pytest.raises(ManifestError) as err:
        check(write_csv(tmp_path / "many.csv", rows), corpus)
    message = str(err.value)
    assert "25 of 27 rows are bad" in message and "... and 5 more problems" in message
    assert "(ID 'x19')" in message and "(ID 'x20')" not in message


def test_skip_bad_writes_clean_csv(tmp_path, corpus, caplog):
    rows = good_rows() + [
        ["u3", "1.0", "$data_root/gone.wav", "s1", "sad"],
        ["u4", "1.0", "$data_root/a.wav", "s3", "fear"],
        ["u1", "1.0", "$data_root/b.wav", "s3", "neu"],
        ["u5", "1.0", "$data_root/b.wav", "s3", "ang"],
    ]
    path = write_csv(tmp_path / "train.csv", rows)
    with caplog.at_level(logging.WARNING, logger="hnsd_sb.manifest"):
        result = check(path, corpus, skip_bad=True)
    assert (result.n_rows, result.n_skipped, len(result.problems)) == (6, 3, 3)
    assert [p.id for p in result.problems] == ["u3", "u4", "u1"]
    assert result.clean_path == str(tmp_path / "train.clean.csv") == result.path
    with open(result.clean_path, newline="") as f:
        kept = list(csv.reader(f))
    # Values are kept verbatim, placeholders included, so the copy stays portable.
    assert kept == [HEADER, rows[0], rows[1], rows[5]]
    assert "train.clean.csv" in caplog.text and "3 of 6 rows are bad" in caplog.text
    # The cleaned copy passes, and an output directory can be chosen.
    assert check(result.clean_path, corpus).problems == []
    other = check(path, corpus, skip_bad=True, output_dir=tmp_path / "out")
    assert other.clean_path == str(tmp_path / "out" / "train.clean.csv")


def test_skip_bad_still_raises_when_nothing_is_left(tmp_path, corpus):
    path = write_csv(tmp_path / "all_bad.csv", [["u1", "1.0", "$data_root/gone.wav", "s", "neu"]])
    with pytest.raises(ManifestError, match="1 of 1 rows are bad"):
        check(path, corpus, skip_bad=True)


def test_duration_column_must_agree_with_the_audio_header(tmp_path, corpus):
    # a.wav holds 1 s: rounding (1.05) passes, a lie (2.0, 0.5) is reported and can be skipped.
    rows = [
        ["u1", "1.05", "$data_root/a.wav", "s1", "neu"],
        ["u2", "2.0", "$data_root/b.wav", "s2", "hap"],
        ["u3", "0.5", "$data_root/a.wav", "s2", "hap"],
    ]
    path = write_csv(tmp_path / "d.csv", rows)
    with pytest.raises(ManifestError) as err:
        check(path, corpus)
    message = str(err.value)
    assert "2 of 3 rows are bad" in message
    assert f"line 3 (ID 'u2'): {corpus}/b.wav: the duration column says 2 s but the file " \
        "holds 1 s" in message  # fmt: skip
    assert "line 4 (ID 'u3')" in message and "says 0.5 s" in message
    assert check(path, corpus, skip_bad=True).n_skipped == 2


def test_bom_non_utf8_bytes_and_header_only_manifests_are_named(tmp_path, corpus):
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbfID,duration,wav,spk_id,emo\nu1,1.0,$data_root/a.wav,s,neu\n")
    with pytest.raises(ManifestError, match="bom.csv: starts with a UTF-8 byte-order mark"):
        check(bom, corpus)
    latin = tmp_path / "latin1.csv"
    latin.write_bytes(
        b"ID,duration,wav,spk_id,emo\nu1,1.0,$data_root/a.wav,s,neu\nu2,1.0,caf\xe9.wav,s,neu\n"
    )
    with pytest.raises(ManifestError, match=r"latin1.csv: line 3 is not UTF-8 \(byte 0xe9"):
        check(latin, corpus)
    header_only = write_csv(tmp_path / "header.csv", [])
    with pytest.raises(ManifestError, match="header.csv: no data rows, only the header"):
        check(header_only, corpus)


def test_a_fifo_or_proc_file_as_manifest_is_named_not_read(tmp_path):
    import os

    from hnsd_sb.preflight import check_manifests

    fifo = tmp_path / "train.fifo"
    os.mkfifo(fifo)
    for path in (fifo, "/proc/self/status"):
        with pytest.raises(ManifestError, match=f"{path}: not a regular file"):
            check_manifests({"train": str(path)}, n_classes=2, progress=False)


def test_json_annotations_become_csv_manifests_or_clear_errors(tmp_path):
    """SpeechBrain's JSON layout converts to the CSV columns; what has no CSV spelling, or is
    not such a file, is refused with the file named."""
    from hnsd_sb.manifest import json_to_csv

    entry = {"wav": "{data_root}/a.wav", "duration": 1.0, "spk_id": "s1", "emo": "neu"}
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"u1": entry, "u2": dict(entry, wav="/abs/b.wav")}))
    assert json_to_csv(good, tmp_path / "good.csv") == 2
    rows = list(csv.DictReader(open(tmp_path / "good.csv", newline="")))
    assert [r["wav"] for r in rows] == ["$data_root/a.wav", "/abs/b.wav"]
    cases = {
        "glued.json": json.dumps({"u1": dict(entry, wav="{data_root}_16k/a.wav")}),
        "lacking.json": json.dumps({"u1": {"wav": "a.wav"}}),
        "list.json": "[1, 2]",
        "deep.json": "[" * 100000 + "]" * 100000,
        "latin1.json": b"\xff\xfe".decode("latin-1"),
    }
    for name, text in cases.items():
        (tmp_path / name).write_text(text, encoding="latin-1")
        with pytest.raises(ManifestError, match=name):
            json_to_csv(tmp_path / name, tmp_path / "out.csv")
