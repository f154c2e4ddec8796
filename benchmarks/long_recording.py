#!/usr/bin/env python3
"""Emotion over time on a long recording: memory, speed and agreement of `hnsd predict --segment`.

Builds a recording by concatenating RAVDESS clips in blocks of one emotion (about 30 s each, the
emotions in turn, actors chosen by ``--actors``: use a fold's test actors, whom the model never
heard), runs ``hnsd predict --segment --plot`` on it in a subprocess, and reports the wall time,
the peak memory (RSS) of that process, and how often a window's label is the emotion of the block
its centre lies in. The recording is written to a temporary folder, never into the repository
(RAVDESS is CC BY-NC-SA; see ../shared/data/README.md).

Usage (from the repository root):
    python benchmarks/long_recording.py --model MODEL_DIR --minutes 60 --out results/long60
    python benchmarks/long_recording.py --model MODEL_DIR --minutes 2 --out results/long2

The results go to ``OUT/long_recording.json`` with the predictions (``OUT/predictions.jsonl``),
the blocks (``OUT/blocks.csv``) and the timeline plot (``OUT/plots/*.png``).
"""

import argparse
import csv
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
RAVDESS = ROOT.parent / "shared" / "data" / "ravdess"
CODES = {"01": "neu", "03": "hap", "04": "sad", "05": "ang"}  # the 4-class set's emotions


def build(minutes, actors, block_seconds, path, seed=0):
    """Writes the concatenation; returns its blocks as (start, end, emotion)."""
    rng = np.random.default_rng(seed)
    clips = {emo: [] for emo in CODES.values()}
    for actor in actors:
        for wav in sorted((RAVDESS / f"Actor_{actor:02d}").glob("*.wav")):
            code = wav.name.split("-")[2]
            if code in CODES:
                clips[CODES[code]].append(wav)
    rate = sf.info(str(next(iter(clips.values()))[0])).samplerate
    blocks, t, target = [], 0.0, minutes * 60
    order = list(clips)
    with sf.SoundFile(str(path), "w", samplerate=rate, channels=1, subtype="PCM_16") as out:
        while t < target:
            for emo in order:
                start = t
                while t - start < block_seconds and t < target:
                    data, clip_rate = sf.read(str(clips[emo][rng.integers(len(clips[emo]))]))
                    assert clip_rate == rate
                    data = data if data.ndim == 1 else data.mean(1)
                    out.write(data)
                    t += len(data) / rate
                blocks.append((round(start, 3), round(t, 3), emo))
                if t >= target:
                    break
    return blocks


def main():
    """Builds the recording, runs ``hnsd predict --segment`` on it, writes the report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="a 4-class model folder (hnsd export)")
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("--block", type=float, default=30.0, help="seconds per emotion block")
    parser.add_argument("--out", required=True, help="results folder")
    args = parser.parse_args()
    if not RAVDESS.is_dir():
        sys.exit(f"RAVDESS not found at {RAVDESS}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / f"ravdess_{args.minutes:g}min.wav"
        blocks = build(args.minutes, args.actors, args.block, wav)
        with open(out / "blocks.csv", "w", newline="") as f:
            csv.writer(f).writerows([("start", "end", "emotion"), *blocks])
        predictions, plots = str(out / "predictions.jsonl"), str(out / "plots")
        cmd = ["hnsd", "predict", "--model", args.model, "--segment", "-q",
               "-o", predictions, "--plot", plots, str(wav)]  # fmt: skip
        began = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - began
        peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        size = wav.stat().st_size
    if proc.returncode != 0:
        sys.exit(proc.stderr)
    records = [json.loads(line) for line in open(out / "predictions.jsonl")]
    windows = [r for r in records if r["window"] != "summary"]
    agree = 0
    for r in windows:
        centre = (r["start"] + r["end"]) / 2
        truth = next(emo for start, end, emo in blocks if start <= centre <= end)
        agree += r["label"] == truth
    duration = blocks[-1][1]
    report = {
        "minutes": round(duration / 60, 2),
        "file_MB": round(size / 1e6, 1),
        "windows": len(windows),
        "wall_s": round(wall, 1),
        "rtf": round(wall / duration, 5),
        "peak_rss_GiB": round(peak_kib / 2**20, 3),
        "window_agreement_with_block_emotion": round(agree / len(windows), 4),
        "chance": 0.25,
        "actors": args.actors,
        "model": os.path.abspath(args.model),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"load {os.getloadavg()[0]:.1f}",
        "command": " ".join(sys.argv),
    }
    (out / "long_recording.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
