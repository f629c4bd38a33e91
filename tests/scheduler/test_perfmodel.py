"""The performance model: seeding, calibration rules, regression, persistence."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from dsrt.device import DeviceInfo
from dsrt.scheduler import PerfModel, default_model_path

INFO = DeviceInfo(id="x:0", backend="x", index=0, name="model X", peak_flops=1e9, memory_bandwidth=1e10)
OTHER = DeviceInfo(id="y:0", backend="y", index=0, name="model Y", peak_flops=4e9)


def test_seed_from_peak_before_any_measurement() -> None:
    m = PerfModel()
    t, src = m.predict("gemm", INFO, 2e9, nbytes=10**10)
    assert src == "seed"
    assert t == pytest.approx(2e9 / 1e9 + 1.0)


def test_first_measurement_dropped_then_rate_then_regression() -> None:
    m = PerfModel()
    assert not m.record("gemm", INFO, 1e6, 5.0)  # warm-up: dropped
    assert m.predict("gemm", INFO, 1e6)[1] == "seed"
    assert m.record("gemm", INFO, 1e6, 1e-3 + 1e6 * 1e-9)
    t, src = m.predict("gemm", INFO, 2e6)
    assert src == "rate" and t == pytest.approx(2 * (1e-3 + 1e-3))
    m.record("gemm", INFO, 8e6, 1e-3 + 8e6 * 1e-9)
    t, src = m.predict("gemm", INFO, 3e7)
    assert src == "regression"
    assert t == pytest.approx(1e-3 + 3e7 * 1e-9, rel=1e-6)
    assert m.calibrated("gemm", INFO) and not m.calibrated("gemm", OTHER)


def test_bucket_history_and_outliers_discarded() -> None:
    m = PerfModel()
    m.record("add", INFO, 1000, 1.0)
    for _ in range(3):
        assert m.record("add", INFO, 1000, 1e-3)
    assert not m.record("add", INFO, 1000, 1.0)  # 1000x the bucket's median: an outlier
    t, src = m.predict("add", INFO, 1020)  # same power-of-two bucket as 1000
    assert src == "history" and t == pytest.approx(1.02e-3)
    for _ in range(10):
        m.record("add", INFO, 1000, 1e-3)
    assert m.samples("add", INFO) == PerfModel.per_bucket


def test_unmeasured_device_seed_is_scaled_by_measured_ones() -> None:
    m = PerfModel()
    for _ in range(2):
        m.record("softmax", INFO, 1e6, 0.1)  # 100x slower than its peak claims
    t, src = m.predict("softmax", OTHER, 1e6)
    assert src.startswith("seed scaled")
    assert t == pytest.approx(1e6 / 4e9 * 100, rel=1e-6)


def test_persisted_atomically_and_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "m" / "perfmodel.json"
    m = PerfModel(path)
    for w in (1e6, 1e6, 4e6):
        m.record("gemm", INFO, w, w * 1e-9)
    assert m.save() == path
    assert not list(path.parent.glob(".*.tmp"))
    data = json.loads(path.read_text())
    assert data["version"] == 1 and "gemm@x:0|model X" in data["models"]
    again = PerfModel(path)
    assert again.predict("gemm", INFO, 2e6) == pytest.approx(m.predict("gemm", INFO, 2e6))


def test_unreadable_model_file_is_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "perfmodel.json"
    path.write_text("{not json")
    m = PerfModel(path)
    assert m.predict("gemm", INFO, 1e9)[1] == "seed"
    assert "ignoring unreadable performance model" in caplog.text


def test_default_path_honours_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSRT_CACHE_DIR", str(tmp_path))
    assert default_model_path() == tmp_path / "perfmodel.json"
    monkeypatch.delenv("DSRT_CACHE_DIR")
    assert default_model_path() == Path(os.path.expanduser("~")) / ".cache" / "dsrt" / "perfmodel.json"


def test_runtime_scheduler_persists_between_runtimes(tmp_path: Path) -> None:
    import numpy as np

    import dsrt

    rt = dsrt.Runtime(backends=["cpu"])
    rt.map("add", [(np.ones(1000, np.float32), np.ones(1000, np.float32))] * 4)
    path = Path(os.environ["DSRT_CACHE_DIR"]) / "perfmodel.json"
    assert path.exists()
    rt2 = dsrt.Runtime(backends=["cpu"])
    assert rt2.scheduler.model.calibrated("add", rt2.device("cpu:0").info)


def test_agreeing_outliers_replace_stale_history() -> None:
    m = PerfModel()
    m.record("gemm", INFO, 1000, 1.0)
    for _ in range(3):
        m.record("gemm", INFO, 1000, 1.0)  # history measured on a loaded machine: 1 s
    assert not m.record("gemm", INFO, 1000, 1e-3)  # one fast sample: an outlier
    assert m.record("gemm", INFO, 1000, 0.5)  # back in line: recorded, and the streak is broken
    assert m.predict("gemm", INFO, 1000)[0] > 0.5
    assert not m.record("gemm", INFO, 1000, 1e-3)
    assert not m.record("gemm", INFO, 1000, 1.1e-3)
    assert m.record("gemm", INFO, 1000, 0.9e-3)  # the third agreeing outlier: conditions changed
    t, src = m.predict("gemm", INFO, 1000)
    assert src == "history" and t == pytest.approx(1e-3, rel=0.15)
