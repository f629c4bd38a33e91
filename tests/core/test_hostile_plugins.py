"""A plugin can only ever hurt itself: bad values fail that plugin, kernels cannot be hijacked,
device ids belong to their backend, and every other backend keeps working."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np
import pytest

import dsrt
from dsrt.kernels import KernelSpec, get_kernel

dsrt_cpu = pytest.importorskip("dsrt_cpu", reason="the cpu plugin is not installed")


def _backend_plugin(name: str, probe: Any, prefix: str = "") -> Any:
    class Plugin:
        __name__ = name

        @staticmethod
        @dsrt.hookimpl
        def dsrt_register_backends() -> list[dsrt.BackendSpec]:
            return [dsrt.BackendSpec(name=name, api_version=dsrt.PLUGIN_API_VERSION, probe=probe,
                                     device_prefix=prefix)]

    return Plugin()


class _FixedInfo(dsrt_cpu.CpuDevice):
    """A CPU device that reports whatever ``info`` it is given, as a careless plugin would."""

    def __init__(self, index: int, info: Any) -> None:
        super().__init__(index)
        self._shown = info
        self.id = getattr(info, "id", self.id)

    @property  # type: ignore[override]
    def info(self) -> Any:
        shown = getattr(self, "_shown", None)
        return shown if shown is not None else dsrt.Device.info.fget(self)  # type: ignore[attr-defined]

    @info.setter
    def info(self, value: Any) -> None:
        dsrt.Device.info.fset(self, value)  # type: ignore[attr-defined]


def _runtime(*plugins: Any, **kwargs: Any) -> dsrt.Runtime:
    return dsrt.Runtime(plugins=[dsrt_cpu, *plugins], autoload=False, **kwargs)


def _status(rt: dsrt.Runtime, name: str) -> dsrt.runtime.BackendStatus:
    return rt.backends[name]


def test_a_malformed_device_info_fails_only_its_backend() -> None:
    def probe(_rt: Any) -> list[Any]:
        return [_FixedInfo(5, "not an info")]

    rt = _runtime(_backend_plugin("evil", probe))
    st = _status(rt, "evil")
    assert st.status == "failed" and "not a DeviceInfo" in st.reason
    assert [d.id for d in rt.devices] == ["cpu:0"]
    assert rt.launch("add", rt.asarray(np.ones(3, np.float32)), rt.asarray(np.ones(3, np.float32))).numpy().sum() == 6


@pytest.mark.parametrize("field,value", [("memory_bytes", -1), ("peak_flops", float("nan")), ("precision_bits", "6"),
                                         ("dtypes", "float32"), ("kernels", ["gemm"])])
def test_each_bad_field_is_named(field: str, value: Any) -> None:
    def probe(_rt: Any) -> list[Any]:
        info = dataclasses.replace(dsrt_cpu.CpuDevice(0).info, id="bad:0", backend="bad")
        object.__setattr__(info, field, value)
        return [_FixedInfo(0, info)]

    rt = _runtime(_backend_plugin("bad", probe))
    st = _status(rt, "bad")
    assert st.status == "failed" and field in st.reason, st.reason
    assert "cpu:0" in {d.id for d in rt.devices}


def test_a_probe_returning_something_else_fails_only_its_backend() -> None:
    rt = _runtime(_backend_plugin("weird", lambda _rt: ["cpu:0"]))
    assert "not a dsrt.Device" in _status(rt, "weird").reason
    assert rt.device("cpu:0").info.backend == "cpu"


def test_device_ids_belong_to_their_backend() -> None:
    def steal(_rt: Any) -> list[Any]:
        return [dsrt_cpu.CpuDevice(0)]  # id cpu:0, from a backend called thief

    rt = _runtime(_backend_plugin("thief", steal))
    st = _status(rt, "thief")
    assert st.status == "failed" and "outside the backend's own prefix" in st.reason
    assert rt.device("cpu:0").info.backend == "cpu"

    def elsewhere(_rt: Any) -> list[Any]:
        return [_FixedInfo(7, dataclasses.replace(dsrt_cpu.CpuDevice(7).info, id="elsewhere:7"))]

    rt = _runtime(_backend_plugin("other", elsewhere))
    assert "outside the backend's own prefix 'other:'" in _status(rt, "other").reason


def test_a_duplicate_id_cannot_replace_a_device() -> None:
    def twin(_rt: Any) -> list[Any]:
        return [dsrt_cpu.CpuDevice(0)]

    # Same prefix as the cpu backend, a different backend: the second holder of cpu:0 fails.
    rt = _runtime(_backend_plugin("twin", twin, prefix="cpu"))
    statuses = {n: s.status for n, s in rt.backends.items()}
    assert sorted(statuses.values()).count("failed") == 1
    cpu0 = rt.device("cpu:0")
    assert rt.device("cpu:0") is cpu0


class _KernelPlugin:
    def __init__(self, name: str, spec: KernelSpec) -> None:
        self.__name__ = name
        self._spec = spec

    @dsrt.hookimpl
    def dsrt_register_kernels(self) -> list[KernelSpec]:
        return [self._spec]


def test_a_plugin_cannot_replace_a_standard_kernel() -> None:
    standard = get_kernel("gemm")
    fake = dataclasses.replace(standard, reference=lambda inputs, params: np.zeros(1))
    rt = _runtime(_KernelPlugin("hijacker", fake))
    assert get_kernel("gemm") is standard
    assert any("hijacker" in c and "'gemm'" in c and "standard" in c for c in rt.conflicts), rt.conflicts
    assert rt.plugins.records["hijacker"].status == "failed"
    a = rt.asarray(np.eye(4, dtype=np.float32))
    np.testing.assert_allclose(rt.launch("gemm", a, a).numpy(), np.eye(4))


def test_two_plugins_cannot_both_own_a_kernel_name() -> None:
    base = dataclasses.replace(get_kernel("add"), name="acme_fancy_add")
    other = dataclasses.replace(base)
    rt = _runtime(_KernelPlugin("first", base), _KernelPlugin("second", other))
    assert get_kernel("acme_fancy_add") is base
    assert any("second" in c and "belongs to first" in c for c in rt.conflicts), rt.conflicts


class _ImplPlugin:
    __name__ = "impl_hijacker"

    @staticmethod
    @dsrt.hookimpl
    def dsrt_kernel_impls(device: Any) -> list[Any]:
        def wrong(inputs: Any, out: Any, params: Any, stream: Any) -> None:
            np.from_dlpack(out)[...] = 0

        return [("add", ["float32"], wrong)]


def test_a_kernel_impl_for_another_backend_only_fills_gaps_unless_the_user_asks() -> None:
    rt = _runtime(_ImplPlugin())
    x = rt.asarray(np.ones(4, np.float32))
    np.testing.assert_array_equal(rt.launch("add", x, x).numpy(), 2 * np.ones(4))
    assert any("impl_hijacker" in c and "'add'" in c and "cpu:0" in c for c in rt.conflicts), rt.conflicts
    trusted = _runtime(_ImplPlugin(), override_kernels=["impl_hijacker"])
    y = trusted.asarray(np.ones(4, np.float32))
    np.testing.assert_array_equal(trusted.launch("add", y, y).numpy(), np.zeros(4))


def test_allow_and_deny_lists_warn_once_about_unknown_names(monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("DSRT_DISABLE_PLUGINS", "no_such_plugin_xyz")
    with caplog.at_level(logging.WARNING, logger="dsrt.plugins"):
        dsrt.Runtime()
        dsrt.Runtime()
    hits = [r for r in caplog.records if "no_such_plugin_xyz" in r.getMessage()]
    assert len(hits) == 1 and "matches no installed plugin" in hits[0].getMessage()
