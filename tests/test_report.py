"""Tests of confusion-matrix files and the Markdown tables of cross-validation results."""

import statistics

import pytest
import torch

from hnsd_sb.report import (
    compare_to_reference,
    confusion_markdown,
    format_results_table,
    load_confusion_matrix,
    save_confusion_matrix,
    split_file_names,
    summarize_folds,
)

LABELS = ["neutral", "happy", "sad", "angry"]
CM = torch.tensor([[50, 5, 10, 2], [8, 40, 1, 6], [12, 0, 30, 0], [3, 9, 0, 0]])


def test_csv_round_trip(tmp_path):
    path = tmp_path / "sub" / "cm.csv"
    written = save_confusion_matrix(CM.tolist(), LABELS, path)
    assert torch.equal(written, CM)
    cm, names = load_confusion_matrix(path)
    assert torch.equal(cm, CM) and cm.dtype == torch.long and names == LABELS
    assert path.read_text().splitlines()[0] == "true\\predicted,neutral,happy,sad,angry"


def test_png_written(tmp_path):
    png = tmp_path / "cm.png"
    save_confusion_matrix(CM, LABELS, tmp_path / "cm.csv", png_path=png)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_label_count_must_match(tmp_path):
    with pytest.raises(ValueError, match="3 label names for a 4x4"):
        save_confusion_matrix(CM, LABELS[:3], tmp_path / "cm.csv")
    with pytest.raises(ValueError, match="square"):
        save_confusion_matrix([[1, 2]], None, tmp_path / "cm.csv")


def table_cells(markdown):
    """Data rows of a Markdown table as lists of cell strings."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]


def test_mean_std_arithmetic():
    wa = [0.6512, 0.7034, 0.6821, 0.7390, 0.6655]
    ua = [0.6023, 0.6647, 0.6410, 0.7012, 0.6288]
    rows = [{"fold": i + 1, "WA": w, "UA": u} for i, (w, u) in enumerate(zip(wa, ua))]
    cells = table_cells(format_results_table(rows))
    assert cells[0] == ["1", "65.12", "60.23"] and len(cells) == 6
    for col, values in ((1, wa), (2, ua)):
        pct = [100 * v for v in values]
        expected = f"{statistics.mean(pct):.2f} ± {statistics.stdev(pct):.2f}"  # sample std
        assert cells[-1][col] == expected
    assert cells[-1][0] == "mean ± std"
    # Hand-computed: 60, 70, 80 -> mean 70, sample std 10 (population std would be 8.16).
    rows = [{"fold": f, "WA": w} for f, w in ((1, 60.0), (2, 70.0), (3, 80.0))]
    assert table_cells(format_results_table(rows, columns=("WA",), scale=1))[-1] == [
        "mean ± std",
        "70.00 ± 10.00",
    ]


def test_single_fold_has_no_std():
    cells = table_cells(format_results_table([{"fold": 1, "WA": 0.5, "UA": 0.25}]))
    assert cells[-1] == ["mean ± std", "50.00 ± n/a", "25.00 ± n/a"]


def test_summarize_folds_sums_confusions():
    folds = [
        {"fold": 1, "WA": 0.9, "UA": 0.8, "confusion": torch.tensor([[4, 1], [0, 5]])},
        {"fold": 2, "confusion": [[3, 2], [1, 4]]},
    ]
    text, total = summarize_folds(folds, ["neu", "ang"])
    assert total.tolist() == [[7, 3], [1, 9]]
    cells = table_cells(text.split("### Confusion")[0])
    # Given WA / UA are used as is; the missing ones come from the confusion matrix.
    assert cells[0] == ["1", "90.00", "80.00"] and cells[1] == ["2", "70.00", "70.00"]
    assert cells[2] == ["mean ± std", "80.00 ± 14.14", "75.00 ± 7.07"]
    assert confusion_markdown(total, ["neu", "ang"]) in text
    assert "Pooled over all 20 utterances: WA 80.00%, UA 80.00%." in text
    with pytest.raises(ValueError, match="fold 3"):
        summarize_folds(folds + [{"fold": 3, "confusion": torch.zeros(3, 3)}])


def test_compare_to_reference_pairs_folds_and_checks_the_reference():
    rows = {
        "ref": [{"fold": k, "WA": 0.5, "UA": u} for k, u in [(1, 0.4), (2, 0.6), (3, 0.5)]],
        # folds 1 and 3 only, listed out of order: the differences are +0.10 and +0.20
        "row": [{"fold": 3, "WA": 0.5, "UA": 0.7}, {"fold": 1, "WA": 0.5, "UA": 0.5}],
    }
    table = compare_to_reference(rows, "ref")
    assert "| row | 2 | 50.00 ± 0.00 | 60.00 ± 14.14 | 15.00 ± 7.07 | 2 / 2 |" in table
    with pytest.raises(ValueError, match="reference row 'other'"):
        compare_to_reference(rows, "other")
    with pytest.raises(ValueError, match="shares no fold"):
        compare_to_reference({"ref": rows["ref"], "x": [{"fold": 9, "WA": 0, "UA": 0}]}, "ref")


def test_compare_to_reference_takes_rows_without_wa_and_counts_rounding_as_a_tie():
    """An ensemble's output holds rounded UA and no WA: WA shows n/a, and a fold that differs
    from the reference only by the rounding (59.38 against 59.375) is not counted as better."""
    rows = {
        "ref": [{"fold": 1, "WA": 0.5, "UA": 0.59375}, {"fold": 2, "WA": 0.5, "UA": 0.5}],
        "ensemble": [{"fold": 1, "UA": 0.5938}, {"fold": 2, "UA": 0.55}],
    }
    table = compare_to_reference(rows, "ref")
    assert "| ensemble | 2 | n/a | 57.19 ± 3.10 | 2.50 ± 3.53 | 1 / 2 |" in table
    with pytest.raises(ValueError, match="'ensemble' has no WA"):
        compare_to_reference(rows, "ref", metric="WA")


def test_split_file_names_keep_test_and_validation_apart_and_refuse_other_splits():
    test, valid = split_file_names("test"), split_file_names("valid")
    assert test.keys() == valid.keys()
    assert not set(test.values()) & set(valid.values())  # both live in one fold folder
    assert test["predictions"] == "predictions.csv"  # the name users and cross_validate read
    with pytest.raises(ValueError, match="'train'"):
        split_file_names("train")
