import json
import os
import subprocess
import sys

import numpy as np
import pytest

import dsrt
import dsrt_cpu
import dsrt_npu
from dsrt.errors import DeviceLostError, DeviceUnavailableError, OutOfMemoryError
from dsrt_npu.acl_errors import AclError
from dsrt_npu.detect import find_device_nodes, find_install
from dsrt_npu.device import acl_allocation_size

from .conftest import EMULATED, make_cann


def npu_runtime():
    return dsrt.Runtime(autoload=False, plugins=[dsrt_cpu, dsrt_npu])


def test_this_machine_lists_npu_unavailable_with_the_missing_piece():
    res = subprocess.run([sys.executable, "-m", "dsrt", "devices", "--json"], capture_output=True, text=True,
                         timeout=120, env={k: v for k, v in os.environ.items() if not k.startswith("ASCEND")})
    npu = {b["name"]: b for b in json.loads(res.stdout)["backends"]}["npu"]
    assert npu["status"] == "unavailable"
    assert "CANN toolkit not found" in npu["reason"] and "ascend-toolkit" in npu["reason"]


def test_each_detection_step_names_what_is_missing(tmp_path, monkeypatch):
    with pytest.raises(DeviceUnavailableError, match=r"ASCEND_HOME_PATH=/nowhere \(no such directory\)"):
        find_install({"ASCEND_HOME_PATH": "/nowhere"}, info_file=tmp_path / "none.info")
    info = tmp_path / "ascend_cann_install.info"
    (tmp_path / "cann").mkdir()
    info.write_text(f"Install_Path={tmp_path / 'cann'}\n")
    assert find_install({}, info_file=info) == tmp_path / "cann"
    env = make_cann(tmp_path / "a", library=False)
    monkeypatch.setenv("ASCEND_HOME_PATH", env["ASCEND_HOME_PATH"])
    monkeypatch.setenv("DSRT_NPU_DEV_DIR", env["DSRT_NPU_DEV_DIR"])
    status = npu_runtime().backends["npu"]
    assert "runtime library missing" in status.reason and "libascendcl.so" in status.reason
    empty = tmp_path / "emptydev"
    empty.mkdir()
    with pytest.raises(DeviceUnavailableError, match="no Ascend device nodes"):
        find_device_nodes(empty, None)
    nodes = make_cann(tmp_path / "b", devices=4)["DSRT_NPU_DEV_DIR"]
    from pathlib import Path

    assert find_device_nodes(Path(nodes), "3,1") == (3, 1)
    with pytest.raises(DeviceUnavailableError, match="selects none"):
        find_device_nodes(Path(nodes), "7")


def test_missing_acl_module_is_explained(tmp_path, monkeypatch):
    for key, value in make_cann(tmp_path).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setitem(sys.modules, "acl", None)  # import acl -> ImportError
    status = npu_runtime().backends["npu"]
    assert status.status == "unavailable" and "acl module that ships with CANN" in status.reason
    assert "pyacl" in status.reason


def test_acl_init_failure_carries_code_and_meaning(acl):
    acl._inject("init", 500004)
    status = npu_runtime().backends["npu"]
    assert "acl.init returned 500004" in status.reason and "driver failure" in status.reason


def test_kernels_run_in_stream_order_and_match_numpy(acl):
    rt = npu_runtime()
    npu = rt.device("npu:0")
    rng = np.random.default_rng(1)
    a = rng.standard_normal((33, 17)).astype(np.float16)
    b = rng.standard_normal((17, 9)).astype(np.float16)
    c = rng.standard_normal((33, 9)).astype(np.float16)
    out = npu.launch("gemm", npu.asarray(a), npu.asarray(b), npu.asarray(c), alpha=0.5, beta=2.0)
    want = dsrt.kernels.reference("gemm", a, b, c, alpha=0.5, beta=2.0)
    np.testing.assert_allclose(out.numpy().astype(np.float32), want.astype(np.float32), rtol=2e-2, atol=2e-2)
    qa = rng.integers(-127, 128, (7, 33)).astype(np.int8)
    qb = rng.integers(-127, 128, (33, 5)).astype(np.int8)
    q = npu.launch("qgemm_int8", npu.asarray(qa), npu.asarray(qb)).numpy()
    np.testing.assert_array_equal(q, qa.astype(np.int32) @ qb.astype(np.int32))
    assert "op.MatMul" in acl.state.calls


def test_unsupported_pairs_are_declared_not_faked(acl):
    npu = npu_runtime().device("npu:0")
    assert npu.supports("gemm", "float16") and not npu.supports("gemm", "float32")
    with pytest.raises(dsrt.UnsupportedKernelError, match="npu:0: kernel 'add' is not implemented"):
        npu.launch("add", npu.asarray(np.ones(3, np.float16)), npu.asarray(np.ones(3, np.float16)))


def test_acl_error_codes_surface_as_dsrt_errors_with_code_and_meaning(acl):
    npu = npu_runtime().device("npu:0")
    npu.pool.empty_cache()
    acl._inject("rt.malloc", 207001)
    with pytest.raises(OutOfMemoryError) as info:
        npu._allocate(4096)
    assert isinstance(info.value, AclError) and info.value.code == 207001
    assert "207001" in str(info.value) and "device memory allocation failed" in str(info.value)
    x = npu.asarray(np.ones(4, np.int8))
    acl._inject("rt.synchronize_stream", 507010)
    with pytest.raises(DeviceLostError, match=r"507010.*heartbeat lost"):
        x.numpy()


def test_memory_accounts_for_acl_rounding(acl):
    assert acl_allocation_size(1) == 64 and acl_allocation_size(32) == 64 and acl_allocation_size(33) == 96
    npu = npu_runtime().device("npu:0")
    before = acl.state.reserved
    npu._allocate(100)
    assert acl.state.reserved - before == acl_allocation_size(100) == 160


def test_conformance_kit_passes_on_the_emulated_acl(tmp_path):
    env = {**os.environ, **make_cann(tmp_path), "PYTHONPATH": str(EMULATED),
           "DSRT_PLUGINS": "cpu,npu"}
    env.pop("ASCEND_RT_VISIBLE_DEVICES", None)
    res = subprocess.run([sys.executable, "-m", "pytest", "--pyargs", "dsrt.testing", "--dsrt-backend", "npu",
                          "-p", "no:cacheprovider", "-q"], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert " passed" in res.stdout and "failed" not in res.stdout
