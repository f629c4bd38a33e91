"""Noise: channels preserve the trace, trajectories agree with the density matrix, readout error."""

from __future__ import annotations

import math

import numpy as np
import pytest
from quantum_helpers import random_circuit

import dsrt
from dsrt_quantum import Circuit, NoiseModel, QpuDevice
from dsrt_quantum.reference import reference_state


@pytest.fixture(scope="module")
def noisy(rt):  # type: ignore[no-untyped-def]
    return QpuDevice(11, rt, {"qubits": 8, "noise": {"depolarizing": 0.05, "amplitude_damping": 0.1}})


def test_density_matrix_is_a_state(noisy):  # type: ignore[no-untyped-def]
    c = random_circuit(4, 25, 1)
    c.reset(2)
    rho = noisy.run(c, method="density_matrix").density_matrix
    assert rho.shape == (16, 16)
    assert np.trace(rho).real == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(rho, rho.conj().T, atol=1e-12)
    assert np.linalg.eigvalsh(rho).min() > -1e-12
    assert np.real(np.trace(rho @ rho)) < 1.0 - 1e-3  # noise made it mixed


def test_noiseless_density_matrix_is_the_pure_state(qpu):  # type: ignore[no-untyped-def]
    c = random_circuit(5, 30, 4)
    psi = reference_state(c)
    rho = qpu.run(c, method="density_matrix").density_matrix
    np.testing.assert_allclose(rho, np.outer(psi, psi.conj()), atol=1e-12)


def test_amplitude_damping_is_exact_in_the_density_matrix(rt):  # type: ignore[no-untyped-def]
    g = 0.3
    dev = QpuDevice(12, rt, {"qubits": 2, "noise": {"amplitude_damping": g}})
    rho = dev.run(Circuit(1).x(0), method="density_matrix").density_matrix
    np.testing.assert_allclose(np.diag(rho).real, [g, 1 - g], atol=1e-12)
    dep = QpuDevice(13, rt, {"qubits": 2, "noise": {"depolarizing": 0.3}})
    rho = dep.run(Circuit(1).x(0), method="density_matrix").density_matrix
    np.testing.assert_allclose(np.diag(rho).real, [0.2, 0.8], atol=1e-12)  # X and Y flip: 2p/3


def test_trajectories_agree_with_density_matrix(noisy):  # type: ignore[no-untyped-def]
    c = Circuit(3).h(0).cx(0, 1).cx(1, 2).ry(0.7, 2)
    exact = noisy.expectation(c, "ZZI", method="density_matrix")
    est = noisy.expectation(c, "ZZI", trajectories=400, seed=5)
    assert abs(est - exact) < 5 * (1 / math.sqrt(400))  # |<ZZ>| <= 1: the per-trajectory sd is <= 1


def test_noisy_shots_follow_the_density_matrix(noisy):  # type: ignore[no-untyped-def]
    c = Circuit(2, 2).x(0).cx(0, 1).measure_all()
    probs = np.real(np.diag(noisy.run(c, method="density_matrix").density_matrix))
    shots = 3000
    counts = noisy.run(c, shots=shots, seed=8, return_state=False).counts
    for idx, p in enumerate(probs):
        got = counts.get(format(idx, "02b"), 0)
        assert abs(got - shots * p) <= 5 * math.sqrt(shots * p * (1 - p)) + 1


def test_readout_error_flips_bits(rt):  # type: ignore[no-untyped-def]
    dev = QpuDevice(14, rt, {"qubits": 1, "noise": {"readout_error": [0.2, 0.05]}})
    shots = 20000
    ones = dev.run(Circuit(1, 1).x(0).measure(0, 0), shots=shots, seed=1).counts.get("0", 0)
    zeros = dev.run(Circuit(1, 1).measure(0, 0), shots=shots, seed=2).counts.get("1", 0)
    assert abs(ones - 0.2 * shots) < 5 * math.sqrt(shots * 0.16)
    assert abs(zeros - 0.05 * shots) < 5 * math.sqrt(shots * 0.0475)


def test_bad_noise_parameters_are_rejected(rt):  # type: ignore[no-untyped-def]
    with pytest.raises(dsrt.ConfigurationError, match="depolarizing must be a probability"):
        QpuDevice(15, rt, {"noise": {"depolarizing": 1.5}})
    with pytest.raises(dsrt.ConfigurationError, match="unknown noise parameter"):
        NoiseModel.from_params({"t1": 3})
    with pytest.raises(dsrt.ConfigurationError, match="at most 12 qubits"):
        QpuDevice(16, rt).run(Circuit(13), method="density_matrix")
    with pytest.raises(dsrt.ConfigurationError, match="end of its qubit"):
        QpuDevice(17, rt).run(Circuit(1, 1).measure(0, 0).x(0), method="density_matrix")
