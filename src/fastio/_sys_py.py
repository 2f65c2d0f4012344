"""Python probe of the fast paths the Python twins can reach through ``os``."""

import errno
import mmap
import os
import select

from . import _stats

__all__ = ["probe"]

# System calls go through the table, so profile() (and fault injection) see them.
_calls = _stats.syscalls("sys")


def _syscall_exists(name, *args):
    """Call with invalid fds: EBADF proves the kernel knows the call, ENOSYS that it does not
    (the table's stub for a call ``os`` lacks raises ENOSYS too)."""
    try:
        getattr(_calls, name)(*args)
    except OSError as exc:
        return exc.errno != errno.ENOSYS
    return True


def probe():
    """Fast paths found at run time through the ``os`` module."""
    try:
        iov_max = os.sysconf("SC_IOV_MAX")
    except (AttributeError, ValueError, OSError):
        iov_max = 1024
    return {
        "sendfile": _syscall_exists("sendfile", -1, -1, 0, 1),
        "splice": _syscall_exists("splice", -1, -1, 1),
        "copy_file_range": _syscall_exists("copy_file_range", -1, -1, 1),
        "writev": hasattr(os, "writev"),
        "iov_max": iov_max if iov_max > 0 else 1024,
        "poll": hasattr(select, "poll"),
        "memfd": hasattr(os, "memfd_create"),
        # Python's mmap cannot map one file twice at fixed adjacent addresses.
        "mirrored_ring": False,
        "atomics": False,
        "page_size": mmap.PAGESIZE,
    }
