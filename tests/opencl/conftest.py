"""Fixtures for the OpenCL backend tests: ``ocl`` is ``opencl:0``, skipped with the probe's reason."""

from __future__ import annotations

import pytest

import dsrt


@pytest.fixture(scope="session")
def ocl(rt: dsrt.Runtime) -> dsrt.Device:
    status = rt.backends.get("opencl")
    if status is None or not status.devices:
        reason = status.reason if status is not None else "the opencl plugin is not installed"
        pytest.skip(f"no OpenCL device: {reason}")
    return status.devices[0]


@pytest.fixture(scope="session")
def ocl_fp16(ocl: dsrt.Device) -> dsrt.Device:
    """A second device object on the same OpenCL device that claims float16 through the core
    vload_half/vstore_half storage functions, so the float16 paths run even without cl_khr_fp16."""
    from dsrt_opencl.device import OpenCLDevice

    return OpenCLDevice(ocl.cl, ocl.context, ocl.cl_device, 99, fp16=True)
