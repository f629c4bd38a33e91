"""Running circuits: fusion, measurement, reset, shots, expectations, noise and density matrices.

:class:`Simulator` owns nothing between runs except its settings; each run allocates its state on the
host device (after checking it fits) and releases it when done.

Shots: when every measurement is terminal (nothing touches a qubit after it is measured), nothing is
conditioned on a measured bit, there are no resets and no gate noise, the circuit runs once and all
shots are sampled from the final state. Otherwise every shot is its own trajectory.

Time: ``seconds`` in a result is host wall time; ``modelled_seconds`` is what the modelled QPU would
take, from :class:`Timing` (gate durations along the circuit's critical path, plus a per-shot
overhead for reset and readout), times the number of shots.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dsrt.device import Device
from dsrt.errors import ConfigurationError, OutOfMemoryError, format_bytes

from .calibrate import cost_model
from .circuit import Circuit, Instruction
from .fusion import CostModel, FusedOp, fuse
from .noise import PAULIS, NoiseModel
from .statevector import StateVector

__all__ = ["Simulator", "QuantumResult", "Timing", "parse_observable", "free_memory"]

#: Widest register the density-matrix method accepts (its state has 4^n entries).
MAX_DENSITY_QUBITS = 12
#: Most shots one run samples; ``DSRT_QUANTUM_MAX_SHOTS`` overrides it. The records must also fit
#: in the host's free memory (about ``32 + 9 x clbits`` bytes a shot), checked before sampling.
MAX_SHOTS = 100_000_000
#: Most shot x step iterations of the trajectory method (mid-circuit measurements, resets, gate
#: noise), which runs every shot on its own; ``DSRT_QUANTUM_MAX_TRAJECTORY_STEPS`` overrides it.
MAX_TRAJECTORY_STEPS = 10_000_000


def _budget(var: str, default: int) -> int:
    text = os.environ.get(var, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ConfigurationError(f"{var}='{text}' is not an integer") from None
    if value < 1:
        raise ConfigurationError(f"{var} must be positive, got {text}")
    return value


@dataclass(frozen=True)
class Timing:
    """Durations of the modelled QPU in seconds (typical superconducting-qubit figures)."""

    gate_1q: float = 35e-9
    gate_2q: float = 300e-9
    measure: float = 1e-6
    reset: float = 1e-6
    shot_overhead: float = 100e-6

    def circuit_seconds(self, circuit: Circuit) -> float:
        """Critical-path seconds of one shot (multi-qubit gates cost ``(k-1)^2`` two-qubit gates)."""
        clock = [0.0] * circuit.num_qubits
        for inst in circuit.instructions:
            if inst.kind == "barrier":
                t = max(clock[q] for q in inst.qubits)
                for q in inst.qubits:
                    clock[q] = t
                continue
            k = len(inst.qubits)
            dur = {"measure": self.measure, "reset": self.reset}.get(
                inst.kind, self.gate_1q if k == 1 else self.gate_2q * (k - 1) ** 2)
            t = max(clock[q] for q in inst.qubits) + dur
            for q in inst.qubits:
                clock[q] = t
        return max(clock) + self.shot_overhead


@dataclass
class QuantumResult:
    """The outcome of one circuit.

    ``counts`` maps bitstrings (classical bit 0 rightmost) to shot counts; ``statevector`` is the
    final state (before terminal measurements when shots were sampled from it), little-endian in
    the qubits; ``density_matrix`` likewise for the density-matrix method. ``seconds`` is host wall
    time, ``modelled_seconds`` the QPU cost model's time (see :class:`Timing`).
    """

    num_qubits: int
    shots: int
    counts: dict[str, int] = field(default_factory=dict)
    statevector: np.ndarray | None = None
    density_matrix: np.ndarray | None = None
    memory: list[str] | None = None
    seconds: float = 0.0
    modelled_seconds: float = 0.0
    method: str = "statevector"
    blocks: int = 0
    gates: int = 0
    device: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no amplitudes)."""
        return {"device": self.device, "num_qubits": self.num_qubits, "shots": self.shots,
                "counts": dict(sorted(self.counts.items())), "seconds": self.seconds,
                "modelled_seconds": self.modelled_seconds, "method": self.method,
                "gates": self.gates, "fused_blocks": self.blocks}


def free_memory(host: Device) -> int:
    """Bytes a new state could take on ``host``: the OS's available memory for a CPU host, else the
    device's memory less what its pool has reserved."""
    if host.info.backend == "cpu":
        try:
            with open("/proc/meminfo") as fh:
                for line in fh:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        try:
            return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            return host.info.memory_bytes
    reserved = 0
    try:
        reserved = int(host.pool.stats().get("reserved_bytes", 0))
    except Exception:  # noqa: BLE001 - a pool without statistics reserves nothing we can see
        reserved = 0
    return max(0, host.info.memory_bytes - reserved)


