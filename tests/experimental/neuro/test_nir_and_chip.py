"""NIR import, chip limits, the snn_run kernel, learning rules and the CLI."""

from __future__ import annotations

import json
import math

import nir
import numpy as np
import pytest

from dsrt_neuro import ChipLimitError, Learning, Network, UnsupportedNodeError, from_nir


def _graph() -> nir.NIRGraph:
    w1 = np.array([[1.0, 0.0], [0.0, 0.4], [0.7, 0.7]])
    lif = nir.LIF(tau=np.full(3, 0.02), r=np.ones(3), v_leak=np.zeros(3), v_threshold=np.full(3, 0.5),
                  v_reset=np.zeros(3))
    w2 = np.array([[2.0, 0.0, 0.0]])
    cuba = nir.CubaLIF(tau_syn=np.array([0.005]), tau_mem=np.array([0.01]), r=np.array([1.0]),
                       v_leak=np.array([0.0]), v_threshold=np.array([1e6]), v_reset=np.array([0.0]))
    return nir.NIRGraph(nodes={
        "in": nir.Input(input_type=np.array([2])), "fc1": nir.Linear(weight=w1), "lif": lif,
        "fc2": nir.Linear(weight=w2), "cuba": cuba, "out": nir.Output(output_type=np.array([1])),
        "spk": nir.Output(output_type=np.array([3])),
    }, edges=[("in", "fc1"), ("fc1", "lif"), ("lif", "fc2"), ("fc2", "cuba"), ("cuba", "out"), ("lif", "spk")])


def test_nir_graph_imports_and_runs(snn):
    dt = 1e-3
    net = from_nir(_graph(), dt)
    assert net.populations["lif"].size == 3 and net.populations["cuba"].size == 1
    assert net.outputs == {"out": "cuba", "spk": "lif"}
    x = np.zeros((10, 2))
    x[0] = [1, 1]
    res = snn.run(net, 10, dt, inputs=x, trace=[3])
    # lif0 gets 1.0 > 0.5 and lif2 gets 1.4 > 0.5 at step 0; lif1 gets 0.4 (no spike).
    assert sorted(zip(res.spike_steps.tolist(), res.spike_ids.tolist(), strict=True)) == [(0, 0), (0, 2)]
    # cuba receives 2.0 at step 1 and follows the double exponential from then on.
    t = np.arange(1, 10) * dt
    exact = 2.0 * 0.005 / (0.005 - 0.01) * (np.exp(-t / 0.005) - np.exp(-t / 0.01))
    np.testing.assert_allclose(res.traces[1:, 0], exact, rtol=1e-12)
    assert res.traces[0, 0] == 0.0


def test_unknown_nir_node_is_refused_by_name():
    g = nir.NIRGraph(nodes={"in": nir.Input(input_type=np.array([2])),
                            "thr": nir.Threshold(threshold=np.ones(2)), "out": nir.Output(output_type=np.array([2]))},
                     edges=[("in", "thr"), ("thr", "out")])
    with pytest.raises(UnsupportedNodeError) as info:
        from_nir(g, 1e-3)
    assert info.value.node == "thr" and "'thr'" in str(info.value) and "Threshold" in str(info.value)


def _dense(n: int, fan: int) -> Network:
    net = Network()
    pop = net.add_population("p", n, "lif", tau_mem=0.02, v_threshold=1.0)
    rng = np.random.default_rng(0)
    pre = rng.integers(0, n, n * fan)
    post = np.repeat(np.arange(n), fan)
    net.connect_sparse(pop, pop, pre, post, 0.1)
    return net


def test_network_too_large_is_refused_with_the_limit(make_device):
    small = make_device(cores=2, neurons_per_core=100)
    with pytest.raises(ChipLimitError) as info:
        small.map(_dense(250, 1))
    e = info.value
    assert e.limit == "cores" and e.required == 3 and e.available == 2 and e.excess == 1
    assert "over by 1 cores" in str(e)
    tight = make_device(fan_in=8)
    with pytest.raises(ChipLimitError) as info:
        tight.map(_dense(20, 10))
    assert info.value.limit == "fan_in" and info.value.excess == 2 and "p[" in str(info.value)
    mem = make_device(synapse_memory_bytes=64)
    with pytest.raises(ChipLimitError) as info:
        mem.map(_dense(20, 10))
    assert info.value.limit == "synapse_memory_bytes" and info.value.excess == 80 - 64


