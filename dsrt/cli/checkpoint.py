"""``dsrt checkpoint ls PATH`` and ``dsrt checkpoint verify PATH [--step N] [--rank R]``.

``ls`` prints one line per committed step and rank (``--json``: a list of objects; sizes in bytes,
``created`` in seconds since the epoch). ``verify`` reads every chunk of every step (or of
``--step``) and checks it against the hash in the manifest: exit 0 when all match, 1 when some do
not (one line per bad chunk, naming step, rank, array and chunk), 2 on a user error (no such store or
step), printed as one line on stderr.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from collections.abc import Callable
from typing import Any

from ..checkpoint import CheckpointError, list_steps, verify_store
from ..errors import DsrtError, format_bytes

__all__ = ["configure", "run"]

EXIT_CORRUPT = 1
EXIT_USER_ERROR = 2


def configure(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``checkpoint`` command (with ``ls`` and ``verify``) to an argparse subparsers object."""
    parser = subparsers.add_parser("checkpoint", help="list or verify a dsrt checkpoint store")
    sub = parser.add_subparsers(dest="checkpoint_command", required=True)
    ls = sub.add_parser("ls", help="the committed steps of a store, per rank")
    ls.add_argument("path", help="the checkpoint directory")
    ls.add_argument("--json", action="store_true", help="print JSON instead of text")
    verify = sub.add_parser("verify", help="check every chunk against its hash (exit 1 if any is corrupt)")
    verify.add_argument("path", help="the checkpoint directory")
    verify.add_argument("--step", type=int, help="only this step (default: every step)")
    verify.add_argument("--rank", type=int, help="only this rank (default: every rank)")
    return parser


def run(args: argparse.Namespace, runtime_factory: Callable[[], Any]) -> int:
    """Execute ``dsrt checkpoint ...`` (needs no runtime); return the exit code."""
    try:
        if args.checkpoint_command == "ls":
            return _ls(args)
        return _verify(args)
    except DsrtError as exc:
        print(f"dsrt checkpoint: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_USER_ERROR


def _ls(args: argparse.Namespace) -> int:
    steps = list_steps(args.path)
    if args.json:
        print(json.dumps([vars(s) for s in steps], indent=2))
        return 0
    if not steps:
        print(f"{args.path}: no complete steps")
        return 0
    print(f"{'step':>10} {'rank':>5} {'arrays':>7} {'chunks':>7} {'size':>26}  created")
    for s in steps:
        when = datetime.datetime.fromtimestamp(s.created).isoformat(sep=" ", timespec="seconds") if s.created else "?"
        print(f"{s.step:>10} {s.rank:>5} {s.arrays:>7} {s.chunks:>7} {format_bytes(s.bytes):>26}  {when}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    problems = verify_store(args.path, step=args.step, rank=args.rank)
    checked = [s for s in list_steps(args.path)
               if (args.step is None or s.step == args.step) and (args.rank is None or s.rank == args.rank)]
    for err in problems:
        print(f"CORRUPT {_describe(err)}")
    chunks = sum(s.chunks for s in checked)
    nbytes = sum(s.bytes for s in checked)
    if problems:
        print(f"{args.path}: {len(problems)} problem(s) in {len(checked)} step/rank(s)", file=sys.stderr)
        return EXIT_CORRUPT
    print(f"{args.path}: ok ({len(checked)} step/rank(s), {chunks} chunks, {format_bytes(nbytes)} verified)")
    return 0


def _describe(err: CheckpointError) -> str:
    return " ".join(str(err).split())
