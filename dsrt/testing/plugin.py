"""pytest plugin of the conformance kit: the ``--dsrt-backend``/``--dsrt-plugin`` options and the
parametrization of the kit's tests.

Loaded through the ``pytest11`` entry point into every pytest run, so it is light: it adds options,
and parametrizes only tests that ask for ``dsrt_device``. It builds a runtime only when such a test
is collected (or when ``--dsrt-plugin`` is given).

Parametrization, decided at collection from each device's kernel table (``info.kernels``):

``dsrt_device``
    one param per selected device; a skip-marked param per absent or device-less backend.
``dsrt_device, dsrt_kernel, dsrt_dtype``
    one param per standard kernel and dtype the kernel is defined for and the device holds. A pair
    the device does not claim is a skip-marked param whose reason says so ("cexample:0 does not
    implement softmax for float32"), never a pass; a kernel none of whose dtypes the device holds is
    one skip-marked param (``dsrt_dtype`` ``None``).
``dsrt_device, dsrt_plugin_kernel, dsrt_dtype``
    one param per non-standard kernel in the device's kernel table (one a plugin added through
    ``dsrt_register_kernels``) and dtype it claims; a device without such kernels gets one
    skip-marked param saying so.
"""

from __future__ import annotations

import importlib
from typing import Any

import pytest

#: Argument names of the three parametrizations above.
STANDARD_MATRIX = ("dsrt_device", "dsrt_kernel", "dsrt_dtype")
PLUGIN_MATRIX = ("dsrt_device", "dsrt_plugin_kernel", "dsrt_dtype")

_RUNTIME = pytest.StashKey[Any]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("dsrt", "dsrt conformance kit")
    group.addoption("--dsrt-backend", action="store", default="all",
                    help="backend to check (name, comma-separated names, or 'all')")
    group.addoption("--dsrt-device", action="store", default=None,
                    help="only this device id (e.g. opencl:0)")
    group.addoption("--dsrt-plugin", action="append", default=[], metavar="MODULE[:ATTR]",
                    help="also register this plugin object (a module, or ATTR of it) besides the installed"
                         " entry points; repeatable. For checking a backend that is not installed.")


def _load_plugin(ref: str) -> Any:
    """The plugin object named ``module[:attr]`` (a pytest usage error naming ``ref`` if it cannot load)."""
    module_name, _, attr = ref.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split(".") if attr else ():
            obj = getattr(obj, part)
    except Exception as exc:
        raise pytest.UsageError(f"--dsrt-plugin {ref}: cannot load it: {type(exc).__name__}: {exc}") from exc
    return obj


def kit_runtime(config: pytest.Config) -> Any:
    """The runtime the kit checks: the default runtime, or (with ``--dsrt-plugin``) a runtime with
    those plugins registered too, made the default so every test sees the same devices. Built once."""
    rt = config.stash.get(_RUNTIME, None)
    if rt is None:
        import dsrt

        refs = list(config.getoption("--dsrt-plugin") or ())
        if refs:
            rt = dsrt.Runtime(plugins=[_load_plugin(r) for r in refs])
            dsrt.set_default_runtime(rt)
        else:
            rt = dsrt.default_runtime()
        config.stash[_RUNTIME] = rt
    return rt



def _selected(config: pytest.Config) -> list[tuple[str, Any, str]]:
    """``(id, device or None, skip reason)`` for every selected device, absent and unavailable backends."""
    rt = kit_runtime(config)
    wanted = str(config.getoption("--dsrt-backend"))
    only_device = config.getoption("--dsrt-device")
    backends = rt.backends
    names = list(backends) if wanted == "all" else [n.strip() for n in wanted.split(",") if n.strip()]
    out: list[tuple[str, Any, str]] = []
    devices = rt.devices
    for name in names:
        status = backends.get(name)
        if status is None:
            known = ", ".join(sorted(backends))
            out.append((f"{name}-absent", None, f"backend '{name}' is not installed (known: {known})"))
            continue
        devs = [d for d in devices if d.info.backend == name and (only_device is None or d.id == only_device)]
        if not devs:
            out.append((f"{name}-unavailable", None, f"backend '{name}' {status.status}: {status.reason or 'no devices'}"))
            continue
        out += [(d.id, d, "") for d in devs]
    return out


def _skip(*values: Any, id: str, reason: str) -> Any:
    return pytest.param(*values, id=id, marks=pytest.mark.skip(reason=reason))


def _standard_params(selected: list[tuple[str, Any, str]]) -> list[Any]:
    from dsrt.kernels import KERNELS, STANDARD_KERNELS

    params: list[Any] = []
    for ident, dev, reason in selected:
        if dev is None:
            params.append(_skip(None, None, None, id=ident, reason=reason))
            continue
        info = dev.info
        for kernel in STANDARD_KERNELS:
            spec = KERNELS[kernel]
            claimed = set(info.kernels.get(kernel, ()))
            names = sorted((spec.dtypes & info.dtypes) | claimed)
            if not names:
                held = ", ".join(sorted(info.dtypes)) or "no arrays"
                params.append(_skip(dev, kernel, None, id=f"{ident}-{kernel}",
                                    reason=f"{dev.id} holds none of the dtypes {kernel} is defined for (it holds {held})"))
                continue
            for name in names:
                pid = f"{ident}-{kernel}-{name}"
                if name in claimed:
                    params.append(pytest.param(dev, kernel, name, id=pid))
                else:
                    params.append(_skip(dev, kernel, name, id=pid, reason=f"{dev.id} does not implement {kernel} for {name}"))
    return params


def _plugin_params(selected: list[tuple[str, Any, str]]) -> list[Any]:
    from dsrt.kernels import KERNELS, STANDARD_KERNELS

    params: list[Any] = []
    for ident, dev, reason in selected:
        if dev is None:
            params.append(_skip(None, None, None, id=ident, reason=reason))
            continue
        found = False
        for kernel, names in sorted(dev.info.kernels.items()):
            spec = KERNELS.get(kernel)
            if kernel in STANDARD_KERNELS or spec is None:
                continue
            found = True
            if spec.is_task:
                params.append(_skip(dev, kernel, None, id=f"{ident}-{kernel}",
                                    reason=f"{dev.id}: {kernel} is a task kernel (no array result to compare with a"
                                           " numpy reference)"))
                continue
            params += [pytest.param(dev, kernel, name, id=f"{ident}-{kernel}-{name}") for name in sorted(names)]
        if not found:
            params.append(_skip(dev, None, None, id=f"{ident}-none",
                                reason=f"{dev.id} has no kernels beyond the standard set"))
    return params


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    names = metafunc.fixturenames
    if "dsrt_device" not in names:
        return
    selected = _selected(metafunc.config)
    if "dsrt_kernel" in names:
        metafunc.parametrize(STANDARD_MATRIX, _standard_params(selected))
    elif "dsrt_plugin_kernel" in names:
        metafunc.parametrize(PLUGIN_MATRIX, _plugin_params(selected))
    else:
        params = [pytest.param(dev, id=ident) if dev is not None else _skip(None, id=ident, reason=reason)
                  for ident, dev, reason in selected]
        metafunc.parametrize("dsrt_device", params, scope="module")
