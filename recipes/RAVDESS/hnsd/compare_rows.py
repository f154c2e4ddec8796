#!/usr/bin/env python3
"""Compares cross-validation rows with a reference row, fold by fold (the ablation table).

> python compare_rows.py experiments/h200/four/hnsd experiments/h200/four/*

The first folder is the reference; each folder is a ``cross_validate.py`` output (``--cv_folder``)
whose ``fold<k>/test_results.json`` are read. Prints a Markdown table: mean ± std WA and UA over
the folds, and the paired difference in UA from the reference on the same folds. A row may also
be the JSON lines that ``ensemble.py`` printed (a ``.jsonl`` file): its ensemble's test UA per
fold (it records no WA).

With ``--validation K`` it reads only the epoch lines of each fold's ``train_log.txt`` (never a
test figure, so settings can be chosen with it): per fold, the best validation UA and the mean
validation UA of the last K epochs, a score that a lucky epoch moves less than the maximum.

With ``--timing`` it prints each fold's wall-clock time from its ``log.txt`` (first to last
line, so pauses and waits count) and the seconds per epoch that gives.
"""

import argparse
import glob
import json
import os
import re
from datetime import datetime

from hnsd_sb.report import compare_to_reference


def read_row(cv_folder):
    """The per-fold test results of one cross-validation folder (or ``ensemble.py`` output), in
    fold order."""
    if cv_folder.endswith(".jsonl"):
        return read_ensemble(cv_folder)
    results = []
    for path in glob.glob(os.path.join(cv_folder, "fold*", "test_results.json")):
        fold = int(re.search(r"fold(\d+)", path).group(1))
        with open(path, encoding="utf-8") as f:
            results.append({"fold": fold, **json.load(f)})
    if not results:
        raise SystemExit(f"{cv_folder}: no fold<k>/test_results.json (has it been run?)")
    return sorted(results, key=lambda r: r["fold"])


def read_ensemble(path):
    """The per-fold test UA of an ensemble, from the JSON lines ``ensemble.py`` printed."""
    with open(path, encoding="utf-8") as f:
        lines = [json.loads(line) for line in f if line.strip()]
    results = [
        {"fold": line["fold"], "UA": line["ensemble test UA"] / 100}
        for line in lines
        if "fold" in line
    ]
    if not results:
        raise SystemExit(f"{path}: no per-fold line of ensemble.py's output")
    return sorted(results, key=lambda r: r["fold"])


def validation_scores(cv_folder, last):
    """Per fold (in order), the best validation UA, the mean validation UA of the last ``last``
    epochs logged in ``fold<k>/train_log.txt``, and the number of epochs logged."""
    scores = {}
    for path in glob.glob(os.path.join(cv_folder, "fold*", "train_log.txt")):
        fold = int(re.search(r"fold(\d+)", path).group(1))
        with open(path, encoding="utf-8") as f:
            epochs = {
                int(m[1]): float(m[2])
                for m in re.finditer(r"^epoch: (\d+),.* valid UA: ([\d.]+)", f.read(), re.M)
            }
        if epochs:
            tail = [epochs[e] for e in sorted(epochs)[-last:]]
            scores[fold] = (max(epochs.values()), sum(tail) / len(tail), len(epochs))
    if not scores:
        raise SystemExit(f"{cv_folder}: no fold<k>/train_log.txt with epoch lines")
    return dict(sorted(scores.items()))


def print_validation(folders, last):
    """Prints the validation scores of each row (see ``validation_scores``) as Markdown."""
    print(
        f"| row | folds | best valid UA | valid UA, last {last} epochs "
        f"| per fold: best / last {last} |"
    )
    print("|---|---|---|---|---|")
    for folder in folders:
        scores = validation_scores(folder, last)
        best = sum(s[0] for s in scores.values()) / len(scores)
        tail = sum(s[1] for s in scores.values()) / len(scores)
        folds = ", ".join(f"{k}: {s[0]:.2f} / {s[1]:.2f} ({s[2]} ep)" for k, s in scores.items())
        print(f"| {row_name(folder)} | {len(scores)} | {best:.2f} | {tail:.2f} | {folds} |")


def fold_minutes(fold_folder):
    """Wall-clock minutes from the first to the last timestamped line of a fold's ``log.txt``,
    and the number of epochs in its ``train_log.txt``."""
    stamps = []
    with open(os.path.join(fold_folder, "log.txt"), encoding="utf-8") as f:
        for line in f:
            m = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)", line)
            if m:
                stamps.append(datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S"))
    with open(os.path.join(fold_folder, "train_log.txt"), encoding="utf-8") as f:
        epochs = len(re.findall(r"^epoch: ", f.read(), re.M))
    return (stamps[-1] - stamps[0]).total_seconds() / 60, epochs


def print_timing(folders):
    """Prints each fold's wall-clock minutes and seconds per epoch, and each row's total."""
    print("| row | fold | epochs | minutes | s / epoch |")
    print("|---|---:|---:|---:|---:|")
    for folder in folders:
        total = 0.0
        for path in sorted(glob.glob(os.path.join(folder, "fold*", "log.txt"))):
            fold = os.path.dirname(path)
            minutes, epochs = fold_minutes(fold)
            total += minutes
            per_epoch = f"{60 * minutes / epochs:.0f}" if epochs else "n/a"
            name = os.path.basename(fold)
            print(f"| {row_name(folder)} | {name} | {epochs} | {minutes:.1f} | {per_epoch} |")
        print(f"| {row_name(folder)} | all, one after another | | {total:.1f} | |")


def row_name(cv_folder):
    """The row's name: its folder, without a leading ``experiments/``."""
    parts = os.path.normpath(cv_folder).split(os.sep)
    return "/".join(parts[1:] if parts[0] == "experiments" and len(parts) > 1 else parts)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("reference", help="the reference row's cv folder")
    parser.add_argument(
        "rows", nargs="*", help="the cv folders (or ensemble.py outputs) to compare with it"
    )
    parser.add_argument("--metric", default="UA", choices=["UA", "WA"])
    parser.add_argument(
        "--validation",
        type=int,
        metavar="K",
        help="print validation scores only (best, and mean of the last K epochs), no test figure",
    )
    parser.add_argument(
        "--timing", action="store_true", help="print each fold's wall-clock time, no result"
    )
    args = parser.parse_args()
    if args.validation:
        print_validation([args.reference, *args.rows], args.validation)
        raise SystemExit(0)
    if args.timing:
        print_timing([args.reference, *args.rows])
        raise SystemExit(0)
    rows = {row_name(args.reference): read_row(args.reference)}
    for folder in args.rows:
        rows.setdefault(row_name(folder), read_row(folder))
    print(compare_to_reference(rows, row_name(args.reference), metric=args.metric))
