"""rt.map / rt.submit / rt.explain on real CPU devices: results, order, policies, capabilities."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

import dsrt
from dsrt.errors import ConfigurationError, PoisonedChunkError
from dsrt.scheduler import BUILTIN_POLICIES, Placement, PolicySpec
from dsrt.scheduler.policies import RoundRobin

from .conftest import FaultyCpu, chunks_of, serial


@pytest.mark.parametrize("policy", sorted(BUILTIN_POLICIES))
def test_map_results_in_input_order_for_every_policy(rt: dsrt.Runtime, policy: str) -> None:
    rt.add_device(FaultyCpu(1))
    rt.add_device(FaultyCpu(2))
    chunks = chunks_of(12, seed=3)
    got = rt.map("add", chunks, policy=policy)
    want = serial("add", chunks)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert np.array_equal(g.numpy(), w)
    stats = rt.scheduler.last_run
    assert stats.policy == policy
    assert sum(stats.chunks.values()) == 12
    assert all(v == 1 for v in stats.commits.values()) and len(stats.commits) == 12
    assert stats.makespan > 0


def test_default_policy_is_dmda_and_unknown_policy_is_a_user_error(rt: dsrt.Runtime) -> None:
    rt.map("add", chunks_of(2))
    assert rt.scheduler.last_run.policy == "dmda"
    with pytest.raises(ConfigurationError, match=r"unknown scheduling policy 'nope'.*dmda"):
        rt.map("add", chunks_of(2), policy="nope")


def test_kernel_params_and_array_inputs_pass_through(rt: dsrt.Runtime) -> None:
    cpu = rt.device("cpu:0")
    xs = [np.full(8, i, np.float32) for i in range(4)]
    got = rt.map("scale", [(cpu.asarray(x),) for x in xs], alpha=2.5)
    for x, g in zip(xs, got, strict=True):
        np.testing.assert_array_equal(g.numpy(), x * np.float32(2.5))


def test_device_without_the_kernel_is_never_chosen(rt: dsrt.Runtime) -> None:
    lacking = FaultyCpu(3)
    lacking._supported.pop("mul")
    rt.add_device(lacking)
    rt.map("mul", chunks_of(10), policy="round_robin")
    assert rt.scheduler.last_run.chunks.get("cpu:3", 0) == 0
    assert lacking.launches == 0


def test_precision_below_tolerance_excludes_simulated_device(rt: dsrt.Runtime) -> None:
    noisy = FaultyCpu(4)
    import dataclasses

    noisy.info = dataclasses.replace(noisy.info, precision_bits=6.0, simulated=True)
    rt.add_device(noisy)
    rt.map("add", chunks_of(8), policy="round_robin", tolerance=1e-4)
    assert noisy.launches == 0
    place = rt.explain(0)
    excluded = {c.device: c.reason for c in place.candidates if not c.capable}
    if excluded:  # round_robin records no candidates; dmda does
        assert "precision" in excluded["cpu:4"]
    rt.map("add", chunks_of(8), tolerance=1e-4)
    assert noisy.launches == 0
    reasons = {c.device: c.reason for c in rt.explain(0).candidates if not c.capable}
    assert "precision 6 bits" in reasons["cpu:4"]
    rt.map("add", chunks_of(8), policy="round_robin", tolerance=0.1)
    assert noisy.launches > 0


def test_explain_and_debug_log_per_placement(rt: dsrt.Runtime, caplog: pytest.LogCaptureFixture) -> None:
    rt.add_device(FaultyCpu(1))
    with caplog.at_level(logging.DEBUG, logger="dsrt.scheduler"):
        rt.map("add", chunks_of(6))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("chunk ")]
    assert len(lines) >= 6
    assert all("->" in line for line in lines)
    place = rt.explain(5)
    assert isinstance(place, Placement) and place.policy == "dmda"
    assert {c.device for c in place.candidates} == {"cpu:0", "cpu:1"}
    assert place.device in {"cpu:0", "cpu:1"} and place.why
    assert "cpu:0" in str(place)
    with pytest.raises(ConfigurationError):
        rt.explain(99)


def test_submit_futures_and_dag(rt: dsrt.Runtime) -> None:
    rt.add_device(FaultyCpu(1))
    a, b = chunks_of(1)[0]
    f1 = rt.submit("add", a, b)
    f2 = rt.submit("mul", a, b)
    f3 = rt.submit("sub", f1, f2)
    assert not f3.done()
    np.testing.assert_array_equal(f3.result().numpy(), (a + b) - (a * b))
    assert f1.done() and f2.done()
    assert rt.scheduler.last_run.policy == "heft"
    place = rt.explain(f3)
    assert place.policy == "heft" and place.device in {"cpu:0", "cpu:1"}


def test_plugin_registers_a_policy_through_the_hook() -> None:
    class OnlyFirst(RoundRobin):
        name = "only_first"

        def submit(self, tasks):  # type: ignore[no-untyped-def]
            w = self.ctx.workers[0]
            for t in tasks:
                self.ctx.assign(t, w, Placement(w.id, self.name, self.ctx.now(), "always the first"))

    class Plugin:
        @dsrt.hookimpl
        def dsrt_register_policies(self):  # type: ignore[no-untyped-def]
            return [PolicySpec("only_first", OnlyFirst, "test policy")]

    rt = dsrt.Runtime(backends=["cpu"], plugins=[Plugin()])
    rt.add_device(FaultyCpu(1))
    rt.map("add", chunks_of(5), policy="only_first")
    assert rt.scheduler.last_run.chunks == {"cpu:0": 5}
    assert rt.explain(2).why == "always the first"


def test_trace_has_placement_transfer_and_launch_events(rt: dsrt.Runtime, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "run.json"
    with rt.trace(str(path)):
        rt.map("add", chunks_of(4))
    events = json.loads(path.read_text())["traceEvents"]
    names = {e["name"] for e in events}
    assert {"place", "transfer", "add"} <= names
    tracks = {e["args"]["name"] for e in events if e["name"] == "thread_name"}
    assert "cpu:0" in tracks


def test_poisoned_error_carries_partial_results(rt: dsrt.Runtime) -> None:
    def bad(inputs):  # type: ignore[no-untyped-def]
        return inputs[0][0] == 777

    devs = [FaultyCpu(i, poison=bad) for i in (1, 2, 3)]
    for d in devs:
        rt.add_device(d)
    chunks = chunks_of(6)
    chunks[2][0][0] = 777
    with pytest.raises(PoisonedChunkError) as info:
        rt.map("add", chunks, devices=[d.id for d in devs] + ["cpu:0"])
    err = info.value
    assert list(err.poisoned) == [2]
    assert len({d for d, _ in err.poisoned[2]}) == 3
    assert err.results[2] is None
    want = serial("add", chunks)
    for i in (0, 1, 3, 4, 5):
        assert np.array_equal(err.results[i].numpy(), want[i])
    assert "chunk 2" in str(err) and "1 of 6 chunks given up" in str(err)


def test_devices_on_the_same_hardware_are_planned_as_one_resource(rt: dsrt.Runtime) -> None:
    import dataclasses

    fast, slow = FaultyCpu(5), FaultyCpu(6)
    for dev in (fast, slow):
        dev.info = dataclasses.replace(dev.info, properties={**dev.info.properties, "hardware": "one-chip"})
        rt.add_device(dev)
    for _ in range(2):  # calibrate both, so the plan is made on measured speeds
        rt.map("gemm", [(np.ones((64, 64), np.float32),) * 2] * 8, devices=["cpu:5", "cpu:6"], policy="round_robin")
    model = rt.scheduler.model
    # Make cpu:6 measurably slower on this kernel: 10x the seconds for the same work.
    for dev, factor in ((fast, 1.0), (slow, 10.0)):
        for _ in range(4):
            model.record("gemm", dev.info, 2 * 64**3, factor * 1e-4)
    rt.map("gemm", [(np.ones((64, 64), np.float32),) * 2] * 16, devices=["cpu:5", "cpu:6"])
    chunks = rt.scheduler.last_run.chunks
    assert chunks.get("cpu:5", 0) == 16 and chunks.get("cpu:6", 0) == 0
