"""Host memory of a long training run: giving the C heap's freed memory back to the system.

Training on utterances of many lengths allocates tensors of many sizes. glibc's allocator keeps
much of the memory they free inside the process, so the resident size (RSS) of a training
process grows from epoch to epoch, mostly with memory it has freed. ``release_freed_memory`` asks
glibc to return what is free (``malloc_trim``). The recipe calls it at the start of every stage,
which keeps the size between epochs near the first epoch's at no measured cost. With
``release_memory_every: N`` in the hparams it also calls it every N training batches, which holds
down the peak within an epoch too, at some cost in time (about 3 % with N = 10). The README's
"Memory over a whole run" has the measurements (``benchmarks/rss_over_epochs.py``). PyTorch has
no call for this: its CPU allocator is the C library's.
"""

import ctypes

_TRIM = None  # glibc's malloc_trim once looked up; False where the C library has none


def release_freed_memory():
    """Returns the memory that the C heap holds free to the operating system, where the C
    library is glibc (``malloc_trim(0)``); elsewhere it does nothing.

    Returns
    -------
    bool
        Whether glibc was asked (False where there is no ``malloc_trim``: macOS, Windows, musl).

    Example
    -------
    >>> release_freed_memory() in (True, False)
    True
    """
    global _TRIM
    if _TRIM is None:
        try:
            _TRIM = ctypes.CDLL(None).malloc_trim
            _TRIM.argtypes, _TRIM.restype = [ctypes.c_size_t], ctypes.c_int
        except (AttributeError, OSError, TypeError):
            _TRIM = False
    if not _TRIM:
        return False
    _TRIM(0)
    return True
