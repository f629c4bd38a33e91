"""Five host-memory backends for checking the conformance kit, one bug each (or none):

``kitgood``       correct: synchronous, float32/int32, add/copy/scale and the plugin kernel
                  ``kitfix_softsign``, DLPack export that keeps the array alive.
``kitleak``       as kitgood, but ``_export_dlpack`` hands out a view of the pool's memory without keeping
                  the array alive (the measured vendor bug: consumers read reused memory after ``del a``).
``kitwrong``      as kitgood, but its ``kitfix_softsign`` skips the tail of arrays whose length is not a
                  multiple of 4 (writes 0 there): it disagrees with the kernel's own reference.
``kitasync``      correct and asynchronous: every stream is a worker thread running its work in order,
                  launches take 0.1 s, events complete when the worker reaches them.
``kitunordered``  as kitasync, but it kept the base class's events, which are complete when recorded (right
                  only for synchronous devices): waiting on one does not wait for the launch before it.

Registered by the one plugin object :data:`PLUGIN` (``--dsrt-plugin kit_fixtures.backends:PLUGIN``).
Uses only public dsrt names.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

import dsrt
from dsrt import Array, Device, DeviceInfo, Event, KernelSpec, ShapeError, Stream
from dsrt.array import DLPACK_CPU
from dsrt.memory.hostmem import HostMemory, host_view

MEMORY_BYTES = 256 << 20
#: Seconds every launch on an asynchronous fixture device takes before it writes its output.
LAUNCH_DELAY = 0.1


def _softsign_infer(inputs: Sequence[Any], params: Mapping[str, Any]) -> tuple[tuple[int, ...], np.dtype]:
    x = inputs[0]
    if x.dtype != np.float32:
        raise ShapeError(f"kernel 'kitfix_softsign' takes float32, got {x.dtype}")
    return tuple(x.shape), x.dtype


SOFTSIGN = KernelSpec(
    name="kitfix_softsign", doc="out = x / (1 + |x|)", arity=(1, 1), params={}, infer=_softsign_infer,
    reference=lambda inputs, p: (inputs[0] / (1 + np.abs(inputs[0]))).astype(inputs[0].dtype),
    dtypes=frozenset({"float32"}),
)

Impl = Callable[[Sequence[Array], Array, Mapping[str, Any], Stream], None]


def _add(inputs: Sequence[Array], out: Array, params: Mapping[str, Any], stream: Stream) -> None:
    np.add(host_view(inputs[0]), host_view(inputs[1]), out=host_view(out))


def _copy(inputs: Sequence[Array], out: Array, params: Mapping[str, Any], stream: Stream) -> None:
    host_view(out)[...] = host_view(inputs[0])


def _scale(inputs: Sequence[Array], out: Array, params: Mapping[str, Any], stream: Stream) -> None:
    np.multiply(host_view(inputs[0]), np.float32(params["alpha"]), out=host_view(out))


def _softsign(inputs: Sequence[Array], out: Array, params: Mapping[str, Any], stream: Stream) -> None:
    x = host_view(inputs[0])
    np.divide(x, 1 + np.abs(x), out=host_view(out))


def _softsign_without_tail(inputs: Sequence[Array], out: Array, params: Mapping[str, Any], stream: Stream) -> None:
    """The bug: a 4-wide loop with no remainder handling (the tail is left 0)."""
    x, o = host_view(inputs[0]).reshape(-1), host_view(out).reshape(-1)
    m = x.size - x.size % 4
    np.divide(x[:m], 1 + np.abs(x[:m]), out=o[:m])
    o[m:] = 0


class _KeepAlive:
    """Presents a numpy view through ``__array_interface__`` while holding its Array (and so its memory)."""

    def __init__(self, view: np.ndarray, owner: Array) -> None:
        self.__array_interface__ = view.__array_interface__
        self.owner = owner


class HostDevice(HostMemory, Device):
    """A synchronous float32/int32 device over host memory (``<backend>:0``)."""

    softsign: Impl = staticmethod(_softsign)  # type: ignore[assignment]

    def __init__(self, backend: str, *, synchronous: bool = True, dlpack: bool = True) -> None:
        super().__init__(DeviceInfo(
            id=f"{backend}:0", backend=backend, index=0, name=f"{backend} (kit fixture)", vendor="dsrt tests",
            memory_bytes=MEMORY_BYTES, compute_units=1, dtypes=frozenset({"float32", "int32"}), peak_flops=1e9,
            memory_bandwidth=1e9, synchronous=synchronous, host_visible=True,
            dlpack_device_type=DLPACK_CPU if dlpack else None,
        ))

    def kernel_table(self) -> Mapping[str, tuple[frozenset[str], Impl]]:
        return {
            "add": (frozenset({"float32", "int32"}), _add),
            "copy": (frozenset({"float32", "int32"}), _copy),
            "scale": (frozenset({"float32"}), _scale),
            "kitfix_softsign": (frozenset({"float32"}), type(self).softsign),
        }

    def _export_dlpack(self, array: Array, stream: Any) -> Any:
        return np.asarray(_KeepAlive(host_view(array), array))

    def _import_dlpack(self, obj: Any) -> Array:
        return self.asarray(np.from_dlpack(obj))  # a copy: allowed, if not zero-copy


class LeakyExportDevice(HostDevice):
    def _export_dlpack(self, array: Array, stream: Any) -> Any:
        return host_view(array)  # the bug: nothing keeps ``array`` (and so its pooled block) alive


class WrongKernelDevice(HostDevice):
    softsign = staticmethod(_softsign_without_tail)  # type: ignore[assignment]


class _Worker:
    """One stream's queue: a daemon thread that runs submitted jobs in order."""

    def __init__(self, name: str) -> None:
        self.jobs: queue.Queue[Callable[[], None]] = queue.Queue()
        self.error: BaseException | None = None
        threading.Thread(target=self._run, name=name, daemon=True).start()

    def _run(self) -> None:
        while True:
            job = self.jobs.get()
            try:
                job()
            except BaseException as exc:  # noqa: BLE001 - reported by the next synchronize
                self.error = exc
            finally:
                self.jobs.task_done()

    def submit(self, job: Callable[[], None]) -> None:
        self.jobs.put(job)

    def drain(self) -> None:
        self.jobs.join()
        error, self.error = self.error, None
        if error is not None:
            raise error

    def call(self, job: Callable[[], None]) -> None:
        """Run ``job`` after everything queued before it, and wait for it (a blocking, in-order copy)."""
        done = threading.Event()

        def run() -> None:
            try:
                job()
            finally:
                done.set()

        self.submit(run)
        done.wait()


