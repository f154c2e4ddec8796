#!/usr/bin/env python3
"""A/B timing of one full-size HNSD training step with the CPU fast paths off and on.

> OMP_NUM_THREADS=2 python benchmarks/fastpath_ab.py

Times forward, backward and an Adam step on one random ``[16, 450]``-frame batch (paper-size
model), alternating plain PyTorch and ``hnsd_sb.cpu.accelerate`` twice, and prints the fastest
of three steps of each; the first pair includes warm-up, so compare the second.
"""

import time

import torch

from hnsd_sb import HNSD
from hnsd_sb.cpu import accelerate


def main():
    """Prints seconds per step and audio-seconds per second for each setting."""
    torch.manual_seed(0)
    model = HNSD()
    optimizer = torch.optim.Adam(model.parameters(), 1e-4, weight_decay=1e-3)
    static, dynamic = torch.randn(16, 450, 26), torch.randn(16, 450, 52)
    targets = torch.randint(0, 4, (16,))
    lens = torch.rand(16) * 0.2 + 0.8
    audio_seconds = float(lens.sum()) * 450 / 100
    for fast in (False, True, False, True):
        accelerate(model, enabled=fast)
        times = []
        for _ in range(3):
            start = time.perf_counter()
            optimizer.zero_grad()
            loss = torch.nn.functional.nll_loss(model(static, dynamic, lens), targets)
            loss.backward()
            optimizer.step()
            times.append(time.perf_counter() - start)
        best = min(times)
        name = "fast paths" if fast else "plain PyTorch"
        print(f"{name:14s} {best:.3f} s/step  {audio_seconds / best:6.1f} audio-s/s")


if __name__ == "__main__":
    main()
