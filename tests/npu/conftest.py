"""Fixtures that stand up the emulated CANN: an install tree, device nodes and the emulated acl."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

EMULATED = Path(__file__).parent / "emulated"


def make_cann(tmp_path: Path, *, devices: int = 1, library: bool = True) -> dict[str, str]:
    root = tmp_path / "Ascend" / "ascend-toolkit" / "latest"
    (root / "lib64").mkdir(parents=True)
    if library:
        (root / "lib64" / "libascendcl.so").write_bytes(b"")
    dev = tmp_path / "dev"
    dev.mkdir()
    for i in range(devices):
        (dev / f"davinci{i}").write_text("")
    (dev / "davinci_manager").write_text("")
    return {"ASCEND_HOME_PATH": str(root), "DSRT_NPU_DEV_DIR": str(dev)}


@pytest.fixture
def acl(monkeypatch, tmp_path):
    """The emulated acl module, freshly reset, importable as ``acl``, with CANN env set."""
    monkeypatch.syspath_prepend(str(EMULATED))
    sys.modules.pop("acl", None)
    import acl as emulated

    from dsrt_npu import session

    emulated.state.reset()
    session.forget(emulated)
    for key, value in make_cann(tmp_path).items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("ASCEND_RT_VISIBLE_DEVICES", raising=False)
    yield emulated
    sys.modules.pop("acl", None)