class AsyncHostDevice(HostDevice):
    """Asynchronous: each stream is a :class:`_Worker`; launches and device copies are queued, host copies
    are blocking and in order, events complete when their stream's worker reaches them."""

    def __init__(self, backend: str) -> None:
        super().__init__(backend, synchronous=False, dlpack=False)

    def kernel_table(self) -> Mapping[str, tuple[frozenset[str], Impl]]:
        table = super().kernel_table()
        return {k: (frozenset({"float32"}), table[k][1]) for k in ("add", "copy")}

    def _create_stream(self, name: str = "") -> Stream:
        return Stream(self, _Worker(f"kitfix-{name or 'stream'}"), name)

    def _copy_in(self, handle: Any, offset: int, src: np.ndarray, stream: Stream) -> None:
        stream.native.call(lambda: HostMemory._copy_in(self, handle, offset, src, stream))

    def _copy_out(self, handle: Any, offset: int, dst: np.ndarray, stream: Stream) -> None:
        stream.native.call(lambda: HostMemory._copy_out(self, handle, offset, dst, stream))

    def _copy_between(self, dst_handle: Any, dst_offset: int, src_handle: Any, src_offset: int, nbytes: int,
                      stream: Stream, src_device: Device) -> bool:
        if not isinstance(src_handle, np.ndarray):
            return False

        def job() -> None:
            dst_handle[dst_offset:dst_offset + nbytes] = src_handle[src_offset:src_offset + nbytes]

        stream.native.submit(job)
        return True

    def _launch(self, kernel: str, inputs: Sequence[Array], out: Array, params: Mapping[str, Any],
                stream: Stream) -> None:
        impl = self._impls_for(kernel)
        args = (list(inputs), out, dict(params), stream)  # the job holds its operands until it has run

        def job() -> None:
            time.sleep(LAUNCH_DELAY)
            impl(*args)

        stream.native.submit(job)

    def _impls_for(self, kernel: str) -> Impl:
        return self.kernel_table()[kernel][1]

    def _synchronize(self, stream: Stream) -> None:
        stream.native.drain()

    def _record_event(self, stream: Stream) -> Event:
        event = Event(stream, threading.Event())

        def reached() -> None:
            event.timestamp = time.perf_counter()
            event.native.set()

        stream.native.submit(reached)
        return event

    def _query_event(self, event: Event) -> bool:
        return bool(event.native.is_set())

    def _wait_event(self, event: Event) -> None:
        event.native.wait()

    def _elapsed(self, start: Event, end: Event) -> float:
        start.native.wait()
        end.native.wait()
        return float(end.timestamp - start.timestamp)  # type: ignore[operator]


class UnorderedDevice(AsyncHostDevice):
    """The bug: asynchronous, but events are the base class's, complete the moment they are recorded."""

    _record_event = Device._record_event
    _query_event = Device._query_event
    _wait_event = Device._wait_event
    _elapsed = Device._elapsed


_BACKENDS: dict[str, Callable[[], Device]] = {
    "kitgood": lambda: HostDevice("kitgood"),
    "kitleak": lambda: LeakyExportDevice("kitleak"),
    "kitwrong": lambda: WrongKernelDevice("kitwrong"),
    "kitasync": lambda: AsyncHostDevice("kitasync"),
    "kitunordered": lambda: UnorderedDevice("kitunordered"),
}


def _prober(make: Callable[[], Device]) -> Callable[[dsrt.Runtime], list[Device]]:
    def probe(runtime: dsrt.Runtime) -> list[Device]:
        return [make()]

    return probe


class KitFixturePlugin:
    """Registers the five fixture backends and the ``kitfix_softsign`` kernel."""

    __name__ = "kit_fixtures"

    @dsrt.hookimpl
    def dsrt_register_backends(self) -> list[dsrt.BackendSpec]:
        return [dsrt.BackendSpec(name=name, api_version=1, probe=_prober(make), priority=-50,
                                 description="conformance kit fixture")
                for name, make in _BACKENDS.items()]

    @dsrt.hookimpl
    def dsrt_register_kernels(self) -> list[KernelSpec]:
        return [SOFTSIGN]


PLUGIN = KitFixturePlugin()
