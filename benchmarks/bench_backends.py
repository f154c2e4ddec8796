#!/usr/bin/env python3
"""Speed and memory of the inference backends, side by side in one run.

For each backend of ``hnsd_sb.backends`` (torch fp32, torch int8, ONNX Runtime fp32 and int8) a
fresh process loads the same paper-size model folder (random weights: speed does not depend on
them) and measures, through ``EmotionRecognizer.infer_batch`` so the features and the speaker
normalisation are included:

- the real-time factor (seconds of compute per second of audio) of one utterance of 2, 5 and
  20 s, the best of several repetitions;
- batched throughput (seconds of audio per second) over padded batches of 16 utterances of
  IEMOCAP-like lengths (2-10 s);
- the process's peak memory (RSS).

The backends run one after the other, twice in alternating order, and the better of the two
runs is kept, so a passing load on the machine hurts neither more than the other. The ONNX
Runtime backends run with ``OMP_WAIT_POLICY=PASSIVE``, as ``hnsd predict`` runs them
(``hnsd_sb.cli.passive_openmp``; ``--active-openmp`` leaves the policy alone).

Usage: python benchmarks/bench_backends.py [--threads N] [--out FILE.json] [--active-openmp]
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import torch

BACKENDS = ("torch", "torch-int8", "onnx", "onnx-int8")


def child(folder, backend, threads):
    """Measures one backend in this process; prints its JSON result."""
    torch.set_num_threads(threads)
    from hnsd_sb.inference import EmotionRecognizer

    recognizer = EmotionRecognizer.from_folder(folder, {"device": "cpu"}, backend=backend)
    gen = torch.Generator().manual_seed(0)
    result = {}
    for seconds in (2, 5, 20):
        wav = torch.randn(1, 16000 * seconds, generator=gen) * 0.1
        recognizer.infer_batch(wav)  # warm-up
        times = []
        for _ in range(7 if seconds < 20 else 4):
            start = time.perf_counter()
            recognizer.infer_batch(wav)
            times.append(time.perf_counter() - start)
        result[f"rtf_{seconds}s"] = min(times) / seconds
    lengths = torch.empty(64).uniform_(2.0, 10.0, generator=gen)
    batches = []
    for first in range(0, 64, 16):
        secs = lengths[first : first + 16]
        longest = int(secs.max() * 16000)
        batches.append((torch.randn(16, longest, generator=gen) * 0.1, secs / secs.max()))
    recognizer.infer_batch(*batches[0])  # warm-up
    best = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        for wavs, lens in batches:
            recognizer.infer_batch(wavs, lens)
        best = min(best, time.perf_counter() - start)
    result["batched_audio_per_s"] = float(lengths.sum()) / best
    result["peak_rss_GiB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps(result))


def main():
    """Writes a model folder with its ONNX files, then measures every backend in turn."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--out", help="write the results (JSON) here too")
    parser.add_argument(
        "--active-openmp",
        action="store_true",
        help="leave OMP_WAIT_POLICY alone for the ONNX Runtime backends too (what passive "
        "waiting gains)",
    )
    parser.add_argument("--child", nargs=2, metavar=("FOLDER", "BACKEND"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child, args.threads)
        return
    from hnsd_sb import HNSD
    from hnsd_sb.cli import passive_openmp
    from hnsd_sb.export import write_model_folder

    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        folder = os.path.join(tmp, "model")
        state = HNSD(n_classes=4).state_dict()
        spec = {"model": ("hnsd_sb.HNSD", {"n_classes": 4})}
        write_model_folder(folder, ["ang", "hap", "neu", "sad"], state, modules=spec,
                           onnx=True, int8=True)  # fmt: skip
        runs = {backend: [] for backend in BACKENDS}
        for order in (BACKENDS, BACKENDS[::-1]):
            for backend in order:
                cmd = [sys.executable, __file__, "--threads", str(args.threads),
                       "--child", folder, backend]  # fmt: skip
                env = dict(os.environ)
                if not args.active_openmp:
                    passive_openmp(backend, env)  # as hnsd predict does
                out = subprocess.run(
                    cmd, capture_output=True, text=True, check=True, env=env
                ).stdout
                runs[backend].append(json.loads(out.strip().splitlines()[-1]))
    results = {}
    for backend, pair in runs.items():
        results[backend] = {
            key: (min if key.startswith("rtf") or key.startswith("peak") else max)(
                run[key] for run in pair
            )
            for key in pair[0]
        }
    report = {
        "threads": args.threads,
        "load_average": os.getloadavg()[0],
        "torch": torch.__version__,
        "results": results,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
