#!/usr/bin/env python3
"""Compares cross-validation rows with a reference row, fold by fold (the ablation table).

> python compare_rows.py experiments/h200/four/hnsd experiments/h200/four/*

The first folder is the reference; each folder is a ``cross_validate.py`` output (``--cv_folder``)
whose ``fold<k>/test_results.json`` are read. Prints a Markdown table: mean ± std WA and UA over
the folds, and the paired difference in UA from the reference on the same folds.
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


def row_name(cv_folder):
    """The row's name: its folder, without a leading ``experiments/``."""
    parts = os.path.normpath(cv_folder).split(os.sep)
    return "/".join(parts[1:] if parts[0] == "experiments" and len(parts) > 1 else parts)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("reference", help="the reference row's cv folder")
    parser.add_argument("rows", nargs="+", help="the cv folders to compare with it")
    parser.add_argument("--metric", default="UA", choices=["UA", "WA"])
    args = parser.parse_args()
    rows = {row_name(args.reference): read_row(args.reference)}
    for folder in args.rows:
        rows.setdefault(row_name(folder), read_row(folder))
    print(compare_to_reference(rows, row_name(args.reference), metric=args.metric))
