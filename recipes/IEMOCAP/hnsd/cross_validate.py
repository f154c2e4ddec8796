#!/usr/bin/env python3
"""Runs ``train.py`` on several folds and writes a cross-validation report.

> python cross_validate.py hparams/hnsd.yaml --data_folder=/path/to/IEMOCAP_full_release \
>     --folds 1 2 3 4 5

Other ``--key=value`` arguments go to every ``train.py`` run unchanged (``--number_of_epochs=20``,
``--protocol=speaker``...). Without ``--folds`` every fold runs: the hparams file's ``n_folds``
(RAVDESS: 6), or IEMOCAP's 5 sessions (10 speakers with ``--protocol=speaker``). Fold k trains
in ``<cv_folder>/fold<k>``; a fold that already has its ``test_results.json`` is not trained
again, so an interrupted cross-validation resumes where it stopped (and an interrupted fold
resumes from its last checkpoint). The report, ``<cv_folder>/cv_results.md``, has per-fold and
mean ± std WA and UA and the confusion matrix summed over the folds (also as
``confusion_sum.csv`` and ``.png``).

``--script=baseline.py`` runs the statistics baseline on the same folds instead of ``train.py``.
``--no_report`` only trains (several such runs, one fold each, can share a machine: see the
RAVDESS recipe's ``run_experiments.sh``); ``--report_only`` trains nothing and reports the folds
that have finished, naming the missing ones. The report's header gives the arguments the folds
were trained with, as their ``test_results.json`` record them, so that a report written later
(or by another command) still says how its folds were run.
"""

import argparse
import json
import os
import re
import shlex
import subprocess
import sys

import speechbrain as sb

from hnsd_sb.report import save_confusion_matrix, summarize_folds

HERE = os.path.dirname(os.path.abspath(__file__))


