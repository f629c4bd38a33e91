"""Incremental, asynchronous checkpoints of trees of device arrays, as zarr v3 stores.

::

    from dsrt.checkpoint import Checkpointer
    ck = Checkpointer("/ckpt/run1", keep=3, resolve=rt.device)
    ck.save(step, {"params": {"w": w, "b": b}, "lr": 1e-3})   # returns once w and b are copied to host
    ...
    ck.wait()                                                 # the last save has committed
    tree = ck.restore(device="opencl:0")                      # latest complete step, onto a device

    dsrt.checkpoint.save("/ckpt/one", tree, step=0)           # one-off, blocking
    tree = dsrt.checkpoint.restore("/ckpt/one")

Each step is a zarr v3 hierarchy any zarr reader opens without dsrt:
``zarr.open("/ckpt/run1/steps/10/rank0/params/w")``. Chunks are content-addressed and shared between
steps through hard links, so a step that changes 2% of the chunks writes 2% of the bytes; a step
exists only once its manifest is renamed into place, so a killed save never damages an earlier
step; every chunk's hash is checked on restore. See :mod:`dsrt.checkpoint.store` for the design and
:mod:`dsrt.checkpoint.layout` for the on-disk layout.

Layering: a service. It uses the contract (``Array``, ``Device``) and never the runtime: give
:meth:`Checkpointer.restore` a Device, or a device id together with ``resolve=rt.device``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .errors import CheckpointCorruptError, CheckpointError, CheckpointNotFoundError
from .layout import DEFAULT_CHUNK_BYTES
from .store import Checkpointer, SaveStats, StepInfo, default_rank, list_steps, verify_store

if TYPE_CHECKING:
    from ..device import Device

__all__ = [
    "Checkpointer",
    "SaveStats",
    "StepInfo",
    "CheckpointError",
    "CheckpointNotFoundError",
    "CheckpointCorruptError",
    "save",
    "restore",
    "list_steps",
    "verify_store",
    "default_rank",
]


def save(
    path: str | os.PathLike[str], tree: Any, *, step: int = 0, rank: int | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES, durable: bool = True,
) -> SaveStats:
    """Save ``tree`` as ``step`` under ``path`` and wait for the commit; keeps every earlier step."""
    with Checkpointer(path, keep=None, rank=rank, chunk_bytes=chunk_bytes, durable=durable) as ck:
        return ck.save(step, tree, blocking=True).result()


def restore(
    path: str | os.PathLike[str], step: int | None = None, device: Device | str | None = None, *,
    rank: int | None = None, resolve: Callable[[str], Device] | None = None,
) -> Any:
    """The tree saved as ``step`` (default: the latest complete step) under ``path``; see
    :meth:`Checkpointer.restore` for ``device`` and ``resolve``."""
    return Checkpointer(path, keep=None, rank=rank, resolve=resolve).restore(step, device)