def parse_observable(obs: Any, n: int) -> list[tuple[complex, str]]:
    """``"ZZI"``, ``{"ZZ": 0.5, "XI": 1}`` or ``[(0.5, "ZZ"), ...]`` -> ``[(coeff, label)]``.

    Labels read like Qiskit's: the rightmost character acts on qubit 0. A label shorter than the
    register is padded with ``I`` on the high qubits.
    """
    if isinstance(obs, str):
        terms = [(1.0 + 0j, obs)]
    elif isinstance(obs, Mapping):
        terms = [(complex(c), str(lbl)) for lbl, c in obs.items()]
    else:
        terms = [(complex(c), str(lbl)) for c, lbl in obs]
    out = []
    for c, lbl in terms:
        lbl = lbl.strip().upper()
        if len(lbl) > n or set(lbl) - set("IXYZ"):
            raise ConfigurationError(f"observable term '{lbl}': expected up to {n} characters of I, X, Y, Z")
        out.append((c, lbl.rjust(n, "I")))
    return out


def _masks(label: str) -> tuple[int, int, int]:
    xm = zm = ny = 0
    for q, ch in enumerate(reversed(label)):
        if ch in "XY":
            xm |= 1 << q
        if ch in "ZY":
            zm |= 1 << q
        if ch == "Y":
            ny += 1
    return xm, zm, ny


