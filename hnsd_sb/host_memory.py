"""Host memory of a long training run: giving the C heap's freed memory back to the system.

Training on utterances of many lengths allocates tensors of many sizes. glibc's allocator keeps
the memory they free inside the process, fragmented, so the resident size of a training process
grows epoch after epoch although nothing it holds grows (a 512-unit HNSD on RAVDESS grew by about
40 MB an epoch, most of it glibc's ``[heap]``). ``release_freed_memory`` asks glibc to return
it (``malloc_trim``); the recipe calls it at the start of every stage. PyTorch has no call for
this: its CPU allocator is the C library's.
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
