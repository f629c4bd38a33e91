"""The virtual clock: the same policies on device and link cost models."""

from __future__ import annotations

import numpy as np
import pytest

from dsrt.scheduler import BUILTIN_POLICIES, PerfModel, StarLinks, VirtualDevice, make_tasks, simulate


def devices() -> tuple[list[VirtualDevice], StarLinks]:
    devs = [
        VirtualDevice("gpu:0", {"gemm": 16e10, "softmax": 8e8}),
        VirtualDevice("cpu:0", {"gemm": 1e10, "softmax": 6e8}),
        VirtualDevice("npu:0", {"gemm": 12e10}),
        VirtualDevice("far:0", {"gemm": 6e10, "softmax": 4e8}),
    ]
    return devs, StarLinks({"gpu:0": (5e-6, 16e9), "cpu:0": (1e-6, 20e9), "npu:0": (1e-5, 16e9),
                            "far:0": (5e-5, 0.5e9)})


def workload(n: int, seed: int) -> list[tuple[str, int]]:
    rng = np.random.default_rng(seed)
    return [(("gemm", "softmax")[int(k)], int(s)) for k, s in
            zip(rng.integers(0, 2, n), rng.lognormal(np.log(1 << 20), 0.75, n), strict=True)]


def trained() -> PerfModel:
    devs, links = devices()
    model = PerfModel()
    simulate(devs, links, make_tasks(workload(128, 99)), BUILTIN_POLICIES["dmda"], model=model)
    return model


@pytest.mark.parametrize("policy", sorted(BUILTIN_POLICIES))
def test_every_policy_completes_and_respects_capabilities(policy: str) -> None:
    devs, links = devices()
    tasks = make_tasks(workload(64, 1))
    stats = simulate(devs, links, tasks, BUILTIN_POLICIES[policy], model=trained())
    assert stats.clock == "virtual"
    assert sum(stats.chunks.values()) == 64 and not stats.poisoned
    assert all(t.committed for t in tasks)
    assert not any(t.kernel == "softmax" and t.device == "npu:0" for t in tasks)
    # Makespan can never beat the busiest device's total time.
    assert stats.makespan >= max(stats.busy.values()) - 1e-12


def test_dmda_beats_round_robin_and_eager() -> None:
    devs, links = devices()
    model = trained()
    spans = {}
    for p in ("round_robin", "eager", "dmda"):
        spans[p] = simulate(devs, links, make_tasks(workload(64, 2)), BUILTIN_POLICIES[p], model=model.copy()).makespan
    assert spans["dmda"] < spans["eager"] < spans["round_robin"]


def test_simulated_device_failure_redispatches() -> None:
    devs, links = devices()
    devs[0].fail_at = 0.002
    tasks = make_tasks(workload(64, 3))
    stats = simulate(devs, links, tasks, BUILTIN_POLICIES["dmda"], model=trained())
    assert "gpu:0" in stats.quarantined and not stats.poisoned
    assert all(t.committed for t in tasks)
    late = [t for t in tasks if t.device == "gpu:0"]
    assert all(stats.placements[t.index].at <= 0.002 for t in late)


def test_slow_link_costs_are_predicted() -> None:
    devs, links = devices()
    tasks = make_tasks([("gemm", 1 << 20)])
    simulate(devs, links, tasks, BUILTIN_POLICIES["dmda"], model=trained())
    cands = {c.device: c for c in tasks[0].placement.candidates}
    assert cands["far:0"].transfer == pytest.approx(5e-5 + (1 << 20) / 0.5e9, rel=0.01)
    assert cands["gpu:0"].transfer < cands["far:0"].transfer / 10


def test_dag_runs_in_dependency_order_under_heft() -> None:
    devs, links = devices()
    tasks = make_tasks([("gemm", 1 << 20)] * 4)
    a, b, c, d = tasks
    c.deps, d.deps = [a, b], [c]
    a.children, b.children, c.children = [c], [c], [d]
    trace = []
    from dsrt.scheduler.engine import Engine, Worker
    from dsrt.scheduler.executors import VirtualExecutor

    eng = Engine([Worker(x) for x in devs], BUILTIN_POLICIES["heft"], trained(), links, VirtualExecutor(links),
                 on_commit=lambda t: trace.append((t.index, eng.now())))
    eng.run(tasks)
    order = [i for i, _ in trace]
    assert order.index(2) > max(order.index(0), order.index(1)) and order[-1] == 3
    assert a.priority > d.priority
