from typing import Any, Iterator, Literal, Optional

from ._errors import IncompleteReadError as IncompleteReadError
from ._errors import LimitOverrunError as LimitOverrunError
from ._errors import PoolClosed as PoolClosed
from ._errors import PoolTimeout as PoolTimeout
from .batch import BatchWriter as BatchWriter
from .pool import KeyedPool as KeyedPool
from .pool import Pool as Pool
from .pool import PoolStats as PoolStats
from .pool import SocketPool as SocketPool
from .ring import Reader as Reader
from .ring import RingBuffer as RingBuffer
from .transfer import copy as copy
from .transfer import relay as relay
from .transfer import sendfile as sendfile
from .transfer import splice as splice

__version__: str
IMPLEMENTATION: Literal["c", "python"]

def info() -> dict[str, Any]: ...
def stats(reset: bool = ...) -> dict[str, dict[str, int]]: ...

class _CallStats:
    layer: str
    primitive: str
    call: str
    count: int
    errors: int
    total_ns: int
    max_ns: int
    buckets: dict[int, int]
    @property
    def mean_ns(self) -> float: ...
    @property
    def p50_ns(self) -> float: ...
    @property
    def p90_ns(self) -> float: ...
    @property
    def p99_ns(self) -> float: ...
    def percentile(self, q: float) -> float: ...
    def as_dict(self) -> dict[str, Any]: ...

class ProfileReport:
    calls: list[_CallStats]
    duration: float
    complete: bool
    def get(
        self, primitive: str, call: str, layer: Optional[str] = ...
    ) -> Optional[_CallStats]: ...
    def __iter__(self) -> Iterator[_CallStats]: ...
    def __len__(self) -> int: ...
    def as_dict(self) -> dict[str, Any]: ...
    def format(self) -> str: ...

class _Profile:
    report: ProfileReport
    def start(self) -> _Profile: ...
    def stop(self) -> ProfileReport: ...
    def __enter__(self) -> ProfileReport: ...
    def __exit__(self, *exc_info: object) -> bool: ...

def profile() -> _Profile: ...
