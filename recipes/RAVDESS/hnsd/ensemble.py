#!/usr/bin/env python3
"""Scores an ensemble of finished cross-validation rows on each fold's validation and test actors.

> python ensemble.py --data_folder=/path/to/ravdess experiments/four/hnsd_improved \
>     experiments/proxy/lstm256/four/hnsd_improved experiments/proxy/lstm128/four/hnsd_improved

Per fold, the tested checkpoint of each row (best validation UA, kept in ``fold<k>/save/``) is
exported to a temporary model folder and run by ``EmotionRecognizer`` on the fold's
``valid.csv`` and ``test.csv``, with each actor's own statistics as in training. The ensemble is
run as users run it, by ``EmotionRecognizer.from_folders`` (``hnsd predict --model A --model B``),
and must give the members' mean probabilities. Prints, per fold, each member's and the ensemble's
validation and test UA as JSON lines, then the means; a member's test UA is checked against the
row's ``test_results.json``, so the scores are those of the runs.

With ``--speeds 90 100 110`` each member also scores every recording at those speeds (resampled
as the training augmentation ``SpeedPerturb`` does, speaker statistics unchanged) and averages
the probabilities; the JSON lines then carry ``... speeds UA`` beside each plain UA, the same
weights with and without the averaging, and end with one line per member and split: the
per-fold differences (averaged minus plain), their mean and how many folds are at least 0 and
above 0 (``experiments/proxy/SELECTION.md``, "Averaging over speeds at test time").

With ``--classes neu hap sad ang`` every UA printed is over those emotions alone: only the
utterances labelled with one of them are scored, each as the most probable of them, e.g. rows
trained on 8 emotions scored as a 4-class task (``SELECTION.md``, "Training on all eight
emotions, scored over the four"). The check against ``test_results.json`` still uses all
classes.

With ``--teacher-targets DIR`` the ensemble also scores each fold's training utterances and
writes its probabilities to ``DIR/fold<k>/teacher.csv``: the soft targets of a distillation run
(``train.py hparams/hnsd_improved.yaml --teacher_folder=DIR``, ``hnsd_sb.distill``). The JSON
lines then carry the ensemble's training UA and its mean probability of the true emotion.
"""

import argparse
import json
import os
import sys
import tempfile

import torch
from speechbrain.augment.time_domain import Resample

from hnsd_sb.distill import write_teacher_targets
from hnsd_sb.export import export_model
from hnsd_sb.inference import EmotionRecognizer
from hnsd_sb.manifest import read_rows, resolve_path
from hnsd_sb.metrics import confusion_matrix, restrict_to_classes, unweighted_accuracy


def read_manifest(path, data_folder):
    """The rows of a fold's manifest, with ``$data_root`` replaced."""
    rows = [row for _, row in read_rows(path)[1]]
    for row in rows:
        row["wav"] = resolve_path(row["wav"], {"data_root": data_folder})
    return rows


def at_speeds(recognizer, wavs, lens, speakers, speeds):
    """Class probabilities ``[len(speeds), batch, classes]`` of a padded batch played at each of
    ``speeds`` (%, 100: as recorded).

    A speed of 90 stretches the recording to 100/90 of its length (and lowers its pitch), as
    ``speechbrain.augment.time_domain.SpeedPerturb`` does in training (without its random
    draw); the padding stretches with it, so the relative lengths stay.
    """
    out = []
    for speed in speeds:
        played = wavs if speed == 100 else Resample(orig_freq=speed, new_freq=100)(wavs)
        out.append(recognizer.infer_batch(played, lens, speakers)[0].exp())
    return torch.stack(out)


def probabilities(recognizer, rows, batch_size=16, speeds=(100,)):
    """Class probabilities ``[len(speeds), n, classes]`` of the rows, in their order, in padded
    batches, each recording read once and played at each of ``speeds``."""
    out = [None] * len(rows)
    order = sorted(range(len(rows)), key=lambda i: float(rows[i]["duration"]))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        wavs = [recognizer.load_audio(rows[i]["wav"]) for i in chunk]
        longest = max(w.numel() for w in wavs)
        batch = torch.zeros(len(wavs), longest)
        for j, w in enumerate(wavs):
            batch[j, : w.numel()] = w
        lens = torch.tensor([w.numel() / longest for w in wavs])
        speakers = [rows[i]["spk_id"] for i in chunk]
        probs = at_speeds(recognizer, batch, lens, speakers, speeds)
        for j, i in enumerate(chunk):
            out[i] = probs[:, j]
    return torch.stack(out, dim=1)


def ua(probs, rows, labels, classes=None):
    """Unweighted accuracy (%) of the most probable labels (of ``classes`` alone, over the
    utterances labelled with one of them, if given: ``restrict_to_classes``)."""
    index = {label: i for i, label in enumerate(labels)}
    targets = torch.tensor([index[r["emo"]] for r in rows])
    if classes:
        probs, targets = restrict_to_classes(probs, targets, labels, classes)
        labels = classes
    cm = confusion_matrix(targets, probs.argmax(1), len(labels))
    return round(100 * float(unweighted_accuracy(cm)), 2)


