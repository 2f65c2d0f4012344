"""Chooses the implementation once per process: the native twins or the Python twins.

``FASTIO_IMPL=c`` loads the native twins or raises ``ImportError`` saying why;
``FASTIO_IMPL=python`` loads the Python twins; unset means native when it imports, else Python.
The choice covers every primitive at once: a half-native process is never built.
"""

import importlib
import os
import types

ALLOWED = ("c", "python")

#: One trio per primitive: ``fastio._<name>_c`` (Cython), ``fastio._<name>_py`` (Python).
PRIMITIVES = (
    "sys",
    "pool",
    "ring",
    "batch",
    "transfer",
)

#: Native modules outside the twin pattern that a native build must also have.
NATIVE_SUPPORT = ("profile",)


def _native_modules():
    return [*PRIMITIVES, *NATIVE_SUPPORT]


def _choose():
    requested = os.environ.get("FASTIO_IMPL", "").strip().lower()
    if requested not in ("", *ALLOWED):
        raise ValueError(
            f"FASTIO_IMPL={requested!r} is not a valid implementation; "
            f"use one of {', '.join(ALLOWED)} (or leave it unset)"
        )
    if requested == "python":
        return "python", "FASTIO_IMPL=python"
    for name in _native_modules():
        try:
            importlib.import_module(f"fastio._{name}_c")
        except ImportError as exc:
            reason = f"native module fastio._{name}_c cannot be imported: {exc}"
            if requested == "c":
                raise ImportError(
                    f"FASTIO_IMPL=c but {reason} (was fastio built with "
                    "FASTIO_NO_EXTENSIONS=1, or on a platform without a C compiler?)"
                ) from exc
            return "python", reason
    return "c", None


#: "c" or "python"; and why the native twins are not live, when they are not.
IMPLEMENTATION, NATIVE_UNAVAILABLE = _choose()


def twin_module(primitive, implementation=None):
    """The module of one primitive's twin (the live one by default)."""
    suffix = "c" if (implementation or IMPLEMENTATION) == "c" else "py"
    return importlib.import_module(f"fastio._{primitive}_{suffix}")


def twin(implementation):
    """Every public name of one twin as a namespace: how the test suite runs both."""
    names = {}
    for primitive in PRIMITIVES:
        module = twin_module(primitive, implementation)
        for name in getattr(module, "__all__", ()):
            names[name] = getattr(module, name)
    namespace = types.SimpleNamespace(**names)
    namespace.IMPLEMENTATION = implementation
    return namespace


def native_available():
    """Whether every native module imports in this process (whatever is live)."""
    try:
        for name in _native_modules():
            importlib.import_module(f"fastio._{name}_c")
    except ImportError:
        return False
    return True
