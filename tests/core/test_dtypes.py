import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dsrt import dtypes as dt
from dsrt.errors import ConfigurationError

names = st.sampled_from(sorted(dt.STANDARD_DTYPES))


@given(names, names)
def test_promote_is_symmetric_and_holds_both(a, b):
    p = dt.promote(a, b)
    assert p == dt.promote(b, a)
    assert p in dt.STANDARD_DTYPES.values()
    if a == b:
        assert p == dt.as_dtype(a)


@given(names)
def test_names_round_trip(name):
    assert dt.dtype_name(dt.as_dtype(name)) == name
    assert dt.as_dtype(dt.as_dtype(name)) == dt.as_dtype(name)


def test_aliases_and_accumulation():
    assert dt.as_dtype("bf16") == dt.bfloat16
    assert dt.as_dtype("fp8") == dt.float8_e4m3fn
    assert dt.accumulation_dtype("float16") == dt.float32
    assert dt.accumulation_dtype("bfloat16") == dt.float32
    assert dt.accumulation_dtype("float8_e5m2") == dt.float32
    assert dt.accumulation_dtype("int8", product=True) == dt.int32
    assert dt.accumulation_dtype("int8") == dt.int64
    assert dt.accumulation_dtype("float64") == dt.float64
    assert dt.promote("bfloat16", "float16") == dt.float32
    assert dt.promote("int8", "uint8") == dt.int16


@pytest.mark.parametrize("bad", ["float128", "int4", object(), np.dtype("U3")])
def test_unknown_dtypes_are_refused_with_the_value(bad):
    with pytest.raises(ConfigurationError, match="dtype"):
        dt.as_dtype(bad)
