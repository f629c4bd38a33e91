"""Errors of the neuromorphic backend, all inside the :mod:`dsrt.errors` tree."""

from __future__ import annotations

from dsrt.errors import ConfigurationError

__all__ = ["NetworkError", "UnsupportedNodeError", "ChipLimitError"]


class NetworkError(ConfigurationError):
    """A network description is invalid (bad parameters, indices, delays); the message names the part."""


class UnsupportedNodeError(NetworkError):
    """An NIR graph holds a node this backend cannot run; ``node`` is its name in the graph."""

    def __init__(self, message: str, *, node: str) -> None:
        self.node = node
        super().__init__(message)


class ChipLimitError(NetworkError):
    """A network does not fit the chip: ``limit`` names the limit, ``required`` and ``available`` its values.

    ``excess`` is ``required - available`` (same unit as the limit: neurons, synapses, bytes or cores).
    """

    def __init__(self, message: str, *, device: str, limit: str, required: int, available: int) -> None:
        self.device = device
        self.limit = limit
        self.required = int(required)
        self.available = int(available)
        self.excess = self.required - self.available
        super().__init__(message)
