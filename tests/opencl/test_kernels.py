"""Standard kernels on opencl:0 against the numpy reference at odd sizes, for every dtype claimed."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dsrt
from dsrt import dtypes as dt
from dsrt.kernels import reference

SIZES = (1, 7, 1023, 4097)
FLOATS = ("float32", "float64", "bfloat16", "float8_e4m3fn", "float8_e5m2")
INTS = ("int8", "int16", "int32", "int64", "uint8")
#: Relative tolerance: a few units in the last place of each format (fp32 math rounded once).
RTOL = {"float32": 2e-6, "float64": 1e-13, "float16": 2e-3, "bfloat16": 1.6e-2, "float8_e4m3fn": 0.13,
        "float8_e5m2": 0.26}


def _values(d: np.dtype, shape: tuple[int, ...], rng: np.random.Generator, lo: float = -2.0,
            hi: float = 2.0) -> np.ndarray:
    if d in dt.INTEGER_DTYPES:
        info = np.iinfo(d)
        return rng.integers(info.min, int(info.max) + 1, size=shape, dtype=d)
    return rng.uniform(lo, hi, size=shape).astype(d)


def _close(got: np.ndarray, want: np.ndarray, name: str, atol_scale: float = 1.0) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape
    if want.dtype in dt.INTEGER_DTYPES or want.dtype == dt.bool_:
        np.testing.assert_array_equal(got, want)
        return
    rtol = RTOL[name]
    g, w = got.astype(np.float64), want.astype(np.float64)
    np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol * atol_scale, equal_nan=True)


def _skip_unclaimed(dev: dsrt.Device, kernel: str, name: str) -> None:
    if not dev.supports(kernel, name):
        pytest.skip(f"{dev.id} does not claim {kernel} for {name}")


def _defined(kernels: list[str]) -> list[tuple[str, str]]:
    """(kernel, dtype) pairs the kernel set defines, among the dtypes tested here."""
    return [(k, n) for k in kernels for n in FLOATS + INTS if n in dsrt.kernels.KERNELS[k].dtypes]


@pytest.mark.parametrize(("kernel", "name"), _defined(["add", "sub", "mul", "div", "maximum", "minimum", "exp",
                                                       "relu", "scale", "axpy", "copy"]))
def test_elementwise(ocl: dsrt.Device, kernel: str, name: str) -> None:
    _skip_unclaimed(ocl, kernel, name)
    d = dt.as_dtype(name)
    rng = np.random.default_rng(len(kernel) * 31 + len(name))
    params: dict[str, Any] = {"alpha": -1.75} if kernel in ("scale", "axpy") else {}
    arity = dsrt.kernels.KERNELS[kernel].arity[0]
    for n in SIZES:
        hosts = [_values(d, (n,), rng) for _ in range(arity)]
        if kernel == "div":
            hosts[1] = np.where(np.abs(hosts[1].astype(np.float32)) < 0.25, 1, hosts[1]).astype(d)
        if kernel == "exp" and d == dt.float8_e4m3fn:
            hosts[0] = np.minimum(hosts[0], 1).astype(d)
        got = ocl.launch(kernel, *[ocl.asarray(h) for h in hosts], **params).numpy()
        _close(got, reference(kernel, *hosts, **params), name)


def test_nan_propagates_through_maximum_and_minimum(ocl: dsrt.Device) -> None:
    a = np.array([np.nan, 1.0, -2.0, np.nan], np.float32)
    b = np.array([0.0, np.nan, -3.0, np.nan], np.float32)
    for k in ("maximum", "minimum"):
        got = ocl.launch(k, ocl.asarray(a), ocl.asarray(b)).numpy()
        np.testing.assert_array_equal(got, reference(k, a, b))


@pytest.mark.parametrize(("kernel", "name"), _defined(["reduce_sum", "reduce_max", "dot"]))
def test_reductions(ocl: dsrt.Device, kernel: str, name: str) -> None:
    _skip_unclaimed(ocl, kernel, name)
    d = dt.as_dtype(name)
    rng = np.random.default_rng(7)
    cases: list[tuple[tuple[int, ...], Any]] = [((n,), None) for n in SIZES]
    if kernel != "dot":
        cases += [((3, 1023), -1), ((2, 4097), -1), ((5, 1), -1), ((64, 7), -1)]
    for shape, axis in cases:
        hosts = [_values(d, shape, rng, -1.0, 1.0) for _ in range(2 if kernel == "dot" else 1)]
        params = {} if kernel == "dot" else {"axis": axis}
        got = ocl.launch(kernel, *[ocl.asarray(h) for h in hosts], **params).numpy()
        n = shape[-1]
        # Summation order differs from numpy: allow the rounding of n terms, relative to the terms.
        _close(got, reference(kernel, *hosts, **params), name, atol_scale=np.sqrt(n) * 4)


def test_integer_sum_is_exact_in_int64(ocl: dsrt.Device) -> None:
    x = np.full(4097, 2**31 - 1, np.int32)
    got = ocl.launch("reduce_sum", ocl.asarray(x)).numpy()
    assert got.dtype == np.int64 and int(got) == 4097 * (2**31 - 1)


GEMM_SHAPES = [(1, 1, 1), (7, 5, 3), (33, 17, 29), (5, 64, 1), (64, 3, 100), (130, 257, 67)]


@pytest.mark.parametrize("name", FLOATS)
def test_gemm(ocl: dsrt.Device, name: str) -> None:
    _skip_unclaimed(ocl, "gemm", name)
    d = dt.as_dtype(name)
    rng = np.random.default_rng(3)
    for (m, k, n), ta, tb in [(s, False, False) for s in GEMM_SHAPES] + [
        ((33, 17, 29), True, False), ((33, 17, 29), False, True), ((7, 130, 9), True, True)
    ]:
        a = _values(d, (k, m) if ta else (m, k), rng, -1, 1)
        b = _values(d, (n, k) if tb else (k, n), rng, -1, 1)
        params = {"trans_a": ta, "trans_b": tb, "alpha": 0.5}
        got = ocl.launch("gemm", ocl.asarray(a), ocl.asarray(b), **params).numpy()
        _close(got, reference("gemm", a, b, **params), name, atol_scale=np.sqrt(k) * 4)
    a, b, c = (_values(d, s, rng, -1, 1) for s in ((9, 21), (21, 19), (9, 19)))
    params = {"alpha": -1.5, "beta": 0.25}
    got = ocl.launch("gemm", ocl.asarray(a), ocl.asarray(b), ocl.asarray(c), **params).numpy()
    _close(got, reference("gemm", a, b, c, **params), name, atol_scale=20)


def test_qgemm_int8_accumulates_exactly(ocl: dsrt.Device) -> None:
    rng = np.random.default_rng(5)
    for m, k, n in [(1, 1, 1), (7, 1023, 5), (33, 129, 67)]:
        a = rng.integers(-128, 128, (m, k), dtype=np.int8)
        b = rng.integers(-128, 128, (k, n), dtype=np.int8)
        got = ocl.launch("qgemm_int8", ocl.asarray(a), ocl.asarray(b)).numpy()
        np.testing.assert_array_equal(got, reference("qgemm_int8", a, b))


@pytest.mark.parametrize("name", FLOATS)
def test_softmax(ocl: dsrt.Device, name: str) -> None:
    _skip_unclaimed(ocl, "softmax", name)
    d = dt.as_dtype(name)
    rng = np.random.default_rng(11)
    for shape in [(1,), (7,), (3, 1023), (2, 4097)]:
        x = _values(d, shape, rng, -4, 4)
        got = ocl.launch("softmax", ocl.asarray(x)).numpy()
        _close(got, reference("softmax", x), name, atol_scale=0.01)


@pytest.mark.parametrize("name", FLOATS)
def test_quantize_dequantize(ocl: dsrt.Device, name: str) -> None:
    _skip_unclaimed(ocl, "quantize_int8", name)
    d = dt.as_dtype(name)
    rng = np.random.default_rng(13)
    x = _values(d, (7, 33), rng, -3, 3)
    cases = [(None, np.array([0.02], np.float32)), (0, rng.uniform(0.01, 0.05, 7).astype(np.float32)),
             (-1, rng.uniform(0.01, 0.05, 33).astype(np.float32))]
    for axis, scale in cases:
        q = ocl.launch("quantize_int8", ocl.asarray(x), ocl.asarray(scale), axis=axis)
        want_q = reference("quantize_int8", x, scale, axis=axis)
        np.testing.assert_array_equal(q.numpy(), want_q)
        back = ocl.launch("dequantize_int8", q, ocl.asarray(scale), axis=axis).numpy()
        np.testing.assert_allclose(back, reference("dequantize_int8", want_q, scale, axis=axis), rtol=1e-7)


def test_cast_every_pair(ocl: dsrt.Device) -> None:
    claimed = sorted(ocl.info.kernels["cast"])
    base = np.array([0, 1, 2, 3, 0.5, 2.5, 7, 12, 100, 0.25], np.float64)
    for src in claimed:
        s = dt.as_dtype(src)
        host = (base > 1).astype(s) if s == dt.bool_ else base.astype(s)
        x = ocl.asarray(host)
        for dst in claimed:
            got = ocl.launch("cast", x, dtype=dst).numpy()
            want = reference("cast", host, dtype=dst)
            np.testing.assert_array_equal(got.astype(np.float64), want.astype(np.float64), err_msg=f"{src}->{dst}")


@pytest.mark.parametrize("target", ["bfloat16", "float8_e4m3fn", "float8_e5m2"])
def test_storage_formats_round_to_nearest_even_like_ml_dtypes(ocl: dsrt.Device, target: str) -> None:
    rng = np.random.default_rng(17)
    x = np.concatenate([
        rng.standard_normal(4000).astype(np.float32) * 30,
        rng.standard_normal(97).astype(np.float32) * 1e-3,
        np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 448, 460, 464, 470, 57344, 61439, 61440, 1e9,
                  2.0 ** -9, 2.0 ** -10, 2.0 ** -17, 3e38], np.float32),
    ])
    got = ocl.launch("cast", ocl.asarray(x), dtype=target).numpy()
    want = x.astype(dt.as_dtype(target))
    np.testing.assert_array_equal(got.view(np.uint8 if want.itemsize == 1 else np.uint16)[~np.isnan(want)],
                                  want.view(got.view(np.uint8 if want.itemsize == 1 else np.uint16).dtype)
                                  [~np.isnan(want)])
    assert np.isnan(got.astype(np.float32)[np.isnan(want)]).all()
    back = ocl.launch("cast", ocl.asarray(want), dtype="float32").numpy()
    np.testing.assert_array_equal(back, want.astype(np.float32))


def test_fill(ocl: dsrt.Device) -> None:
    for name in sorted(ocl.info.kernels["fill"]):
        got = ocl.launch("fill", shape=(1023,), dtype=name, value=3).numpy()
        np.testing.assert_array_equal(got, np.full(1023, 3, dt.as_dtype(name)))


def test_float16_storage_path(ocl_fp16: dsrt.Device) -> None:
    dev = ocl_fp16
    rng = np.random.default_rng(19)
    x = rng.uniform(-2, 2, 1023).astype(np.float16)
    y = rng.uniform(-2, 2, 1023).astype(np.float16)
    for k in ("add", "mul", "exp", "maximum"):
        args = (x, y) if k in ("add", "mul", "maximum") else (x,)
        got = dev.launch(k, *[dev.asarray(a) for a in args]).numpy()
        _close(got, reference(k, *args), "float16")
    a, b = x[:63].reshape(7, 9), y[:36].reshape(9, 4)
    _close(dev.launch("gemm", dev.asarray(a), dev.asarray(b)).numpy(), reference("gemm", a, b), "float16", 10)
    _close(dev.launch("reduce_sum", dev.asarray(x)).numpy(), reference("reduce_sum", x), "float16", 100)
    np.testing.assert_array_equal(dev.launch("cast", dev.asarray(x), dtype="float32").numpy(), x.astype(np.float32))


def test_views_at_offsets_inside_a_buffer(ocl: dsrt.Device) -> None:
    # Several small arrays share one pooled segment: each kernel must honour its element offset.
    hosts = [np.arange(i, i + 13, dtype=np.float32) for i in range(6)]
    arrs = [ocl.asarray(h) for h in hosts]
    for h, a in zip(hosts[:-1], arrs[1:], strict=False):
        np.testing.assert_array_equal(ocl.launch("add", ocl.asarray(h), a).numpy(), h + (h + 1))
    m = ocl.asarray(np.arange(12, dtype=np.float32)).reshape(3, 4)
    np.testing.assert_array_equal(ocl.launch("reduce_sum", m, axis=-1).numpy(), np.arange(12).reshape(3, 4).sum(-1))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(width=32, allow_nan=False), min_size=1, max_size=64))
def test_bfloat16_and_fp8_encoding_matches_ml_dtypes(ocl: dsrt.Device, values: list[float]) -> None:
    dev = ocl
    x = np.array(values, np.float32)
    for target in ("bfloat16", "float8_e5m2", "float8_e4m3fn"):
        want = x.astype(dt.as_dtype(target))
        got = dev.launch("cast", dev.asarray(x), dtype=target).numpy()
        bits = np.uint16 if want.itemsize == 2 else np.uint8
        nan = np.isnan(want.astype(np.float32))
        np.testing.assert_array_equal(got.view(bits)[~nan], want.view(bits)[~nan], err_msg=target)
        assert np.isnan(got.astype(np.float32)[nan]).all()


def test_gemm_longer_than_one_local_memory_panel(ocl: dsrt.Device) -> None:
    # K beyond the staged panel (tuning.kc) takes the chunked path through local memory.
    k = ocl.tuning.kc + 3
    rng = np.random.default_rng(23)
    a = rng.uniform(-1, 1, (5, k)).astype(np.float32)
    b = rng.uniform(-1, 1, (k, 3)).astype(np.float32)
    got = ocl.launch("gemm", ocl.asarray(a), ocl.asarray(b)).numpy()
    np.testing.assert_allclose(got, reference("gemm", a, b), rtol=1e-4, atol=1e-3)


def test_empty_operands(ocl: dsrt.Device) -> None:
    a, b = np.zeros((4, 0), np.float32), np.zeros((0, 3), np.float32)
    c = np.ones((4, 3), np.float32)
    got = ocl.launch("gemm", ocl.asarray(a), ocl.asarray(b), ocl.asarray(c), beta=2.0).numpy()
    np.testing.assert_array_equal(got, np.full((4, 3), 2.0, np.float32))
    assert float(ocl.launch("reduce_sum", ocl.asarray(np.zeros(0, np.float32))).numpy()) == 0.0
    assert ocl.launch("add", ocl.asarray(np.zeros(0, np.int32)), ocl.asarray(np.zeros(0, np.int32))).numpy().size == 0
