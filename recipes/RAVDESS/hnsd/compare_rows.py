#!/usr/bin/env python3
"""Compares cross-validation rows with a reference row, fold by fold (the ablation table).

> python compare_rows.py experiments/h200/four/hnsd experiments/h200/four/*

The first folder is the reference; each folder is a ``cross_validate.py`` output (``--cv_folder``)
whose ``fold<k>/test_results.json`` are read. Prints a Markdown table: mean ± std WA and UA over
the folds, and the paired difference in UA from the reference on the same folds.

With ``--validation K`` it reads only the epoch lines of each fold's ``train_log.txt`` (never a
test figure, so settings can be chosen with it): per fold, the best validation UA and the mean
validation UA of the last K epochs, a score that a lucky epoch moves less than the maximum.
"""

import argparse
import glob
import json
import os
import re

from hnsd_sb.report import compare_to_reference


def read_row(cv_folder):
    """The per-fold test results of one cross-validation folder, in fold order."""
    results = []
    for path in glob.glob(os.path.join(cv_folder, "fold*", "test_results.json")):
        fold = int(re.search(r"fold(\d+)", path).group(1))
        with open(path, encoding="utf-8") as f:
            results.append({"fold": fold, **json.load(f)})
    if not results:
        raise SystemExit(f"{cv_folder}: no fold<k>/test_results.json (has it been run?)")
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
    print(f"| row | folds | best valid UA | valid UA, last {last} epochs | per fold, last {last} |")
    print("|---|---|---|---|---|")
    for folder in folders:
        scores = validation_scores(folder, last)
        best = sum(s[0] for s in scores.values()) / len(scores)
        tail = sum(s[1] for s in scores.values()) / len(scores)
        folds = ", ".join(f"{k}: {s[1]:.2f} ({s[2]} ep)" for k, s in scores.items())
        print(f"| {row_name(folder)} | {len(scores)} | {best:.2f} | {tail:.2f} | {folds} |")


def row_name(cv_folder):
    """The row's name: its folder, without a leading ``experiments/``."""
    parts = os.path.normpath(cv_folder).split(os.sep)
    return "/".join(parts[1:] if parts[0] == "experiments" and len(parts) > 1 else parts)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("reference", help="the reference row's cv folder")
    parser.add_argument("rows", nargs="+", help="the cv folders to compare with it")
    parser.add_argument("--metric", default="UA", choices=["UA", "WA"])
    parser.add_argument(
        "--validation",
        type=int,
        metavar="K",
        help="print validation scores only (best, and mean of the last K epochs), no test figure",
    )
    args = parser.parse_args()
    if args.validation:
        print_validation([args.reference, *args.rows], args.validation)
        raise SystemExit(0)
    rows = {row_name(args.reference): read_row(args.reference)}
    for folder in args.rows:
        rows.setdefault(row_name(folder), read_row(folder))
    print(compare_to_reference(rows, row_name(args.reference), metric=args.metric))