def write_targets(args, fold, ensemble, labels, result):
    """Writes the ensemble's probabilities of the fold's training utterances (as recorded) to
    ``<--teacher-targets>/fold<k>/teacher.csv``, the soft targets of a distillation run
    (``hnsd_sb.distill``), and adds the ensemble's training UA and mean probability of the true
    emotion to ``result``. Every member must have trained on the same utterances."""
    rows = None
    for row in args.rows:
        run = os.path.join(row, f"fold{fold}")
        mine = read_manifest(os.path.join(run, "train.csv"), args.data_folder)
        if rows is not None and [r["ID"] for r in mine] != [r["ID"] for r in rows]:
            sys.exit(f"{run}: train.csv lists other utterances than {args.rows[0]}'s")
        rows = rows or mine
    probs = probabilities(ensemble, rows)[0]
    path = os.path.join(args.teacher_targets, f"fold{fold}", "teacher.csv")
    write_teacher_targets(path, [r["ID"] for r in rows], labels, probs)
    true = torch.tensor([labels.index(r["emo"]) for r in rows])
    result["ensemble train UA"] = ua(probs, rows, labels, args.classes)
    result["ensemble train p(true)"] = round(float(probs[torch.arange(len(rows)), true].mean()), 4)


def main(argv=None):
    """Prints per-fold and mean validation and test UA of each member and of the ensemble."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", nargs="+", help="cross-validation folders (the members)")
    parser.add_argument("--data_folder", required=True, help="the folder holding Actor_01/...")
    parser.add_argument("--folds", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6])
    parser.add_argument(
        "--speeds",
        type=int,
        nargs="+",
        help="also score each recording at these speeds (%%) and average (e.g. 90 100 110)",
    )
    parser.add_argument(
        "--classes",
        nargs="+",
        help="score over these emotions alone, e.g. neu hap sad ang for 8-class rows",
    )
    parser.add_argument(
        "--teacher-targets",
        metavar="DIR",
        help="also write the ensemble's probabilities of each fold's training utterances to "
        "DIR/fold<k>/teacher.csv, for distillation (train.py --teacher_folder=DIR)",
    )
    args = parser.parse_args(argv)
    speeds = args.speeds or []
    # every recording is read once and played as recorded and at each other speed once
    played_at = [100, *dict.fromkeys(s for s in speeds if s != 100)]
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    totals = {}
    for fold in args.folds:
        result = {"fold": fold}
        sums, labels, rows_of, folders = {}, None, {}, []
        with tempfile.TemporaryDirectory() as tmp:
            for k, row in enumerate(args.rows):
                run = os.path.join(row, f"fold{fold}")
                folders.append(export_model(run, os.path.join(tmp, f"member{k}")))
                recognizer = EmotionRecognizer.from_folder(folders[-1], run_opts={"device": "cpu"})
                if labels is None:
                    labels = recognizer.labels
                assert recognizer.labels == labels, f"{run}: other labels"
                for split in ("valid", "test"):
                    rows = read_manifest(os.path.join(run, f"{split}.csv"), args.data_folder)
                    if [r["ID"] for r in rows] != [
                        r["ID"] for r in rows_of.setdefault(split, rows)
                    ]:
                        sys.exit(f"{run}: {split}.csv lists other utterances than {args.rows[0]}'s")
                    played = probabilities(recognizer, rows, speeds=played_at)
                    probs = played[0]  # as recorded
                    sums[split] = sums.get(split, 0) + probs
                    try:
                        result[f"{row} {split} UA"] = ua(probs, rows, labels, args.classes)
                    except ValueError as error:
                        sys.exit(f"{run}: --classes {error}")
                    if speeds:
                        averaged = played[[played_at.index(s) for s in speeds]].mean(0)
                        result[f"{row} {split} speeds UA"] = ua(
                            averaged, rows, labels, args.classes
                        )
                    if split == "test":
                        got = ua(probs, rows, labels)  # over all classes, as the run tested
                with open(os.path.join(run, "test_results.json"), encoding="utf-8") as f:
                    recorded = round(100 * json.load(f)["UA"], 2)
                if abs(recorded - got) > 0.01:
                    sys.exit(f"{run}: test UA {got} here, but the run recorded {recorded}")
            # The ensemble as users run it (hnsd predict --model A --model B): it must give the
            # members' mean probabilities.
            ensemble = EmotionRecognizer.from_folders(folders, run_opts={"device": "cpu"})
            for split in ("valid", "test"):
                probs = probabilities(ensemble, rows_of[split])[0]
                if not torch.allclose(probs, sums[split] / len(args.rows), atol=1e-5):
                    sys.exit(f"fold {fold}: from_folders does not give the members' mean")
                result[f"ensemble {split} UA"] = ua(probs, rows_of[split], labels, args.classes)
            if args.teacher_targets:
                write_targets(args, fold, ensemble, labels, result)
        for key, value in result.items():
            if key != "fold":
                totals.setdefault(key, []).append(value)
        print(json.dumps(result), flush=True)
    print(json.dumps({key: round(sum(v) / len(v), 2) for key, v in totals.items()}))
    if args.speeds:  # the averaging against the plain recordings, paired over the folds
        for row in args.rows:
            for split in ("valid", "test"):
                plain, averaged = totals[f"{row} {split} UA"], totals[f"{row} {split} speeds UA"]
                diffs = [round(a - b, 2) for a, b in zip(averaged, plain)]
                summary = {"row": row, "split": split, "speeds minus plain": diffs}
                summary["mean"] = round(sum(diffs) / len(diffs), 2)
                summary["folds at least 0"] = sum(d >= 0 for d in diffs)
                summary["folds above 0"] = sum(d > 0 for d in diffs)
                print(json.dumps(summary))


if __name__ == "__main__":
    main()
