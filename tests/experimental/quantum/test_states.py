"""Exact states: Bell, GHZ, QFT against the DFT, random circuits against a dense numpy unitary."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from quantum_helpers import dense_unitary, random_circuit

from dsrt_quantum import Circuit
from dsrt_quantum.workload import qft

TOL = {"complex128": 1e-12, "complex64": 2e-5}


def _qpu(rt, precision):  # type: ignore[no-untyped-def]
    from dsrt_quantum import QpuDevice

    return rt.device("qpu:0") if precision == "complex128" else QpuDevice(7, rt, {"precision": precision})


@pytest.mark.parametrize("precision", ["complex128", "complex64"])
def test_bell_and_ghz(rt, precision):  # type: ignore[no-untyped-def]
    qpu = _qpu(rt, precision)
    bell = qpu.run(Circuit(2).h(0).cx(0, 1)).statevector
    assert bell.dtype == np.dtype(precision)
    np.testing.assert_allclose(bell, [2**-0.5, 0, 0, 2**-0.5], atol=TOL[precision])
    n = 5
    c = Circuit(n).h(0)
    for q in range(n - 1):
        c.cx(q, q + 1)
    want = np.zeros(1 << n, complex)
    want[0] = want[-1] = 2**-0.5
    np.testing.assert_allclose(qpu.run(c).statevector, want, atol=TOL[precision])


@pytest.mark.parametrize("precision", ["complex128", "complex64"])
@pytest.mark.parametrize("n", [3, 7, 11])
def test_qft_matches_dft(rt, precision, n):  # type: ignore[no-untyped-def]
    qpu = _qpu(rt, precision)
    rng = np.random.default_rng(n)
    x = rng.normal(size=1 << n) + 1j * rng.normal(size=1 << n)
    x /= np.linalg.norm(x)
    # Prepare |x> with a basis state and apply the QFT as one dense matrix check on the operator
    # (columns from several basis states), and on |x> through the statevector loaded directly.
    for basis in (0, 1, (1 << n) - 3):
        c = Circuit(n)
        for q in range(n):
            if (basis >> q) & 1:
                c.x(q)
        c.instructions.extend(qft(n).instructions)
        e = np.zeros(1 << n, complex)
        e[basis] = 1
        np.testing.assert_allclose(qpu.run(c).statevector, np.fft.ifft(e, norm="ortho"), atol=TOL[precision])
    u = dense_unitary(qft(n)) if n <= 7 else None
    if u is not None:
        np.testing.assert_allclose(u, np.fft.ifft(np.eye(1 << n), axis=0, norm="ortho"), atol=1e-12)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 10), seed=st.integers(0, 2**31), fusion=st.booleans(), max_fused=st.integers(1, 6))
def test_random_circuits_match_dense_unitary(qpu, n, seed, fusion, max_fused):  # type: ignore[no-untyped-def]
    c = random_circuit(n, 6 * n + 4, seed)
    u = dense_unitary(c)
    res = qpu.run(c, fusion=fusion, max_fused=max_fused)
    np.testing.assert_allclose(res.statevector, u[:, 0], atol=1e-12)
    # Another column of the unitary: start from a basis state prepared with X gates.
    basis = seed % (1 << n)
    prep = Circuit(n)
    for q in range(n):
        if (basis >> q) & 1:
            prep.x(q)
    prep.instructions.extend(c.instructions)
    np.testing.assert_allclose(qpu.run(prep, fusion=fusion).statevector, u[:, basis], atol=1e-12)


def test_complex64_random_circuit(rt):  # type: ignore[no-untyped-def]
    qpu = _qpu(rt, "complex64")
    c = random_circuit(9, 120, 5)
    got = qpu.run(c).statevector
    assert got.dtype == np.complex64
    np.testing.assert_allclose(got, dense_unitary(c)[:, 0], atol=2e-5)


def test_large_state_uses_parallel_kernels(qpu):  # type: ignore[no-untyped-def]
    # 16 qubits crosses the OpenMP threshold (14); the check is against the numpy reference simulator.
    from dsrt_quantum.reference import reference_state

    c = random_circuit(16, 60, 11)
    np.testing.assert_allclose(qpu.run(c).statevector, reference_state(c), atol=1e-12)
