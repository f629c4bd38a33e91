import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import dsrt
from dsrt.errors import KernelCompileError, ShapeError, UnsupportedKernelError


def test_launch_places_on_the_inputs_device_and_checks_out(rt, cpu):
    a = cpu.asarray(np.arange(6, dtype=np.float32).reshape(2, 3))
    out = rt.launch("gemm", a, a, trans_b=True, alpha=2.0)
    assert out.device is cpu and out.shape == (2, 2)
    np.testing.assert_allclose(out.numpy(), 2 * (a.numpy() @ a.numpy().T), rtol=1e-6)
    wrong = cpu.empty((3, 3), "float32")
    with pytest.raises(ShapeError, match=r"out must be float32\(2, 2\)"):
        rt.launch("gemm", a, a, trans_b=True, out=wrong)


def test_fast_path_still_validates_every_launch(rt, cpu):
    a, b = cpu.asarray(np.ones(4, np.float32)), cpu.asarray(np.ones(4, np.float32))
    c = rt.launch("add", a, b)
    rt.launch("add", a, b, out=c)  # signature now cached
    with pytest.raises(ShapeError):
        rt.launch("add", a, b, out=cpu.empty((5,), "float32"))
    with pytest.raises(ShapeError):
        rt.launch("add", a, cpu.asarray(np.ones(5, np.float32)))
    with pytest.raises(ShapeError, match="dtypes"):
        rt.launch("add", a, cpu.asarray(np.ones(4, np.float64)))
    np.testing.assert_array_equal(c.numpy(), [2, 2, 2, 2])


def test_unsupported_pair_names_device_kernel_and_dtype(rt, cpu):
    x = cpu.asarray(np.ones(3, np.int32))
    with pytest.raises(ShapeError, match="does not accept input dtype int32"):
        rt.launch("exp", x)
    dev = rt.device("cpu:0")
    saved = dev._supported["exp"]
    try:
        dev._supported["exp"] = frozenset({np.dtype(np.float64)})
        dev._signatures.clear()
        with pytest.raises(UnsupportedKernelError, match=r"cpu:0: kernel 'exp' is not implemented for dtype float32"):
            rt.launch("exp", cpu.asarray(np.ones(3, np.float32)))
    finally:
        dev._supported["exp"] = saved
        dev._signatures.clear()


def test_reshape_views_share_memory_and_to_copies(rt, cpu):
    a = cpu.asarray(np.arange(12, dtype=np.float64))
    m = a.reshape(3, -1)
    assert m.shape == (3, 4) and m.allocation is a.allocation
    with pytest.raises(ShapeError):
        a.reshape(5, 5)
    assert a.to(cpu) is a
    np.testing.assert_array_equal(m.copy().numpy(), np.arange(12).reshape(3, 4))


def test_dlpack_is_zero_copy_both_ways_and_keeps_memory_alive(rt, cpu):
    a = cpu.asarray(np.arange(5, dtype=np.float32))
    view = np.from_dlpack(a)
    view[0] = 42.0
    assert a.numpy()[0] == 42.0
    del a  # the numpy view keeps the allocation alive: its data stays intact
    assert view.tolist() == [42.0, 1, 2, 3, 4]
    host = np.arange(4, dtype=np.int64)
    imported = dsrt.from_dlpack(host, device=cpu)
    out = rt.launch("add", imported, imported)
    host[1] = 100  # shared memory: the import sees the change
    assert imported.numpy()[1] == 100 and out.numpy().tolist() == [0, 2, 4, 6]


def test_bf16_cannot_cross_numpy_dlpack_with_a_clear_error(rt, cpu):
    b = cpu.asarray(np.ones(3, np.float32)).astype("bfloat16")
    with pytest.raises(dsrt.ConfigurationError, match="bfloat16"):
        np.from_dlpack(b)


SAXPY = "void saxpy(const float *x, float *y, float a, long n) { for (long i = 0; i < n; i++) y[i] += a * x[i]; }"


def test_c_kernel_compiles_runs_and_reports_errors(rt, cpu):
    k = rt.compile(SAXPY, lang="c", name="saxpy")
    x = cpu.asarray(np.arange(5, dtype=np.float32))
    y = cpu.asarray(np.ones(5, np.float32))
    k.launch(x, y, 2.0, 5)
    np.testing.assert_array_equal(y.numpy(), 1 + 2 * np.arange(5))
    with pytest.raises(KernelCompileError) as info:
        rt.compile("void broken(int *x) { x[0] = ; }", lang="c", name="broken")
    assert "error" in info.value.log and "broken" in str(info.value)
    with pytest.raises(KernelCompileError, match="no function 'missing'"):
        rt.compile(SAXPY, lang="c", name="missing")


