#!/usr/bin/env python3
"""Compares cross-validation rows with a reference row, fold by fold (the ablation table).

> python compare_rows.py experiments/h200/four/hnsd experiments/h200/four/*

The first folder is the reference; each folder is a ``cross_validate.py`` output (``--cv_folder``)
whose ``fold<k>/test_results.json`` are read. Prints a Markdown table: mean ± std WA and UA over
the folds, and the paired difference in UA from the reference on the same folds. A row may also
be the JSON lines that ``ensemble.py`` printed (a ``.jsonl`` file): its ensemble's test UA per
fold (it records no WA). Rows joined by ``+`` (``ROW_SEED1+ROW_SEED2``, unless that is a
folder's own name) are one row: per fold, the mean of their figures, e.g. one setting over
several seeds; only the folds that all of them finished count, and the others are named on
stderr. ``--validation`` averages them the same way; ``--timing`` lists their folds row by row.

With ``--validation K`` it reads only the epoch lines of each fold's ``train_log.txt`` (never a
test figure, so settings can be chosen with it): per fold, the best validation UA and the mean
validation UA of the last K epochs, a score that a lucky epoch moves less than the maximum,
and the row's mean training and validation losses over those epochs (how closely the training
actors are fitted, against new ones). A ``baseline.py`` row has no epochs: both figures are
its validation UA at its chosen L2 weight (``baseline_selection.json``), and no losses.

With ``--curves K`` it prints each fold's training and validation curves, as means of
consecutive K-epoch spans, with the change of the training loss from span to span (whether a
run has converged); also from the logs alone.

With ``--classes neu hap sad ang`` the test figures are computed from each fold's
``predictions.csv`` over those emotions alone: only the utterances labelled with one of them
count, each predicted as the most probable of them (its ``p_<label>`` columns), e.g. a row
trained on 8 emotions scored as the 4-class task. An ``ensemble.py`` output is refused there:
``ensemble.py --classes`` scores ensembles that way itself.

With ``--per-class`` it prints, per emotion, each row's test recall from the folds'
``predictions.csv`` (mean ± std over the folds) and its paired difference from the
reference's: which emotions a row's UA gains or loses on. ``+`` joins rows as above;
``--classes`` scores over some emotions first.

With ``--split valid`` the table, ``--classes`` and ``--per-class`` read the figures of each
fold's chosen checkpoint on its validation actors (``valid_results.json``,
``valid_predictions.csv``, which ``train.py`` and ``baseline.py`` write beside the test ones)
instead of the test figures: a diagnosis that leaves the test actors alone.

Rows joined by ``*`` (``ROW_A*ROW_B``) are fused: per fold, the product of their
probabilities from ``predictions.csv``, renormalised (the mean of their log-probabilities, equal
weights, nothing chosen), utterance by utterance; e.g. HNSD and the statistics baseline as one
classifier. ``+`` may join fused rows (``A*B+C*D``), not the other way round. With
``--overlap`` it prints, per row, the shares of the utterances that it and the reference both
get right, only one of them, or neither: whether they err on the same utterances.

With ``--timing`` it prints each fold's wall-clock time from its ``log.txt`` (first to last
line, so pauses and waits count) and the seconds per epoch that gives.
"""

import argparse
import csv
import glob
import json
import os
import re
import sys
from datetime import datetime

import torch

from hnsd_sb.metrics import (
    confusion_matrix,
    per_class_recall,
    restrict_to_classes,
    unweighted_accuracy,
    weighted_accuracy,
)
from hnsd_sb.report import compare_to_reference, format_spread, split_file_names


def fold_folders(cv_folder):
    """The ``fold<k>`` folders of a cross-validation folder, as {k: path}, in fold order."""
    folders = {}
    for path in glob.glob(os.path.join(cv_folder, "fold*")):
        m = re.fullmatch(r"fold(\d+)", os.path.basename(path))
        if m and os.path.isdir(path):
            folders[int(m[1])] = path
    return dict(sorted(folders.items()))


def finished(fold_folder, split="test"):
    """Whether a fold has been scored on ``split`` (its results file exists; nothing is read)."""
    return os.path.exists(os.path.join(fold_folder, split_file_names(split)["results"]))


def unfinished(cv_folder, split):
    """The message for a row without a fold scored on ``split``."""
    results = split_file_names(split)["results"]
    hint = (
        "rows trained before train.py wrote it lack it"
        if split == "valid"
        else "no fold has finished: check the path, or train the row with run_experiments.sh"
    )
    return f"{cv_folder}: no fold<k>/{results} ({hint})"


