"""Collectives among several devices of one process, against numpy references."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dsrt
from dsrt import dtypes as dt
from dsrt.collective import Communicator, TransportSpec, choose_algorithm
from dsrt.collective import algorithms as alg
from dsrt.collective.ops import plan_reduction, reference
from dsrt_cpu.device import CpuDevice

TOL = {"float16": 2e-3, "bfloat16": 1.6e-2, "float8_e4m3fn": 0.13, "float8_e5m2": 0.26, "float32": 1e-5,
       "float64": 1e-12, "complex64": 1e-5, "complex128": 1e-12}


@pytest.fixture(scope="module")
def rt() -> dsrt.Runtime:
    runtime = dsrt.Runtime()
    for i in (1, 2, 3):
        runtime.add_device(CpuDevice(i))
    return runtime


def devices(rt: dsrt.Runtime, n: int) -> list:
    return [rt.device(f"cpu:{i}") for i in range(n)]


def data(g: int, dtype: np.dtype, n: int, op: str) -> np.ndarray:
    rng = np.random.default_rng(g)
    if dtype == dt.bool_:
        return rng.random(n) < 0.5
    if dtype.kind in "iu":
        return rng.integers(1, 3, n).astype(dtype) if op == "prod" else rng.integers(0, 30, n).astype(dtype)
    x = rng.uniform(0.5, 1.5, n) if op == "prod" else rng.uniform(-4, 4, n)
    return (x + 1j * rng.uniform(-1, 1, n) if dtype.kind == "c" else x).astype(dtype)


def close(got: np.ndarray, ref: np.ndarray, name: str) -> bool:
    if name not in TOL:
        return bool(np.array_equal(got, ref))
    g, r = got.astype(np.complex128), ref.astype(np.complex128)
    return bool(np.all(np.abs(g - r) <= TOL[name] * (np.abs(r) + 1)))


@pytest.mark.parametrize("name", list(dt.STANDARD_DTYPES))
@pytest.mark.parametrize("op", ["sum", "prod", "min", "max", "avg"])
def test_all_reduce_every_op_and_dtype(rt: dsrt.Runtime, name: str, op: str) -> None:
    dtype = dt.STANDARD_DTYPES[name]
    try:
        plan_reduction(op, dtype)
    except dsrt.ConfigurationError:
        with pytest.raises(dsrt.ConfigurationError):
            Communicator(devices(rt, 3), runtime=rt, mpi=False).all_reduce(
                [d.asarray(data(i, dtype, 5, "sum")) for i, d in enumerate(devices(rt, 3))], op)
        return
    devs = devices(rt, 3)
    comm = Communicator(devs, runtime=rt, mpi=False)
    inputs = [data(i, dtype, 1000, op) for i in range(3)]
    ref = reference(op, inputs)
    xs = [d.asarray(x) for d, x in zip(devs, inputs, strict=False)]
    comm.all_reduce(xs, op)
    assert all(close(x.numpy(), ref, name) for x in xs)
    outs = [d.empty((1000,), dtype) for d in devs]
    xs = [d.asarray(x) for d, x in zip(devs, inputs, strict=False)]
    comm.all_reduce(xs, op, out=outs)
    assert all(close(o.numpy(), ref, name) for o in outs)
    assert all(np.array_equal(x.numpy(), i) for x, i in zip(xs, inputs, strict=False))  # out of place leaves inputs


@pytest.mark.parametrize("n", [2, 3, 4])
@pytest.mark.parametrize("algorithm", ["ring", "tree", "recursive_doubling"])
def test_algorithms_agree_with_numpy(rt: dsrt.Runtime, n: int, algorithm: str) -> None:
    devs = devices(rt, n)
    comm = Communicator(devs, runtime=rt, mpi=False, algorithm=algorithm)
    inputs = [data(i, dt.float64, 1001, "sum") for i in range(n)]
    xs = [d.asarray(x) for d, x in zip(devs, inputs, strict=False)]
    comm.all_reduce(xs)
    assert comm.last_algorithm == algorithm
    for x in xs:
        np.testing.assert_allclose(x.numpy(), np.sum(inputs, axis=0), rtol=1e-12)


@settings(max_examples=15, deadline=None)
@given(size=st.integers(1, 3000), n=st.integers(2, 4), seed=st.integers(0, 2**16))
def test_deterministic_mode_is_bit_identical_across_algorithms(rt: dsrt.Runtime, size: int, n: int, seed: int) -> None:
    devs = devices(rt, n)
    rng = np.random.default_rng(seed)
    inputs = [rng.standard_normal(size).astype(np.float32) * 10 ** rng.uniform(-3, 3) for _ in range(n)]
    expected = reference("sum", inputs)  # the left fold in participant order
    for algorithm in ("ring", "tree", "recursive_doubling", "ring"):
        comm = Communicator(devs, runtime=rt, mpi=False, algorithm=algorithm, deterministic=True)
        xs = [d.asarray(x) for d, x in zip(devs, inputs, strict=False)]
        comm.all_reduce(xs)
        for x in xs:
            assert np.array_equal(x.numpy(), expected)


def test_other_collectives(rt: dsrt.Runtime) -> None:
    devs = devices(rt, 3)
    comm = Communicator(devs, runtime=rt, mpi=False)
    inputs = [data(i, dt.float32, 12, "sum") for i in range(3)]
    xs = [d.asarray(x) for d, x in zip(devs, inputs, strict=False)]
    comm.reduce(xs, 2, "max")
    np.testing.assert_array_equal(xs[2].numpy(), np.max(inputs, axis=0))
    np.testing.assert_array_equal(xs[0].numpy(), inputs[0])  # non-roots unchanged
    xs = [d.asarray(x) for d, x in zip(devs, inputs, strict=False)]
    comm.broadcast(xs, 1)
    assert all(np.array_equal(x.numpy(), inputs[1]) for x in xs)
    got = comm.all_gather([d.asarray(x) for d, x in zip(devs, inputs, strict=False)])
    assert all(np.array_equal(g.numpy(), np.stack(inputs)) for g in got)
    got = comm.reduce_scatter([d.asarray(x) for d, x in zip(devs, inputs, strict=False)], "sum")
    total = reference("sum", inputs)
    for j, g in enumerate(got):
        np.testing.assert_allclose(g.numpy(), total[4 * j:4 * j + 4], rtol=1e-6)
    blocks = [x.reshape(3, 4) for x in inputs]
    got = comm.all_to_all([d.asarray(b) for d, b in zip(devs, blocks, strict=False)])
    for j, g in enumerate(got):
        np.testing.assert_array_equal(g.numpy(), np.stack([blocks[p][j] for p in range(3)]))
    y = devs[2].empty((12,), "float32")
    comm.send(xs[0], 2, tag=7)
    comm.recv(y, 0, tag=7)
    np.testing.assert_array_equal(y.numpy(), xs[0].numpy())
    with pytest.raises(dsrt.CollectiveError, match="participant 1"):
        comm.recv(y, 1)
    handle = comm.all_reduce([d.asarray(np.ones(4, np.float32)) for d in devs], async_op=True)
    assert all(np.all(g.numpy() == 3) for g in handle.wait())
    comm.barrier()
    comm.close()


def test_bad_arguments_are_shape_errors(rt: dsrt.Runtime) -> None:
    devs = devices(rt, 2)
    comm = Communicator(devs, runtime=rt, mpi=False)
    with pytest.raises(dsrt.ShapeError, match="one per local device"):
        comm.all_reduce([devs[0].asarray(np.ones(3, np.float32))])
    with pytest.raises(dsrt.ShapeError, match="lives on cpu:0"):
        comm.all_reduce([devs[0].asarray(np.ones(3, np.float32))] * 2)
    with pytest.raises(dsrt.ConfigurationError, match="complex"):
        comm.all_reduce([d.asarray(np.ones(3, np.complex64)) for d in devs], "max")


class _HungCpu(CpuDevice):
    """A CPU device whose queued work never finishes (its events never complete)."""

    def _query_event(self, event: object) -> bool:
        return False


def test_timeout_names_the_device_that_never_finished(rt: dsrt.Runtime) -> None:
    hung = _HungCpu(7)
    devs = [rt.device("cpu:0"), hung]
    comm = Communicator(devs, runtime=rt, mpi=False, timeout=0.2)
    with pytest.raises(dsrt.CollectiveError, match="cpu:7") as info:
        comm.all_reduce([d.asarray(np.ones(4, np.float32)) for d in devs])
    assert info.value.missing == ["cpu:7"]


def test_schedules_and_thresholds() -> None:
    assert choose_algorithm(8, 8) == "recursive_doubling"
    assert choose_algorithm(8, 6) == "tree"
    assert choose_algorithm(alg.SMALL_MESSAGE_BYTES + 1, 6) == "ring"
    for n in range(1, 9):
        # ring reduce-scatter: participant i ends owning segment i after n-1 rounds
        owned = {i: {i} for i in range(n)}
        for rnd in alg.ring_reduce_scatter(n):
            for mv in rnd:
                owned.setdefault(mv.dst, set())
        assert len(alg.ring_reduce_scatter(n)) == max(n - 1, 0)
        # the tree reaches every participant exactly once
        assert sorted(m.src for rnd in alg.tree_reduce(n) for m in rnd) == list(range(1, n))


def test_transport_plugins_are_selected_by_priority(rt: dsrt.Runtime) -> None:
    made = []

    class Plugin:
        @dsrt.hookimpl
        def dsrt_register_transports(self) -> list:
            from dsrt.collective import InProcessTransport

            def factory(devs: list) -> InProcessTransport:
                made.append([d.id for d in devs])
                return InProcessTransport()

            return [TransportSpec(name="vendor", kind="intra", applies=lambda devs: True, factory=factory, priority=5)]

    runtime = dsrt.Runtime(plugins=[Plugin()])
    comm = Communicator([runtime.device("cpu:0")], runtime=runtime, mpi=False)
    assert comm.intra_name == "vendor" and made == [["cpu:0"]]


def test_runtime_world_outside_mpiexec_is_this_process_alone(monkeypatch):
    import sys

    import dsrt

    # The package re-exports the function `world`, which hides the submodule of the same name.
    monkeypatch.setattr(sys.modules["dsrt.collective.world"], "launched_by_mpiexec", lambda: False)
    rt = dsrt.Runtime(backends=["cpu"])
    comm = rt.world(timeout=5.0)
    x = rt.asarray(np.arange(4, dtype=np.float32), device="cpu:0")
    comm.all_reduce(x)
    np.testing.assert_array_equal(x.numpy(), np.arange(4, dtype=np.float32))
    assert comm.world_size == 1


def test_on_timeout_is_checked_and_passed_through_world(rt: dsrt.Runtime, monkeypatch) -> None:
    import sys

    with pytest.raises(dsrt.ConfigurationError, match="on_timeout='exit'"):
        Communicator(devices(rt, 1), runtime=rt, mpi=False, on_timeout="exit")
    monkeypatch.setattr(sys.modules["dsrt.collective.world"], "launched_by_mpiexec", lambda: False)
    comm = rt.world(timeout=5.0, on_timeout="abort")
    assert comm.on_timeout == "abort" and comm.timeout == 5.0
    assert Communicator(devices(rt, 1), runtime=rt, mpi=False).on_timeout == "raise"


def test_transports_must_subclass_the_base_classes(rt: dsrt.Runtime) -> None:
    from dsrt.collective import InProcessTransport, IntraTransport

    class Duck:  # has the methods, but is not an IntraTransport: no longer probed attribute by attribute
        all_reduce = InProcessTransport.all_reduce

    class Plugin:
        @dsrt.hookimpl
        def dsrt_register_transports(self) -> list:
            return [TransportSpec(name="duck", kind="intra", applies=lambda devs: True, factory=lambda devs: Duck(),
                                  priority=9)]

    runtime = dsrt.Runtime(plugins=[Plugin()])
    with pytest.raises(dsrt.ConfigurationError, match="intra transport 'duck' built Duck"):
        Communicator([runtime.device("cpu:0")], runtime=runtime, mpi=False)
    # A subclass inherits copy() and close() from the base class.
    assert issubclass(InProcessTransport, IntraTransport)
    assert InProcessTransport.copy is IntraTransport.copy and InProcessTransport.close is IntraTransport.close


def test_every_collective_is_traced_by_the_skeleton(rt: dsrt.Runtime) -> None:
    devs = devices(rt, 2)
    comm = Communicator(devs, runtime=rt, mpi=False)
    with rt.trace() as tracer:
        comm.all_reduce([d.asarray(np.ones(4, np.float32)) for d in devs], "max")
        comm.broadcast([d.asarray(np.ones(4, np.float32)) for d in devs], 1)
        comm.barrier()
    events = [e for e in tracer.events if e["name"] in ("all_reduce", "broadcast", "barrier")]
    assert [e["name"] for e in events] == ["all_reduce", "broadcast", "barrier"]
    assert events[0]["args"]["what"] == "all_reduce(max, float32(4,))" and events[0]["args"]["rank"] == 0
