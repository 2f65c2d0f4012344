"""Counters of every primitive, gathered by ``fastio.stats()``.

Each twin module registers one snapshot function per primitive at import. The native twins
keep their counters in C structs (plain increments, no Python objects); the Python twins use
``Counters`` below. Every primitive reports at least ``COMMON_FIELDS``; it may add its own.
"""

__all__ = ["COMMON_FIELDS", "Counters", "register", "snapshot"]

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
