"""Round trips: every dsrt dtype, numpy and device leaves, nested trees, scalars; zarr reads what dsrt wrote."""

from __future__ import annotations

import os

import numpy as np
import pytest

import dsrt
from dsrt import dtypes as dt
from dsrt.checkpoint import Checkpointer, CheckpointError, restore, save
from dsrt.checkpoint.layout import plan_array
from dsrt.checkpoint.tree import escape, unescape

# Shapes chosen to exercise one chunk, many chunks with a padded edge chunk, a split inner dimension,
# 0-d and empty arrays, at chunk_bytes=1000.
SHAPES = [(), (0, 3), (7,), (37, 13), (3, 5, 101)]


def _values(dtype: np.dtype, shape: tuple[int, ...], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    if dtype == np.bool_:
        return (rng.random(n) < 0.5).reshape(shape)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, n, dtype=dtype, endpoint=True).reshape(shape)
    if dtype.kind == "c":
        return (rng.standard_normal(n) + 1j * rng.standard_normal(n)).astype(dtype).reshape(shape)
    x = rng.standard_normal(n) * 3
    x[: min(n, 3)] = [np.inf, -0.0, np.nan][: min(n, 3)]
    return x.astype(dtype).reshape(shape)


def _on(device: dsrt.Device, value: np.ndarray) -> dsrt.Array:
    """``value`` on ``device``, 0-d arrays included (``Device.asarray`` makes those 1-d)."""
    out = device.empty(value.shape, value.dtype)
    device.copy_from_host(out, value)
    return out


def _bits(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a).tobytes()


@pytest.mark.parametrize("name", list(dt.STANDARD_DTYPES))
def test_every_dtype_round_trips_bit_for_bit_from_device_and_numpy(tmp_path, cpu: dsrt.Device, name: str) -> None:
    dtype = dt.STANDARD_DTYPES[name]
    ref = {f"s{i}": _values(dtype, shape, i) for i, shape in enumerate(SHAPES)}
    tree = {"dev": {k: _on(cpu, v) for k, v in ref.items()}, "np": dict(ref)}
    with Checkpointer(tmp_path, chunk_bytes=1000, durable=False) as ck:  # fsyncs are tested elsewhere; keep it fast
        stats = ck.save(3, tree, blocking=True).result()
        assert stats.chunks_total > len(SHAPES)  # several arrays were cut into many chunks
        back = ck.restore(device=cpu)
        host = ck.restore()
    for k, v in ref.items():
        got = back["dev"][k]
        assert isinstance(got, dsrt.Array) and got.device is cpu
        assert got.dtype == dtype and got.shape == v.shape
        assert _bits(got.numpy()) == _bits(v)
        assert isinstance(back["np"][k], np.ndarray) and back["np"][k].dtype == dtype
        assert _bits(back["np"][k]) == _bits(v)
        assert isinstance(host["dev"][k], np.ndarray) and _bits(host["dev"][k]) == _bits(v)


def test_nested_tree_with_scalars_tuples_and_odd_keys(tmp_path) -> None:
    tree = {
        "a": {"b": [np.arange(5), (np.float32(2.5), 3, -0.0, float("nan"), 1e300, 2 + 3j, True, None, "text")]},
        "__reserved": np.ones((2, 2)),
        "with/slash and.dots": {"": np.zeros(3, np.int8), "zarr.json": np.full(2, 7, np.uint32)},
        "ünïcode": [[], {}, ()],
        "big": 2**80,
    }
    save(tmp_path, tree, step=0)
    back = restore(tmp_path)
    assert list(back) == list(tree)
    assert np.array_equal(back["a"]["b"][0], np.arange(5))
    t = back["a"]["b"][1]
    assert isinstance(t, tuple) and isinstance(t[0], np.float32) and t[0] == np.float32(2.5)
    assert t[1] == 3 and type(t[1]) is int
    assert str(t[2]) == "-0.0" and np.isnan(t[3]) and t[4] == 1e300 and t[5] == 2 + 3j
    assert t[6] is True and t[7] is None and t[8] == "text"
    assert np.array_equal(back["__reserved"], np.ones((2, 2)))
    odd = back["with/slash and.dots"]
    assert np.array_equal(odd[""], np.zeros(3, np.int8)) and odd["zarr.json"].dtype == np.uint32
    assert back["ünïcode"] == [[], {}, ()]
    assert back["big"] == 2**80


def test_escape_is_injective_and_reversible() -> None:
    keys = ["", "%", "a", "a.b", "a/b", "__x", "_x", "zarr.json", "ü", "c.0", "%25"]
    names = [escape(k) for k in keys]
    assert len(set(names)) == len(keys)
    assert [unescape(n) for n in names] == keys
    assert all(not n.startswith("__") and "/" not in n and "." not in n for n in names)