def test_c_kernel_cache_is_shared_with_a_second_process(tmp_path):
    env = {**os.environ, "DSRT_CACHE_DIR": str(tmp_path)}
    script = textwrap.dedent(f"""
        import json, numpy as np, dsrt
        rt = dsrt.Runtime()
        k = rt.compile({SAXPY!r}, lang="c", name="saxpy")
        y = rt.asarray(np.zeros(3, np.float32), device="cpu:0")
        k.launch(rt.asarray(np.ones(3, np.float32), device="cpu:0"), y, 3.0, 3)
        print(json.dumps({{"hit": k.cache_hit, "y": y.numpy().tolist()}}))
    """)
    runs = [json.loads(subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                                      check=True, timeout=120).stdout) for _ in range(2)]
    assert runs[0] == {"hit": False, "y": [3.0, 3.0, 3.0]}
    assert runs[1] == {"hit": True, "y": [3.0, 3.0, 3.0]}
    assert len(list((tmp_path / "c").glob("*.so"))) == 1
    assert not list((tmp_path / "c").glob(".*tmp"))


def test_trace_has_a_track_per_device(rt, cpu, tmp_path):
    path = tmp_path / "run.json"
    a = cpu.asarray(np.ones(16, np.float32))
    with rt.trace(str(path)):
        rt.launch("add", a, a)
        rt.launch("exp", a)
    data = json.loads(path.read_text())
    names = [e["name"] for e in data["traceEvents"] if e.get("ph") == "X"]
    assert names.count("add") == 1 and names.count("exp") == 1
    tracks = [e["args"]["name"] for e in data["traceEvents"] if e.get("name") == "thread_name"]
    assert "cpu:0" in tracks


def test_current_device_context(rt, cpu):
    assert dsrt.current_device() is None
    with cpu:
        assert dsrt.current_device() is cpu
        assert rt.asarray([1.0]).device is cpu
    assert dsrt.current_device() is None


def test_arrays_of_another_runtime_are_refused_with_a_clear_error(cpu):
    other = dsrt.Runtime()
    mine = other.from_dlpack(np.ones(4, np.float32), device="cpu:0")
    assert mine.device is other.device("cpu:0") and mine.device is not cpu
    with pytest.raises(ShapeError, match="another Runtime's cpu:0"):
        cpu.launch("add", mine, mine)


def test_to_by_id_resolves_in_the_arrays_own_runtime(cpu):
    other = dsrt.Runtime(backends=["cpu"])
    a = other.asarray(np.arange(3, dtype=np.float32), device="cpu:0")
    assert a.to("cpu:0") is a  # its own runtime's cpu:0, not the default runtime's
    assert a.device is not cpu


@pytest.mark.parametrize("dtype", ["float32", "float64", "complex64", "complex128"])
@pytest.mark.parametrize("alpha", [1, 2.0, 0.3, np.float64(0.1)])
def test_cpu_gemm_scales_exactly_as_numpy_does(cpu, dtype, alpha):
    """The CPU gemm's np.dot path and its cached alpha give numpy's own matmul-then-scale bits,
    transposes included (a numpy float64 alpha keeps its precision: no cached cast)."""
    rng = np.random.default_rng(7)
    for m, k, n, trans_b in ((16, 16, 16, False), (3, 5, 7, True), (33, 9, 1, False)):
        ha = (rng.standard_normal((m, k)) + 0.5).astype(dtype)
        hb = (rng.standard_normal((n, k) if trans_b else (k, n)) - 0.25).astype(dtype)
        got = cpu.launch("gemm", cpu.asarray(ha), cpu.asarray(hb), alpha=alpha, trans_b=trans_b).numpy()
        want = np.matmul(ha, hb.T if trans_b else hb)
        if alpha != 1:
            np.multiply(want, alpha, out=want, casting="unsafe")
        np.testing.assert_array_equal(got, want)


def test_cpu_matmul_into_falls_back_where_dot_refuses_the_output():
    from dsrt_cpu.kernels import _matmul_into

    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    b = np.arange(8, dtype=np.float32).reshape(4, 2)
    strided = np.zeros((2, 3), np.float32).T  # not C-contiguous: np.dot refuses it
    _matmul_into(a, b, strided)
    np.testing.assert_array_equal(strided, a @ b)


def test_cpu_ufunc_kernels_raise_no_deprecation_warning(cpu):
    """numpy deprecates call forms (a third positional argument to np.maximum...): the CPU kernels use none."""
    import warnings

    x = cpu.asarray(np.linspace(0.1, 2.0, 16, dtype=np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        for kernel in ("add", "sub", "mul", "div", "maximum", "minimum"):
            cpu.launch(kernel, x, x)
            cpu.launch(kernel, x, x, out=cpu.empty((16,), "float32"))
        cpu.launch("exp", x, out=cpu.empty((16,), "float32"))
