"""Measurement, reset, conditions and shot sampling."""

from __future__ import annotations

import math

import numpy as np
import pytest
from quantum_helpers import random_circuit

from dsrt_quantum import Circuit
from dsrt_quantum.reference import reference_probabilities


def _within(count: int, shots: int, p: float, sigmas: float = 5.0) -> bool:
    sd = math.sqrt(shots * p * (1 - p)) or 1.0
    return abs(count - shots * p) <= sigmas * sd + 1


def test_bell_counts_and_seed(qpu):  # type: ignore[no-untyped-def]
    c = Circuit(2, 2).h(0).cx(0, 1).measure_all()
    r1 = qpu.run(c, shots=4000, seed=7)
    assert set(r1.counts) == {"00", "11"} and sum(r1.counts.values()) == 4000
    assert _within(r1.counts["00"], 4000, 0.5)
    assert qpu.run(c, shots=4000, seed=7).counts == r1.counts
    assert r1.modelled_seconds > 0


def test_sampling_frequencies_follow_the_born_rule(qpu):  # type: ignore[no-untyped-def]
    c = random_circuit(4, 30, 2)
    probs = reference_probabilities(c)
    c.measure_all()
    shots = 20000
    counts = qpu.run(c, shots=shots, seed=3, return_state=False).counts
    for idx, p in enumerate(probs):
        assert _within(counts.get(format(idx, "04b"), 0), shots, p), (idx, p)


def test_clbit_order_is_little_endian(qpu):  # type: ignore[no-untyped-def]
    c = Circuit(3, 3).x(0).measure(0, 0).measure(1, 1).measure(2, 2)
    assert qpu.run(c, shots=10).counts == {"001": 10}
    c2 = Circuit(2, 2).x(1).measure(1, 0).measure(0, 1)
    assert qpu.run(c2, shots=5).counts == {"01": 5}


def test_mid_circuit_measurement_reset_and_condition(qpu):  # type: ignore[no-untyped-def]
    c = Circuit(2, 2).h(0).measure(0, 0)
    c.gate("x", 1, condition=((0,), 1))  # copy the outcome onto qubit 1
    c.measure(1, 1)
    counts = qpu.run(c, shots=2000, seed=1).counts
    assert set(counts) <= {"00", "11"} and _within(counts.get("11", 0), 2000, 0.5)
    r = Circuit(1, 1).h(0).reset(0).measure(0, 0)
    assert qpu.run(r, shots=200, seed=2).counts == {"0": 200}
    res = qpu.run(Circuit(1).x(0).reset(0))
    np.testing.assert_allclose(res.statevector, [1, 0], atol=1e-12)


def test_measure_collapses_the_state(qpu):  # type: ignore[no-untyped-def]
    # A gate on the measured qubit after its measurement forces a trajectory.
    c = Circuit(2, 1).h(0).cx(0, 1).measure(0, 0).h(0)
    res = qpu.run(c, shots=1, seed=4)
    bit = int(next(iter(res.counts)))
    want = np.zeros(4, complex)
    want[2 * bit] = 2**-0.5
    want[2 * bit + 1] = (-1) ** bit * 2**-0.5
    np.testing.assert_allclose(res.statevector, want, atol=1e-12)


def test_shots_must_not_be_negative(qpu):  # type: ignore[no-untyped-def]
    import dsrt

    with pytest.raises(dsrt.ConfigurationError, match="shots"):
        qpu.run(Circuit(1), shots=-1)
