"""Exceptions shared by both twins (one class each, whichever twin raised it)."""

__all__ = ["IncompleteReadError", "LimitOverrunError", "PoolClosed", "PoolTimeout"]


class IncompleteReadError(EOFError):
    """EOF came before the expected bytes; as ``asyncio.IncompleteReadError``.

    ``partial`` holds the bytes read before EOF, ``expected`` the total wanted (``None`` when
    reading up to a separator).
    """

    def __init__(self, partial, expected):
        r_expected = "undefined" if expected is None else repr(expected)
        super().__init__(f"{len(partial)} bytes read on a total of {r_expected} expected bytes")
        self.partial = partial
        self.expected = expected

    def __reduce__(self):
        return type(self), (self.partial, self.expected)


class LimitOverrunError(Exception):
    """A separator or frame did not fit the buffer; as ``asyncio.LimitOverrunError``.

    ``consumed`` is how many buffered bytes were examined (they stay in the buffer).
    """

    def __init__(self, message, consumed):
        super().__init__(message)
        self.consumed = consumed

    def __reduce__(self):
        return type(self), (self.args[0], self.consumed)


class PoolTimeout(TimeoutError):
    """No connection could be had before the acquire deadline; the message holds the stats."""


class PoolClosed(Exception):
    """The pool was closed: waiters are woken with this, and later acquires raise it."""
