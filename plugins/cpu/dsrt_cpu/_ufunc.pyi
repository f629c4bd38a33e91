"""Type stub of the C extension dsrt_cpu._ufunc (source: _ufunc.c)."""

from collections.abc import Callable
from typing import Any

class UfuncKernel:
    def __init__(self, ufunc: Any, nin: int, slow: Callable[..., None], low_dtypes: frozenset[Any],
                 host_view: Callable[[Any], Any]) -> None: ...
    def __call__(self, inputs: Any, out: Any, params: Any, stream: Any) -> None: ...

def configure(array_type: type, allocation_type: type) -> None: ...
