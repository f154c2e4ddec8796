#!/usr/bin/env python3
"""Parity of the inference backends on folds' test speakers: labels, UA and log-probabilities.

Classifies every utterance of a recipe run's ``test.csv`` with each backend of a model folder
(``hnsd export --format onnx --quantize int8`` writes the ONNX files), in padded batches of 16
as ``hnsd predict`` would, with the test speakers normalised by their own statistics as the
recipe does. Reports, against torch fp32: the largest log-probability difference, the share of
identical labels, and the UA of each backend. Given several folds (a model folder for each
run), it also sums them up: mean UA and its difference, label agreement over all utterances.

Usage (from the repository root):
    python benchmarks/backend_parity.py --model MODEL_DIR... --run RUN_DIR... [--out FILE.json]
"""

import argparse
import csv
import json
from pathlib import Path

import torch

from hnsd_sb.audio import load_audio
from hnsd_sb.backends import BACKENDS
from hnsd_sb.inference import EmotionRecognizer


def fold_parity(model, run, data_folder=None):
    """Every backend of a model folder on one run's test manifest, against torch fp32.

    Arguments
    ---------
    model : str
        Model folder with the ONNX files.
    run : str
        The recipe run that tested it (its ``test.csv`` and ``prepare_options.json``).
    data_folder : str or None
        Value of ``$data_root`` (default: the run's).

    Returns
    -------
    dict
        The fold's report: per backend, the largest log-probability difference, the share of
        identical labels and the UA (%).
    """
    run = Path(run)
    data_root = data_folder or json.loads((run / "prepare_options.json").read_text())["data_folder"]
    with open(run / "test.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    wavs = [load_audio(r["wav"].replace("$data_root", data_root)) for r in rows]
    truth = [r["emo"] for r in rows]
    results = {}
    for backend in BACKENDS:
        recognizer = EmotionRecognizer.from_folder(model, {"device": "cpu"}, backend=backend)
        # the test speakers' own statistics, as the recipe normalises them
        for speaker in sorted({r["spk_id"] for r in rows}):
            recognizer.enroll(speaker, [w for w, r in zip(wavs, rows) if r["spk_id"] == speaker])
        outputs = []
        for first in range(0, len(wavs), 16):
            chunk = wavs[first : first + 16]
            longest = max(w.numel() for w in chunk)
            batch = torch.stack(
                [torch.nn.functional.pad(w, (0, longest - w.numel())) for w in chunk]
            )
            lens = torch.tensor([w.numel() / longest for w in chunk])
            speakers = [r["spk_id"] for r in rows[first : first + 16]]
            outputs.append(recognizer.infer_batch(batch, lens, speakers)[0])
        results[backend] = torch.cat(outputs)
    labels = EmotionRecognizer.from_folder(model, {"device": "cpu"}).labels
    report = {"utterances": len(rows), "model": str(model), "run": str(run)}
    reference = results["torch"]
    for backend, log_probs in results.items():
        predicted = [labels[i] for i in log_probs.argmax(1).tolist()]
        recalls = [
            sum(p == t == emo for p, t in zip(predicted, truth)) / truth.count(emo)
            for emo in sorted(set(truth))
        ]
        report[backend] = {
            "max_abs_log_prob_diff": float((log_probs - reference).abs().max()),
            "label_agreement": sum(a == b for a, b in zip(log_probs.argmax(1), reference.argmax(1)))
            / len(rows),
            "UA": 100 * sum(recalls) / len(recalls),
        }
    return report


def summary(folds):
    """Per backend over several folds: the mean UA and its difference from torch fp32's, the
    largest per-fold UA difference, the label agreement over all utterances and the largest
    log-probability difference."""
    total = sum(fold["utterances"] for fold in folds)
    out = {"folds": len(folds), "utterances": total}
    for backend in BACKENDS:
        diffs = [fold[backend]["UA"] - fold["torch"]["UA"] for fold in folds]
        out[backend] = {
            "mean_UA": sum(fold[backend]["UA"] for fold in folds) / len(folds),
            "mean_UA_diff": sum(diffs) / len(diffs),
            "max_abs_fold_UA_diff": max(abs(d) for d in diffs),
            "label_agreement": sum(
                fold[backend]["label_agreement"] * fold["utterances"] for fold in folds
            )
            / total,
            "max_abs_log_prob_diff": max(fold[backend]["max_abs_log_prob_diff"] for fold in folds),
        }
    return out


def main():
    """Runs every backend on each run's test manifest and prints the parity report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, nargs="+", help="model folders, one per run")
    parser.add_argument("--run", required=True, nargs="+", help="the recipe runs (their test.csv)")
    parser.add_argument("--data_folder", help="value of $data_root (default: the run's)")
    parser.add_argument("--out", help="also write the report here")
    args = parser.parse_args()
    if len(args.model) != len(args.run):
        parser.error(f"{len(args.model)} model folders for {len(args.run)} runs: give one each")
    folds = [fold_parity(m, r, args.data_folder) for m, r in zip(args.model, args.run)]
    report = folds[0] if len(folds) == 1 else {"folds": folds, "summary": summary(folds)}
    text = json.dumps(report, indent=2, default=float)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
