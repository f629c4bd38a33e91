"""Trace events in the Chrome/Perfetto JSON format, one track per device.

Times handed in are host ``perf_counter`` seconds; the file stores microseconds since the tracer
started. A tracer is attached to devices only while tracing is on, so launches pay nothing otherwise.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["Tracer"]


class Tracer:
    """Collects complete (``X``) and instant (``i``) events; thread-safe."""

    def __init__(self) -> None:
        self.origin = time.perf_counter()
        self._events: list[dict[str, Any]] = []
        self._tracks: dict[str, int] = {}
        self._lock = threading.Lock()

    def _tid(self, track: str) -> int:
        tid = self._tracks.get(track)
        if tid is None:
            tid = self._tracks[track] = len(self._tracks) + 1
        return tid

    def complete(self, name: str, track: str, start: float, end: float, args: dict[str, Any] | None = None) -> None:
        """An event from ``start`` to ``end`` (perf_counter seconds) on ``track`` (a device id)."""
        with self._lock:
            self._events.append({
                "name": name, "ph": "X", "pid": 1, "tid": self._tid(track),
                "ts": (start - self.origin) * 1e6, "dur": max(end - start, 0.0) * 1e6, "args": args or {},
            })

    def instant(self, name: str, track: str, args: dict[str, Any] | None = None, at: float | None = None) -> None:
        """A point event on ``track``."""
        t = time.perf_counter() if at is None else at
        with self._lock:
            self._events.append({
                "name": name, "ph": "i", "s": "t", "pid": 1, "tid": self._tid(track),
                "ts": (t - self.origin) * 1e6, "args": args or {},
            })

    @property
    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._events)

    def to_json(self) -> dict[str, Any]:
        with self._lock:
            meta = [
                {"name": "thread_name", "ph": "M", "pid": 1, "tid": tid, "args": {"name": track}}
                for track, tid in self._tracks.items()
            ]
            meta.append({"name": "process_name", "ph": "M", "pid": 1, "tid": 0, "args": {"name": "dsrt"}})
            return {"traceEvents": meta + list(self._events), "displayTimeUnit": "ms"}

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write the trace atomically; open it in ui.perfetto.dev or chrome://tracing."""
        target = Path(path)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.to_json()))
        os.replace(tmp, target)
        return target