def read_row(cv_folder, classes=None, split="test"):
    """The per-fold results on ``split`` of one cross-validation folder (or ``ensemble.py``
    output, test only), in fold order; over ``classes`` alone if given (see ``scores_over``)."""
    if mean_parts(cv_folder):
        return read_mean(mean_parts(cv_folder), classes, split)
    if fused_parts(cv_folder):
        return [
            {"fold": fold, **scores_over(paths, classes, split)}
            for fold, paths in fused_folds(cv_folder, split).items()
        ]
    if cv_folder.endswith(".jsonl"):
        if classes:
            raise SystemExit(f"{cv_folder}: --classes reads predictions.csv; use ensemble.py's")
        if split != "test":
            raise SystemExit(f"{cv_folder}: an ensemble.py output holds test figures alone")
        return read_ensemble(cv_folder)
    results = []
    for fold, path in fold_folders(cv_folder).items():
        if finished(path, split) and classes:
            results.append({"fold": fold, **scores_over(path, classes, split)})
        elif finished(path, split):
            results_file = os.path.join(path, split_file_names(split)["results"])
            with open(results_file, encoding="utf-8") as f:
                results.append({"fold": fold, **json.load(f)})
    if not results:
        raise SystemExit(unfinished(cv_folder, split))
    return results


# Probabilities below this are read as it when fused: predictions.csv rounds them to 6 decimals
PROBABILITY_FLOOR = 1e-6


def fold_predictions(fold_folder, classes=None, split="test"):
    """A fold's predictions on ``split`` (``predictions.csv``, ``valid_predictions.csv``) as
    (labels, utterance IDs, target indices, probabilities ``[n, labels]``); over ``classes``
    alone if given (``hnsd_sb.metrics.restrict_to_classes``). A fused row (``A*B``, see
    ``fused_parts``) gives its parts' product of probabilities, renormalised."""
    if isinstance(fold_folder, (list, tuple)):
        return fused_predictions(fold_folder, classes, split)
    path = os.path.join(fold_folder, split_file_names(split)["predictions"])
    try:
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            labels = [name[2:] for name in reader.fieldnames or [] if name.startswith("p_")]
            rows = list(reader)
    except FileNotFoundError:
        raise SystemExit(f"{path}: not found (the fold's {split} predictions)") from None
    try:
        ids = [row["ID"] for row in rows]
        targets = [labels.index(row["target"]) for row in rows]
        probs = torch.tensor([[float(row[f"p_{c}"]) for c in labels] for row in rows])
        probs = probs.reshape(len(rows), len(labels))
        if classes:
            kept = [i for i, t in enumerate(targets) if labels[t] in classes]
            probs, targets = restrict_to_classes(probs, targets, labels, classes)
            ids, labels = [ids[i] for i in kept], list(classes)
    except (KeyError, ValueError) as error:
        raise SystemExit(
            f"{path}: {error} (predictions.csv holds ID, target and p_<label>)"
        ) from None
    if not len(targets):
        raise SystemExit(f"{path}: no utterance of {labels}")
    return labels, ids, list(targets), probs


def matching_order(ids, other_ids, where):
    """The positions in ``other_ids`` of each of ``ids``, in their order (a tensor), so that two
    rows' predictions of one fold can be compared utterance by utterance; rows that scored
    other utterances are refused, naming ``where``."""
    if sorted(ids) != sorted(other_ids):
        raise SystemExit(f"{where}: other utterances than the first row's")
    position = {utt: i for i, utt in enumerate(other_ids)}
    return torch.tensor([position[utt] for utt in ids])


def fused_predictions(fold_folders, classes=None, split="test"):
    """The product of the probabilities of the same fold of several rows, renormalised (the
    mean of their log-probabilities, each at least ``PROBABILITY_FLOOR``), utterance by
    utterance: the rows fused with equal weights. Rows that scored other utterances or
    emotions, or gave one another target, are refused."""
    parts = [fold_predictions(folder, classes, split) for folder in fold_folders]
    labels, ids, targets, _ = parts[0]
    log_probs = []
    for folder, (part_labels, part_ids, part_targets, probs) in zip(fold_folders, parts):
        if part_labels != labels:
            raise SystemExit(f"{folder}: other emotions than {fold_folders[0]}'s: {part_labels}")
        index = matching_order(ids, part_ids, folder)
        if [part_targets[i] for i in index.tolist()] != targets:
            raise SystemExit(f"{folder}: other targets than {fold_folders[0]}'s")
        log_probs.append(probs[index].clamp_min(PROBABILITY_FLOOR).log())
    fused = torch.stack(log_probs).mean(0).softmax(dim=1)
    return labels, ids, targets, fused


