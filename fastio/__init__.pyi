from typing import Any, Literal

from ._errors import IncompleteReadError as IncompleteReadError
from ._errors import LimitOverrunError as LimitOverrunError
from ._errors import PoolClosed as PoolClosed
from ._errors import PoolTimeout as PoolTimeout

__version__: str
IMPLEMENTATION: Literal["c", "python"]

def info() -> dict[str, Any]: ...
def stats(reset: bool = ...) -> dict[str, dict[str, int]]: ...
