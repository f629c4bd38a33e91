"""``Runtime``: the one object a user holds. It discovers plugins and devices and wires the rest.

The default runtime (:func:`default_runtime`) needs no configuration: it loads every installed
plugin, probes each backend lazily on first use, and places work on the best available device.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import dsrt.context as context

from .array import Array
from .boundary import check_device, check_kernel_spec
from .device import Device, Stream, UserKernel, current_device
from .errors import (
    BackendNotFoundError,
    ConfigurationError,
    DeviceUnavailableError,
    DsrtError,
    PluginError,
)
from .hookspecs import BackendSpec, CliCommand, WorkloadItem
from .kernels import KERNELS, STANDARD_KERNELS, register_kernel
from .plugins import BackendRecord, PluginManager
from .tracing import Tracer

__all__ = ["Runtime", "BackendStatus", "default_runtime", "set_default_runtime"]

#: Which plugin registered each non-standard kernel name (the kernel registry is process-wide).
_KERNEL_OWNERS: dict[str, str] = {}
_owners_lock = threading.Lock()


@dataclass
class BackendStatus:
    """A backend as this runtime sees it: ``status`` is ``available``, ``unavailable`` or ``failed``."""

    name: str
    plugin: str
    status: str
    reason: str = ""
    spec: BackendSpec | None = None
    devices: list[Device] = field(default_factory=list)
    error: DsrtError | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "plugin": self.plugin, "status": self.status, "reason": self.reason,
            "experimental": bool(self.spec and self.spec.experimental),
            "devices": [d.info.to_dict() for d in self.devices],
        }


class Runtime:
    """Discovers plugins and devices; launches kernels; owns the scheduler, topology and traces.

    ``topology``: a path, YAML string, mapping or ``Topology`` (see :mod:`dsrt.topology`).
    ``plugins``: extra plugin objects to register besides the entry points. ``autoload``/``allow``/
    ``deny`` override the ``DSRT_*`` environment variables. ``backends``: probe only these names.
    ``override_kernels``: plugins trusted to replace kernel implementations other backends already
    have (by default a plugin's ``dsrt_kernel_impls`` only fill kernels a device lacks).
    ``cluster``: a Dask scheduler address, a ``distributed.Client`` or a
    :class:`dsrt.distributed.Cluster`; its workers' devices join :attr:`devices` (see
    :mod:`dsrt.distributed`; each worker builds a runtime with the same ``backends``/``allow``/``deny``).

    What plugins return is checked at the boundary (:mod:`dsrt.boundary`): a plugin that registers a
    standard kernel name or another plugin's kernel, or whose probe returns a malformed device or a
    device id outside its prefix, fails alone, with the reason in :attr:`backends` and
    :attr:`conflicts`.
    """

    def __init__(
        self,
        topology: Any = None,
        *,
        plugins: Iterable[Any] = (),
        autoload: bool | None = None,
        allow: Sequence[str] | None = None,
        deny: Sequence[str] | None = None,
        backends: Sequence[str] | None = None,
        override_kernels: Sequence[str] = (),
        cluster: Any = None,
    ) -> None:
        self.plugins = PluginManager(autoload=autoload, allow=allow, deny=deny, extra=plugins)
        self._only = set(backends) if backends is not None else None
        self._override = frozenset(override_kernels)
        #: Kernel clashes refused at the boundary, one line each (plugin, kernel, device, owner).
        self.conflicts: list[str] = []
        self._register_kernels()
        self._lock = threading.RLock()
        self._records: dict[str, BackendRecord] = self.plugins.backends()
        self._status: dict[str, BackendStatus] | None = None
        self._devices: dict[str, Device] = {}
        self._tracer: Tracer | None = None
        self._topology_source = topology
        self._topology: Any = None
        self._binding: Any = None
        self._scheduler: Any = None
        self._cluster: Any = None
        if cluster is not None:
            import functools

            from .distributed import attach

            worker_runtime = functools.partial(Runtime, autoload=autoload, allow=allow, deny=deny,
                                               backends=sorted(self._only) if self._only is not None else None)
            self._cluster = attach(cluster, worker_runtime)

    def _register_kernels(self) -> None:
        """Register plugins' kernels; a clash with a standard or another plugin's kernel fails that plugin."""
        for plugin, spec in self.plugins.collect("dsrt_register_kernels"):
            bad = check_kernel_spec(spec)
            with _owners_lock:
                owner = "dsrt (standard kernel)" if spec.name in STANDARD_KERNELS else _KERNEL_OWNERS.get(spec.name)
                same = KERNELS.get(spec.name) is spec  # the same plugin module registered under another name
                if bad is None and owner is not None and owner != plugin and not same:
                    bad = f"registers kernel '{spec.name}', which belongs to {owner}"
                if bad is None:
                    _KERNEL_OWNERS[spec.name] = plugin
                    register_kernel(spec, replace=True)
                    continue
            self.conflicts.append(f"plugin '{plugin}' {bad}" if owner else f"plugin '{plugin}': {bad}")
            self.plugins.fail(plugin, "dsrt_register_kernels", PluginError(bad, plugin=plugin))

    # ------------------------------------------------------------------ discovery
    def _probe(self) -> dict[str, BackendStatus]:
        with self._lock:
            if self._status is not None:
                return self._status
            status: dict[str, BackendStatus] = {}
            ordered = sorted(
                self._records.values(),
                key=lambda r: (-(r.spec.priority if r.spec else 0), r.name),
            )
            for rec in ordered:
                if rec.spec is None:
                    status[rec.name] = BackendStatus(rec.name, rec.plugin, "failed", str(rec.error), error=rec.error)
                    continue
                if self._only is not None and rec.name not in self._only:
                    status[rec.name] = BackendStatus(rec.name, rec.plugin, "unavailable", "not selected", rec.spec)
                    continue
                try:
                    devices = list(rec.spec.probe(self))
                except DeviceUnavailableError as exc:
                    status[rec.name] = BackendStatus(rec.name, rec.plugin, "unavailable", exc.reason, rec.spec, error=exc)
                    continue
                except Exception as exc:  # noqa: BLE001 - isolate the backend, keep its cause
                    err = PluginError(
                        f"backend '{rec.name}' probe failed: {type(exc).__name__}: {exc}", plugin=rec.plugin, cause=exc
                    )
                    status[rec.name] = BackendStatus(rec.name, rec.plugin, "failed", str(err), rec.spec, error=err)
                    continue
                if not devices:
                    status[rec.name] = BackendStatus(rec.name, rec.plugin, "unavailable", "no devices found", rec.spec)
                    continue
                taken = dict(self._devices)
                bad = None
                for dev in devices:
                    bad = check_device(dev, backend=rec.name, prefix=rec.spec.prefix, taken=taken)
                    if bad:
                        break
                    taken[dev.id] = dev
                if bad:
                    err = PluginError(f"backend '{rec.name}' probe returned a bad device: {bad}", plugin=rec.plugin)
                    status[rec.name] = BackendStatus(rec.name, rec.plugin, "failed", str(err), rec.spec, error=err)
                    continue
                for dev in devices:
                    self._adopt(dev)
                status[rec.name] = BackendStatus(rec.name, rec.plugin, "available", "", rec.spec, devices)
            for failed in self.plugins.failed():
                if not any(s.plugin == failed.name for s in status.values()):
                    status[f"<{failed.name}>"] = BackendStatus(f"<{failed.name}>", failed.name, "failed", str(failed.error),
                                                               error=failed.error)
            self._status = status
            return status

    def _adopt(self, dev: Device) -> None:
        own = {r.plugin for r in self._records.values() if r.name == dev.info.backend}
        for plugin, item in self.plugins.collect("dsrt_kernel_impls", device=dev):
            try:
                name, dtype_names, impl = item
            except (TypeError, ValueError):
                self.plugins.fail(plugin, "dsrt_kernel_impls", PluginError(
                    f"dsrt_kernel_impls returned {item!r}, not (kernel name, dtype names, impl)", plugin=plugin))
                continue
            if dev.supports(name) and plugin not in own and plugin not in self._override:
                self.conflicts.append(
                    f"plugin '{plugin}' implements '{name}' for {dev.id}, which its backend '{dev.info.backend}'"
                    f" already implements: kept the backend's (Runtime(override_kernels=['{plugin}']) to prefer it)")
                continue
            try:
                dev.add_kernel(name, dtype_names, impl)
            except DsrtError as exc:
                self.conflicts.append(f"plugin '{plugin}': kernel '{name}' for {dev.id} refused: {exc}")
        dev.tracer = self._tracer
        dev.resolve_device = _resolver(weakref.ref(self))
        self._devices[dev.id] = dev

    @property
    def backends(self) -> dict[str, BackendStatus]:
        """Every backend by name with its status, reason and devices (probes on first use)."""
        return dict(self._probe())

    @property
    def devices(self) -> list[Device]:
        """Every available device: real ones first by backend priority, simulated ones last; then,
        with a cluster attached, each live worker's real devices as
        :class:`dsrt.distributed.RemoteDevice` proxies (placeable, not allocatable from here)."""
        self._probe()
        self._bind_topology()
        local = sorted(self._devices.values(), key=lambda d: (d.info.simulated, 0))
        if self._cluster is not None:
            return local + self._cluster.devices()
        return local

    @property
    def cluster(self) -> Any:
        """The attached :class:`dsrt.distributed.Cluster` (``None`` without ``cluster=``)."""
        return self._cluster

    def device(self, ident: str | Device | None = None) -> Device:
        """A device by id (``'cpu:0'``); with no id, the current or default device."""
        if isinstance(ident, Device):
            return ident
        if ident is None:
            cur = current_device()
            return cur if cur is not None else self.default_device
        if self._cluster is not None:  # a remote id (or proxy) gives its RemoteDevice
            remote: Any = ident if getattr(ident, "remote", False) else self._cluster.device(ident)
            if remote is not None:
                return remote  # type: ignore[no-any-return]
        self._probe()
        self._bind_topology()
        dev = self._devices.get(ident)
        if dev is not None:
            return dev
        prefix = ident.split(":", 1)[0]
        backend = prefix
        for name, rec in self._records.items():
            if rec.spec is not None and rec.spec.prefix == prefix:
                backend = name
        st = self._status.get(backend) if self._status else None
        if st is None:
            known = ", ".join(sorted(self._devices)) or "none"
            raise BackendNotFoundError(f"no backend '{backend}' is installed (devices: {known})")
        if st.status == "failed":
            raise BackendNotFoundError(f"backend '{backend}' failed to load: {st.reason}", plugin=st.plugin,
                                       cause=st.error)
        if st.status == "unavailable":
            raise DeviceUnavailableError(st.reason, device=ident)
        known = ", ".join(d.id for d in st.devices)
        raise DeviceUnavailableError(f"no such device; backend '{backend}' has {known}", device=ident)

    @property
    def default_device(self) -> Device:
        """``$DSRT_DEFAULT_DEVICE`` if set, else the real device of the highest-priority backend."""
        chosen = os.environ.get("DSRT_DEFAULT_DEVICE")
        if chosen:
            return self.device(chosen)
        for dev in self.devices:
            if not dev.info.simulated:
                return dev
        raise DeviceUnavailableError("no usable device: is the cpu plugin disabled?")

    def add_device(self, device: Device, *, replace: bool = False) -> Device:
        """Adopt a device built outside discovery (topology-declared simulated devices, tests).

        ``replace=True`` swaps out a device with the same id (a probe's default simulated device
        replaced by the one a topology declares).
        """
        self._probe()
        with self._lock:
            if device.id in self._devices and not replace:
                raise ConfigurationError(f"device id '{device.id}' is already in use")
            self._adopt(device)
        return device

    # ------------------------------------------------------------------ topology
    @property
    def topology(self) -> Any:
        """The bound :class:`dsrt.topology.Topology` (built from discovery when none was given)."""
        self._probe()
        self._bind_topology()
        return self._topology

    @property
    def binding(self) -> Any:
        """How the topology's declared devices matched this machine (see :mod:`dsrt.topology`)."""
        self._probe()
        self._bind_topology()
        return self._binding

    def _bind_topology(self) -> None:
        if self._topology is not None:
            return
        with self._lock:
            if self._topology is not None:
                return
            from .topology import bind_runtime

            self._topology, self._binding = bind_runtime(self, self._topology_source)

    # ------------------------------------------------------------------ arrays and kernels
    def asarray(self, obj: Any, *, device: str | Device | None = None, dtype: Any = None) -> Array:
        """Copy host data onto a device (the default device unless given)."""
        return self.device(device).asarray(obj, dtype)

    def empty(self, shape: Any, dtype: Any = "float32", *, device: str | Device | None = None) -> Array:
        """An uninitialised array on a device."""
        return self.device(device).empty(shape, dtype)

    def launch(
        self,
        kernel: str,
        *inputs: Array,
        device: str | Device | None = None,
        out: Array | None = None,
        stream: Stream | None = None,
        **params: Any,
    ) -> Array:
        """Run ``kernel`` on ``inputs``; on ``device``, else where the inputs (or ``out``) live."""
        if device is None:
            dev = inputs[0].device if inputs else (out.device if out is not None else self.device())
        elif isinstance(device, Device):
            dev = device
        else:
            dev = self.device(device)
        return dev.launch(kernel, *inputs, out=out, stream=stream, **params)

    def compile(
        self, source: str, *, lang: str, name: str, device: str | Device | None = None, options: Sequence[str] = ()
    ) -> UserKernel:
        """Compile a user kernel (``lang`` = ``c``, ``opencl``, ``cuda``...) for a device."""
        if device is None:
            for dev in self.devices:
                if lang in dev.info.languages:
                    return dev.compile(source, lang=lang, name=name, options=options)
            raise ConfigurationError(f"no device here compiles '{lang}' kernels")
        return self.device(device).compile(source, lang=lang, name=name, options=options)

    def from_dlpack(self, obj: Any, *, device: str | Device | None = None) -> Array:
        """Wrap a DLPack producer (numpy, cupy, torch, jax...) as an Array without copying where possible.

        The Array keeps ``obj``'s memory alive; it is never returned to a dsrt pool. Without
        ``device``, the device whose DLPack device type matches the producer's is used.
        """
        try:
            code, _index = obj.__dlpack_device__()
        except AttributeError:
            raise ConfigurationError(f"{type(obj).__name__} does not implement __dlpack_device__") from None
        if device is not None:
            return self.device(device)._import_dlpack(obj)
        for dev in self.devices:
            if dev.info.dlpack_device_type == code:
                return dev._import_dlpack(obj)
        raise DeviceUnavailableError(f"no installed backend holds DLPack device type {code}")

    def memory_stats(self, device: str | Device | None = None) -> dict[str, Any]:
        """The memory pool's statistics for a device (bytes and counts)."""
        return self.device(device).pool.stats()

    # ------------------------------------------------------------------ scheduler
    @property
    def scheduler(self) -> Any:
        """The load balancer (created on first use)."""
        with self._lock:
            if self._scheduler is None:
                from .scheduler import Scheduler

                self._scheduler = Scheduler(self)
            return self._scheduler

    def map(
        self,
        kernel: str,
        chunks: Sequence[Sequence[Any]],
        *,
        devices: Sequence[str | Device] | None = None,
        policy: str | None = None,
        tolerance: float | None = None,
        timeout: float | None = None,
        verify: float | None = None,
        keep_remote: bool = False,
        **params: Any,
    ) -> list[Any]:
        """Run ``kernel`` over independent chunks across devices; results in input order.

        Each chunk is a tuple of inputs (dsrt Arrays or numpy arrays). Results are Arrays on the
        device each chunk ran on; the caller owns them; inputs are never modified.

        ``devices``: ids or devices to use; default every healthy device exact to the dtype
        (simulated devices take work only when named here or admitted by ``tolerance``).
        ``policy``: ``dmda`` (default), ``heft``, ``eager``, ``work_stealing``, ``round_robin`` or a
        plugin's. ``tolerance``: the largest relative error acceptable; default the conformance kit's
        tolerance for this kernel and dtype, so no inexact (analog, noisy, few-bit) device takes work.
        ``timeout``: seconds the whole run may take. ``verify``: a fraction of chunks (at least one per
        device) re-checked against the numpy reference; a device that disagrees is quarantined and
        its chunks recomputed. ``params``: the kernel's parameters (``alpha=`` for ``gemm``...).

        With a cluster attached, chunks run on remote devices too; their results come back as Arrays
        on the default device, or with ``keep_remote=True`` stay on their workers as
        :class:`dsrt.distributed.RemoteArray` handles that a later ``map`` takes as inputs.

        Every result is committed exactly once; a chunk may run more than once after a failure, always
        on private copies of its inputs. :attr:`last_run` says what happened; :meth:`explain` why a
        chunk went where it went. Raises :class:`~dsrt.errors.PoisonedChunkError` (with the results
        that did complete) when chunks could not be completed.
        """
        return self.scheduler.map(kernel, chunks, devices=devices, policy=policy, tolerance=tolerance,
                                  timeout=timeout, verify=verify, keep_remote=keep_remote, **params)

    def submit(
        self,
        kernel: str,
        *inputs: Any,
        depends_on: Sequence[Any] = (),
        devices: Sequence[str | Device] | None = None,
        policy: str | None = None,
        tolerance: float | None = None,
        timeout: float | None = None,
        **params: Any,
    ) -> Any:
        """Schedule one task; returns a future (``.result()``). Inputs may be futures of earlier tasks;
        ``depends_on`` adds ordering-only dependencies. Options mean what they mean for :meth:`map`;
        pending tasks run together when a result is asked for, so a DAG is planned as a whole."""
        return self.scheduler.submit(kernel, *inputs, depends_on=depends_on, devices=devices, policy=policy,
                                     tolerance=tolerance, timeout=timeout, **params)

    def explain(self, task: Any) -> Any:
        """Why a chunk (an index of the last run, a task or a future) went where it went: the devices
        considered with their predicted finish, the devices excluded and why (precision, dtype,
        kernel, health), and every attempt with its failures and retries."""
        return self.scheduler.explain(task)

    @property
    def last_run(self) -> Any:
        """The :class:`~dsrt.scheduler.RunReport` of the last ``map`` or ``flush`` (``None`` before)."""
        return self.scheduler.last_run

    def health(self) -> dict[str, dict[str, Any]]:
        """Each device's health: ``state`` (healthy, quarantined, down), reason, failures, backoff left."""
        report = self.scheduler.health.snapshot()
        for dev in self.devices:
            report.setdefault(dev.id, {"device": dev.id, "state": "healthy", "reason": "", "failures": 0,
                                       "retry_in_s": 0.0, "health_checks": 0, "events": []})
        return dict(sorted(report.items()))

    def mark_down(self, device: str | Device, reason: str = "marked down by the user") -> None:
        """Keep ``device`` out of scheduling until :meth:`mark_up`."""
        self.scheduler.health.mark_down(self.device(device).id, reason)

    def mark_up(self, device: str | Device) -> None:
        """Put ``device`` back into scheduling now (clears a quarantine or a mark_down)."""
        self.scheduler.health.mark_up(self.device(device).id)

    def checkpointer(self, path: str | os.PathLike[str], keep: int = 3, **options: Any) -> Any:
        """A :class:`dsrt.checkpoint.Checkpointer` whose ``restore(device="opencl:0")`` resolves ids here."""
        from .checkpoint import Checkpointer

        return Checkpointer(path, keep, resolve=self.device, **options)

    def world(self, **options: Any) -> Any:
        """A collective communicator over every MPI rank (this process alone outside ``mpiexec``)
        and this rank's devices; ``options`` go to :class:`dsrt.collective.Communicator`."""
        from .collective import world

        return world(self, **options)

    # ------------------------------------------------------------------ jit
    def jit(self, fn: Any = None, *, cache_size: int = 32, fuse: bool = True) -> Any:
        """Capture ``fn``'s launches on its first call per signature and replay them as a fused,
        memory-planned graph after (``rt.jit(fn)`` or ``@rt.jit``); see :mod:`dsrt.jit`."""
        from .jit import jit as _jit

        return _jit(fn, cache_size=cache_size, fuse=fuse, devices=lambda: list(self._devices.values()))

    def capture(self, *inputs: Array, fuse: bool = True) -> Any:
        """``with rt.capture(*inputs) as g:`` records the block's launches into a graph ``g``;
        ``g.replay(*other_inputs)`` runs it again (see :mod:`dsrt.jit`)."""
        from .jit import capture as _capture

        return _capture(*inputs, fuse=fuse, devices=lambda: list(self._devices.values()))

    # ------------------------------------------------------------------ tracing
    @contextmanager
    def trace(self, path: str | None = None) -> Iterator[Tracer]:
        """Trace everything inside the block; write a Perfetto/Chrome trace to ``path`` at the end."""
        tracer = Tracer()
        previous = self._tracer
        self._set_tracer(tracer)
        try:
            yield tracer
        finally:
            self._set_tracer(previous)
            if path is not None:
                tracer.write(path)

    @property
    def tracer(self) -> Tracer | None:
        return self._tracer

    def _set_tracer(self, tracer: Tracer | None) -> None:
        self._tracer = tracer
        for dev in self._devices.values():
            dev.tracer = tracer

    # ------------------------------------------------------------------ plugin extras
    def cli_commands(self) -> list[CliCommand]:
        return [c for _p, c in self.plugins.collect("dsrt_cli_commands")]

    def workload_items(self) -> list[WorkloadItem]:
        return [w for _p, w in self.plugins.collect("dsrt_workload_items")]

    def close(self) -> None:
        """Release every device's cached memory; detach the cluster (closing a client it opened)."""
        if self._cluster is not None:
            self._cluster.close()
        for dev in list(self._devices.values()):
            try:
                dev.close()
            except DsrtError:
                pass

    def __repr__(self) -> str:
        return f"<dsrt.Runtime devices={[d.id for d in self._devices.values()]}>"


