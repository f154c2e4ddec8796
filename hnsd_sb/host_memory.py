"""Host memory of a long training run: giving the C heap's freed memory back to the system.

Training on utterances of many lengths allocates tensors of many sizes. glibc's allocator keeps
much of the memory they free inside the process, so the resident size (RSS) of a training
process grows from epoch to epoch, mostly with memory it has freed. ``release_freed_memory`` asks
glibc to return what is free (``malloc_trim``). The recipe calls it at the start of every
stage: between epochs a run then stays near its first epoch's size (8-class RAVDESS fold, 512
units: 2060 MiB at the end of epoch 7 against 3763 without), at no measured cost in time. It
does not bound the peak within an epoch, which still rises from epoch to epoch (3742 against
3884 MiB in epoch 7); the README's "Memory over a whole run" has the measurements and what
else bounds it. PyTorch has no call for this: its CPU allocator is the C library's.
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
