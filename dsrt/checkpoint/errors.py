"""The errors of :mod:`dsrt.checkpoint`, all :class:`~dsrt.errors.DsrtError` subclasses.

::

    DsrtError
    └── CheckpointError                 a checkpoint cannot be written or read (``.path`` names the store)
        ├── CheckpointNotFoundError     no such store, step or rank (also a ``FileNotFoundError``)
        └── CheckpointCorruptError      stored bytes no longer match their recorded hash
"""

from __future__ import annotations

from ..errors import DsrtError

__all__ = ["CheckpointError", "CheckpointNotFoundError", "CheckpointCorruptError"]


class CheckpointError(DsrtError):
    """A checkpoint could not be written or read; ``path`` is the store (or file) concerned."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        self.path = path
        super().__init__(message)


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The store, the step or the rank asked for does not exist (or has no complete step)."""


class CheckpointCorruptError(CheckpointError):
    """Stored bytes do not match the hash recorded when they were saved.

    ``array`` is the leaf's name in the tree (``'params/w'``), ``chunk`` the zarr chunk key
    (``'c.3.0'``) or ``None`` for the manifest itself, ``step`` and ``rank`` locate the step, and
    ``path`` is the file that failed.
    """

    def __init__(
        self, message: str, *, path: str, array: str | None = None, chunk: str | None = None,
        step: int | None = None, rank: int | None = None,
    ) -> None:
        self.array = array
        self.chunk = chunk
        self.step = step
        self.rank = rank
        super().__init__(message, path=path)
