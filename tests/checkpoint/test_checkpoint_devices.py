"""Restore onto other devices (PoCL OpenCL here); device ids resolve through the caller's runtime."""

from __future__ import annotations

import numpy as np
import pytest

import dsrt
from dsrt import dtypes as dt
from dsrt.checkpoint import Checkpointer, default_rank, restore


def _opencl(rt: dsrt.Runtime) -> dsrt.Device:
    try:
        return rt.device("opencl:0")
    except dsrt.DsrtError as exc:
        pytest.skip(f"no opencl:0 here: {exc}")


def test_saved_on_cpu_restored_on_opencl_and_back(tmp_path, rt: dsrt.Runtime, cpu: dsrt.Device) -> None:
    ocl = _opencl(rt)
    rng = np.random.default_rng(3)
    w = rng.standard_normal((257, 129)).astype(np.float32)
    h = rng.standard_normal(5000).astype(dt.bfloat16)
    tree = {"w": cpu.asarray(w), "h": [cpu.asarray(h)], "n": np.arange(4)}
    with Checkpointer(tmp_path, chunk_bytes=8192, resolve=rt.device) as ck:
        ck.save(0, tree).result()
        on_ocl = ck.restore(device="opencl:0")
        assert on_ocl["w"].device is ocl and on_ocl["h"][0].device is ocl
        assert isinstance(on_ocl["n"], np.ndarray)  # numpy leaves stay numpy
        assert on_ocl["w"].numpy().tobytes() == w.tobytes()
        assert on_ocl["h"][0].dtype == dt.bfloat16 and on_ocl["h"][0].numpy().tobytes() == h.tobytes()
        # an OpenCL array saved through its device's copy-out, restored on the CPU device object
        w2 = on_ocl["w"]
        ck.save(1, {"w": w2}).result()
        back = ck.restore(device=cpu)
        assert back["w"].device is cpu and back["w"].numpy().tobytes() == w.tobytes()
        # a blocking save streams the OpenCL array chunk by chunk
        ck.save(2, {"w": w2}, blocking=True)
        assert ck.restore(2)["w"].tobytes() == w.tobytes()


def test_device_id_needs_a_resolver(tmp_path, cpu: dsrt.Device) -> None:
    with Checkpointer(tmp_path) as ck:
        ck.save(0, {"x": cpu.asarray(np.ones(3))}, blocking=True)
        with pytest.raises(dsrt.ConfigurationError, match="a device id needs a resolver"):
            ck.restore(device="cpu:0")
    assert restore(tmp_path, device=cpu)["x"].device is cpu


def test_default_rank_reads_mpiexec_environment_without_mpi4py(monkeypatch) -> None:
    import sys

    monkeypatch.delitem(sys.modules, "mpi4py.MPI", raising=False)
    for var in ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert default_rank() == 0
    monkeypatch.setenv("PMI_RANK", "3")
    assert default_rank() == 3
    assert "mpi4py.MPI" not in sys.modules
