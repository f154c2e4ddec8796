#!/usr/bin/env python3
"""A/B timing of the paper-size HNSD plain and with ``hnsd_sb.cpu.accelerate``.

> OMP_NUM_THREADS=2 python benchmarks/fastpath_ab.py
> OMP_NUM_THREADS=1 python benchmarks/fastpath_ab.py --branch-cores 2

Alternates plain PyTorch and the accelerated model twice (the first pair includes warm-up, so
compare the second) and prints, for each:

- one training step (forward, backward and an Adam step) on a random ``[16, 450]``-frame batch,
  the fastest of three;
- batch-1 inference on one 5 s utterance, waveform to log-probabilities
  (``hnsd_sb.pipeline.classify``), as a real-time factor, the fastest of eight;
- batched inference, 16 utterances of 5 s (the network alone), in seconds of audio per second,
  the fastest of four.
"""

import argparse
import time

import torch

from hnsd_sb import HNSD, SpeakerNormalization, StaticDynamicFeatures
from hnsd_sb.cpu import accelerate, set_branch_cores
from hnsd_sb.pipeline import classify


def fastest(fn, repeats):
    """The shortest of ``repeats`` timed calls of ``fn`` (after one untimed call)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    """Prints the three timings for each setting."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--branch-cores", type=int, help="cores for the accelerated streams")
    args = parser.parse_args()
    if args.branch_cores:
        set_branch_cores(args.branch_cores)
    torch.manual_seed(0)
    model = HNSD()
    optimizer = torch.optim.Adam(model.parameters(), 1e-4, weight_decay=1e-3)
    static, dynamic = torch.randn(16, 450, 26), torch.randn(16, 450, 52)
    targets = torch.randint(0, 4, (16,))
    lens = torch.rand(16) * 0.2 + 0.8
    audio_seconds = float(lens.sum()) * 450 / 100
    features, normalizer = StaticDynamicFeatures(), SpeakerNormalization()
    wav, batch = torch.randn(1, 80000), (torch.randn(16, 500, 26), torch.randn(16, 500, 52))

    def step():
        """One training step."""
        optimizer.zero_grad()
        loss = torch.nn.functional.nll_loss(model(static, dynamic, lens), targets)
        loss.backward()
        optimizer.step()

    for fast in (False, True, False, True):
        accelerate(model, enabled=fast)
        model.train()
        train = fastest(step, 3)
        model.eval()
        with torch.inference_mode():
            one = fastest(lambda: classify(features, normalizer, model, wav, torch.ones(1)), 8)
            many = fastest(lambda: model(*batch), 4)
        name = "accelerated" if fast else "plain PyTorch"
        print(
            f"{name:14s} train {train:.3f} s/step ({audio_seconds / train:5.1f} audio-s/s)"
            f"  batch-1 RTF 5 s {one / 5:.4f}  batched {16 * 5 / many:5.0f} audio-s/s"
        )


if __name__ == "__main__":
    main()
