"""CUDA backend tests. Without CuPy or a GPU every GPU test skips with the probe's reason."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import dsrt
from dsrt.accuracy import relative_error, tolerance


def test_without_a_gpu_the_listing_says_exactly_what_is_missing(rt):
    """CuPy is installed (a CI dependency); without a GPU the backend is unavailable, never failed, and
    says there is no GPU or gives the CUDA runtime's own error."""
    pytest.importorskip("cupy", reason="CI installs cupy-cuda12x ([cuda12]); this check needs it")
    status = rt.backends["cuda"]
    if status.status == "available":
        pytest.skip("a GPU is present; the absent-GPU message is not observable here")
    assert status.status == "unavailable", status
    assert "no CUDA GPU visible" in status.reason or (
        status.reason.startswith("CUDA runtime unusable: CUDARuntimeError: cudaError")), status.reason


class _FakeRuntimeError(Exception):
    pass


def _fake_cupy(count=None, error=None):
    import types

    def get_device_count():
        if error is not None:
            raise error
        return count

    runtime = types.SimpleNamespace(getDeviceCount=get_device_count)
    return types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=runtime))


@pytest.mark.parametrize("fake, expected", [
    (_fake_cupy(count=0), "no CUDA GPU visible"),
    (_fake_cupy(error=_FakeRuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")),
     "no CUDA GPU visible (cudaErrorNoDevice: no CUDA-capable device is detected)"),
    (_fake_cupy(error=_FakeRuntimeError("cudaErrorInsufficientDriver: CUDA driver version is insufficient")),
     "CUDA runtime unusable: _FakeRuntimeError: cudaErrorInsufficientDriver: CUDA driver version is insufficient"),
    (None, "cupy not installed: pip install dsrt[cuda12]"),
])
def test_the_probe_reports_unavailable_with_the_reason(monkeypatch, fake, expected):
    from dsrt.errors import DeviceUnavailableError
    from dsrt_cuda import probe

    monkeypatch.setitem(sys.modules, "cupy", fake)  # None: "import cupy" raises ImportError
    with pytest.raises(DeviceUnavailableError) as info:
        probe(None)
    assert expected in str(info.value)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_gemm_matches_numpy(gpu, dtype):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((257, 129)).astype(np.float32).astype(dsrt.as_dtype(dtype))
    b = rng.standard_normal((129, 65)).astype(np.float32).astype(dsrt.as_dtype(dtype))
    got = gpu.launch("gemm", gpu.asarray(a), gpu.asarray(b), alpha=0.5).numpy()
    want = dsrt.kernels.reference("gemm", a, b, alpha=0.5)
    assert relative_error(got, want) <= tolerance(dtype, accumulate=129)


def test_dlpack_and_cuda_array_interface_are_zero_copy(gpu):
    import cupy as cp

    arr = gpu.asarray(np.arange(8, dtype=np.float32))
    view = cp.from_dlpack(arr)
    view[0] = 42
    assert arr.numpy()[0] == 42
    cai = arr.__cuda_array_interface__
    assert cai["data"][0] == view.data.ptr
    source = cp.arange(5, dtype=cp.float64)
    imported = dsrt.from_dlpack(source)
    assert imported.device is gpu and imported.handle == source.data.ptr
    np.testing.assert_array_equal(imported.numpy(), np.arange(5))


def test_nvrtc_kernel_is_cached_for_a_second_process(gpu, tmp_path):
    script = textwrap.dedent('''
        import json, numpy as np, dsrt
        rt = dsrt.Runtime()
        src = ('extern "C" __global__ void twice(float *x, int n) {'
               ' int i = blockIdx.x * blockDim.x + threadIdx.x; if (i < n) x[i] *= 2; }')
        k = rt.compile(src, lang="cuda", name="twice", device="cuda:0")
        x = rt.asarray(np.arange(4, dtype=np.float32), device="cuda:0")
        k.launch(x, np.int32(4), grid=(1,), block=(32,))
        print(json.dumps({"hit": k.cache_hit, "x": x.numpy().tolist()}))
    ''')
    env = {**os.environ, "DSRT_CACHE_DIR": str(tmp_path)}
    runs = [json.loads(subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                                      check=True, timeout=300).stdout) for _ in range(2)]
    assert [r["hit"] for r in runs] == [False, True]
    assert runs[1]["x"] == [0.0, 2.0, 4.0, 6.0]


def test_nccl_transport_is_registered_and_only_claims_cuda_groups(rt, cpu):
    from dsrt.collective.transport import select_transport, transports

    nccl = [t for t in transports(rt) if t.name == "nccl"]
    assert len(nccl) == 1 and nccl[0].kind == "intra" and nccl[0].priority > 0
    assert not nccl[0].applies([cpu, cpu])
    assert select_transport("intra", [cpu], rt).name == "inprocess"


def test_nccl_all_reduce_across_gpus(rt):
    gpus = [d for d in rt.devices if d.info.backend == "cuda"]
    if len(gpus) < 2:
        pytest.skip(f"NCCL needs two GPUs; this machine has {len(gpus)}")
    from dsrt_cuda.nccl import NcclTransport

    bufs = [g.asarray(np.full(1000, i + 1, np.float32)) for i, g in enumerate(gpus)]
    NcclTransport(gpus).all_reduce(bufs, "add")
    total = sum(range(1, len(gpus) + 1))
    for b in bufs:
        np.testing.assert_array_equal(b.numpy(), np.full(1000, total, np.float32))
