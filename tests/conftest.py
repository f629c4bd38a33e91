"""Shared fixtures: a runtime per session, its ``cpu:0`` and ``opencl:0`` (skipped with the probe's
reason where absent), and a fresh DSRT_CACHE_DIR per test session."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pytest

import dsrt

# Keep test runs from writing to (or reading stale entries from) the user's cache.
os.environ.setdefault("DSRT_CACHE_DIR", tempfile.mkdtemp(prefix="dsrt-test-cache-"))


@pytest.fixture(scope="session")
def rt() -> Iterator[dsrt.Runtime]:
    runtime = dsrt.default_runtime()
    yield runtime


@pytest.fixture(scope="session")
def cpu(rt: dsrt.Runtime) -> dsrt.Device:
    return rt.device("cpu:0")


@pytest.fixture(scope="session")
def ocl(rt: dsrt.Runtime) -> dsrt.Device:
    status = rt.backends.get("opencl")
    if status is None or not status.devices:
        reason = status.reason if status is not None else "the opencl plugin is not installed"
        pytest.skip(f"no OpenCL device: {reason}")
    return status.devices[0]


@pytest.fixture(scope="session")
def ocl_fp16(ocl: dsrt.Device) -> dsrt.Device:
    """``ocl`` where it runs float16; else a second device object on the same OpenCL device that
    claims float16 through the core vload_half/vstore_half storage functions, so the float16 paths
    run even without cl_khr_fp16."""
    from dsrt_opencl.device import OpenCLDevice

    if "float16" in ocl.info.dtypes:
        return ocl
    return OpenCLDevice(ocl.cl, ocl.context, ocl.cl_device, 99, fp16=True)  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def gpu(rt: dsrt.Runtime) -> dsrt.Device:
    """``cuda:0``, skipped with the probe's reason where there is none."""
    status = rt.backends.get("cuda")
    if status is None or status.status != "available":
        pytest.skip(f"no CUDA device: {status.reason if status else 'cuda plugin not installed'}")
    return rt.device("cuda:0")
