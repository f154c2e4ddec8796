"""Tests of the RAVDESS recipe's ``compare_rows.py`` on hand-made rows (no audio, no training):
the figures it computes from a fold's files rather than reads."""

import csv
import json

from conftest import compare_rows as compare

LABELS = ["ang", "cal", "hap", "sad"]


def write_fold(folder, predictions, split="test", ids=None):
    """A finished fold: ``test_results.json`` (over all classes) and ``predictions.csv`` from
    (target, probabilities) pairs (utterances ``ids``, by default utt0, utt1, ...); with
    ``split="valid"``, their ``valid_`` twins."""
    folder.mkdir(parents=True, exist_ok=True)
    prefix = "" if split == "test" else f"{split}_"
    (folder / f"{split}_results.json").write_text(json.dumps({"WA": 0.25, "UA": 0.25}))
    with open(folder / f"{prefix}predictions.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["ID", "target", "prediction", *(f"p_{c}" for c in LABELS)])
        for k, (target, probs) in enumerate(predictions):
            predicted = LABELS[max(range(len(LABELS)), key=probs.__getitem__)]
            writer.writerow([ids[k] if ids else f"utt{k}", target, predicted, *probs])


def test_classes_score_the_predictions_over_some_emotions_alone(tmp_path):
    # calm is the most probable for every utterance: over all four, only calm's are right
    predictions = [
        ("ang", [0.3, 0.4, 0.2, 0.1]),
        ("ang", [0.1, 0.4, 0.3, 0.2]),
        ("cal", [0.1, 0.6, 0.2, 0.1]),
        ("hap", [0.1, 0.5, 0.3, 0.1]),
        ("sad", [0.3, 0.4, 0.1, 0.2]),
    ]
    row = tmp_path / "row"
    write_fold(row / "fold1", predictions)
    code, out = compare(row, row)
    assert code == 0 and "| 1 | 25.00 ± n/a | 25.00 ± n/a | reference |" in out, out
    # Over angry, happy and sad: calm's utterance is left out, and of the other four, the first
    # angry and the happy one are right (WA 2/4), recalls 1/2, 1 and 0 (UA 50).
    code, out = compare("--classes", "ang", "hap", "sad", "--", row, row)
    assert code == 0 and "| 1 | 50.00 ± n/a | 50.00 ± n/a | reference |" in out, out
    # A class without an utterance is left out of UA, as everywhere: over angry and sad without
    # the sad utterance, only angry's recall (1 of 2) counts.
    write_fold(tmp_path / "nosad" / "fold1", predictions[:4])
    code, out = compare("--classes", "ang", "sad", "--", tmp_path / "nosad")
    assert code == 0 and "| 1 | 50.00 ± n/a | 50.00 ± n/a | reference |" in out, out
    # Bad input is named: a label without a column, no utterance at all, an ensemble.
    code, out = compare("--classes", "ang", "sur", "--", row)
    assert code == 1 and "predictions.csv: ['sur']: not among the labels" in out, out
    code, out = compare("--classes", "sad", "--", tmp_path / "nosad")
    assert code == 1 and "predictions.csv: no utterance of ['sad']" in out, out
    ensemble = tmp_path / "ensemble.jsonl"
    ensemble.write_text(json.dumps({"fold": 1, "ensemble test UA": 50.0}) + "\n")
    code, out = compare("--classes", "ang", "sad", "--", row, ensemble)
    assert code == 1 and "use ensemble.py's" in out, out
    code, out = compare("--classes", "ang", "--validation", "10", row)
    assert code == 2 and "--classes scores test predictions" in out, out


def write_baseline_fold(folder, grid, chosen):
    """A finished ``baseline.py`` fold: its L2 grid's validation UA and the chosen weight."""
    folder.mkdir(parents=True)
    (folder / "test_results.json").write_text(json.dumps({"WA": 0.5, "UA": 0.5}))
    selection = {"chosen_l2": chosen, "grid": [{"l2": k, "valid_UA": v} for k, v in grid]}
    (folder / "baseline_selection.json").write_text(json.dumps(selection))


def test_validation_of_baseline_rows(tmp_path):
    # a baseline fold's validation UA is the one at its chosen L2, whatever the others
    grid = [(0.01, 0.5), (0.1, 0.75), (1.0, 0.625)]
    write_baseline_fold(tmp_path / "base" / "fold1", grid, 0.1)
    write_baseline_fold(tmp_path / "base" / "fold2", grid, 1.0)
    code, out = compare("--validation", "10", tmp_path / "base")
    assert code == 0, out
    assert "base | 2 | 68.75 | 68.75 | n/a | n/a | 1: 75.00 / 75.00 (baseline), 2: 62.50" in out
    # two seeds of a baseline averaged as one row: per fold the mean
    code, out = compare("--validation", "10", f"{tmp_path / 'base'}+{tmp_path / 'base'}")
    assert code == 0 and "| 2 | 68.75 | 68.75 | n/a | n/a |" in out, out
    # a selection without its chosen weight in the grid is named
    write_baseline_fold(tmp_path / "bad" / "fold1", grid, 0.5)
    code, out = compare("--validation", "10", tmp_path / "bad")
    assert code == 1 and "baseline_selection.json: not a baseline selection" in out, out


def test_per_class_pairs_each_emotions_recall_with_the_reference(tmp_path):
    # the reference gets calm right on both folds, angry on fold 2 alone, happy and sad never
    right = [("ang", [0.7, 0.1, 0.1, 0.1]), ("cal", [0.1, 0.7, 0.1, 0.1])]
    wrong = [("hap", [0.7, 0.1, 0.1, 0.1]), ("sad", [0.1, 0.7, 0.1, 0.1])]
    write_fold(tmp_path / "ref" / "fold1", [("ang", [0.1, 0.7, 0.1, 0.1]), right[1], *wrong])
    write_fold(tmp_path / "ref" / "fold2", right + wrong)
    # the row: angry on fold 1 alone (the reverse), happy on both, no sad utterance on fold 2
    happy = ("hap", [0.1, 0.1, 0.7, 0.1])
    write_fold(tmp_path / "row" / "fold1", [*right, happy, wrong[1]])
    write_fold(tmp_path / "row" / "fold2", [("ang", [0.1, 0.7, 0.1, 0.1]), right[1], happy])
    code, out = compare("--per-class", tmp_path / "ref", tmp_path / "row")
    assert code == 0, out
    lines = out.splitlines()
    assert lines[2] == f"| ang | {tmp_path / 'ref'} | 2 | 50.00 ± 70.71 | reference | |", out
    # paired fold by fold: +100 on fold 1, -100 on fold 2 (not 0 and 0, as a mix-up would give)
    assert lines[3].endswith("| 2 | 50.00 ± 70.71 | 0.00 ± 141.42 | 1 / 1 of 2 |"), out
    assert lines[7].endswith("| 2 | 100.00 ± 0.00 | 100.00 ± 0.00 | 2 / 0 of 2 |"), out
    # sad is paired on fold 1 alone, where the row has a sad utterance
    assert lines[9].endswith("| 1 | 0.00 ± n/a | 0.00 ± n/a | 0 / 0 of 1 |"), out
    # ... and with the roles swapped, the reference's sad recall is over fold 1 alone
    code, out = compare("--per-class", tmp_path / "row", tmp_path / "ref")
    assert code == 0 and f"| sad | {tmp_path / 'row'} | 1 | 0.00 ± n/a | reference | |" in out
    # two rows joined by + are their mean per fold
    code, out = compare("--per-class", tmp_path / "ref", f"{tmp_path / 'ref'}+{tmp_path / 'row'}")
    assert code == 0 and "| 2 | 50.00 ± 0.00 | 0.00 ± 70.71 | 1 / 1 of 2 |" in out, out
    # a row with other emotions is refused before any line; an ensemble has no predictions
    other = tmp_path / "other" / "fold1"
    write_fold(other, right)
    (other / "predictions.csv").write_text(
        (other / "predictions.csv").read_text().replace("p_sad", "p_sur")
    )
    code, out = compare("--per-class", tmp_path / "ref", tmp_path / "other")
    assert code == 1 and "| emotion |" not in out and "not " in out and "'sur'" in out, out
    ensemble = tmp_path / "ensemble.jsonl"
    ensemble.write_text(json.dumps({"fold": 1, "ensemble test UA": 50.0}) + "\n")
    code, out = compare("--per-class", tmp_path / "ref", ensemble)
    assert code == 1 and "--per-class reads predictions.csv" in out, out
    code, out = compare("--per-class", "--validation", "10", tmp_path / "ref")
    assert code == 2 and "not allowed with" in out, out


def test_split_valid_reads_the_validation_figures_and_never_the_test_ones(tmp_path):
    # test: every utterance right; validation: only the angry one right (recall 1, 0, 0, 0)
    right = [(c, [0.7 if c == d else 0.1 for d in LABELS]) for c in LABELS]
    wrong = [(c, [0.7 if d == "ang" else 0.1 for d in LABELS]) for c in LABELS]
    row = tmp_path / "row"
    write_fold(row / "fold1", right)
    write_fold(row / "fold1", wrong, split="valid")
    code, out = compare("--split", "valid", row)
    assert code == 0 and "| 1 | 25.00 ± n/a | 25.00 ± n/a | reference |" in out, out
    code, out = compare("--split", "valid", "--classes", "ang", "hap", "--", row)
    assert code == 0 and "| 1 | 50.00 ± n/a | 50.00 ± n/a | reference |" in out, out
    code, out = compare("--split", "valid", "--per-class", row)
    assert code == 0 and f"| hap | {row} | 1 | 0.00 ± n/a | reference | |" in out, out
    code, out = compare("--per-class", row)
    assert code == 0 and f"| hap | {row} | 1 | 100.00 ± n/a | reference | |" in out, out
    # a row trained before train.py wrote validation predictions is named, with the reason
    old = tmp_path / "old"
    write_fold(old / "fold1", right)
    code, out = compare("--split", "valid", "--per-class", row, old)
    assert code == 1 and "no fold<k>/valid_results.json" in out and "| emotion |" not in out, out
    # a row with no finished fold is named, with what to do
    code, out = compare(row, tmp_path / "typo")
    assert code == 1 and "typo: no fold<k>/test_results.json (no fold has finished" in out, out
    code, out = compare("--split", "valid", "--validation", "10", row)
    assert code == 2 and "--split chooses predictions" in out, out


def test_fused_rows_multiply_their_probabilities_utterance_by_utterance(tmp_path):
    # Each row gets two of the four right, not the same two; their product gets all four. The
    # happy one each alone gets wrong (angry, calm), and the other's near-zero cancels both.
    a = [
        ("hap", [0.45, 0.0, 0.4, 0.15]),
        ("sad", [0.1, 0.1, 0.1, 0.7]),
        ("ang", [0.7, 0.1, 0.1, 0.1]),
        ("cal", [0.4, 0.3, 0.2, 0.1]),
    ]
    b = [
        ("hap", [0.0, 0.45, 0.4, 0.15]),
        ("sad", [0.1, 0.1, 0.1, 0.7]),
        ("ang", [0.2, 0.6, 0.1, 0.1]),
        ("cal", [0.1, 0.8, 0.05, 0.05]),
    ]
    write_fold(tmp_path / "a" / "fold1", a)
    # the other row lists its utterances in another order: they are matched by ID
    write_fold(tmp_path / "b" / "fold1", b[::-1], ids=["utt3", "utt2", "utt1", "utt0"])
    fused = f"{tmp_path / 'a'}*{tmp_path / 'b'}"
    named = f"{tmp_path / 'a'} * {tmp_path / 'b'}"  # the fused row's name in the tables
    # test_results.json says 25 % for a plain row; a fused row is scored from the predictions
    code, out = compare(tmp_path / "a", fused, f"{fused}+{fused}")
    assert code == 0, out
    assert f"| {named} | 1 | 100.00 ± n/a | 100.00 ± n/a | 75.00 ± n/a | 1 / 1 |" in out, out
    assert f"| {named} + {named} | 1 | 100.00 ± n/a | 100.00 ± n/a | 75.00 ± n/a |" in out, out
    code, out = compare("--per-class", tmp_path / "a", fused)
    assert code == 0 and f"| hap | {named} | 1 | 100.00 ± n/a | 100.00 ± n/a | 1 / 0 of 1 |" in out
    # Which utterances each gets right: one both, one each alone, one neither.
    code, out = compare("--overlap", tmp_path / "a", tmp_path / "b", fused)
    assert code == 0, out
    assert "/b | 1 | 25.00 ± n/a | 25.00 ± n/a | 25.00 ± n/a | 25.00 ± n/a |" in out, out
    assert f"| {named} | 1 | 50.00 ± n/a | 0.00 ± n/a | 50.00 ± n/a | 0.00 ± n/a |" in out, out
    # Rows of other utterances are not fused, nor compared; a mean of rows has no predictions.
    write_fold(tmp_path / "c" / "fold1", a[:3])
    code, out = compare(tmp_path / "a", f"{tmp_path / 'a'}*{tmp_path / 'c'}")
    assert code == 1 and "other utterances than the first row" in out, out
    code, out = compare("--overlap", tmp_path / "a", tmp_path / "c")
    assert code == 1 and "other utterances" in out, out
    code, out = compare("--overlap", tmp_path / "a", f"{tmp_path / 'a'}+{tmp_path / 'b'}")
    assert code == 1 and "has no predictions" in out, out
    code, out = compare(tmp_path / "a", f"{tmp_path / 'a'}*")
    assert code == 1 and "an empty row between the * signs" in out, out
