"""An emulated torch_npu for dsrt's tests. It lives in the test suite only.

Real torch (the CPU build) stands in for the NPU: ``torch.npu`` gets the calls dsrt makes
(``is_available``, ``synchronize``), each recorded in ``calls`` so tests can check the stream
fences; dsrt's views become CPU tensors over the emulated acl's device memory (importing this sets
``dsrt_npu.torch_kernels.TORCH_DEVICE_TYPE`` to ``"cpu"``). Anything else asked of ``torch.npu``
fails loudly.
"""

from __future__ import annotations

import sys
import types
from typing import Any

import torch

import dsrt_npu.torch_kernels

calls: list[str] = []


class _Npu(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"emulated torch_npu: unknown call torch.npu.{name}")


def _is_available() -> bool:
    return True


def _synchronize(device: Any = None) -> None:
    calls.append("synchronize")
    acl = sys.modules.get("acl")  # the emulated acl: one timeline of calls for ordering checks
    if acl is not None:
        acl.state.calls.append("torch.npu.synchronize")


npu = _Npu("torch.npu")
npu.is_available = _is_available  # type: ignore[attr-defined]
npu.synchronize = _synchronize  # type: ignore[attr-defined]
torch.npu = npu  # type: ignore[attr-defined]
dsrt_npu.torch_kernels.TORCH_DEVICE_TYPE = "cpu"