def test_energy_estimate_is_labelled_and_counts_operations(make_device):
    dev = make_device(synop_j=1e-9, neuron_update_j=0.0, spike_j=0.0, static_w=0.0)
    net = Network()
    inp = net.add_input("in", 1)
    a = net.add_population("a", 1, "if", r=1.0, v_threshold=0.5)
    b = net.add_population("b", 4, "if", r=1.0, v_threshold=10.0)
    net.connect(inp, a, [[1.0]], delay=0)
    net.connect(a, b, np.ones((4, 1)))
    x = np.zeros((5, 1))
    x[[0, 2], 0] = 1
    est = dev.run(net, 5, 1e-3, inputs=x).estimate
    assert est["estimate"] is True and "not a measurement" in est["note"]
    assert est["synaptic_ops"] == 2 * 4 + 2          # two spikes of a onto 4 targets, two input events
    assert math.isclose(est["energy_joules"], 10 * 1e-9)
    assert est["energy_constants"]["synop_j"] == 1e-9


def test_snn_run_kernel_through_launch_and_scheduler(rt, snn):
    net = Network()
    net.add_population("n", 1, "if", r=1.0, bias=100.0, v_threshold=0.05)
    res = snn.launch("snn_run", network=net, steps=20, dt=1e-4)
    assert res.spike_steps.tolist() == [5, 11, 17]
    assert snn.supports("snn_run")


def test_stdp_pre_before_post_potentiates_and_reverse_depresses(snn):
    dt, tau = 1e-3, 0.02

    def pair(t_pre: int, t_post: int, rule: Learning, reward=None) -> float:
        net = Network()
        inp = net.add_input("in", 2)
        pre = net.add_population("pre", 1, "if", r=1.0, v_threshold=0.5)
        post = net.add_population("post", 1, "if", r=1.0, v_threshold=0.5)
        net.connect(inp, pre, [[1.0, 0.0]], delay=0)
        net.connect(inp, post, [[0.0, 1.0]], delay=0)
        net.connect(pre, post, [[0.1]])
        x = np.zeros((30, 2))
        x[t_pre, 0] = x[t_post, 1] = 1
        res = snn.run(net, 30, dt, inputs=x, learning=rule, reward=reward)
        assert res.weights is not None
        return float(res.weights[0])

    rule = Learning(a_plus=0.01, a_minus=0.02, tau_plus=tau, tau_minus=tau, w_min=0.0, w_max=1.0)
    assert math.isclose(pair(10, 15, rule), 0.1 + 0.01 * math.exp(-5 * dt / tau), rel_tol=1e-12)
    assert math.isclose(pair(15, 10, rule), 0.1 - 0.02 * math.exp(-5 * dt / tau), rel_tol=1e-12)
    three = Learning(rule="three_factor", a_plus=0.01, a_minus=0.02, tau_plus=tau, tau_minus=tau, tau_elig=0.1,
                     lr=2.0)
    assert pair(10, 15, three, reward=np.zeros(30)) == 0.1       # no reward, no change
    r = np.zeros(30)
    r[20] = 1.0
    expected = 0.1 + 2.0 * 0.01 * math.exp(-5 * dt / tau) * math.exp(-5 * dt / 0.1)
    assert math.isclose(pair(10, 15, three, reward=r), expected, rel_tol=1e-12)


def test_cli_runs_an_nir_file(tmp_path, capsys, snn):
    from dsrt.cli import main

    path = tmp_path / "net.nir"
    nir.write(str(path), _graph())
    x = np.zeros((10, 2))
    x[0] = [1, 1]
    np.save(tmp_path / "in.npy", x)
    raster = tmp_path / "r.npz"
    code = main(["snn", "run", str(path), "--steps", "10", "--dt", "0.001", "--input", str(tmp_path / "in.npy"),
                 "--json", "--raster", str(raster)])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["outputs"]["spk"]["spike_counts"] == [1, 0, 1]
    assert out["outputs"]["spk"]["rates_hz"] == [100.0, 0.0, 100.0]
    r = np.load(raster)
    assert r["ids"].size == 2 and r["steps"].tolist() == [0, 0]  # global ids; file order decides the offset
    code = main(["snn", "run", str(tmp_path / "missing.nir"), "--steps", "1", "--dt", "0.001"])
    assert code != 0 and "cannot read NIR file" in capsys.readouterr().err
