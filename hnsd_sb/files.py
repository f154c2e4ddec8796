"""Which paths hnsd-sb reads: regular files outside the kernel's pseudo file systems.

A FIFO blocks until someone writes to it, a device may never end, and files under ``/proc`` and
``/sys`` pass for regular files while some of them block (``/proc/kmsg``) or are endless. Model
folders, manifests and recordings come from others, and may be links to any of these: every file
hnsd-sb opens for reading goes through ``is_plain_file`` first.
"""

import os

PSEUDO_ROOTS = ("/proc", "/sys", "/dev")


def is_plain_file(path):
    """Whether ``path`` (links followed) is a regular file that reading cannot block.

    Arguments
    ---------
    path : str or path-like
        The file.

    Returns
    -------
    bool
        False for missing paths, folders, FIFOs, devices and files under ``PSEUDO_ROOTS``.

    Example
    -------
    >>> is_plain_file(__file__), is_plain_file("/proc/self/status"), is_plain_file("/dev/null")
    (True, False, False)
    """
    real = os.path.realpath(os.fspath(path))
    if any(real == root or real.startswith(root + os.sep) for root in PSEUDO_ROOTS):
        return False
    return os.path.isfile(real)
