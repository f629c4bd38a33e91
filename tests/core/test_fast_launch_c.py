"""The C hit path of Device.launch (dsrt/_fastlaunch.c) against the Python launch it stands in for:
same results, same errors, nothing leaked, nothing left listed in IN_USE, and DSRT_FASTPATH=off."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import dsrt
import dsrt.device as device_module
from dsrt.errors import DeviceError, DsrtError, KernelLaunchError
from dsrt.memory import IN_USE

python_launch = device_module.python_launch


def test_the_extension_is_built_and_installed() -> None:
    if os.environ.get("DSRT_FASTPATH", "").lower() in ("off", "0", "false", "no"):
        pytest.skip("DSRT_FASTPATH=off")
    assert device_module.FAST_LAUNCH, "dsrt._fastlaunch was not built (pip install -e . builds it; needs a C compiler)"
    assert dsrt.Device.launch is not python_launch


def _cases(cpu):
    rng = np.random.default_rng(5)
    h = {k: rng.standard_normal(s).astype(np.float32) for k, s in {"a": (4, 3), "b": (3, 5), "v": (12,), "w": (12,)}.items()}
    d = {k: cpu.asarray(v) for k, v in h.items()}
    out12 = cpu.empty(12, "float32")
    return h, d, [
        ("add alloc", ("add", d["v"], d["w"]), {}),
        ("add out", ("add", d["v"], d["w"]), {"out": out12}),
        ("gemm alpha", ("gemm", d["a"], d["b"]), {"alpha": 0.5}),
        ("gemm numpy scalar", ("gemm", d["a"], d["b"]), {"alpha": np.float32(2.0)}),  # keyed by Python only
        ("scale", ("scale", d["v"]), {"alpha": -3}),
        ("axpy 2 inputs + param", ("axpy", d["v"], d["w"]), {"alpha": 2.0}),
        ("relu", ("relu", d["v"]), {}),
        ("explicit stream", ("add", d["v"], d["w"]), {"stream": cpu.default_stream}),
        ("wrong out shape", ("add", d["v"], d["w"]), {"out": cpu.empty(11, "float32")}),
        ("wrong out dtype", ("add", d["v"], d["w"]), {"out": cpu.empty(12, "float64")}),
        ("shape mismatch", ("add", d["v"], d["a"]), {}),
        ("not an array", ("add", d["v"], h["w"]), {}),
        ("unknown parameter", ("gemm", d["a"], d["b"]), {"alhpa": 1.0}),
        ("unhashable parameter", ("gemm", d["a"], d["b"]), {"alpha": [1.0]}),
    ]


def _outcome(fn, dev, args, kwargs):
    try:
        r = fn(dev, *args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - the outcome compared is the error
        return ("raised", type(exc).__name__, str(exc))
    return ("returned", r.shape, str(r.dtype), r.numpy().tobytes())


def test_every_case_ends_as_the_python_launch_ends(cpu) -> None:
    _, _, cases = _cases(cpu)
    for name, args, kwargs in cases:
        for _ in range(2):  # the second call of a signature takes the cached (C) path
            fast = _outcome(type(cpu).launch, cpu, args, kwargs)
            slow = _outcome(python_launch, cpu, args, kwargs)
            assert fast == slow, name
        assert not IN_USE, name


def test_out_is_returned_and_written(cpu) -> None:
    h, d, _ = _cases(cpu)
    out = cpu.empty(12, "float32")
    for _ in range(3):
        assert cpu.launch("add", d["v"], d["w"], out=out) is out
    np.testing.assert_array_equal(out.numpy(), h["v"] + h["w"])


def test_no_reference_is_leaked(cpu) -> None:
    _h, d, _c = _cases(cpu)
    out = cpu.empty(12, "float32")
    alpha = 0.75
    kernel = "axpy"
    cpu.launch(kernel, d["v"], d["w"], alpha=alpha)
    watched = [d["v"], d["w"], out, alpha, kernel, cpu.default_stream, cpu.pool, cpu, d["v"].allocation]
    before = [sys.getrefcount(x) for x in watched]
    for _i in range(2000):
        cpu.launch(kernel, d["v"], d["w"], alpha=alpha)
        cpu.launch(kernel, d["v"], d["w"], out=out, alpha=alpha)
        cpu.launch("add", d["v"], d["w"])
    assert [sys.getrefcount(x) for x in watched] == before
    r = cpu.launch("add", d["v"], d["w"])
    assert sys.getrefcount(r) == 2  # the name and getrefcount's argument: nothing else holds it


def test_a_failing_kernel_raises_the_translated_error_and_unlists_its_operands() -> None:
    rt = dsrt.Runtime(plugins=["cpu"])
    dev = rt.device("cpu:0")

    def broken(inputs, out, params, stream):
        raise ValueError("the vendor library refused")

    dev.add_kernel("relu", ["float32"], broken)
    x = dev.asarray(np.ones(5, np.float32))
    seen = []
    for _ in range(3):  # first launch: Python (validation); then the cached C path
        with pytest.raises((KernelLaunchError, DeviceError)) as info:
            dev.launch("relu", x)
        assert isinstance(info.value.__cause__, ValueError)
        seen.append((type(info.value), str(info.value)))
        assert not IN_USE
    with pytest.raises(DsrtError) as info:
        python_launch(dev, "relu", x)
    assert set(seen) == {(type(info.value), str(info.value))}
    assert "relu" in seen[0][1] and "cpu:0" in seen[0][1] and "refused" in seen[0][1]

    def interrupting(inputs, out, params, stream):
        raise KeyboardInterrupt

    dev.add_kernel("relu", ["float32"], interrupting)  # not an Exception: passes through untranslated
    for _ in range(2):
        with pytest.raises(KeyboardInterrupt):
            dev.launch("relu", x)
    assert not IN_USE

    def dsrt_error(inputs, out, params, stream):
        raise DsrtError("already a dsrt error")

    dev.add_kernel("relu", ["float32"], dsrt_error)
    for _ in range(2):
        with pytest.raises(DsrtError, match="already a dsrt error"):
            dev.launch("relu", x)


def test_tracing_and_observers_take_the_python_path(cpu) -> None:
    _h, d, _c = _cases(cpu)
    seen = []
    device_module.launch_observer = lambda *a: seen.append(a[1])
    try:
        cpu.launch("add", d["v"], d["w"])
        cpu.launch("add", d["v"], d["w"])
    finally:
        device_module.launch_observer = None
    assert seen == ["add", "add"]


def test_threads_launch_concurrently(cpu) -> None:
    h, d, _ = _cases(cpu)
    want = h["v"] + h["w"]
    bad: list[str] = []

    def work() -> None:
        for _ in range(300):
            r = cpu.launch("add", d["v"], d["w"]).numpy()
            if not np.array_equal(r, want):
                bad.append("wrong result")

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not bad and not IN_USE


def test_off_keeps_the_python_launch() -> None:
    code = ("import numpy as np, dsrt, dsrt.device as m; d = dsrt.Runtime(plugins=['cpu']).device('cpu:0');"
            "x = d.asarray(np.arange(3.0)); assert d.launch('add', x, x).numpy().tolist() == [0.0, 2.0, 4.0];"
            "print(m.FAST_LAUNCH, dsrt.Device.launch is m.python_launch)")
    env = {**os.environ, "DSRT_FASTPATH": "off"}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "True"]


def test_cpu_ufunc_kernels_in_c_read_current_views_and_low_precision_by_reference(cpu) -> None:
    from dsrt_cpu import kernels as cpu_kernels

    if cpu_kernels._C_UFUNCS is None:
        pytest.skip("dsrt_cpu._ufunc not built or DSRT_FASTPATH=off")
    assert type(cpu._impls["add"]).__name__ == "UfuncKernel"
    h = np.linspace(-2, 2, 10)
    for dtype in ("float64", "float32", "float16", "bfloat16"):
        x = cpu.asarray(h.astype(dt_of(dtype)))
        got = cpu.launch("add", x, x).numpy().astype(np.float64)
        np.testing.assert_allclose(got, 2 * h.astype(dt_of(dtype)).astype(np.float64), rtol=1e-2)
        np.testing.assert_allclose(cpu.launch("exp", x).numpy().astype(np.float64),
                                   np.exp(h.astype(dt_of(dtype)).astype(np.float64)), rtol=2e-2)
    x = cpu.asarray(h)
    cpu.launch("add", x, x)  # caches x's native view
    stale = x.native
    place = (id(x.allocation.handle), x.allocation.offset)
    assert cpu.pool.spill(x.allocation) > 0  # the bytes leave: the cached view is stale
    blocker = cpu.empty(h.shape, h.dtype)  # takes the place they left
    stale[...] = 99.0  # what a kernel reading the stale view would see
    np.testing.assert_array_equal(cpu.launch("add", x, x).numpy(), 2 * h)  # fetched elsewhere
    assert (id(x.allocation.handle), x.allocation.offset) != place and blocker.allocation.pool is cpu.pool


def dt_of(name: str):
    from dsrt import dtypes as dt

    return dt.as_dtype(name)
