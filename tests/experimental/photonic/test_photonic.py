"""The simulated photonic backend: exactness when ideal, error sources, seeds, calibration, kernels."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dsrt
from dsrt.errors import ConfigurationError, ShapeError

pytest.importorskip("dsrt_photonic", reason="the photonic plugin is not installed")

from dsrt_photonic import IDEAL, REALISTIC, PhotonicDevice, create_simulated
from dsrt_photonic.clements import decompose, layout, reconstruct
from dsrt_photonic.engine import PhotonicEngine


def _random_unitary(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, n)) + 1j * rng.standard_normal((n, n))
    q, r = np.linalg.qr(z)
    return q * (np.diag(r) / np.abs(np.diag(r)))


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 24), seed=st.integers(0, 2**31 - 1))
def test_clements_rebuilds_any_unitary_to_machine_precision(n: int, seed: int) -> None:
    u = _random_unitary(n, seed)
    dec = decompose(u)
    assert dec.layout.n_mzis == n * (n - 1) // 2
    assert np.max(np.abs(reconstruct(dec) - u)) < 1e-12


def test_layout_is_rectangular_with_depth_n() -> None:
    for n in (4, 7, 16):
        lay = layout(n)
        assert lay.n_layers == n
        assert sorted(len(ix) for ix in lay.layers)[0] >= n // 2 - 1


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_ideal_settings_reproduce_numpy_gemm_to_1e12() -> None:
    eng = PhotonicEngine(IDEAL.replace(mesh_size=8))
    rng = np.random.default_rng(1)
    w, x = rng.standard_normal((19, 13)), rng.standard_normal((13, 6))
    y, tiles = eng.matmul(w, x)
    assert tiles == 3 * 2
    assert _rel(y, w @ x) < 1e-12


def _error(**setting: float) -> float:
    eng = PhotonicEngine(IDEAL.replace(mesh_size=12, seed=3, **setting))
    rng = np.random.default_rng(5)
    w, x = rng.standard_normal((12, 12)), rng.standard_normal((12, 32))
    return _rel(eng.matmul(w, x)[0], w @ x)


@pytest.mark.parametrize("name, values", [
    ("phase_error", [0.0, 1e-3, 4e-3, 1.6e-2]),
    ("coupler_error", [0.0, 5e-3, 2e-2, 8e-2]),
    ("loss_db", [0.0, 0.1, 0.4, 1.6]),
    ("detector_noise", [0.0, 1e-3, 4e-3, 1.6e-2]),
])
def test_each_error_source_alone_lowers_accuracy_monotonically(name: str, values: list[float]) -> None:
    errs = [_error(**{name: v, "loss_spread": 0.1}) for v in values]
    assert errs[0] < 1e-12
    assert all(a < b for a, b in itertools.pairwise(errs)), errs


@pytest.mark.parametrize("name, bits", [("phase_bits", [16, 12, 8, 5]), ("input_bits", [14, 10, 7, 4]),
                                        ("output_bits", [14, 10, 7, 4])])
def test_fewer_converter_bits_lower_accuracy_monotonically(name: str, bits: list[int]) -> None:
    errs = [_error(**{name: b}) for b in bits]
    assert all(a < b for a, b in itertools.pairwise(errs)), errs


def test_same_seed_same_device_other_seed_other_device() -> None:
    rng = np.random.default_rng(9)
    w, x = rng.standard_normal((16, 16)), rng.standard_normal((16, 8))
    a = PhotonicEngine(REALISTIC.replace(mesh_size=16, seed=4)).matmul(w, x)[0]
    b = PhotonicEngine(REALISTIC.replace(mesh_size=16, seed=4)).matmul(w, x)[0]
    c = PhotonicEngine(REALISTIC.replace(mesh_size=16, seed=5)).matmul(w, x)[0]
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("setting", [dict(phase_error=5e-3), dict(phase_error=2e-3, coupler_error=5e-3),
                                     REALISTIC.__dict__])
def test_calibration_improves_accuracy(setting: dict) -> None:
    params = IDEAL.replace(**{**setting, "mesh_size": 16, "seed": 2})
    eng = PhotonicEngine(params)
    before = eng.measure_bits(trials=2)
    eng.calibrate()
    after = eng.measure_bits(trials=2)
    assert after > before + 0.05, (before, after)


def test_device_kernels_and_advertised_precision() -> None:
    dev = PhotonicDevice(0, REALISTIC.replace(mesh_size=16))
    assert dev.info.simulated and dev.info.precision_bits is not None and 0.2 < dev.info.precision_bits < 12.0
    assert dev.info.supports("gemm", "float32") and dev.info.supports("matvec", "float32")
    rng = np.random.default_rng(0)
    a = rng.standard_normal((20, 40)).astype(np.float32)
    b = rng.standard_normal((24, 40)).astype(np.float32)
    c = rng.standard_normal((20, 24)).astype(np.float32)
    out = dev.copy_to_host(dev.launch("gemm", dev.asarray(a), dev.asarray(b), dev.asarray(c),
                                      alpha=0.5, beta=2.0, trans_b=True))
    ref = 0.5 * a.astype(np.float64) @ b.T.astype(np.float64) + 2.0 * c
    assert out.dtype == np.float32 and out.shape == (20, 24)
    assert _rel(out, ref) < 2.0 ** -(dev.info.precision_bits - 1.5)
    assert _rel(out, ref) > 1e-6  # the analog result is really noisy
    x = rng.standard_normal(40).astype(np.float32)
    y = dev.copy_to_host(dev.launch("matvec", dev.asarray(a), dev.asarray(x)))
    assert _rel(y, a.astype(np.float64) @ x) < 2.0 ** -(dev.info.precision_bits - 2)
    with pytest.raises(ShapeError):
        dev.launch("matvec", dev.asarray(a), dev.asarray(x[:5]))


def test_cost_model_counts_tiles_and_feeds_trace() -> None:
    dev = PhotonicDevice(7, IDEAL.replace(mesh_size=8, reprogram_s=1e-5, clock_hz=1e9, pipeline_s=1e-9),
                         calibrate=False)
    cm = dev.cost_model
    # 20x30 on an 8-mode mesh: 3 x 4 tiles, each reprogrammed and streaming 5 vectors.
    expect = 12 * 1e-5 + 12 * (5 / 1e9 + 1e-9)
    assert cm.predict("gemm", [(20, 30), (30, 5)]) == pytest.approx(expect)
    assert cm.predict("gemm", [(30, 20), (5, 30)], {"trans_a": True, "trans_b": True}) == pytest.approx(expect)
    assert cm.predict("matvec", [(8, 8), (8,)]) == pytest.approx(1e-5 + 1e-9 + 1e-9)
    with pytest.raises(ShapeError):
        cm.predict("softmax", [(3,)])
    rt = dsrt.Runtime()
    rt.add_device(dev)
    a = dev.asarray(np.ones((20, 30), np.float32))
    b = dev.asarray(np.ones((30, 5), np.float32))
    t0 = dev.modelled_time_s
    with rt.trace() as tracer:
        dev.launch("gemm", a, b)
    assert dev.modelled_time_s - t0 == pytest.approx(expect)
    modelled = [e for e in tracer.events if e["name"] == "gemm (modelled)"]
    assert modelled and modelled[0]["args"]["modelled_s"] == pytest.approx(expect)
    assert modelled[0]["args"]["tiles"] == 12


def test_backend_registration_probe_topology_params_and_workload() -> None:
    rt = dsrt.Runtime()
    status = rt.backends["photonic"]
    assert status.status == "available" and status.spec is not None and status.spec.experimental
    dev = rt.device("photonic:0")
    assert dev.info.properties["mesh_size"] == REALISTIC.mesh_size
    sim = create_simulated(rt, "photonic:3", {"n": 8, "phase_bits": 10, "seed": 11})
    assert sim.id == "photonic:3" and sim.params.mesh_size == 8 and sim.params.phase_bits == 10
    with pytest.raises(ConfigurationError, match=r"photonic:4.*unknown photonic setting 'phase_bitz'"):
        create_simulated(rt, "photonic:4", {"phase_bitz": 3})
    with pytest.raises(ConfigurationError, match="mesh_size"):
        create_simulated(rt, "photonic:5", {"mesh_size": 1})
    items = [w for w in rt.workload_items() if w.name.startswith("photonic")]
    assert items
    for item in items:
        err, tol, flops = item.run(dev)
        assert err <= tol and flops > 0
