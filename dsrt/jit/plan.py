"""The static memory plan: byte offsets of intermediates inside one arena per device, reused by liveness.

Each intermediate lives from the step that writes it to the last step that reads it, both ends
included (so a kernel never reads and writes one buffer, and ``restrict`` holds). Buffers are placed
largest first, each at the lowest offset that overlaps no placed buffer whose lifetime meets its own
("greedy by size"); offsets are multiples of :data:`dsrt.memory.ALIGNMENT` bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..memory import ALIGNMENT

__all__ = ["Interval", "plan_offsets"]


@dataclass(frozen=True)
class Interval:
    """A buffer of ``nbytes`` bytes live from step ``start`` to step ``end`` (inclusive)."""

    key: int
    nbytes: int
    start: int
    end: int


def _align(n: int) -> int:
    return (n + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT


def plan_offsets(buffers: Sequence[Interval]) -> tuple[dict[int, int], int]:
    """``({key: byte offset}, arena bytes)`` for ``buffers``; no two buffers live at one step overlap."""
    placed: list[tuple[int, int, Interval]] = []  # (offset, end offset, interval)
    offsets: dict[int, int] = {}
    total = 0
    for buf in sorted(buffers, key=lambda b: (-b.nbytes, b.start, b.key)):
        size = _align(max(buf.nbytes, 1))
        clashes = sorted((lo, hi) for lo, hi, other in placed if other.start <= buf.end and buf.start <= other.end)
        offset = 0
        for lo, hi in clashes:
            if offset + size <= lo:
                break
            offset = max(offset, hi)
        placed.append((offset, offset + size, buf))
        offsets[buf.key] = offset
        total = max(total, offset + size)
    return offsets, total
