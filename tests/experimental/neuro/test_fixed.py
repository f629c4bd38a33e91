"""Loihi-style fixed point against worked examples (computed by hand in the comments)."""

from __future__ import annotations

import numpy as np

from dsrt_neuro import Network
from dsrt_neuro.engine import FixedProgram, run_fixed
from dsrt_neuro.fixed import decay12, wrap24


def test_decay_rounds_toward_zero_and_wrap_is_24_bit():
    assert decay12(256, 1024) == 192          # 256 * 3072 / 4096
    assert decay12(-100, 512) == -87          # -87.5 rounds toward zero
    assert decay12(100, 512) == 87
    assert decay12(5, 4096) == 0              # a full decay forgets
    assert wrap24(2**23 - 1) == 2**23 - 1
    assert wrap24(2**23) == -(2**23)
    assert wrap24(2**23 + 5) == -(2**23) + 5
    assert wrap24(-(2**23) - 1) == 2**23 - 1


def _one_neuron(cpu, ip, in_weight, x, v0=0):
    net = Network()
    inp = net.add_input("in", 1)
    pop = net.add_population("n", 1, "lif", tau_mem=1.0, v_threshold=1.0)
    net.connect(inp, pop, [[1.0]], delay=0)
    prog = FixedProgram(ip=np.array([ip], np.int32), weight=np.zeros(0, np.int32),
                        in_weight=np.array([in_weight], np.int32), v0=np.array([v0], np.int32))
    return run_fixed(cpu, net, prog, len(x), inputs=np.asarray(x).reshape(-1, 1), trace=[0])


def test_worked_example_decaying_current(cpu):
    # du = 1024 (u keeps 3/4), dv = 512 (v keeps 7/8), threshold mantissa 10 -> 640; weight 4 -> 4 << 6 = 256.
    # step 0: u = 256, v = 256;  step 1: u = 192, v = 224 + 192 = 416;  step 2: u = 144, v = 364 + 144 = 508;
    # step 3: u = 108, v = 444 + 108 = 552;  step 4: u = 81, v = 483 + 81 = 564;  step 5: u = 60, v = 493 + 60 = 553.
    res = _one_neuron(cpu, [1024, 512, 640, 0, 0, 0, 2], 4, [1, 0, 0, 0, 0, 0])
    assert res.traces[:, 0].tolist() == [256, 416, 508, 552, 564, 553]
    assert res.spike_ids.size == 0


def test_worked_example_threshold_reset_and_bias(cpu):
    # No decay of v (dv = 0), u forgets each step (du = 4096), bias 100, threshold 5 << 6 = 320, reset to -50.
    # v: 100, 200, 300, 400 > 320 -> spike at step 3, reset -50; then 50, 150, 250, 350 -> spike at step 7.
    res = _one_neuron(cpu, [4096, 0, 320, -50, 100, 0, 2], 0, [0] * 9)
    assert res.spike_steps.tolist() == [3, 7]
    assert res.traces[:, 0].tolist() == [100, 200, 300, -50, 50, 150, 250, -50, 50]


def test_current_wraps_around_and_voltage_saturates(cpu):
    # weight 2**17 -> activation 2**23: u wraps to -2**23; v saturates at -(2**23 - 1).
    res = _one_neuron(cpu, [4096, 0, 1 << 22, 0, 0, 0, 2], 2**17, [1, 0])
    assert res.traces[:, 0].tolist() == [-(2**23 - 1), -(2**23 - 1)]
    # below the wrap point the same weight halved adds exactly 2**22.
    res = _one_neuron(cpu, [4096, 0, 1 << 23, 0, 0, 0, 2], 2**16, [1, 0])
    assert res.traces[:, 0].tolist() == [2**22, 2**22]


def test_quantized_lif_tracks_float(make_device):
    fixed = make_device(arithmetic="fixed")
    net = Network()
    net.add_population("n", 1, "lif", tau_mem=0.02, r=1.0, v_leak=-0.07, v_threshold=-0.05, v_reset=-0.07,
                       bias=0.03)
    res_q = fixed.run(net, 2000, 1e-4, trace=[0])
    assert res_q.quantization["lsb"] > 0
    assert res_q.arithmetic == "fixed" and res_q.traces.dtype == np.int32
    # Float reference: drives to -0.04, fires periodically; the fixed-point period must agree within 3%.
    period_q = np.diff(res_q.spike_steps).mean()
    exact = 0.02 * np.log(0.03 / (0.03 - 0.02)) / 1e-4   # time to climb from -0.07 to -0.05 toward -0.04
    assert abs(period_q - exact) / exact < 0.03
