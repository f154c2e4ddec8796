"""``hnsd_sb.host_memory``: the heap's freed memory goes back to the system (glibc only)."""

import platform
import random

import pytest
import torch

from hnsd_sb.host_memory import release_freed_memory


def resident_mb():
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_memory_freed_between_kept_tensors_goes_back_to_the_system():
    # Tensors of many sizes (as batches of many lengths are), one in eight kept: what the
    # others held stays in the process, between the kept ones, until it is released.
    rng = random.Random(0)
    blocks = [torch.ones(rng.randint(2_000, 30_000)) for _ in range(4_000)]  # 8-120 KB each
    kept = blocks[::8]
    del blocks
    before = resident_mb()
    assert release_freed_memory() is True
    after = resident_mb()
    assert after < before - 100, (before, after)  # about 230 MB were freed
    assert all(bool((t == 1).all()) for t in kept)  # what is held is untouched
