"""Counters of every primitive, gathered by ``fastio.stats()``.

Each twin module registers one snapshot function per primitive at import. The native twins
keep their counters in C structs (plain increments, no Python objects); the Python twins use
``Counters`` below. Every primitive reports at least ``COMMON_FIELDS``; it may add its own.
"""

import errno as _errno
import os as _os
import select as _select
import socket as _socket
import threading as _threading
import types as _types

__all__ = [
    "COMMON_FIELDS",
    "SYSCALLS",
    "Counters",
    "add_layer",
    "register",
    "remove_layer",
    "snapshot",
    "syscalls",
]

COMMON_FIELDS = (
    "calls",
    "bytes",
    "syscalls",
    "would_block",
    "eintr",
    "partial",
    "fallbacks",
)

# (implementation, primitive) -> snapshot(reset: bool) -> dict[str, int]
_sources = {}


class Counters:
    """Integer counters of one primitive in the Python twin."""

    def __init__(self, *extra_fields):
        self.__dict__["_fields"] = COMMON_FIELDS + tuple(extra_fields)
        self.reset()

    def reset(self):
        for name in self._fields:
            self.__dict__[name] = 0

    def snapshot(self, reset=False):
        values = {name: self.__dict__[name] for name in self._fields}
        if reset:
            self.reset()
        return values

    def __setattr__(self, name, value):
        if name not in self._fields:
            raise AttributeError(f"no counter named {name!r}")
        self.__dict__[name] = value


def register(implementation, primitive, snapshot_function):
    """Make ``snapshot_function(reset)`` the source of ``primitive``'s counters."""
    _sources[(implementation, primitive)] = snapshot_function


def snapshot(implementation, reset=False):
    """Counters of every registered primitive of one implementation, by primitive name."""
    return {
        primitive: function(reset)
        for (impl, primitive), function in sorted(_sources.items())
        if impl == implementation
    }


# ---- system calls of the Python twins: one indirection for profile() and fault injection ----
#
# The Python twins make every system call through ``syscalls(primitive)``, a per-primitive table
# of plain functions (``os.sendfile``, the unbound ``socket.socket.send``, ...):
#
#     _calls = _stats.syscalls("transfer")          # once, at import
#     sent = _calls.sendfile(out_fd, in_fd, offset, count)
#     n = _calls.send(sock, data)                   # socket methods take the socket first
#
# Look the call up on the table at each call (``_calls.send``), never keep the function itself:
# ``profile()`` (and fault injection, later) swap the table's attributes for wrappers while they
# are active, and put the plain functions back afterwards, so outside them the cost is one
# attribute lookup, the same as ``os.sendfile``. A call the platform lacks is a stub that raises
# ``OSError(ENOSYS)``, as the C wrappers of ``csrc/fastio_compat.h`` do.


def _missing(name):
    def unsupported(*args, **kwargs):
        raise OSError(_errno.ENOSYS, f"{name} is not available on this platform")

    unsupported.__name__ = name
    return unsupported


def _default_calls():
    calls = {}
    for name in (
        "sendfile",
        "splice",
        "copy_file_range",
        "read",
        "write",
        "pread",
        "pwrite",
        "readv",
        "writev",
        "preadv",
        "pipe",
        "memfd_create",
        "lseek",
        "fstat",
    ):
        function = getattr(_os, name, None)
        calls[name] = function if function is not None else _missing(name)
    for name in ("recv", "recv_into", "send", "sendmsg", "recvmsg_into"):
        function = getattr(_socket.socket, name, None)
        calls[name] = function if function is not None else _missing(name)
    poll = getattr(_select, "poll", None)
    calls["poll"] = type(poll()).poll if poll is not None else _missing("poll")
    calls["select"] = _select.select
    return calls


#: name -> the plain function behind ``syscalls(p).<name>``. Socket methods are unbound
#: (``calls.send(sock, data)``); ``poll`` is the method of ``select.poll()`` objects
#: (``calls.poll(poller, timeout_ms)``). A twin that needs another call adds it here.
SYSCALLS = _default_calls()

_tables = {}  # primitive -> table (a module object)
_layers = []  # [(token, factory)], innermost first
_tables_lock = _threading.Lock()


def _new_table(primitive):
    # A plain module object: ``table.send`` is then looked up exactly as ``os.send`` is (the
    # interpreter's module attribute fast path), so the indirection costs nothing measurable.
    table = _types.ModuleType(f"fastio.syscalls.{primitive}", f"System calls of {primitive!r}.")
    table.primitive = primitive
    _rebuild(table)
    return table


def _rebuild(table):
    for name, function in SYSCALLS.items():
        for _token, factory in _layers:
            function = factory(table.primitive, name, function)
        setattr(table, name, function)


def syscalls(primitive):
    """The table (a module object) through which ``primitive``'s Python twin makes its
    system calls: one attribute per name of ``SYSCALLS``."""
    table = _tables.get(primitive)
    if table is None:
        with _tables_lock:
            table = _tables.get(primitive)
            if table is None:
                table = _tables[primitive] = _new_table(primitive)
    return table


def add_layer(factory):
    """Wrap every call of every table: ``factory(primitive, name, function) -> function``.

    Layers stack (a later one wraps the earlier ones); returns a token for ``remove_layer``.
    Used by ``fastio.profile()`` (timing) and by fault injection in tests.
    """
    token = object()
    with _tables_lock:
        _layers.append((token, factory))
        for table in _tables.values():
            _rebuild(table)
    return token


def remove_layer(token):
    """Undo ``add_layer``: the tables call the functions without that wrapper again."""
    with _tables_lock:
        _layers[:] = [(t, f) for t, f in _layers if t is not token]
        for table in _tables.values():
            _rebuild(table)
