"""``fastio.info()``: what this process really has, measured at run time."""

import platform
import sys

from . import _impl


def _pipe_max_size():
    """The largest pipe an unprivileged process may ask for (``F_SETPIPE_SZ``), or None."""
    try:
        with open("/proc/sys/fs/pipe-max-size", "rb") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def gil_enabled():
    """Whether the interpreter runs with a GIL (False only on a free-threaded build)."""
    is_enabled = getattr(sys, "_is_gil_enabled", None)
    return True if is_enabled is None else bool(is_enabled())


def info():
    """A dict of the live implementation and the platform fast paths it found.

    Keys: ``implementation`` ("c" or "python"), ``native_available``, ``native_unavailable_reason``,
    ``python``, ``python_implementation``, ``platform``, ``machine``, ``gil_enabled``,
    ``sendfile``, ``splice``, ``copy_file_range``, ``writev``, ``iov_max``, ``poll``, ``memfd``,
    ``mirrored_ring``, ``atomics``, ``pipe_max_size``, ``page_size``.
    """
    facts = {
        "implementation": _impl.IMPLEMENTATION,
        "native_available": _impl.native_available(),
        "native_unavailable_reason": _impl.NATIVE_UNAVAILABLE,
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "platform": sys.platform,
        "machine": platform.machine(),
        "gil_enabled": gil_enabled(),
    }
    facts.update(_impl.twin_module("sys").probe())
    facts["pipe_max_size"] = _pipe_max_size()
    return facts
