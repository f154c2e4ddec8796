#!/usr/bin/env python3
"""Parity of the inference backends on a fold's test speakers: labels, UA and log-probabilities.

Classifies every utterance of a recipe run's ``test.csv`` with each backend of a model folder
(``hnsd export --format onnx --quantize int8`` writes the ONNX files), in padded batches of 16
as ``hnsd predict`` would, with the test speakers normalised by their own statistics as the
recipe does. Reports, against torch fp32: the largest log-probability difference, the share of
identical labels, and the UA of each backend.

Usage (from the repository root):
    python benchmarks/backend_parity.py --model MODEL_DIR --run RUN_DIR [--out FILE.json]
"""

import argparse
import csv
import json
from pathlib import Path

import torch

from hnsd_sb.audio import load_audio
from hnsd_sb.backends import BACKENDS
from hnsd_sb.inference import EmotionRecognizer


def main():
    """Runs every backend on the run's test manifest and prints the parity report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="model folder with the ONNX files")
    parser.add_argument("--run", required=True, help="the recipe run (its test.csv)")
    parser.add_argument("--data_folder", help="value of $data_root (default: the run's)")
    parser.add_argument("--out", help="also write the report here")
    args = parser.parse_args()
    run = Path(args.run)
    data_root = (
        args.data_folder or json.loads((run / "prepare_options.json").read_text())["data_folder"]
    )
    with open(run / "test.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    wavs = [load_audio(r["wav"].replace("$data_root", data_root)) for r in rows]
    truth = [r["emo"] for r in rows]
    results = {}
    for backend in BACKENDS:
        recognizer = EmotionRecognizer.from_folder(args.model, {"device": "cpu"}, backend=backend)
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
    labels = EmotionRecognizer.from_folder(args.model, {"device": "cpu"}).labels
    report = {"utterances": len(rows), "model": args.model, "run": args.run}
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
    text = json.dumps(report, indent=2, default=float)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
