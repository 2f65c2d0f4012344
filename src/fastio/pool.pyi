from collections.abc import Callable, Hashable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from socket import socket
from typing import Any, Generic, Optional, TypeVar

from ._errors import PoolClosed as PoolClosed
from ._errors import PoolTimeout as PoolTimeout

_C = TypeVar("_C")
_K = TypeVar("_K", bound=Hashable)

__all__ = ["KeyedPool", "Pool", "PoolClosed", "PoolStats", "PoolTimeout", "SocketPool"]

@dataclass(frozen=True)
class PoolStats:
    max_size: int
    open: int
    in_use: int
    idle: int
    waiting: int
    wait_count: int
    wait_duration: float
    created: int
    create_failures: int
    check_failures: int
    closed_max_idle: int
    closed_max_idle_time: int
    closed_max_lifetime: int
    closed_broken: int
    leaks_reported: int

class Pool(Generic[_C]):
    def __init__(
        self,
        factory: Callable[[], _C],
        *,
        max_size: int = 10,
        min_idle: int = 0,
        max_idle: Optional[int] = None,
        max_lifetime: Optional[float] = None,
        max_idle_time: Optional[float] = None,
        acquire_timeout: Optional[float] = 30.0,
        check: Optional[Callable[[_C], Any]] = None,
        check_after: Optional[float] = None,
        reset: Optional[Callable[[_C], Any]] = None,
        close: Optional[Callable[[_C], Any]] = None,
        is_broken: Optional[Callable[[BaseException], bool]] = None,
        leak_timeout: Optional[float] = None,
        lifetime_jitter: float = 0.05,
        clock: Optional[Callable[[], float]] = None,
    ) -> None: ...
    def acquire(self, timeout: Optional[float] = None) -> _C: ...
    def release(self, conn: _C, *, discard: bool = False) -> None: ...
    def connection(self, timeout: Optional[float] = None) -> AbstractContextManager[_C]: ...
    def stats(self) -> PoolStats: ...
    def close(self) -> None: ...
    @property
    def closed(self) -> bool: ...
    def __enter__(self) -> Pool[_C]: ...
    def __exit__(self, *exc_info: object) -> None: ...

class KeyedPool(Generic[_K, _C]):
    def __init__(
        self,
        factory: Callable[[_K], _C],
        *,
        max_per_key: int = 10,
        max_idle_per_key: Optional[int] = None,
        max_total: Optional[int] = None,
        min_idle: int = 0,
        max_lifetime: Optional[float] = None,
        max_idle_time: Optional[float] = None,
        acquire_timeout: Optional[float] = 30.0,
        check: Optional[Callable[[_C], Any]] = None,
        check_after: Optional[float] = None,
        reset: Optional[Callable[[_C], Any]] = None,
        close: Optional[Callable[[_C], Any]] = None,
        is_broken: Optional[Callable[[BaseException], bool]] = None,
        leak_timeout: Optional[float] = None,
        lifetime_jitter: float = 0.05,
        clock: Optional[Callable[[], float]] = None,
    ) -> None: ...
    def acquire(self, key: _K, timeout: Optional[float] = None) -> _C: ...
    def release(self, conn: _C, *, discard: bool = False) -> None: ...
    def connection(
        self, key: _K, timeout: Optional[float] = None
    ) -> AbstractContextManager[_C]: ...
    def stats(self, key: Optional[_K] = None) -> PoolStats: ...
    def keys(self) -> list[_K]: ...
    def close(self) -> None: ...
    @property
    def closed(self) -> bool: ...
    def __enter__(self) -> KeyedPool[_K, _C]: ...
    def __exit__(self, *exc_info: object) -> None: ...

class SocketPool(KeyedPool[tuple[str, int], socket]):
    def __init__(
        self,
        *,
        connect_timeout: Optional[float] = 10.0,
        timeout: Optional[float] = None,
        nodelay: bool = True,
        check: Optional[Callable[[socket], Any]] = ...,
        check_after: Optional[float] = 0.0,
        max_per_key: int = 10,
        max_idle_per_key: Optional[int] = None,
        max_total: Optional[int] = None,
        min_idle: int = 0,
        max_lifetime: Optional[float] = None,
        max_idle_time: Optional[float] = None,
        acquire_timeout: Optional[float] = 30.0,
        reset: Optional[Callable[[socket], Any]] = None,
        close: Optional[Callable[[socket], Any]] = None,
        is_broken: Optional[Callable[[BaseException], bool]] = None,
        leak_timeout: Optional[float] = None,
        lifetime_jitter: float = 0.05,
        clock: Optional[Callable[[], float]] = None,
    ) -> None: ...
