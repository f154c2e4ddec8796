#!/usr/bin/env python3
"""Newcomer demo: the real IEMOCAP recipe, end to end, on a synthetic IEMOCAP-format corpus.

> python demo.py

Writes a small corpus in the exact IEMOCAP release layout (10 speakers in 5 sessions; emotions
that differ in pitch, energy and tempo), then runs data prep, training, testing and the
cross-validation report through ``cross_validate.py`` and ``train.py`` with ``hparams/hnsd.yaml``,
exactly as on IEMOCAP. Only the number of epochs is lowered (``--epochs``). Everything lands in
``--workdir`` (default ``demo_run/``); running again reuses what is finished.
"""

import argparse
import os
import sys
import time

import cross_validate

from hnsd_sb.synthetic import make_synthetic_iemocap

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv=None):
    """Builds the corpus if needed, runs the folds and prints the results table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", default="demo_run")
    parser.add_argument("--folds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--epochs", type=int, default=8)
    args, train_args = parser.parse_known_args(argv)

    start = time.time()
    corpus = os.path.join(args.workdir, "IEMOCAP_synthetic")
    if not os.path.isdir(corpus):
        print(f"Writing a synthetic IEMOCAP-format corpus to {corpus}", flush=True)
        make_synthetic_iemocap(corpus)
    markdown = cross_validate.main(
        [
            os.path.join(HERE, "hparams", "hnsd.yaml"),
            f"--data_folder={corpus}",
            f"--cv_folder={os.path.join(args.workdir, 'cv')}",
            "--folds",
            *map(str, args.folds),
            f"--number_of_epochs={args.epochs}",
            *train_args,
        ]
    )
    print(f"\nDemo finished in {time.time() - start:.0f} s; report: {args.workdir}/cv/")
    return markdown


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
