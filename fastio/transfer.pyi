from typing import Protocol, Union

from _typeshed import ReadableBuffer

class _HasFileno(Protocol):
    def fileno(self) -> int: ...

class _Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes | None: ...

class _Writable(Protocol):
    def write(self, data: ReadableBuffer, /) -> int | None: ...

_Fd = Union[int, _HasFileno]
_Source = Union[int, _HasFileno, _Readable]
_Destination = Union[int, _HasFileno, _Writable]

__all__ = ["copy", "relay", "sendfile", "splice"]

def sendfile(
    sock: _Destination,
    file: _Source,
    offset: int | None = None,
    count: int | None = None,
    *,
    timeout: float | None = None,
) -> int: ...
def splice(
    src: _Fd, dst: _Fd, count: int | None = None, *, timeout: float | None = None
) -> int: ...
def copy(
    src: _Source, dst: _Destination, count: int | None = None, *, timeout: float | None = None
) -> int: ...
def relay(a: _Fd, b: _Fd, *, idle_timeout: float | None = None) -> tuple[int, int]: ...
