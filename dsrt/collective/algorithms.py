"""Which all-reduce algorithm to run, and the pure schedules the transports execute.

Thresholds (``n`` participants, ``nbytes`` the message size in bytes):

=====================  ==========================================================================
``nbytes <= 64 KiB``   latency-bound: ``recursive_doubling`` when ``n`` is a power of two
                       (log2 n rounds of full messages, every participant ends with the result),
                       else ``tree`` (binomial reduce to participant 0, binomial broadcast back;
                       2 ceil(log2 n) rounds)
``nbytes > 64 KiB``    bandwidth-bound: ``ring`` (reduce-scatter then all-gather; 2 (n-1) rounds
                       of ``nbytes / n``, each participant sends 2 (n-1)/n x nbytes in total)
``n <= 2``             any choice moves the same bytes; ``recursive_doubling`` (one exchange)
=====================  ==========================================================================

The crossover is where ``2 (n-1) alpha`` extra latency of the ring costs more than the
``(log2 n - 2 (n-1)/n) nbytes / beta`` it saves: with alpha ~ 5 us and beta ~ 10 GB/s per link the
crossover lies between 16 and 128 KiB for n = 4..16, hence 64 KiB.

A schedule is a list of rounds; a round is a list of ``(src, dst, segment)`` moves that may run
concurrently (``segment`` indexes ``bounds``, or ``-1`` for the whole buffer). The receiver combines
what it receives into its own buffer unless the schedule says the move is a plain copy.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigurationError

__all__ = [
    "ALGORITHMS",
    "SMALL_MESSAGE_BYTES",
    "Move",
    "choose_algorithm",
    "even_bounds",
    "ring_reduce_scatter",
    "ring_all_gather",
    "tree_reduce",
    "tree_broadcast",
    "recursive_doubling",
]

#: Messages of at most this many bytes take a latency-optimal algorithm.
SMALL_MESSAGE_BYTES = 64 * 1024

ALGORITHMS = ("auto", "ring", "tree", "recursive_doubling")


@dataclass(frozen=True)
class Move:
    """``src`` sends segment ``seg`` (``-1``: everything) to ``dst``; ``combine`` reduces, else copies."""

    src: int
    dst: int
    seg: int
    combine: bool


def _is_pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def choose_algorithm(nbytes: int, n: int, requested: str = "auto") -> str:
    """The algorithm for an all-reduce of ``nbytes`` bytes over ``n`` participants."""
    if requested not in ALGORITHMS:
        raise ConfigurationError(f"unknown collective algorithm {requested!r}; expected one of: {', '.join(ALGORITHMS)}")
    if requested != "auto":
        return requested
    if n <= 2:
        return "recursive_doubling"
    if nbytes <= SMALL_MESSAGE_BYTES:
        return "recursive_doubling" if _is_pow2(n) else "tree"
    return "ring"


def even_bounds(count: int, parts: int) -> list[int]:
    """``parts + 1`` element offsets splitting ``count`` elements as evenly as possible."""
    base, extra = divmod(count, parts)
    bounds = [0]
    for i in range(parts):
        bounds.append(bounds[-1] + base + (1 if i < extra else 0))
    return bounds


def ring_reduce_scatter(n: int) -> list[list[Move]]:
    """n-1 rounds; in round s participant i sends segment (i-s-1) mod n to i+1, which reduces it.

    Afterwards participant i holds the full reduction of segment i.
    """
    return [[Move(i, (i + 1) % n, (i - s - 1) % n, True) for i in range(n)] for s in range(n - 1)]


def ring_all_gather(n: int) -> list[list[Move]]:
    """n-1 rounds; in round s participant i forwards segment (i-s) mod n to i+1 (a copy)."""
    return [[Move(i, (i + 1) % n, (i - s) % n, False) for i in range(n)] for s in range(n - 1)]


def tree_reduce(n: int, root: int = 0) -> list[list[Move]]:
    """Binomial tree: in round k, (relative) participant i + 2^k sends to i for i a multiple of 2^(k+1)."""
    rounds: list[list[Move]] = []
    step = 1
    while step < n:
        rounds.append([
            Move((i + step + root) % n, (i + root) % n, -1, True) for i in range(0, n, 2 * step) if i + step < n
        ])
        step *= 2
    return rounds


def tree_broadcast(n: int, root: int = 0) -> list[list[Move]]:
    """The binomial tree of :func:`tree_reduce` run backwards, copying from the root outwards."""
    return [[Move(m.dst, m.src, -1, False) for m in rnd] for rnd in reversed(tree_reduce(n, root))]


def recursive_doubling(n: int) -> list[list[Move]]:
    """Pairwise exchanges at distance 1, 2, 4... among the largest power of two p <= n participants.

    Participants p..n-1 first fold into participant i - p, and receive the result at the end. Each
    exchange is listed as two combining moves (both partners reduce ``lower op higher``).
    """
    p = 1
    while p * 2 <= n:
        p *= 2
    rounds: list[list[Move]] = []
    if n > p:
        rounds.append([Move(i, i - p, -1, True) for i in range(p, n)])
    dist = 1
    while dist < p:
        rounds.append([Move(i ^ dist, i, -1, True) for i in range(p)])
        dist *= 2
    if n > p:
        rounds.append([Move(i - p, i, -1, False) for i in range(p, n)])
    return rounds
