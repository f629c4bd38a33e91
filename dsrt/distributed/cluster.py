"""``Cluster``: a Dask cluster attached to a dsrt runtime.

Attaching (:meth:`Cluster.attach`, done by ``dsrt.Runtime(cluster=...)``):

1. connects a ``distributed.Client`` (or uses the one given; a client this object opened it closes);
2. registers :class:`~dsrt.distributed.worker.DsrtWorkerPlugin` with the runtime factory the caller
   passes, so every worker, now or later, builds a dsrt runtime and probes its devices;
3. subscribes to the scheduler's membership events (``add-worker``, ``remove-worker``);
4. for each worker: asks it for its real devices and times round trips of a known payload (8 bytes
   and 1 MiB, best of a few) for the link model.

:meth:`Cluster.devices` lists the :class:`~dsrt.distributed.remote.RemoteDevice` of the workers alive;
a worker that joined since the last call is described and measured then (so the next ``map`` uses
it). A worker that leaves fails its chunks in flight at once with ``DeviceLostError`` and its devices
drop out. Threads: membership events arrive on the client's event loop; everything else runs on the
caller's thread.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigurationError, DeviceUnavailableError
from .remote import RemoteDevice
from .worker import PLUGIN_NAME, DsrtWorkerPlugin, describe, echo, run_chunk

__all__ = ["Cluster", "WorkerRecord", "attach"]

log = logging.getLogger("dsrt.distributed")

#: Bytes of the large probe payload (bandwidth); the small one is 8 bytes (latency).
PROBE_BYTES = 1 << 20
#: Seconds before a worker that could not describe itself (not set up yet, no dsrt there) is asked again.
RETRY_DESCRIBE_S = 2.0
#: Seconds chunks handed over wait to be submitted together (one Dask graph update for all).
BATCH_WINDOW_S = 0.001


@dataclass
class WorkerRecord:
    """One Dask worker as this runtime knows it. ``link``: ``(round trip s, bandwidth B/s)``."""

    address: str
    name: str
    host: str = ""
    pid: int = 0
    link: tuple[float, float] = (0.0, 0.0)
    devices: list[RemoteDevice] = field(default_factory=list)
    alive: bool = True
    left_reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"address": self.address, "name": self.name, "host": self.host, "pid": self.pid,
                "round_trip_s": self.link[0], "bandwidth_Bps": self.link[1], "alive": self.alive,
                "devices": [d.id for d in self.devices], **({"left": self.left_reason} if not self.alive else {})}


class Cluster:
    """A Dask cluster as a source of remote devices (see the module docstring).

    ``target``: a scheduler address (``tcp://127.0.0.1:8786``) or a ``distributed.Client``.
    ``pipeline_depth``: chunks kept in flight per remote device (64: enough to hide a loopback round
    trip behind small chunks, as ``client.map`` does, measured 16 -> 1.25x, 64 -> 0.99x Dask's time
    for 512 small chunks; the chunks in flight on a worker that dies are placed again). ``connect_timeout``: seconds to reach
    the scheduler. ``probe_timeout``: seconds a worker may take to describe itself and answer probes.
    """

    def __init__(self, target: Any, *, pipeline_depth: int = 64, connect_timeout: float = 10.0,
                 probe_timeout: float = 30.0) -> None:
        from distributed import Client

        if pipeline_depth < 1:
            raise ConfigurationError(f"pipeline_depth={pipeline_depth}: give at least 1 chunk in flight per device")
        self.pipeline_depth = int(pipeline_depth)
        self.probe_timeout = float(probe_timeout)
        if isinstance(target, Client):
            self.client, self._owns_client = target, False
        elif isinstance(target, str):
            try:
                self.client = Client(target, timeout=connect_timeout, set_as_default=False)
            except (OSError, TimeoutError) as exc:
                raise DeviceUnavailableError(f"cannot reach the dask scheduler at {target} within"
                                             f" {connect_timeout:g}s: {exc}", device=target) from exc
            self._owns_client = True
        else:
            raise ConfigurationError(f"cluster={target!r}: give a dask scheduler address (tcp://host:port) or a"
                                     " distributed.Client")
        self.address = str(self.client.scheduler.address)
        self._lock = threading.RLock()
        self._workers: dict[str, WorkerRecord] = {}
        self._joined: set[str] = set()
        self._retry_at: dict[str, float] = {}  # worker address -> monotonic time to ask it again
        self._attached = False
        # Batches, touched only on the client's event loop: chunks to submit, futures done to gather.
        self._outbox: list[tuple[RemoteDevice, int, str, list[Any], dict[str, Any]]] = []
        self._flush_armed = False
        self._arrived: list[tuple[RemoteDevice, int, Any]] = []
        self._gathering = False
        self._gather_task: asyncio.Future[None] | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The Dask client's asyncio event loop (chunks' coroutines run there)."""
        loop: Any = self.client.loop
        return loop.asyncio_loop  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ attaching
    def attach(self, factory: Callable[[], Any]) -> Cluster:
        """Install a dsrt runtime built by ``factory()`` (picklable: it runs on each worker) on every
        worker, follow membership, and find the workers' devices. Returns ``self``."""
        self.client.register_plugin(DsrtWorkerPlugin(factory), name=PLUGIN_NAME)
        self.client.subscribe_topic("all", self._on_event)
        self._attached = True
        info = self.client.scheduler_info(n_workers=-1)
        with self._lock:
            self._joined.update(info.get("workers", {}))
        self.refresh()
        return self

    def _on_event(self, event: tuple[float, Any]) -> None:
        """Membership from the scheduler (client event loop): joiners are described on the next
        :meth:`devices`; a worker that left fails its chunks in flight now."""
        _when, msg = event
        if not isinstance(msg, dict):
            return
        action, address = msg.get("action"), msg.get("worker")
        if not isinstance(address, str):
            return
        if action == "add-worker":
            with self._lock:
                self._joined.add(address)
        elif action == "remove-worker":
            self._left(address, "dask worker left the cluster (process died, was killed or closed)")

    def _left(self, address: str, reason: str) -> None:
        with self._lock:
            self._joined.discard(address)
            rec = self._workers.get(address)
            if rec is None or not rec.alive:
                return
            rec.alive, rec.left_reason = False, reason
            devices = list(rec.devices)
        log.warning("dask worker %s (%s) left: %s", address, rec.name, reason)
        for dev in devices:
            dev.lost(f"{reason}: worker {address}")

    def refresh(self) -> None:
        """Describe and measure the workers that joined since the last call (a worker that cannot
        answer yet is tried again next time)."""
        now = time.monotonic()
        with self._lock:
            new = [a for a in self._joined if (a not in self._workers or not self._workers[a].alive)
                   and self._retry_at.get(a, 0.0) <= now]
        if not new:
            return
        try:
            described = self.client.run(describe, workers=new, on_error="return", wait=True)
        except (OSError, TimeoutError) as exc:
            log.warning("could not describe new dask workers %s: %s", new, exc)
            return
        for address in new:
            answer = described.get(address)
            if not isinstance(answer, dict):
                log.info("dask worker %s not ready for dsrt yet: %s", address, answer)
                self._retry_at[address] = now + RETRY_DESCRIBE_S
                continue
            try:
                link = self._measure(address)
            except Exception as exc:  # noqa: BLE001 - a worker that cannot answer a probe is not used now
                log.warning("dask worker %s did not answer link probes: %s", address, exc)
                self._retry_at[address] = now + RETRY_DESCRIBE_S
                continue
            self._add(address, answer, link)

    def _add(self, address: str, answer: dict[str, Any], link: tuple[float, float]) -> None:
        name = str(answer.get("name", ""))
        readable = bool(name) and name != address and not name.isdigit() and "://" not in name
        label = name if readable else address
        rec = WorkerRecord(address, name, str(answer.get("host", "")), int(answer.get("pid", 0)), link)
        rec.devices = [RemoteDevice(self, address, label, d, link, self.pipeline_depth) for d in answer["devices"]]
        with self._lock:
            if address not in self._joined:  # it left while we were asking
                return
            self._workers[address] = rec
        log.info("dask worker %s: %d device(s), round trip %.3g ms, %.3g MB/s", address, len(rec.devices),
                 link[0] * 1e3, link[1] / 1e6)

    def _measure(self, address: str) -> tuple[float, float]:
        """``(round trip s of a tiny chunk, bandwidth B/s)`` to ``address``: best of 3 round trips of 8
        bytes, best of 2 of :data:`PROBE_BYTES` (there and back)."""
        pin = {"workers": [address], "allow_other_workers": False, "pure": False}

        def trip(payload: bytes) -> float:
            t0 = time.perf_counter()
            self.client.submit(echo, payload, **pin).result(timeout=self.probe_timeout)
            return time.perf_counter() - t0

        small = min(trip(b"dsrt-rtt") for _ in range(3))
        big_payload = os.urandom(PROBE_BYTES)
        big = min(trip(big_payload) for _ in range(2))
        bandwidth = 2 * PROBE_BYTES / max(big - small, 1e-6)
        return small, bandwidth

    # ------------------------------------------------------------------ batched chunks
    def batch(self, device: RemoteDevice, token: int, kernel: str, args: list[Any], params: dict[str, Any]) -> None:
        """Queue one chunk (small inputs, result wanted here) for the next batched submit. Any thread.

        Chunks handed over within :data:`BATCH_WINDOW_S` go to Dask in one graph update per device;
        finished chunks are gathered together, one gather in flight at a time (what finishes meanwhile
        makes the next one). Each outcome goes back to ``device`` by ``token``."""
        self.loop.call_soon_threadsafe(self._enqueue, (device, token, kernel, args, params))

    def _enqueue(self, item: tuple[RemoteDevice, int, str, list[Any], dict[str, Any]]) -> None:
        self._outbox.append(item)
        if not self._flush_armed:
            self._flush_armed = True
            self.loop.call_later(BATCH_WINDOW_S, self._flush)

    def _flush(self) -> None:
        items, self._outbox, self._flush_armed = self._outbox, [], False
        groups: dict[int, list[tuple[RemoteDevice, int, str, list[Any], dict[str, Any]]]] = {}
        for item in items:
            if item[0]._holds(item[1]):
                groups.setdefault(id(item[0]), []).append(item)
        for group in groups.values():
            device = group[0][0]
            try:
                futures = self.client.map(
                    run_chunk, [device.local_id] * len(group), [g[2] for g in group], [g[3] for g in group],
                    [g[4] for g in group], key=[f"dsrt-{g[2]}-{g[1]}-{device.local_id}" for g in group],
                    workers=[device.address], allow_other_workers=False, pure=False)
            except Exception as exc:  # noqa: BLE001 - a batch Dask refused fails each of its chunks
                for g in group:
                    device._failed(g[1], exc)
                continue
            for g, fut in zip(group, futures, strict=True):
                if device._attach(g[1], [fut]):
                    fut.add_done_callback(self._done_callback(device, g[1]))

    def _done_callback(self, device: RemoteDevice, token: int) -> Callable[[Any], None]:
        def done(fut: Any) -> None:  # on Dask's callback thread: hop back to the loop
            try:
                self.loop.call_soon_threadsafe(self._arrive, device, token, fut)
            except RuntimeError:  # loop closed: the run is over
                pass
        return done

    def _arrive(self, device: RemoteDevice, token: int, fut: Any) -> None:
        self._arrived.append((device, token, fut))
        if not self._gathering:
            self._gathering = True
            self._gather_task = asyncio.ensure_future(self._gather_arrived())

    async def _gather_arrived(self) -> None:
        try:
            while self._arrived:
                batch, self._arrived = self._arrived, []
                live = [(d, t, f) for d, t, f in batch if d._holds(t)]
                ok = [(d, t, f) for d, t, f in live if f.status == "finished"]
                for d, t, f in live:
                    if f.status != "finished":
                        try:
                            await self.client.gather([f], asynchronous=True)
                            raise RuntimeError(f"dask future {f.key} is {f.status}")
                        except BaseException as exc:  # noqa: BLE001 - reported to the chunk's device
                            d._failed(t, exc)
                if not ok:
                    continue
                try:
                    values = await self.client.gather([f for _d, _t, f in ok], asynchronous=True)
                except BaseException:  # noqa: BLE001 - one lost result: fetch them one by one
                    for d, t, f in ok:
                        try:
                            [value] = await self.client.gather([f], asynchronous=True)
                        except BaseException as exc:  # noqa: BLE001 - reported to the chunk's device
                            d._failed(t, exc)
                        else:
                            d._delivered(t, value)
                    continue
                for (d, t, _f), value in zip(ok, values, strict=True):
                    d._delivered(t, value)
        finally:
            self._gathering = False

    # ------------------------------------------------------------------ queries
    def devices(self) -> list[RemoteDevice]:
        """Remote devices of the workers alive (new workers described first)."""
        if self._attached:
            self.refresh()
        with self._lock:
            return [d for rec in self._workers.values() if rec.alive for d in rec.devices]

    def device(self, ident: str) -> RemoteDevice | None:
        """A remote device by id (alive or not), or ``None``."""
        with self._lock:
            for rec in self._workers.values():
                for d in rec.devices:
                    if d.id == ident:
                        return d
        return None

    def workers(self) -> list[WorkerRecord]:
        """Every worker seen, alive or gone."""
        with self._lock:
            return list(self._workers.values())

    def worker_pids(self) -> dict[str, int]:
        """Worker address -> process id, for the workers alive."""
        with self._lock:
            return {a: r.pid for a, r in self._workers.items() if r.alive}

    def cancel(self, futures: Sequence[Any]) -> None:
        """Cancel Dask futures from any thread, without waiting."""
        if not futures:
            return
        try:
            asyncio.run_coroutine_threadsafe(self.client.cancel(list(futures), asynchronous=True), self.loop)
        except RuntimeError:  # the client's loop is closed: nothing left to cancel
            pass

    def to_dict(self) -> dict[str, Any]:
        return {"scheduler": self.address, "workers": [w.to_dict() for w in self.workers()]}

    def close(self) -> None:
        """Stop following the cluster; close the client if this object opened it."""
        if self._attached:
            self._attached = False
            try:
                self.client.unsubscribe_topic("all")
            except (ValueError, RuntimeError, OSError):
                pass
        if self._owns_client:
            self.client.close()

    def __repr__(self) -> str:
        alive = sum(1 for w in self.workers() if w.alive)
        return f"<dsrt.distributed.Cluster {self.address} workers={alive}>"


def attach(target: Any, factory: Callable[[], Any], **options: Any) -> Cluster:
    """``target`` (an address, a ``distributed.Client`` or a :class:`Cluster`) attached with ``factory``
    building each worker's runtime; ``options`` go to :class:`Cluster` (not for a Cluster given)."""
    cluster = target if isinstance(target, Cluster) else Cluster(target, **options)
    return cluster.attach(factory)
