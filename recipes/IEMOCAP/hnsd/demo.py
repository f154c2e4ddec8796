#!/usr/bin/env python3
"""Newcomer demo: the real IEMOCAP recipe, end to end, on a synthetic IEMOCAP-format corpus.

> python demo.py            # 5 folds x 8 epochs of the full-size model
> python demo.py --quick    # the same flow with a small model, in a few minutes at most

Writes a small corpus in the exact IEMOCAP release layout (10 speakers in 5 sessions; emotions
that differ in pitch, energy and tempo), then runs data prep, training, testing and the
cross-validation report through ``cross_validate.py`` and ``train.py`` with ``hparams/hnsd.yaml``,
exactly as on IEMOCAP. Only the number of epochs is lowered (``--epochs``); ``--quick`` also
runs 2 folds only, with a small model (``QUICK_ARGS``: LSTMs of 64 units, lr 1e-3), to show the
flow rather than the model's figures. Everything lands in
``--workdir`` (default ``demo_run/``, or ``demo_quick/`` with ``--quick``, so the two never mix);
running again reuses what is finished. The closing line gives the wall and CPU time it took,
where the results are, and the commands to try next.
"""

import argparse
import os
import resource
import sys
import time

import cross_validate

from hnsd_sb.synthetic import make_synthetic_iemocap

HERE = os.path.dirname(os.path.abspath(__file__))
# train.py overrides of the quick demo: a small model, which learns at lr 1e-3 in a few epochs.
QUICK_ARGS = ["--lstm_size=64", "--fc_size=32", "--lr=0.001"]


def main(argv=None):
    """Builds the corpus if needed, runs the folds and prints the results table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="2 folds x 4 epochs of a small model into demo_quick/ (a few minutes at most)",
    )
    parser.add_argument("--workdir", default=None, help="demo_run/ (demo_quick/ with --quick)")
    parser.add_argument("--folds", type=int, nargs="+", default=None, help="1 2 3 4 5 (1 2)")
    parser.add_argument("--epochs", type=int, default=None, help="8 (4 with --quick)")
    args, train_args = parser.parse_known_args(argv)
    quick = {"workdir": "demo_quick", "folds": [1, 2], "epochs": 4}
    full = {"workdir": "demo_run", "folds": [1, 2, 3, 4, 5], "epochs": 8}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.quick:  # the user's own overrides win
        given = {arg.split("=")[0] for arg in train_args}
        train_args = [arg for arg in QUICK_ARGS if arg.split("=")[0] not in given] + train_args

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
    cpu = sum(
        usage.ru_utime + usage.ru_stime
        for usage in map(resource.getrusage, (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    )
    cv = os.path.join(args.workdir, "cv")
    print(
        f"\nDemo finished in {time.time() - start:.0f} s ({cpu / 60:.1f} CPU-minutes). "
        f"Report: {cv}/cv_results.md; each fold's results, log and best checkpoint: "
        f"{cv}/fold<k>/.\nNext, make a model folder of fold {args.folds[0]}'s model and run it "
        f"on that fold's test speakers:\n  hnsd export {cv}/fold{args.folds[0]} demo_model\n"
        f"  hnsd predict --model demo_model {corpus}/Session{args.folds[0]}/sentences/wav/"
    )
    return markdown


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