class Simulator:
    """Runs circuits on states of ``dtype`` held on ``host``.

    ``noise``: a :class:`NoiseModel`; ``fusion``: fuse gates (on by default); ``max_fused``: widest
    dense block (2 to 6); ``memory_limit``: bytes a state may use at most (``None``: the host's free
    memory); ``device_id``: named in errors.
    """

    def __init__(self, host: Device, dtype: Any = np.complex128, *, noise: NoiseModel | None = None,
                 fusion: bool = True, max_fused: int = 5, memory_limit: int | None = None,
                 timing: Timing | None = None, device_id: str = "qpu") -> None:
        self.host = host
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.complex64, np.complex128):
            raise ConfigurationError(f"{device_id}: precision must be complex64 or complex128, got {self.dtype}")
        self.noise = noise or NoiseModel()
        self.fusion = fusion
        if not 1 <= max_fused <= 6:
            raise ConfigurationError(f"{device_id}: max_fused must be 1 to 6, got {max_fused}")
        self.max_fused = max_fused
        self.memory_limit = memory_limit
        self.timing = timing or Timing()
        self.device_id = device_id

    # ------------------------------------------------------------------ planning
    def _model(self) -> CostModel:
        base = cost_model(self.host, self.dtype)
        return CostModel(dense=base.dense, diag=base.diag, launch=base.launch, max_dense=self.max_fused,
                         max_diag=max(self.max_fused, 10))

    def check_memory(self, nqubits: int, *, extra_per_amp: int = 0, what: str = "statevector") -> int:
        """Refuse (``OutOfMemoryError``) a state of ``2^nqubits`` amplitudes that would not fit; return its bytes."""
        need = (1 << nqubits) * (self.dtype.itemsize + extra_per_amp)
        free = free_memory(self.host)
        cap = free if self.memory_limit is None else min(free, int(self.memory_limit))
        if need > cap:
            raise OutOfMemoryError(
                device=self.device_id, requested=need, capacity=cap,
                detail=(f"a {nqubits}-qubit {self.dtype.name} {what} needs {format_bytes(need)} on host"
                        f" {self.host.id}, which has {format_bytes(cap)} free; use fewer qubits or complex64"),
            )
        return need

    def check_shots(self, circuit: Circuit, shots: int, *, trajectory_steps: int = 0) -> None:
        """Refuse, before any work, ``shots`` past the shot budget, records that would not fit in the host's
        free memory, or (``trajectory_steps`` > 0) a trajectory run of more than the step budget."""
        max_shots = _budget("DSRT_QUANTUM_MAX_SHOTS", MAX_SHOTS)
        if shots > max_shots:
            raise ConfigurationError(f"{self.device_id}: {shots} shots; the limit is {max_shots}"
                                     " (set DSRT_QUANTUM_MAX_SHOTS to raise it)")
        if trajectory_steps:
            work = max(shots, 1) * trajectory_steps
            max_work = _budget("DSRT_QUANTUM_MAX_TRAJECTORY_STEPS", MAX_TRAJECTORY_STEPS)
            if work > max_work:
                raise ConfigurationError(
                    f"{self.device_id}: {max(shots, 1)} shots x {trajectory_steps} steps run one trajectory each"
                    f" ({work} steps); the limit is {max_work} (DSRT_QUANTUM_MAX_TRAJECTORY_STEPS)")
        if shots and circuit.has_measurements:
            need = shots * (32 + 9 * max(circuit.num_clbits, 1))
            free = free_memory(self.host)
            cap = free if self.memory_limit is None else min(free, int(self.memory_limit))
            if need > cap:
                raise OutOfMemoryError(device=self.device_id, requested=need, capacity=cap,
                                       detail=f"{shots} shots of {circuit.num_clbits} bits need"
                                              f" {format_bytes(need)} of records on host {self.host.id}")

    def plan(self, circuit: Circuit) -> list[FusedOp | Instruction]:
        """The steps of one run: fused blocks of plain gates, and everything else in order."""
        steps: list[FusedOp | Instruction] = []
        run: list[tuple[tuple[int, ...], np.ndarray]] = []
        model = self._model() if self.fusion else CostModel()

        def flush() -> None:
            if run:
                steps.extend(fuse(run, circuit.num_qubits, model, enabled=self.fusion))
                run.clear()

        split = self.noise.gate_noise
        for inst in circuit.instructions:
            if inst.kind == "gate" and inst.condition is None and not split:
                assert inst.matrix is not None
                run.append((inst.qubits, inst.matrix))
                continue
            flush()
            if inst.kind != "barrier":
                steps.append(inst)
        flush()
        return steps

    @staticmethod
    def terminal_measurements(circuit: Circuit) -> bool:
        """True when no reset, condition or operation follows a measurement on its qubit."""
        measured: set[int] = set()
        for inst in circuit.instructions:
            if inst.condition is not None or inst.kind == "reset":
                return False
            if inst.kind == "measure":
                if inst.qubits[0] in measured:
                    return False
                measured.add(inst.qubits[0])
            elif inst.kind == "gate" and measured.intersection(inst.qubits):
                return False
        return True

    # ------------------------------------------------------------------ running
    def run(self, circuit: Circuit, *, shots: int = 0, seed: int | None = None, return_state: bool = True,
            method: str = "statevector", memory: bool = False) -> QuantumResult:
        """Run ``circuit``; sample ``shots`` measurement records (``seed`` makes them repeatable)."""
        if shots < 0:
            raise ConfigurationError(f"{self.device_id}: shots must be >= 0, got {shots}")
        if method == "density_matrix":
            return self._run_density(circuit, shots=shots, seed=seed, return_state=return_state)
        if method != "statevector":
            raise ConfigurationError(f"{self.device_id}: unknown method '{method}' (statevector, density_matrix)")
        n = circuit.num_qubits
        rng = np.random.default_rng(seed)
        t0 = time.perf_counter()
        single = self.terminal_measurements(circuit) and not self.noise.gate_noise
        self.check_memory(n, extra_per_amp=8 if (single and shots and circuit.has_measurements) else 0)
        # Before planning: a trajectory runs at most one step per instruction (fusion only merges gates).
        self.check_shots(circuit, shots, trajectory_steps=0 if single else max(len(circuit.instructions), 1))
        steps = self.plan(circuit)
        sv = StateVector(self.host, n, self.dtype)
        res = QuantumResult(num_qubits=n, shots=shots, method=method, device=self.device_id,
                            gates=circuit.gate_count(), blocks=sum(isinstance(s, FusedOp) for s in steps))
        records: np.ndarray | None = None
        if single:
            for st in steps:
                if isinstance(st, FusedOp):
                    sv.apply(st)
            if shots and circuit.has_measurements:
                records = self._sample_terminal(circuit, sv.probabilities(), shots, rng)
        else:
            records = np.zeros((max(shots, 1), circuit.num_clbits), dtype=np.int8)
            for s in range(max(shots, 1)):
                sv.reset_to(0)
                self._trajectory(sv, steps, records[s], rng)
            if not shots:
                records = None
        if records is not None:
            records = self.noise.flip_readout(records, rng) if single else records
            res.counts, res.memory = _count(records, memory)
        if return_state:
            res.statevector = sv.to_numpy()
        res.seconds = time.perf_counter() - t0
        res.modelled_seconds = self.timing.circuit_seconds(circuit) * max(shots, 1)
        return res

    def _sample_terminal(self, circuit: Circuit, probs: np.ndarray, shots: int,
                         rng: np.random.Generator) -> np.ndarray:
        cdf = np.cumsum(probs)
        u = rng.random(shots) * cdf[-1]
        idx = np.minimum(np.searchsorted(cdf, u, side="right"), cdf.size - 1)
        rec = np.zeros((shots, circuit.num_clbits), dtype=np.int8)
        for inst in circuit.instructions:
            if inst.kind == "measure":
                rec[:, inst.clbits[0]] = (idx >> inst.qubits[0]) & 1
        return rec

    def _measure(self, sv: StateVector, q: int, rng: np.random.Generator) -> int:
        p1 = min(max(sv.prob_one(q), 0.0), 1.0)
        outcome = int(rng.random() < p1)
        p = p1 if outcome else 1.0 - p1
        sv.collapse(q, outcome, 1.0 / math.sqrt(p) if p > 0 else 0.0)
        return outcome

    def _trajectory(self, sv: StateVector, steps: Sequence[FusedOp | Instruction], bits: np.ndarray,
                    rng: np.random.Generator) -> None:
        kraus = self.noise.kraus()
        p10, p01 = self.noise.readout_error
        for st in steps:
            if isinstance(st, FusedOp):
                sv.apply(st)
                continue
            if st.condition is not None:
                cbits, value = st.condition
                have = sum(int(bits[b]) << i for i, b in enumerate(cbits))
                if have != value:
                    continue
            if st.kind == "gate":
                assert st.matrix is not None
                sv.apply_dense(st.qubits, st.matrix)
                for q in st.qubits:
                    for ops in kraus:
                        self._apply_channel(sv, q, ops, rng)
            elif st.kind == "measure":
                b = self._measure(sv, st.qubits[0], rng)
                if rng.random() < (p10 if b else p01):
                    b = 1 - b
                bits[st.clbits[0]] = b
            elif st.kind == "reset":
                if self._measure(sv, st.qubits[0], rng):
                    sv.apply_dense(st.qubits, PAULIS["X"])

    @staticmethod
    def _apply_channel(sv: StateVector, q: int, ops: Sequence[np.ndarray], rng: np.random.Generator) -> None:
        """Apply one Kraus operator chosen with its Born probability, renormalised."""
        if all(np.allclose(k.conj().T @ k, np.trace(k.conj().T @ k) / 2 * np.eye(2)) for k in ops):
            # Every K^dagger K is a multiple of I (Pauli channels): probabilities do not depend on the state.
            weights = np.array([np.real(np.trace(k.conj().T @ k)) / 2 for k in ops])
            i = int(rng.choice(len(ops), p=weights / weights.sum()))
            if i or not np.allclose(ops[i], ops[i][0, 0] * np.eye(2)):
                sv.apply_dense((q,), ops[i] / math.sqrt(weights[i]))
            return
        p1 = sv.prob_one(q)
        u = rng.random()
        acc = 0.0
        for k in ops:
            e = k.conj().T @ k  # the effect; its expectation is the branch probability
            pk = float(np.real(e[0, 0] * (1 - p1) + e[1, 1] * p1))
            acc += pk
            if u < acc or k is ops[-1]:
                if pk > 0:
                    sv.apply_dense((q,), k / math.sqrt(pk))
                return

    # ------------------------------------------------------------------ expectations
    def expectation(self, circuit: Circuit, observable: Any, *, seed: int | None = None,
                    trajectories: int = 200, method: str = "statevector") -> float:
        """``<psi| O |psi>`` of the circuit's final state (measurements are ignored).

        With gate noise, the average over ``trajectories`` trajectories, or exact with
        ``method="density_matrix"``.
        """
        terms = parse_observable(observable, circuit.num_qubits)
        gates_only = Circuit(circuit.num_qubits, circuit.num_clbits, name=circuit.name)
        gates_only.instructions = [i for i in circuit.instructions if i.kind != "measure"]
        if method == "density_matrix":
            res = self._run_density(gates_only, shots=0, seed=seed, return_state=True)
            assert res.density_matrix is not None
            return _dm_expectation(res.density_matrix, terms)
        self.check_memory(circuit.num_qubits)
        rng = np.random.default_rng(seed)
        steps = self.plan(gates_only)
        sv = StateVector(self.host, circuit.num_qubits, self.dtype)
        noisy = self.noise.gate_noise or any(i.kind == "reset" or i.condition for i in gates_only.instructions)
        reps = trajectories if noisy else 1
        total = 0.0
        scratch = np.zeros(max(circuit.num_clbits, 1), dtype=np.int8)
        for _ in range(reps):
            sv.reset_to(0)
            self._trajectory(sv, steps, scratch, rng)
            for c, lbl in terms:
                xm, zm, ny = _masks(lbl)
                total += float(np.real(c * (1j ** ny) * sv.pauli(xm, zm)))
        return total / reps

    # ------------------------------------------------------------------ density matrices
    def _run_density(self, circuit: Circuit, *, shots: int, seed: int | None, return_state: bool) -> QuantumResult:
        n = circuit.num_qubits
        if n > MAX_DENSITY_QUBITS:
            raise ConfigurationError(
                f"{self.device_id}: the density-matrix method takes at most {MAX_DENSITY_QUBITS} qubits,"
                f" the circuit has {n}; use method='statevector' (noise by trajectories)")
        for inst in circuit.instructions:
            if inst.condition is not None:
                raise ConfigurationError(f"{self.device_id}: the density-matrix method runs no conditioned gates")
        if not _terminal_ignoring_reset(circuit):
            raise ConfigurationError(
                f"{self.device_id}: the density-matrix method needs every measurement at the end of its qubit")
        self.check_memory(2 * n, what="density matrix")
        self.check_shots(circuit, shots)
        t0 = time.perf_counter()
        rng = np.random.default_rng(seed)
        model = self._model() if self.fusion else CostModel()
        channels = [np.sum([np.kron(k, k.conj()) for k in ops], axis=0) for ops in self.noise.kraus()]
        reset_ch = np.kron(np.array([[1, 0], [0, 0]]), np.array([[1, 0], [0, 0]])) + np.kron(
            np.array([[0, 1], [0, 0]]), np.array([[0, 1], [0, 0]]))
        lifted: list[tuple[tuple[int, ...], np.ndarray]] = []
        for inst in circuit.instructions:
            if inst.kind == "gate":
                assert inst.matrix is not None
                lifted.append((tuple(q + n for q in inst.qubits), inst.matrix))
                lifted.append((inst.qubits, inst.matrix.conj()))
                for q in inst.qubits:
                    lifted.extend(((q + n, q), ch) for ch in channels)
            elif inst.kind == "reset":
                q = inst.qubits[0]
                lifted.append(((q + n, q), reset_ch.astype(np.complex128)))
        rho = StateVector(self.host, 2 * n, self.dtype)
        for op in fuse(lifted, 2 * n, model, enabled=self.fusion):
            rho.apply(op)
        dm = rho.to_numpy().reshape(1 << n, 1 << n)
        res = QuantumResult(num_qubits=n, shots=shots, method="density_matrix", device=self.device_id,
                            gates=circuit.gate_count())
        if shots and circuit.has_measurements:
            probs = np.clip(np.real(np.diagonal(dm)).astype(np.float64), 0.0, None)
            rec = self._sample_terminal(circuit, probs, shots, rng)
            res.counts, res.memory = _count(self.noise.flip_readout(rec, rng), False)
        if return_state:
            res.density_matrix = dm
        res.seconds = time.perf_counter() - t0
        res.modelled_seconds = self.timing.circuit_seconds(circuit) * max(shots, 1)
        return res