def _resolver(ref: weakref.ReferenceType[Runtime]) -> Any:
    """``device id -> Device`` in the runtime ``ref`` points to (a weak reference: devices do not keep
    their runtime alive; after it is gone, ids resolve in the default runtime)."""

    def resolve(ident: str) -> Device:
        owner = ref()
        return (owner if owner is not None else default_runtime()).device(ident)

    return resolve


def default_runtime() -> Runtime:
    """The process-wide runtime, created on first use with no configuration."""
    rt: Runtime = context.default_runtime()
    return rt


def set_default_runtime(runtime: Runtime | None) -> None:
    """Replace (or with ``None`` reset) the process-wide runtime."""
    context.set_default_runtime(runtime)


context.set_factory(Runtime)


def asarray(obj: Any, *, device: str | Device | None = None, dtype: Any = None) -> Array:
    """Copy host data onto a device of the default runtime."""
    return default_runtime().asarray(obj, device=device, dtype=dtype)


def jit(fn: Any = None, *, cache_size: int = 32, fuse: bool = True) -> Any:
    """:meth:`Runtime.jit` on the default runtime (``@dsrt.jit``)."""
    if fn is None:
        return lambda f: jit(f, cache_size=cache_size, fuse=fuse)
    from .jit import jit as _jit

    return _jit(fn, cache_size=cache_size, fuse=fuse,
                    devices=lambda: list(default_runtime()._devices.values()))


def from_dlpack(obj: Any, *, device: str | Device | None = None) -> Array:
    """Wrap a DLPack producer as an Array of the default runtime (see :meth:`Runtime.from_dlpack`)."""
    return default_runtime().from_dlpack(obj, device=device)