def fold_confusion(fold_folder, classes=None, split="test"):
    """The labels and confusion matrix of a fold's predictions on ``split`` (see
    ``fold_predictions``), each utterance predicted as its most probable label (the first of
    them on a tie)."""
    labels, _, targets, probs = fold_predictions(fold_folder, classes, split)
    return labels, confusion_matrix(targets, probs.argmax(1), len(labels))


def scores_over(fold_folder, classes, split="test"):
    """WA and UA (fractions) of a fold's predictions on ``split``, over ``classes`` alone if
    given (see ``fold_confusion``). As everywhere, a class without an utterance is left out of
    UA."""
    cm = fold_confusion(fold_folder, classes, split)[1]
    return {"WA": weighted_accuracy(cm), "UA": unweighted_accuracy(cm)}


def fused_parts(row):
    """The rows that a ``*`` argument fuses (``[]`` for a plain row, or a path that exists with
    its ``*``); an empty part, or a part that is a mean of rows, is refused."""
    if "*" not in row or os.path.exists(row):
        return []
    parts = row.split("*")
    if not all(parts):
        raise SystemExit(f"{row}: an empty row between the * signs")
    for part in parts:
        if part.endswith(".jsonl"):
            raise SystemExit(f"{row}: {part} holds no predictions to fuse")
    return parts


def fused_folds(row, split="test"):
    """Per fold that every part of a fused ``row`` has scored on ``split``, its parts' fold
    folders, as {fold: [paths]}."""
    per_part = [
        {k: path for k, path in fold_folders(part).items() if finished(path, split)}
        for part in fused_parts(row)
    ]
    for part, folds in zip(fused_parts(row), per_part):
        if not folds:
            raise SystemExit(unfinished(part, split))
    return {fold: [folds[fold] for folds in per_part] for fold in common_folds(row, per_part)}


def scored_folds(row, split="test"):
    """The folds of a row (plain or fused, see ``fused_parts``) scored on ``split``, as {fold:
    what ``fold_predictions`` reads}; a row without one is refused."""
    if fused_parts(row):
        return fused_folds(row, split)
    if mean_parts(row) or row.endswith(".jsonl"):
        raise SystemExit(f"{row}: a mean of rows or an ensemble.py output has no predictions")
    folds = {k: path for k, path in fold_folders(row).items() if finished(path, split)}
    if not folds:
        raise SystemExit(unfinished(row, split))
    return folds