def _terminal_ignoring_reset(circuit: Circuit) -> bool:
    measured: set[int] = set()
    for inst in circuit.instructions:
        if inst.kind == "measure":
            if inst.qubits[0] in measured:
                return False
            measured.add(inst.qubits[0])
        elif inst.kind in ("gate", "reset") and measured.intersection(inst.qubits):
            return False
    return True


def _dm_expectation(dm: np.ndarray, terms: Sequence[tuple[complex, str]]) -> float:
    idx = np.arange(dm.shape[0])
    total = 0.0
    for c, lbl in terms:
        xm, zm, ny = _masks(lbl)
        sign = np.where(np.array([bin(int(i) & zm).count("1") & 1 for i in idx]), -1.0, 1.0)
        total += float(np.real(c * (1j ** ny) * np.sum(sign * dm[idx, idx ^ xm])))
    return total


def _count(records: np.ndarray, keep: bool) -> tuple[dict[str, int], list[str] | None]:
    """Bitstrings (classical bit 0 rightmost) and their counts."""
    if records.shape[1] == 0:
        return {"": int(records.shape[0])}, ([""] * records.shape[0] if keep else None)
    weights = (1 << np.arange(records.shape[1], dtype=np.int64))
    values = records.astype(np.int64) @ weights
    uniq, cnt = np.unique(values, return_counts=True)
    width = records.shape[1]
    counts = {format(int(v), f"0{width}b"): int(c) for v, c in zip(uniq, cnt, strict=True)}
    mem = [format(int(v), f"0{width}b") for v in values] if keep else None
    return counts, mem
