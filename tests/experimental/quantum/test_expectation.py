"""Pauli-string expectations against a dense numpy operator."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from quantum_helpers import random_circuit

import dsrt
from dsrt_quantum import Circuit
from dsrt_quantum.reference import reference_expectation


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 7), seed=st.integers(0, 2**31), label=st.text("IXYZ", min_size=1, max_size=7))
def test_pauli_strings_match_reference(qpu, n, seed, label):  # type: ignore[no-untyped-def]
    label = label[:n]
    c = random_circuit(n, 4 * n, seed)
    got = qpu.expectation(c, label)
    assert got == pytest.approx(reference_expectation(c, label), abs=1e-12)


def test_weighted_sums_and_known_values(qpu):  # type: ignore[no-untyped-def]
    bell = Circuit(2).h(0).cx(0, 1)
    assert qpu.expectation(bell, "ZZ") == pytest.approx(1.0)
    assert qpu.expectation(bell, "XX") == pytest.approx(1.0)
    assert qpu.expectation(bell, "YY") == pytest.approx(-1.0)
    assert qpu.expectation(bell, "ZI") == pytest.approx(0.0, abs=1e-15)
    assert qpu.expectation(bell, {"ZZ": 0.5, "XX": 2.0}) == pytest.approx(2.5)
    assert qpu.expectation(Circuit(1).x(0), [(3.0, "Z")]) == pytest.approx(-3.0)
    plus_i = Circuit(1).h(0).s(0)
    assert qpu.expectation(plus_i, "Y") == pytest.approx(1.0)


def test_bad_observable_is_a_clear_error(qpu):  # type: ignore[no-untyped-def]
    with pytest.raises(dsrt.ConfigurationError, match="observable term 'ZQ'"):
        qpu.expectation(Circuit(2), "ZQ")
    with pytest.raises(dsrt.ConfigurationError, match="up to 2"):
        qpu.expectation(Circuit(2), "ZZZ")


def test_expectation_kernel_through_launch(rt):  # type: ignore[no-untyped-def]
    c = random_circuit(5, 20, 9)
    got = rt.launch("expectation", c, device="qpu:0", observable="XZIYZ")
    assert got == pytest.approx(reference_expectation(c, "XZIYZ"), abs=1e-12)
    assert isinstance(got, float)
    np.testing.assert_allclose(dsrt.kernels.reference("expectation", c, observable="XZIYZ"), got, atol=1e-12)