def print_overlap(reference, rows, classes=None, split="test"):
    """Prints, per row, the shares of the utterances (%) on ``split`` that it and the
    reference both classify right, only one of them, or neither (mean ± std over the folds
    both scored), as Markdown: whether two rows err on the same utterances, and so what fusing
    them (``A*B``) can gain."""
    ref = scored_folds(reference, split)
    print("| row | folds | both right | only the reference | only the row | neither |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        own = scored_folds(row, split)
        folds = common_folds(f"{reference} and {row}", [ref, own])
        shares = []
        for fold in folds:
            _, ids, targets, probs = fold_predictions(ref[fold], classes, split)
            _, other_ids, _, other_probs = fold_predictions(own[fold], classes, split)
            other = other_probs.argmax(1)[matching_order(ids, other_ids, f"{row}, fold {fold}")]
            a, b = probs.argmax(1) == torch.tensor(targets), other == torch.tensor(targets)
            shares.append([100 * float(m.float().mean()) for m in (a & b, a & ~b, ~a & b, ~a & ~b)])
        cells = " | ".join(format_spread([s[i] for s in shares]) for i in range(4))
        print(f"| {row_name(row)} | {len(folds)} | {cells} |")


def mean_parts(row):
    """The rows that a ``+`` argument joins (``[]`` for a plain row, or a path that exists with
    its ``+``); an empty part is refused."""
    if "+" not in row or os.path.exists(row):
        return []
    parts = row.split("+")
    if not all(parts):
        raise SystemExit(f"{row}: an empty row between the + signs")
    return parts


def common_folds(row, per_part):
    """The folds that every part of ``row`` has (dicts keyed by fold), naming the others."""
    common = set.intersection(*(set(part) for part in per_part))
    left_out = sorted(set().union(*per_part) - common)
    if left_out:
        print(f"{row}: fold(s) {left_out} left out: not finished in every row", file=sys.stderr)
    if not common:
        raise SystemExit(f"{row}: no fold that all of these rows finished")
    return sorted(common)


def read_mean(folders, classes=None, split="test"):
    """Per fold, the mean WA and UA of several rows (see ``read_row``), on the folds that all of
    them finished; a figure that one of them lacks (an ensemble's WA) is left out."""
    rows = [{r["fold"]: r for r in read_row(folder, classes, split)} for folder in folders]
    common = common_folds("+".join(folders), rows)
    means = []
    for fold in common:
        mean = {"fold": fold}
        for metric in ("WA", "UA"):
            if all(metric in row[fold] for row in rows):
                mean[metric] = sum(row[fold][metric] for row in rows) / len(rows)
        means.append(mean)
    return means


def read_ensemble(path):
    """The per-fold test UA of an ensemble, from the JSON lines ``ensemble.py`` printed."""
    results = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise SystemExit(
                    f"{path}, line {number}: not a JSON line of ensemble.py's output"
                ) from None
            if "fold" not in record:
                continue  # the closing line of means
            if record["fold"] in results:
                raise SystemExit(f"{path}, line {number}: fold {record['fold']} again")
            ua = record["ensemble test UA"] / 100
            results[record["fold"]] = {"fold": record["fold"], "UA": ua}
    if not results:
        raise SystemExit(f"{path}: no per-fold line of ensemble.py's output")
    return [results[k] for k in sorted(results)]


def read_recalls(cv_folder, classes=None, split="test"):
    """The emotions of a row and, per finished fold, each one's recall (%) on ``split`` from the
    fold's predictions (over ``classes`` alone if given), as (labels, {fold: {label: recall}}),
    NaN for an emotion without an utterance in the fold. Rows joined by ``+``: per fold, the
    mean of their recalls; fused by ``*``: the recalls of their fused predictions. Folds (or
    rows) with different emotions are refused."""
    if mean_parts(cv_folder):
        parts = [read_recalls(part, classes, split) for part in mean_parts(cv_folder)]
        labels = parts[0][0]
        if any(part_labels != labels for part_labels, _ in parts):
            raise SystemExit(f"{cv_folder}: the rows' emotions differ: {[p[0] for p in parts]}")
        per_part = [recalls for _, recalls in parts]
        return labels, {
            fold: {c: sum(part[fold][c] for part in per_part) / len(per_part) for c in labels}
            for fold in common_folds(cv_folder, per_part)
        }
    if cv_folder.endswith(".jsonl"):
        raise SystemExit(f"{cv_folder}: --per-class reads predictions.csv, which ensembles lack")
    labels, recalls = None, {}
    for fold, path in scored_folds(cv_folder, split).items():
        fold_labels, cm = fold_confusion(path, classes, split)
        if labels is not None and fold_labels != labels:
            raise SystemExit(f"{path}: emotions {fold_labels}, not the other folds' {labels}")
        labels = fold_labels
        recalls[fold] = dict(zip(labels, (100 * float(r) for r in per_class_recall(cm))))
    return labels, recalls


def print_per_class(reference, rows, classes=None, split="test"):
    """Prints, per emotion, each row's recall on ``split`` (mean ± std over its folds with an
    utterance of it) and its paired difference from the reference's on the folds both have, with
    the folds on which it is higher and lower (by at least 0.01, the last digit shown), as Markdown:
    where a row gains or loses its UA. Rows with other emotions than the reference's are
    refused before anything is printed, and folds that cannot be paired are named on stderr."""
    labels, ref = read_recalls(reference, classes, split)
    others = []
    for row in rows:
        row_labels, recalls = read_recalls(row, classes, split)
        if set(row_labels) != set(labels):
            raise SystemExit(
                f"{row}: emotions {row_labels}, not {reference}'s {labels} "
                "(--classes scores both over the same ones)"
            )
        unpaired = sorted(set(recalls) ^ set(ref))
        if unpaired == sorted(set(recalls) | set(ref)):
            raise SystemExit(f"{row}: no finished fold in common with {reference}")
        if unpaired:
            print(f"{row}: fold(s) {unpaired} not paired: not finished in both", file=sys.stderr)
        others.append((row, recalls))

    def present(recalls, label):
        """The folds' recalls of ``label``, without the NaN of folds that have none of it."""
        return [r[label] for r in recalls.values() if r[label] == r[label]]

    name = row_name(reference)
    print("| emotion | row | folds | recall (%) | − reference, paired | folds higher / lower |")
    print("|---|---|---:|---:|---:|---:|")
    for label in labels:
        values = present(ref, label)
        print(f"| {label} | {name} | {len(values)} | {format_spread(values)} | reference | |")
        for row, recalls in others:
            own = present(recalls, label)
            paired = [(recalls[k][label], ref[k][label]) for k in recalls if k in ref]
            diffs = [a - b for a, b in paired if a == a and b == b]
            higher = sum(d >= 0.01 - 1e-9 for d in diffs)
            lower = sum(d <= -0.01 + 1e-9 for d in diffs)
            print(
                f"| {label} | {row_name(row)} | {len(own)} | {format_spread(own)} "
                f"| {format_spread(diffs)} | {higher} / {lower} of {len(diffs)} |"
            )


EPOCH_FIGURES = ("train loss", "train UA", "valid loss", "valid UA")


def read_epochs(log):
    """The epoch lines of a ``train_log.txt`` as {epoch: {figure: value}}, for the figures of
    ``EPOCH_FIGURES`` (empty if the file does not exist; an epoch missing one is left out)."""
    if not os.path.exists(log):
        return {}
    number = r"([\d.]+(?:e[+-]?\d+)?|nan|inf)"  # a diverged epoch still counts
    epochs = {}
    with open(log, encoding="utf-8") as f:
        for line in f:
            epoch = re.match(r"epoch: (\d+),", line)
            figures = {
                f"{m[1]} {m[2]}": float(m[3])
                for m in re.finditer(rf"(train|valid) (loss|UA): {number}", line)
            }
            if epoch and all(key in figures for key in EPOCH_FIGURES):
                epochs[int(epoch[1])] = {key: figures[key] for key in EPOCH_FIGURES}
    return epochs


def print_curves(folders, window):
    """Prints, per fold of each row, the training and validation curves as the means of
    consecutive ``window``-epoch spans, and how much the training loss fell from the span
    before (whether training has converged), as Markdown."""
    print(
        f"| row | fold | epochs | train loss | train UA | valid loss | valid UA "
        f"| train loss vs the {window} epochs before |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for folder in folders:
        logs = {
            fold: read_epochs(os.path.join(path, "train_log.txt"))
            for fold, path in fold_folders(folder).items()
        }
        if not any(logs.values()):
            raise SystemExit(f"{folder}: no fold<k>/train_log.txt with epoch lines")
        for fold, epochs in logs.items():
            numbers, before = sorted(epochs), None
            for start in range(0, len(numbers) - window + 1, window):
                span = [epochs[e] for e in numbers[start : start + window]]
                mean = {key: sum(e[key] for e in span) / window for key in EPOCH_FIGURES}
                change = f"{100 * (mean['train loss'] / before - 1):+.1f} %" if before else ""
                before = mean["train loss"]
                span_name = f"{numbers[start]}-{numbers[start + window - 1]}"
                print(
                    f"| {row_name(folder)} | {fold} | {span_name} "
                    f"| {mean['train loss']:.3f} | {mean['train UA']:.1f} "
                    f"| {mean['valid loss']:.3f} | {mean['valid UA']:.1f} | {change} |"
                )


def validation_scores(cv_folder, last):
    """Per fold (in order), the best validation UA, the mean validation UA of the last ``last``
    epochs logged in ``fold<k>/train_log.txt``, the number of epochs logged, whether the
    fold has finished, and the mean training and validation losses of the last ``last`` epochs
    (how closely the training actors are fitted, against new ones). Rows joined by ``+``: per
    fold, the means of their scores (finished only if every row's fold is)."""
    if mean_parts(cv_folder):
        per_part = [validation_scores(part, last) for part in mean_parts(cv_folder)]
        means = {}
        for fold in common_folds(cv_folder, per_part):
            scores = [part[fold] for part in per_part]
            means[fold] = (
                sum(s[0] for s in scores) / len(scores),
                sum(s[1] for s in scores) / len(scores),
                min(s[2] for s in scores),
                all(s[3] for s in scores),
                sum(s[4] for s in scores) / len(scores),
                sum(s[5] for s in scores) / len(scores),
            )
        return means
    scores = {}
    for fold, path in fold_folders(cv_folder).items():
        epochs = read_epochs(os.path.join(path, "train_log.txt"))
        chosen = baseline_validation(path)
        if chosen is not None and not epochs:
            # a baseline.py fold: one validation UA (at its chosen L2), no epochs or losses
            scores[fold] = (chosen, chosen, 0, finished(path), float("nan"), float("nan"))
        elif epochs:
            tail = [epochs[e] for e in sorted(epochs)[-last:]]
            best = max(e["valid UA"] for e in epochs.values())
            means = {key: sum(e[key] for e in tail) / len(tail) for key in tail[0]}
            scores[fold] = (
                best,
                means["valid UA"],
                len(epochs),
                finished(path),
                means["train loss"],
                means["valid loss"],
            )
    if not scores:
        raise SystemExit(
            f"{cv_folder}: no fold<k>/train_log.txt with epoch lines (nor baseline_selection.json)"
        )
    return scores


def baseline_validation(fold_folder):
    """The validation UA (%) of a ``baseline.py`` fold at its chosen L2 weight, from its
    ``baseline_selection.json`` (None where there is none)."""
    path = os.path.join(fold_folder, "baseline_selection.json")
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            selection = json.load(f)
        (ua,) = [g["valid_UA"] for g in selection["grid"] if g["l2"] == selection["chosen_l2"]]
    except (ValueError, KeyError, TypeError) as err:
        raise SystemExit(f"{path}: not a baseline selection with one chosen L2 ({err!r})") from None
    return 100 * ua


def mean_score(scores, i, digits):
    """The mean of item ``i`` of the folds' ``scores`` as text with ``digits`` decimals, or
    ``"n/a"`` when no fold has finished."""
    mean = sum(s[i] for s in scores) / len(scores) if scores else float("nan")
    return "n/a" if mean != mean else f"{mean:.{digits}f}"  # none, or a baseline's losses


def print_validation(folders, last):
    """Prints the validation scores of each row (see ``validation_scores``) as Markdown; the
    means are over the finished folds, and a fold still training is marked so."""
    print(
        f"| row | folds | best valid UA | valid UA, last {last} epochs "
        f"| train loss, last {last} | valid loss, last {last} "
        f"| per fold: best / last {last} |"
    )
    print("|---|---|---|---|---|---|---|")
    for folder in folders:
        scores = validation_scores(folder, last)
        done = [s for s in scores.values() if s[3]]
        best, tail = mean_score(done, 0, 2), mean_score(done, 1, 2)
        losses = f"{mean_score(done, 4, 3)} | {mean_score(done, 5, 3)}"
        folds = ", ".join(
            f"{k}: {s[0]:.2f} / {s[1]:.2f} "
            f"({f'{s[2]} ep' if s[2] else 'baseline'}{'' if s[3] else ', running'})"
            for k, s in scores.items()
        )
        print(f"| {row_name(folder)} | {len(done)} | {best} | {tail} | {losses} | {folds} |")


def log_span(fold_folder):
    """The first and last timestamps of a fold's ``log.txt`` (None if it has none yet)."""
    stamps = []
    path = os.path.join(fold_folder, "log.txt")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                m = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)", line)
                if m:
                    stamps.append(datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S"))
    return (stamps[0], stamps[-1]) if stamps else None


def print_timing(folders):
    """Prints each finished fold's wall-clock minutes (first to last line of its ``log.txt``)
    and seconds per epoch; per row, the sum over its folds and the span from the first fold's
    start to the last one's end (shorter when folds ran side by side)."""
    print("| row | fold | epochs | minutes | s / epoch |")
    print("|---|---:|---:|---:|---:|")
    for folder in folders:
        spans = []
        for fold, path in fold_folders(folder).items():
            span = log_span(path)
            if not finished(path) or span is None:
                print(f"| {row_name(folder)} | fold{fold} | | running | |")
                continue
            with open(os.path.join(path, "train_log.txt"), encoding="utf-8") as f:
                epochs = len(re.findall(r"^epoch: ", f.read(), re.M))
            minutes = (span[1] - span[0]).total_seconds() / 60
            per_epoch = f"{60 * minutes / epochs:.0f}" if epochs else "n/a"
            print(f"| {row_name(folder)} | fold{fold} | {epochs} | {minutes:.1f} | {per_epoch} |")
            spans.append(span)
        if not spans:
            raise SystemExit(f"{folder}: no finished fold<k> with a log.txt")
        total = sum((b - a).total_seconds() for a, b in spans) / 60
        wall = (max(b for _, b in spans) - min(a for a, _ in spans)).total_seconds() / 60
        print(f"| {row_name(folder)} | all, one after another | | {total:.1f} | |")
        print(f"| {row_name(folder)} | all, first start to last end | | {wall:.1f} | |")


def row_name(cv_folder):
    """The row's name: its folder (or ensemble output, without ``.jsonl``), without a leading
    ``experiments/``; rows joined by ``+`` or ``*`` keep it between their names."""
    if mean_parts(cv_folder):
        return " + ".join(row_name(part) for part in mean_parts(cv_folder))
    if fused_parts(cv_folder):
        return " * ".join(row_name(part) for part in fused_parts(cv_folder))
    parts = os.path.normpath(cv_folder).removesuffix(".jsonl").split(os.sep)
    return "/".join(parts[1:] if parts[0] == "experiments" and len(parts) > 1 else parts)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("reference", help="the reference row's cv folder (or ensemble.py output)")
    parser.add_argument(
        "rows",
        nargs="*",
        help="the cv folders (or ensemble.py outputs) to compare with it; A+B: their mean per "
        "fold; A*B: their predictions fused (product of probabilities)",
    )
    parser.add_argument("--metric", default="UA", choices=["UA", "WA"])
    only = parser.add_mutually_exclusive_group()
    only.add_argument(
        "--validation",
        type=int,
        metavar="K",
        help="print validation scores only (best, and mean of the last K epochs), no test figure",
    )
    only.add_argument(
        "--timing", action="store_true", help="print each fold's wall-clock time, no result"
    )
    only.add_argument(
        "--curves",
        type=int,
        metavar="K",
        help="print each fold's training and validation curves in K-epoch means, no test figure",
    )
    only.add_argument(
        "--per-class",
        action="store_true",
        help="print each emotion's test recall per row, paired against the reference's",
    )
    only.add_argument(
        "--overlap",
        action="store_true",
        help="print the shares of utterances that each row and the reference both get right, "
        "only one of them, or neither",
    )
    parser.add_argument(
        "--split",
        default="test",
        choices=["test", "valid"],
        help="the figures that the table, --classes and --per-class read: test, or valid (the "
        "chosen checkpoint's on the validation actors, valid_predictions.csv)",
    )
    parser.add_argument(
        "--classes",
        nargs="+",
        metavar="LABEL",
        help="test figures over these emotions alone, from predictions.csv (e.g. neu hap sad ang)",
    )
    args = parser.parse_args()
    reads_logs = args.validation is not None or args.curves is not None or args.timing
    if args.classes and reads_logs:
        parser.error("--classes scores test predictions; --validation, --timing, --curves do not")
    if args.split != "test" and reads_logs:
        parser.error("--split chooses predictions; --validation, --timing, --curves read logs")
    if args.validation is not None and args.validation < 1:
        parser.error("--validation K needs K >= 1")
    if args.curves is not None:
        if args.curves < 1:
            parser.error("--curves K needs K >= 1")
        rows = [args.reference, *args.rows]  # curves are per run: a mean of rows, its rows
        print_curves([part for row in rows for part in mean_parts(row) or [row]], args.curves)
        raise SystemExit(0)
    if args.validation is not None:
        print_validation([args.reference, *args.rows], args.validation)
        raise SystemExit(0)
    if args.timing:  # times are per run: a mean of rows is listed as its rows
        rows = [args.reference, *args.rows]
        print_timing([part for row in rows for part in mean_parts(row) or [row]])
        raise SystemExit(0)
    if args.per_class:
        print_per_class(args.reference, args.rows, args.classes, args.split)
        raise SystemExit(0)
    if args.overlap:
        print_overlap(args.reference, args.rows, args.classes, args.split)
        raise SystemExit(0)
    rows = {row_name(args.reference): read_row(args.reference, args.classes, args.split)}
    for folder in args.rows:
        rows.setdefault(row_name(folder), read_row(folder, args.classes, args.split))
    try:
        print(compare_to_reference(rows, row_name(args.reference), metric=args.metric))
    except ValueError as error:
        raise SystemExit(f"compare_rows.py: {error}") from None
