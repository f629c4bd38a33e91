"""pytest plugin of the conformance kit: the ``--dsrt-backend`` option and the ``dsrt_device`` fixture.

Loaded through the ``pytest11`` entry point, so it is light: it only adds the option and parametrizes
tests that ask for ``dsrt_device``.
"""

from __future__ import annotations

from typing import Any

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("dsrt", "dsrt conformance kit")
    group.addoption("--dsrt-backend", action="store", default="all",
                    help="backend to check (name, comma-separated names, or 'all')")
    group.addoption("--dsrt-device", action="store", default=None,
                    help="only this device id (e.g. opencl:0)")


def _targets(config: pytest.Config) -> list[Any]:
    """One pytest param per selected device; a skip-marked param per absent backend."""
    import dsrt

    rt = dsrt.default_runtime()
    wanted = str(config.getoption("--dsrt-backend"))
    only_device = config.getoption("--dsrt-device")
    backends = rt.backends
    names = list(backends) if wanted == "all" else [n.strip() for n in wanted.split(",") if n.strip()]
    params: list[Any] = []
    devices = rt.devices
    for name in names:
        status = backends.get(name)
        if status is None:
            known = ", ".join(sorted(backends))
            params.append(pytest.param(None, id=f"{name}-absent",
                                       marks=pytest.mark.skip(reason=f"backend '{name}' is not installed (known: {known})")))
            continue
        devs = [d for d in devices if d.info.backend == name and (only_device is None or d.id == only_device)]
        if not devs:
            reason = status.reason or "no devices"
            params.append(pytest.param(None, id=f"{name}-unavailable",
                                       marks=pytest.mark.skip(reason=f"backend '{name}' {status.status}: {reason}")))
            continue
        params += [pytest.param(d, id=d.id) for d in devs]
    return params


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "dsrt_device" in metafunc.fixturenames:
        metafunc.parametrize("dsrt_device", _targets(metafunc.config), scope="module")
