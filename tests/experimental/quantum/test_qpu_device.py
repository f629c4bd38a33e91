"""The backend as a runtime sees it: registration, topology parameters, memory check, kernels, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from quantum_helpers import random_circuit

import dsrt
from dsrt_quantum import Circuit, QpuDevice
from dsrt_quantum.workload import qft


def test_backend_registers_a_default_qpu(rt, qpu):  # type: ignore[no-untyped-def]
    st = rt.backends["quantum"]
    assert st.status == "available" and st.spec.experimental and st.spec.prefix == "qpu"
    assert qpu.id == "qpu:0" and qpu.info.simulated and qpu.info.backend == "quantum"
    assert set(qpu.info.kernels) == {"run_circuit", "sample", "expectation"}
    assert rt.default_device.id != "qpu:0"
    assert qpu.host is rt.device("cpu:0")
    assert qpu.info.properties["host"] == "cpu:0"


def test_create_simulated_reads_topology_parameters(rt):  # type: ignore[no-untyped-def]
    spec = rt.backends["quantum"].spec
    dev = spec.create_simulated(rt, "qpu:3", {"qubits": 6, "precision": "complex64", "host": "cpu:0",
                                              "noise": {"depolarizing": 0.01}, "max_fused": 3})
    assert dev.id == "qpu:3" and dev.qubits == 6 and dev.dtype == np.complex64
    assert dev.info.properties["qubits"] == 6 and dev.info.precision_bits == 24.0
    assert dev.noise.depolarizing == 0.01
    with pytest.raises(dsrt.ConfigurationError, match="uses 7 qubits, this QPU has 6"):
        dev.run(Circuit(7))
    with pytest.raises(dsrt.ConfigurationError, match="unknown parameter"):
        spec.create_simulated(rt, "qpu:4", {"qbits": 3})
    with pytest.raises(dsrt.ConfigurationError, match="precision must be"):
        spec.create_simulated(rt, "qpu:4", {"precision": "float32"})
    with pytest.raises(dsrt.ConfigurationError, match="qpu:N"):
        spec.create_simulated(rt, "gpu:1", {})


def test_memory_check_refuses_states_that_do_not_fit(rt):  # type: ignore[no-untyped-def]
    big = QpuDevice(20, rt, {"qubits": 60})
    with pytest.raises(dsrt.OutOfMemoryError) as info:
        big.run(Circuit(50).h(0))
    msg = str(info.value)
    assert "qpu:20" in msg and "50-qubit complex128 statevector" in msg and "cpu:0" in msg
    assert info.value.requested == (1 << 50) * 16
    small = QpuDevice(21, rt, {"qubits": 20, "memory_limit": 1 << 20})
    with pytest.raises(dsrt.OutOfMemoryError, match="17-qubit"):
        small.run(Circuit(17))
    assert small.run(Circuit(12)).statevector.shape == (4096,)


def test_task_kernels_through_the_runtime(rt):  # type: ignore[no-untyped-def]
    bell = Circuit(2).h(0).cx(0, 1)
    counts = rt.launch("sample", bell, device="qpu:0", shots=1000, seed=3)
    assert set(counts) == {"00", "11"} and sum(counts.values()) == 1000
    res = rt.launch("run_circuit", device="qpu:0", circuit='OPENQASM 2.0; include "qelib1.inc"; qreg q[1]; x q[0];')
    np.testing.assert_allclose(res.statevector, [0, 1], atol=1e-15)
    with pytest.raises(dsrt.ConfigurationError, match="has no parameter 'shotz'"):
        rt.launch("sample", bell, device="qpu:0", shotz=3)
    with pytest.raises(dsrt.ConfigurationError, match="need a circuit"):
        rt.launch("sample", device="qpu:0")


def test_map_spreads_circuits_over_qpus(rt):  # type: ignore[no-untyped-def]
    pytest.importorskip("dsrt.scheduler", reason="the scheduler (rt.map) is not in this checkout yet")
    local = dsrt.Runtime()
    spec = local.backends["quantum"].spec
    for i in (1, 2):
        local.add_device(spec.create_simulated(local, f"qpu:{i}", {"qubits": 10}))
    circuits = [random_circuit(6, 20, s) for s in range(12)]
    results = local.map("expectation", [[c] for c in circuits], observable="ZIIIIZ")
    ref = [local.device("qpu:0").expectation(c, "ZIIIIZ") for c in circuits]
    np.testing.assert_allclose(results, ref, atol=1e-12)


def test_workload_item_checks_qft_against_dft(rt, qpu):  # type: ignore[no-untyped-def]
    items = [w for w in rt.workload_items() if w.name == "qft-12"]
    assert items and items[0].applies(qpu) and not items[0].applies(rt.device("cpu:0"))
    err, tol, flops = items[0].run(qpu)
    assert err <= tol and flops > 0


def test_modelled_time_follows_the_stated_cost_model(rt):  # type: ignore[no-untyped-def]
    dev = QpuDevice(22, rt, {"qubits": 3, "timing": {"gate_1q": 1e-8, "gate_2q": 1e-7, "measure": 1e-6,
                                                      "shot_overhead": 1e-5}})
    c = Circuit(2, 2).h(0).h(1).cx(0, 1).measure_all()
    # critical path: h (10 ns) + cx (100 ns) + measure (1 us), + 10 us per shot
    assert dev.run(c, shots=10).modelled_seconds == pytest.approx(10 * (1e-8 + 1e-7 + 1e-6 + 1e-5))
    assert qft(4).gate_count() == 4 + 6 + 2


def test_cli_run_prints_counts_and_saves_the_state(tmp_path, capsys):  # type: ignore[no-untyped-def]
    from dsrt.cli import main

    f = tmp_path / "ghz.qasm"
    f.write_text('OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[3];\ncreg c[3];\nx q[0];\nh q[1];\n'
                 'cx q[1], q[2];\nmeasure q -> c;\n')
    out = tmp_path / "state.npy"
    assert main(["quantum", "run", str(f), "--shots", "400", "--seed", "5", "--statevector", str(out)]) == 0
    text = capsys.readouterr().out
    counts = {ln.split()[0]: int(ln.split()[1]) for ln in text.splitlines() if not ln.startswith("#")}
    assert set(counts) == {"001", "111"} and sum(counts.values()) == 400
    state = np.load(out)
    want = np.zeros(8, complex)
    want[0b001] = want[0b111] = 2**-0.5  # qubit 0 is the least significant bit of the index
    np.testing.assert_allclose(state, want, atol=1e-12)
    assert main(["quantum", "run", str(f), "--shots", "10", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["shots"] == 10 and sum(data["counts"].values()) == 10 and data["num_qubits"] == 3


def test_cli_reports_qasm_errors_in_one_line(tmp_path, capsys):  # type: ignore[no-untyped-def]
    from dsrt.cli import main

    f = tmp_path / "bad.qasm"
    f.write_text('OPENQASM 2.0;\nqreg q[1];\nh q[0];\n')
    assert main(["quantum", "run", str(f)]) != 0
    err = capsys.readouterr().err
    assert f"{f}:3:1: unknown gate 'h'" in err and "Traceback" not in err


def test_topology_declares_qpus_and_map_runs_on_them():  # type: ignore[no-untyped-def]
    pytest.importorskip("dsrt.topology", reason="topologies are not in this checkout yet")
    pytest.importorskip("dsrt.scheduler", reason="the scheduler (rt.map) is not in this checkout yet")
    yaml = """
version: 1
name: qlab
nodes:
  - name: box
    devices: [cpu]
    simulated:
      - {backend: quantum, index: 1, params: {qubits: 10, precision: complex64, noise: {readout_error: 0.01}}}
      - {backend: quantum, index: 2, params: {qubits: 6, host: cpu:0}}
"""
    local = dsrt.Runtime(topology=yaml, backends=["cpu", "quantum"])
    q1, q2 = local.device("qpu:1"), local.device("qpu:2")
    assert (q1.qubits, q1.dtype, q1.noise.readout_error) == (10, np.complex64, (0.01, 0.01))
    assert q2.qubits == 6 and q2.host is local.device("cpu:0")
    bell = Circuit(2).h(0).cx(0, 1)
    got = local.map("expectation", [[bell]] * 8, observable="ZZ")
    np.testing.assert_allclose(got, 1.0, atol=1e-6)
