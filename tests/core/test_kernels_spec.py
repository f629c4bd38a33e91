import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dsrt.errors import ConfigurationError, ShapeError
from dsrt.kernels import KERNELS, get_kernel, reference

dims = st.integers(min_value=1, max_value=9)


@given(dims, dims, dims, dims)
def test_gemm_inference_accepts_matching_and_refuses_mismatched(m, k, k2, n):
    spec = KERNELS["gemm"]
    a = np.zeros((m, k), np.float32)
    b = np.zeros((k2, n), np.float32)
    params = spec.bind((a, b), {})
    if k == k2:
        assert spec.infer((a, b), params) == ((m, n), np.dtype(np.float32))
    else:
        with pytest.raises(ShapeError, match="inner dimensions"):
            spec.infer((a, b), params)


@given(st.lists(dims, min_size=1, max_size=3), st.lists(dims, min_size=1, max_size=3))
def test_elementwise_shapes_must_match(s1, s2):
    spec = KERNELS["add"]
    a, b = np.zeros(s1, np.float32), np.zeros(s2, np.float32)
    if s1 == s2:
        assert spec.infer((a, b), {})[0] == tuple(s1)
    else:
        with pytest.raises(ShapeError):
            spec.infer((a, b), {})


def test_bind_reports_unknown_and_missing_parameters():
    x = np.zeros(3, np.float32)
    with pytest.raises(ConfigurationError, match="no parameter 'beta'"):
        get_kernel("scale").bind((x,), {"alpha": 1, "beta": 2})
    with pytest.raises(ConfigurationError, match="needs parameter"):
        get_kernel("scale").bind((x,), {})
    with pytest.raises(ConfigurationError, match="unknown kernel 'nope'"):
        get_kernel("nope")


def test_low_precision_references_round_once_from_float32():
    import ml_dtypes

    a = np.array([1.0, 2.5, 3.3], ml_dtypes.bfloat16)
    out = reference("add", a, a)
    want = (a.astype(np.float32) + a.astype(np.float32)).astype(ml_dtypes.bfloat16)
    assert out.dtype == a.dtype and np.array_equal(out, want)
    q = reference("qgemm_int8", np.full((2, 300), 127, np.int8), np.full((300, 2), 127, np.int8))
    assert q.dtype == np.int32 and q[0, 0] == 127 * 127 * 300


def test_quantize_per_channel_reference():
    x = np.array([[0.5, -1.0], [2.0, 4.0]], np.float32)
    scale = np.array([0.5, 0.25], np.float32)
    q = reference("quantize_int8", x, scale, axis=1)
    assert q.tolist() == [[1, -4], [4, 16]]
    back = reference("dequantize_int8", q, scale, axis=1)
    np.testing.assert_allclose(back, x)