def parse_args(argv):
    """Splits the command line into the driver's options and train.py's overrides."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("hparams", help="hparams file given to train.py")
    parser.add_argument(
        "--folds",
        type=int,
        nargs="+",
        default=None,
        help="the folds to run (default: all of them: the hparams file's n_folds, or IEMOCAP's "
        "5 sessions, 10 speakers with --protocol=speaker)",
    )
    parser.add_argument(
        "--script",
        default="train.py",
        help="the recipe script run on each fold: train.py, or baseline.py for the statistics "
        "baseline on the same folds",
    )
    parser.add_argument(
        "--cv_folder",
        default=None,
        help="where the folds and the report go (default: results/cv/<hparams name>)",
    )
    parser.add_argument("--no_report", action="store_true", help="train the folds, no report")
    parser.add_argument(
        "--report_only", action="store_true", help="report the finished folds, train none"
    )
    args, train_args = parser.parse_known_args(argv)
    if args.folds is None:
        with open(args.hparams, encoding="utf-8") as f:
            args.folds = list(range(1, number_of_folds(f.read(), train_args) + 1))
    if args.cv_folder is None:
        name = os.path.splitext(os.path.basename(args.hparams))[0]
        args.cv_folder = os.path.join("results", "cv", name)
    return args, train_args


def number_of_folds(hparams_text, train_args):
    """How many folds the hparams file (with the given overrides) has: its top-level
    ``n_folds``, else IEMOCAP's, whose folds are its protocol's (5 sessions, or 10 speakers).
    The yaml is read as text, not loaded: loading it would build the model to count the folds.

    Arguments
    ---------
    hparams_text : str
        The hparams file's text.
    train_args : list of str
        The overrides given for ``train.py`` (``--key=value`` or ``--key value``).

    Returns
    -------
    int
        The number of folds.

    Example
    -------
    >>> number_of_folds("fold: 1\\nn_folds: 6  # actors\\n", [])
    6
    >>> number_of_folds("n_folds: 6\\n", ["--n_folds=4"])
    4
    >>> number_of_folds("protocol: session\\n", ["--protocol=speaker"])
    10
    >>> number_of_folds("protocol: session\\n", ["--protocol", "speaker"])
    10
    """

    # SpeechBrain's own reading of the command line, so every override form it takes counts.
    _, _, overrides = sb.parse_arguments(["hparams.yaml", *train_args])

    def value(key):
        """The key's value: its override, else the file's, else None."""
        for text in (overrides, hparams_text):
            found = re.search(rf"^{key}:\s*([^\s#]+)", text, re.MULTILINE)
            if found:
                return found.group(1)
        return None

    n_folds = value("n_folds")
    if n_folds is not None:
        return int(n_folds)
    return 10 if value("protocol") == "speaker" else 5


def run_fold(hparams, fold, fold_folder, train_args, train=True, script="train.py"):
    """Trains and tests one fold with ``script`` (unless its results exist) and returns its test
    results (None for a fold that has none and ``train`` is False)."""
    results_file = os.path.join(fold_folder, "test_results.json")
    if not os.path.exists(results_file):
        if not train:
            return None
        cmd = [sys.executable, os.path.join(HERE, script), hparams, f"--fold={fold}"]
        cmd += [f"--output_folder={fold_folder}", *train_args]
        print(f"== fold {fold}: {shlex.join(cmd)}", flush=True)
        subprocess.run(cmd, check=True)
    with open(results_file, encoding="utf-8") as f:
        return {"fold": fold, **json.load(f)}


def trained_arguments(result):
    """The arguments a fold's script was run with, read from the command its
    ``test_results.json`` records, without the per-fold ``--fold`` and ``--output_folder``.

    Arguments
    ---------
    result : dict
        A fold's test results.

    Returns
    -------
    list of str or None
        The arguments after the hparams file; None when the results record no command.

    Example
    -------
    >>> trained_arguments({"command": "python train.py hparams/hnsd.yaml --fold=2 "
    ...                    "--output_folder=cv/fold2 --seed=7 '--x=[!ref <y>]'"})
    ['--seed=7', '--x=[!ref <y>]']
    >>> trained_arguments({"command": "python train.py --seed 7 h.yaml --fold 2 --output_folder o"})
    ['--seed', '7']
    >>> trained_arguments({}) is None
    True
    """
    command = result.get("command")
    if not command:
        return None
    words = shlex.split(command)[2:]  # the interpreter and the script
    yaml_files = [w for w in words if w.endswith((".yaml", ".yml")) and not w.startswith("-")]
    if yaml_files:
        words.remove(yaml_files[0])  # the hparams file
    kept, skip = [], False
    for word in words:
        if skip:
            skip = False
        elif word in ("--fold", "--output_folder"):
            skip = True  # and its value, the next word
        elif not word.startswith(("--fold=", "--output_folder=")):
            kept.append(word)
    return kept


def arguments_header(results, train_args, script):
    """The report's line (or lines) saying which arguments the folds' script was given.

    Arguments
    ---------
    results : list of dict
        The finished folds' test results, each with its ``fold``.
    train_args : list of str
        The arguments given to this driver, used for folds that record no command.
    script : str
        The script's name, for the text.

    Returns
    -------
    str
        Markdown: one line when every fold ran with the same arguments, else one per fold.

    Example
    -------
    >>> same = [{"fold": k, "command": f"python t.py h.yaml --fold={k} --seed=3"} for k in (1, 2)]
    >>> print(arguments_header(same, [], "t.py"), end="")
    Arguments given to t.py: `--seed=3`
    >>> print(arguments_header([same[0], {"fold": 3}], ["--seed=4"], "t.py"), end="")
    Arguments given to t.py, per fold:
    - fold 1: `--seed=3`
    - fold 3: `--seed=4` (not recorded by the fold: given to the reporting command)
    """
    unrecorded = " (not recorded by the fold: given to the reporting command)"
    per_fold = []
    for result in results:
        trained = trained_arguments(result)
        shown = f"`{shlex.join(train_args if trained is None else trained) or '(none)'}`"
        per_fold.append((result["fold"], shown + (unrecorded if trained is None else "")))
    if len({shown for _, shown in per_fold}) == 1:
        return f"Arguments given to {script}: {per_fold[0][1]}\n"
    lines = [f"Arguments given to {script}, per fold:"]
    lines += [f"- fold {k}: {shown}" for k, shown in per_fold]
    return "\n".join(lines) + "\n"


def main(argv=None):
    """Runs the folds and writes the report; returns the report's Markdown text."""
    args, train_args = parse_args(sys.argv[1:] if argv is None else argv)
    results = [
        run_fold(
            args.hparams,
            k,
            os.path.join(args.cv_folder, f"fold{k}"),
            train_args,
            train=not args.report_only,
            script=args.script,
        )
        for k in args.folds
    ]
    if args.no_report:
        return None
    missing = [k for k, r in zip(args.folds, results) if r is None]
    results = [r for r in results if r is not None]
    if not results:
        raise SystemExit(f"No fold of {args.cv_folder} has finished: nothing to report")
    labels = results[0]["labels"]
    markdown, confusion = summarize_folds(results, labels)
    os.makedirs(args.cv_folder, exist_ok=True)
    save_confusion_matrix(
        confusion,
        labels,
        os.path.join(args.cv_folder, "confusion_sum.csv"),
        os.path.join(args.cv_folder, "confusion_sum.png"),
        title=f"Summed over folds {', '.join(str(r['fold']) for r in results)}",
    )
    header = f"# Cross-validation of `{args.hparams}`\n\n"
    header += arguments_header(results, train_args, args.script) + "\n"
    if missing:
        header += f"**Not finished: fold(s) {', '.join(map(str, missing))}.**\n\n"
    with open(os.path.join(args.cv_folder, "cv_results.md"), "w", encoding="utf-8") as f:
        f.write(header + markdown + "\n")
    print(header + markdown)
    return markdown


if __name__ == "__main__":
    main()
