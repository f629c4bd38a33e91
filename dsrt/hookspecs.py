"""The plugin contract: every hook a dsrt plugin may implement.

A plugin is a module (or object) with ``@dsrt.hookimpl`` functions, found through the entry-point
group ``dsrt``::

    # pyproject.toml of a vendor package
    [project.entry-points.dsrt]
    acme = "acme_dsrt.plugin"

Registration hooks return plain records and do no expensive work; hardware is probed later, lazily,
through :attr:`BackendSpec.probe`. Each docstring below is the contract for that hook.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import argparse

    from .device import Device
    from .kernels import KernelSpec
    from .runtime import Runtime

__all__ = [
    "hookspec",
    "hookimpl",
    "PLUGIN_API_VERSION",
    "SUPPORTED_API_VERSIONS",
    "BackendSpec",
    "CliCommand",
    "WorkloadItem",
]

hookspec = pluggy.HookspecMarker("dsrt")
hookimpl = pluggy.HookimplMarker("dsrt")

#: The plugin API version this core implements.
PLUGIN_API_VERSION = 1
#: Plugin API versions this core accepts from plugins.
SUPPORTED_API_VERSIONS = frozenset({1})


@dataclass(frozen=True)
class BackendSpec:
    """A backend's registration record.

    - ``name``: the backend name and device-id prefix (``"cpu"`` -> ``cpu:0``).
    - ``api_version``: the dsrt plugin API version the backend targets (see ``PLUGIN_API_VERSION``).
    - ``probe(runtime)``: find the devices; return a list of :class:`~dsrt.device.Device`, or raise
      :class:`~dsrt.errors.DeviceUnavailableError` whose reason says what is missing, e.g.
      ``"pyopencl not installed: pip install dsrt[opencl]"``. Called lazily, once per runtime.
    - ``create_simulated(runtime, device_id, params)``: build one device declared in a topology's
      ``simulated`` section (simulated backends only).
    - ``priority``: higher sorts first in listings and default placement.
    - ``experimental``: simulated or unstable; never the default device.
    - ``install_hint``: what to install when the backend is missing.
    - ``device_prefix``: the prefix of its device ids when it differs from ``name``
      (the ``quantum`` backend's devices are ``qpu:0``, ``qpu:1``...).
    - ``nominal_peak_flops``: a typical device's float32 operations per second, used only to plan
      on a topology (``dsrt simulate``) whose devices of this backend declare no peak (0: unknown).
    """

    name: str
    api_version: int
    probe: Callable[[Runtime], Sequence[Device]]
    priority: int = 0
    experimental: bool = False
    description: str = ""
    install_hint: str = ""
    create_simulated: Callable[[Runtime, str, Mapping[str, Any]], Device] | None = None
    device_prefix: str = ""
    nominal_peak_flops: float = 0.0

    @property
    def prefix(self) -> str:
        """The device-id prefix (``device_prefix`` or the backend name)."""
        return self.device_prefix or self.name


@dataclass(frozen=True)
class CliCommand:
    """A ``dsrt`` subcommand added by a plugin.

    ``configure(parser)`` adds arguments to the subparser; ``run(args, runtime_factory)`` executes it
    and returns the exit code. ``runtime_factory()`` builds the runtime on demand.
    """

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, Callable[[], Runtime]], int]


@dataclass(frozen=True)
class WorkloadItem:
    """One check in ``dsrt run``: run on ``device`` and compare against a reference.

    ``run(device)`` returns ``(max_error, tolerance, flops)``: the measured error, the largest
    acceptable error, and the operations performed (for throughput). ``applies(device)`` selects
    the devices it runs on.
    """

    name: str
    applies: Callable[[Device], bool]
    run: Callable[[Device], tuple[float, float, float]]
    tags: Sequence[str] = field(default_factory=tuple)


@hookspec
def dsrt_register_backends() -> list[BackendSpec]:  # type: ignore[empty-body]
    """Return the backends this plugin provides (:class:`BackendSpec` records).

    Called once when a :class:`~dsrt.runtime.Runtime` is created, on the thread creating it; do no
    expensive work here (no hardware calls): devices are found later by ``BackendSpec.probe``,
    lazily, once per runtime, on the first thread that needs them, with the runtime's lock held. The
    probe returns :class:`~dsrt.device.Device` objects the runtime then owns, or raises
    :class:`~dsrt.errors.DeviceUnavailableError` with a one-line reason; any other exception, a
    malformed device or an id outside the backend's prefix marks the backend failed. A spec whose
    ``api_version`` this dsrt does not support fails with a ``PluginVersionError``.

    Example::

        @dsrt.hookimpl
        def dsrt_register_backends():
            return [dsrt.BackendSpec(name="acme", api_version=1, probe=probe_acme)]
    """


@hookspec
def dsrt_register_kernels() -> list[KernelSpec]:  # type: ignore[empty-body]
    """Return new kernel specs (name, signature, dtype rules, numpy reference).

    Called once when a :class:`~dsrt.runtime.Runtime` is created, on the thread creating it, before
    any backend is probed. The registry is process-wide: the specs are shared, immutable records. A
    name that is a standard kernel, belongs to another plugin or is not an identifier fails this
    plugin (listed in ``Runtime.conflicts``); raising fails it too. The conformance kit checks every
    device's implementation against the spec's ``reference``.

    Example::

        @dsrt.hookimpl
        def dsrt_register_kernels():
            return [KernelSpec(name="gelu", doc="...", arity=(1, 1), params={}, infer=..., reference=...,
                               dtypes=frozenset({"float32"}))]
    """


@hookspec
def dsrt_kernel_impls(device: Device) -> list[tuple[str, Any, Callable[..., None]]]:  # type: ignore[empty-body]
    """Return ``(kernel name, dtype names, impl)`` to add to ``device`` (or ``[]``).

    Lets a plugin implement a kernel on another plugin's devices. ``impl(inputs, out, params,
    stream)`` has the :data:`dsrt.device.KernelImpl` signature and is called like a kernel-table
    implementation (on the launching thread, operands validated and held in place, ``out``
    allocated; exceptions translated by the device). This hook is called once per device, when the
    runtime adopts it during the probe, on the probing thread. By default it only fills kernels the
    device lacks; ``Runtime(override_kernels=[plugin])`` lets it replace the backend's own. An item
    that is not such a tuple, or a hook that raises, fails this plugin; a kernel or dtype the device
    cannot take is refused and listed in ``Runtime.conflicts``.

    Example::

        @dsrt.hookimpl
        def dsrt_kernel_impls(device):
            if device.info.backend != "cpu":
                return []
            return [("gelu", {"float32"}, my_cpu_gelu)]
    """


@hookspec
def dsrt_register_policies() -> list[Any]:  # type: ignore[empty-body]
    """Return scheduling policies (``dsrt.scheduler.PolicySpec`` records) selectable by name.

    Called once when the runtime's scheduler is created (first use of ``Runtime.scheduler`` or
    ``Runtime.map``), on that thread. Records of another type are logged and ignored; a hook that
    raises fails its plugin.

    Example::

        @dsrt.hookimpl
        def dsrt_register_policies():
            return [PolicySpec(name="fastest_only", factory=FastestOnly)]
    """


@hookspec
def dsrt_register_transports() -> list[Any]:  # type: ignore[empty-body]
    """Return collective transports (``dsrt.collective.TransportSpec`` records).

    Called each time a communicator selects a transport, on the thread building it. A record that is
    not a ``TransportSpec`` of kind ``'intra'`` or ``'inter'`` raises
    :class:`~dsrt.errors.ConfigurationError` naming the plugin.

    Example::

        @dsrt.hookimpl
        def dsrt_register_transports():
            return [TransportSpec(name="nccl", applies=is_cuda_group, factory=NcclTransport)]
    """


@hookspec
def dsrt_cli_commands() -> list[CliCommand]:  # type: ignore[empty-body]
    """Return extra ``dsrt`` subcommands (e.g. ``dsrt quantum run``).

    Called when the ``dsrt`` command builds its parser (main thread), before any runtime exists; the
    command's ``run`` returns the exit code and should raise :class:`~dsrt.errors.DsrtError` for a
    user error (printed as one line, exit 2).

    Example::

        @dsrt.hookimpl
        def dsrt_cli_commands():
            return [CliCommand(name="quantum", help="...", configure=add_args, run=main)]
    """


@hookspec
def dsrt_workload_items() -> list[WorkloadItem]:  # type: ignore[empty-body]
    """Return checks to add to the ``dsrt run`` workload.

    Called when ``dsrt run`` assembles its workload, on the main thread; each item's ``run(device)``
    is then called for every device its ``applies`` accepts, and a ``DsrtError`` it raises is
    reported as that check's failure.

    Example::

        @dsrt.hookimpl
        def dsrt_workload_items():
            return [WorkloadItem(name="qft-12", applies=is_qpu, run=run_qft)]
    """
