"""The eager launch fast path: the signature cache (parameters included) skips validation, never a
check that depends on the call, and every launch keeps its operands listed in IN_USE."""

from __future__ import annotations

import numpy as np
import pytest

from dsrt.errors import ConfigurationError, ShapeError
from dsrt.memory import busy_ids
from dsrt.memory.hostmem import host_view


def _sig_count(dev) -> int:
    return len(dev._signatures)


def test_parameters_are_part_of_the_cached_signature(rt, cpu):
    rng = np.random.default_rng(0)
    ha, hb = rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal((3, 5)).astype(np.float32)
    a, b = cpu.asarray(ha), cpu.asarray(hb)
    cpu._signatures.clear()
    for alpha in (2.0, 2.0, -0.5, 2.0):
        got = cpu.launch("gemm", a, b, alpha=alpha).numpy()
        np.testing.assert_allclose(got, alpha * (ha @ hb), rtol=1e-5, atol=1e-6)
    assert _sig_count(cpu) == 2  # alpha=2.0 and alpha=-0.5: one validation each
    out = cpu.empty((4, 5), "float32")
    assert cpu.launch("gemm", a, b, out=out, alpha=3.0, trans_b=False) is out
    np.testing.assert_allclose(out.numpy(), 3.0 * (ha @ hb), rtol=1e-5, atol=1e-6)
    with pytest.raises(ShapeError):  # a cached signature still checks out=
        cpu.launch("gemm", a, b, out=cpu.empty((5, 4), "float32"), alpha=3.0, trans_b=False)
    with pytest.raises(ConfigurationError, match="no parameter 'alhpa'"):
        cpu.launch("gemm", a, b, alhpa=3.0)


def test_equal_parameters_of_other_types_or_signs_are_not_confused(rt, cpu):
    cpu._signatures.clear()
    as_bool = cpu.launch("fill", value=True, shape=3, dtype="bool")
    assert as_bool.dtype == np.bool_ and as_bool.numpy().tolist() == [True] * 3
    pos = cpu.launch("fill", value=0.0, shape=4, dtype="float32").numpy()
    neg = cpu.launch("fill", value=-0.0, shape=4, dtype="float32").numpy()  # equal key, own value
    assert not np.signbit(pos).any() and np.signbit(neg).all()
    x, y = cpu.asarray(np.arange(4, dtype=np.float64)), cpu.asarray(np.ones(4))
    r_int = cpu.launch("axpy", x, y, alpha=2).numpy()
    r_float = cpu.launch("axpy", x, y, alpha=2.5).numpy()
    np.testing.assert_allclose(r_int, 2 * np.arange(4) + 1)
    np.testing.assert_allclose(r_float, 2.5 * np.arange(4) + 1)
    keys = [k for k in cpu._signatures if isinstance(k[0], tuple) and k[0][0] == "axpy"]
    assert {k[1][1] for k in keys} == {int, float}  # the type is part of the key


def test_unhashable_parameters_are_validated_every_time(rt, cpu):
    cpu._signatures.clear()
    for _ in range(2):
        got = cpu.launch("fill", value=1.5, shape=[2, 3], dtype="float64")  # a list: not keyed
        np.testing.assert_array_equal(got.numpy(), np.full((2, 3), 1.5))
    assert _sig_count(cpu) == 0
    with pytest.raises(ShapeError):
        cpu.launch("fill", value=1.5, shape=[2, 3])  # no dtype: the validation still runs


def test_cached_signature_checks_devices_and_shapes(rt, cpu):
    a, b = cpu.asarray(np.ones(4, np.float32)), cpu.asarray(np.ones(4, np.float32))
    cpu.launch("add", a, b)  # cached
    with pytest.raises(ShapeError):
        cpu.launch("add", a, cpu.asarray(np.ones(5, np.float32)))
    others = [d for d in rt.devices if d is not cpu and d.supports("add", "float32")]
    if others:
        c = others[0].asarray(np.ones(4, np.float32))
        with pytest.raises(ShapeError, match="move it with"):
            cpu.launch("add", a, c)
        with pytest.raises(ShapeError, match="out must be"):
            cpu.launch("add", a, b, out=others[0].empty(4, "float32"))


def test_operands_are_listed_in_use_and_resident_while_the_kernel_runs(rt, cpu):
    seen: list[tuple[bool, bool]] = []

    def probe(inputs, out, params, stream):
        busy = busy_ids()
        ids = [id(x.allocation) for x in (*inputs, out)]
        seen.append((all(i in busy for i in ids), all(x.allocation.handle is not None for x in (*inputs, out))))
        np.maximum(host_view(inputs[0]), 0, out=host_view(out))

    saved = cpu._impls["relu"], cpu._kernel_names["relu"]
    cpu.add_kernel("relu", ["float32"], probe)
    try:
        x = cpu.asarray(np.array([1.0, -2.0, 3.0], np.float32))
        np.testing.assert_array_equal(cpu.launch("relu", x).numpy(), [1.0, 0.0, 3.0])
        cpu.launch("relu", x)  # the cached path
        cpu.launch("relu", x, out=cpu.empty(3, "float32"))
        cpu.pool.spill(x.allocation)
        assert x.allocation.handle is None
        cpu.launch("relu", x)  # spilled input: fetched before the kernel reads it
    finally:
        cpu.add_kernel("relu", saved[1], saved[0])
    assert seen == [(True, True)] * 4
    assert not busy_ids()


def test_empty_caches_layouts_and_accepts_any_shape_form(rt, cpu):
    for shape in ((2, 3), [2, 3], np.array([2, 3]), (np.int64(2), 3)):
        arr = cpu.empty(shape, np.float32)
        assert arr.shape == (2, 3) and type(arr.shape[0]) is int
        assert arr.dtype == np.float32 and arr.strides == (12, 4) and arr.nbytes == 24
    assert cpu.empty(5, "int16").shape == (5,)
    with pytest.raises(ShapeError):
        cpu.empty((-1, 2))
    with pytest.raises(ShapeError):
        cpu.empty((-1, 2))  # not cached by the failure