def test_zarr_reads_each_array_without_dsrt(tmp_path, cpu: dsrt.Device) -> None:
    zarr = pytest.importorskip("zarr", reason="zarr is not installed: pip install dsrt[checkpoint]")
    w = _values(np.dtype(np.float32), (300, 70), 1)
    bf = _values(dt.bfloat16, (40, 33), 2)
    f8 = _values(dt.float8_e5m2, (1000,), 3)
    c = _values(np.dtype(np.complex64), (9, 9), 4)
    tree = {"params": {"w": cpu.asarray(w), "bf": cpu.asarray(bf)}, "f8": f8, "c": [c]}
    with Checkpointer(tmp_path, chunk_bytes=4096) as ck:
        ck.save(5, tree).result()
        ck.save(6, tree).result()
    for step in (5, 6):
        base = os.path.join(tmp_path, "steps", str(step), "rank0")
        zw = zarr.open(os.path.join(base, "params", "w"), mode="r")
        assert zw.shape == w.shape and zw.chunks[0] < w.shape[0]  # really chunked
        assert _bits(zw[:]) == _bits(w) and _bits(zw[17:200, 3]) == _bits(w[17:200, 3])
        zb = zarr.open(os.path.join(base, "params", "bf"), mode="r")
        assert zb.dtype == np.uint16 and zb.attrs["dsrt_checkpoint"]["dtype"] == "bfloat16"
        assert _bits(zb[:].view(dt.bfloat16)) == _bits(bf)
        z8 = zarr.open(os.path.join(base, "f8"), mode="r")
        assert z8.attrs["dsrt_checkpoint"]["dtype"] == "float8_e5m2" and _bits(z8[:].view(dt.float8_e5m2)) == _bits(f8)
        assert _bits(zarr.open(os.path.join(base, "c", "0"), mode="r")[:]) == _bits(c)
        group = zarr.open_group(base, mode="r")
        assert group.attrs["dsrt_checkpoint"]["step"] == step
        assert _bits(group["params/w"][:]) == _bits(w)


def test_chunks_are_contiguous_byte_ranges_covering_the_array() -> None:
    for shape in [(37, 13), (3, 5, 101), (1000,), (2, 3, 4, 5), (5000, 3)]:
        for cb in (8, 100, 1000, 10_000):
            lay = plan_array(shape, 4, cb)
            covered = 0
            for j in range(lay.nchunks):
                start, length = lay.byte_range(j)
                assert start == covered and 0 < length <= lay.chunk_nbytes
                covered += length
            assert covered == 4 * int(np.prod(shape))
            assert lay.chunk_nbytes <= max(cb, 4 * int(np.prod(shape[lay.split + 1:])) if lay.split >= 0 else cb)


def test_bad_trees_and_steps_are_user_errors(tmp_path) -> None:
    with Checkpointer(tmp_path) as ck:
        with pytest.raises(dsrt.ConfigurationError, match=r"key 1 under a"):
            ck.save(0, {"a": {1: np.zeros(2)}})
        with pytest.raises(dsrt.ConfigurationError, match=r"a/0 is a object"):
            ck.save(0, {"a": [object()]})
        with pytest.raises(CheckpointError, match=r"array 'x' has dtype <U1"):
            ck.save(0, {"x": np.array(["a"])})
        with pytest.raises(dsrt.ConfigurationError, match="step must be an int"):
            ck.save(-1, {})
        ck.save(0, {"x": np.zeros(2)}, blocking=True)
        with pytest.raises(CheckpointError, match="step 0 of rank 0 already exists"):
            ck.save(0, {"x": np.zeros(2)})
    with pytest.raises(dsrt.checkpoint.CheckpointNotFoundError, match="no step 7 for rank 0"):
        restore(tmp_path, 7)
    with pytest.raises(dsrt.checkpoint.CheckpointNotFoundError, match="no complete step for rank 0"):
        restore(tmp_path / "nothing")


def test_one_writer_per_rank(tmp_path) -> None:
    with Checkpointer(tmp_path) as first:
        first.save(0, {"x": np.zeros(2)}, blocking=True)
        with Checkpointer(tmp_path) as second, pytest.raises(CheckpointError, match="another process is saving rank 0"):
            second.save(1, {"x": np.zeros(2)})
        with Checkpointer(tmp_path, rank=1) as other_rank:
            other_rank.save(1, {"x": np.ones(2)}, blocking=True)
    assert np.array_equal(restore(tmp_path, rank=1)["x"], np.ones(2))
