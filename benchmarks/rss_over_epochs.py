#!/usr/bin/env python3
"""Memory of a training run epoch by epoch: the resident size (RSS) of a ``train.py`` process.

``bench_hnsd.py`` measures one epoch's peak; this follows a whole run, where glibc's heap can keep
growing as batches of ever different shapes come and go. It starts the given command, samples the
RSS of that process (not of its DataLoader workers) every ``--every`` seconds with the number of
epochs its ``train_log.txt`` holds, and prints per epoch the peak RSS, the RSS at the epoch's
last sample, and its wall time. Linux only (``/proc``).

Usage (from a recipe folder; anything after ``--`` is the command):
    python ../../../benchmarks/rss_over_epochs.py --output_folder /tmp/mem/fold1 --tsv mem.tsv -- \\
        python train.py hparams/hnsd_improved.yaml --output_folder=/tmp/mem/fold1 ...

The samples go to ``--tsv`` (seconds since start, epochs done, RSS in MiB), for plots or reruns
of the summary (``--summarize``).
"""

import argparse
import os
import subprocess
import sys
import time


def rss_mib(pid):
    """The resident size of process ``pid`` in MiB, or None once it has ended.

    Arguments
    ---------
    pid : int
        The process.

    Returns
    -------
    float or None
        ``VmRSS`` of ``/proc/<pid>/status`` in MiB.

    Example
    -------
    >>> rss_mib(os.getpid()) > 10
    True
    """
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def epochs_done(train_log):
    """The number of epoch lines in a ``train_log.txt`` (0 before it exists).

    Arguments
    ---------
    train_log : str
        The run's ``train_log.txt``.

    Returns
    -------
    int
        Its lines that start with ``epoch:``.

    Example
    -------
    >>> epochs_done("/nonexistent/train_log.txt")
    0
    """
    try:
        with open(train_log, encoding="utf-8") as f:
            return sum(line.startswith("epoch:") for line in f)
    except FileNotFoundError:
        return 0


def summarize(samples):
    """Per epoch, the peak RSS, the RSS of its last sample and its wall time, as Markdown.

    Arguments
    ---------
    samples : list of tuple
        ``(seconds, epochs done, RSS MiB)``; samples taken while epoch ``k + 1`` runs have
        ``k`` epochs done (the last ones, after training, the test stage).

    Returns
    -------
    str
        A Markdown table, one row per epoch (and a last one for what follows the last epoch:
        the evaluations).

    Example
    -------
    >>> print(summarize([(0, 0, 900.0), (5, 0, 1500.0), (10, 1, 1200.0), (15, 1, 1600.0)]))
    | epoch | peak RSS (MiB) | RSS at its end (MiB) | wall time (s) |
    |---:|---:|---:|---:|
    | 1 | 1500 | 1500 | 10 |
    | 2 | 1600 | 1600 | 5 |
    """
    lines = [
        "| epoch | peak RSS (MiB) | RSS at its end (MiB) | wall time (s) |",
        "|---:|---:|---:|---:|",
    ]
    by_epoch = {}
    for seconds, done, rss in samples:
        by_epoch.setdefault(done, []).append((seconds, rss))
    starts = {done: rows[0][0] for done, rows in by_epoch.items()}
    for done, rows in sorted(by_epoch.items()):
        end = starts.get(done + 1, rows[-1][0])
        peak = max(rss for _, rss in rows)
        lines.append(f"| {done + 1} | {peak:.0f} | {rows[-1][1]:.0f} | {end - starts[done]:.0f} |")
    return "\n".join(lines)


def main():
    """Runs the command, samples it and prints the summary (or summarizes a ``--tsv``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output_folder", help="the run's output folder (its train_log.txt)")
    parser.add_argument("--tsv", required=True, help="where the samples go (or are read from)")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--summarize", action="store_true", help="summarize --tsv, run nothing")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the training command")
    args = parser.parse_args()
    if args.summarize:
        samples = []
        with open(args.tsv, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                try:
                    seconds, done, rss = line.split()
                    samples.append((float(seconds), int(done), float(rss)))
                except ValueError:
                    sys.exit(f"{args.tsv}:{number}: not 'seconds epochs RSS': {line!r}")
        print(summarize(samples))
        return
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command or not args.output_folder:
        parser.error("give --output_folder and, after --, the training command")
    log = os.path.join(args.output_folder, "train_log.txt")
    start, samples = time.monotonic(), []
    proc = subprocess.Popen(command)
    with open(args.tsv, "w", encoding="utf-8") as out:
        while proc.poll() is None:
            rss = rss_mib(proc.pid)
            if rss is not None:
                samples.append((time.monotonic() - start, epochs_done(log), rss))
                seconds, done, rss = samples[-1]
                out.write(f"{seconds:.1f}\t{done}\t{rss:.0f}\n")
                out.flush()
            time.sleep(args.every)
    print(summarize(samples))
    sys.exit(proc.returncode)


if __name__ == "__main__":
    main()
