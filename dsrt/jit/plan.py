"""The static memory plan: byte offsets of intermediates inside one arena per device, reused by liveness,
and the peak-memory figures the JIT compares it with.

Each intermediate lives from the step that writes it to the last step that reads it, both ends
included (so a kernel never reads and writes one buffer, and ``restrict`` holds). Two placements
are tried and the smaller arena kept: largest buffer first ("size") and earliest start first
("start"), each buffer at the lowest offset that overlaps no placed buffer whose lifetime meets its
own. Neither is optimal for every input (greedy placement can fragment); the JIT compares the result
with the eager run's peak and serves intermediates from the pool instead when the arena would be
larger (see :mod:`dsrt.jit.graph`). Offsets are multiples of :data:`dsrt.memory.ALIGNMENT` bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..memory import ALIGNMENT

__all__ = ["Interval", "PLACEMENTS", "live_peak", "plan_best", "plan_offsets"]


@dataclass(frozen=True)
class Interval:
    """A buffer of ``nbytes`` bytes live from point ``start`` to point ``end`` (inclusive)."""

    key: int
    nbytes: int
    start: int
    end: int


def _align(n: int) -> int:
    return (n + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT


#: Placement orders: name -> sort key of a buffer (placed in that order, each at its lowest free offset).
PLACEMENTS: dict[str, Callable[[Interval], tuple[int, ...]]] = {
    "size": lambda b: (-b.nbytes, b.start, b.key),
    "start": lambda b: (b.start, -b.nbytes, b.key),
}


def plan_offsets(buffers: Sequence[Interval], order: str = "size") -> tuple[dict[int, int], int]:
    """``({key: byte offset}, arena bytes)`` for ``buffers`` placed in ``order`` (a :data:`PLACEMENTS`
    name); no two buffers live at one point overlap."""
    placed: list[tuple[int, int, Interval]] = []  # (offset, end offset, interval)
    offsets: dict[int, int] = {}
    total = 0
    for buf in sorted(buffers, key=PLACEMENTS[order]):
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


def plan_best(buffers: Sequence[Interval]) -> tuple[dict[int, int], int, str]:
    """The smallest arena over :data:`PLACEMENTS`: ``(offsets, arena bytes, placement name)`` (the first
    name wins a tie)."""
    best: tuple[dict[int, int], int, str] | None = None
    for name in PLACEMENTS:
        offsets, total = plan_offsets(buffers, name)
        if best is None or total < best[1]:
            best = (offsets, total, name)
        if total == 0:
            break
    assert best is not None
    return best


def live_peak(buffers: Sequence[Interval], *, aligned: bool = False) -> int:
    """The most bytes live at one point: the lower bound of any placement (``aligned``: sizes rounded
    up to :data:`ALIGNMENT` as an arena places them)."""
    events: list[tuple[int, int]] = []
    for b in buffers:
        n = _align(max(b.nbytes, 1)) if aligned else b.nbytes
        events.append((b.start, n))
        events.append((b.end + 1, -n))
    peak = live = 0
    for _, delta in sorted(events, key=lambda e: (e[0], e[1])):  # frees before allocations at one point
        live += delta
        peak = max(peak, live)
    return peak
