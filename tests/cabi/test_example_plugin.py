"""The C example backend: built and installed as CI does, and the conformance kit catches a wrong C kernel."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import EXAMPLE_SOURCE, ROOT


def _kit(backend: str, pythonpath: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """The conformance kit, unchanged, in a fresh interpreter that sees ``pythonpath`` first."""
    env = dict(os.environ, PYTHONPATH=str(pythonpath), DSRT_PLUGINS=f"cpu,{backend}")
    return subprocess.run([sys.executable, "-m", "pytest", "--pyargs", "dsrt.testing", "--dsrt-backend", backend,
                           "-p", "no:cacheprovider", "-q", *extra], capture_output=True, text=True, env=env,
                          timeout=600, cwd=pythonpath)


def _plugin_package(where: Path, backend: str, library: Path) -> Path:
    """A one-module plugin distribution in ``where`` registering ``library`` as ``backend`` by entry point."""
    module = f"{backend}_plugin"
    (where / f"{module}.py").write_text(
        f"from dsrt.cabi import library_plugin\nplugin = library_plugin({backend!r}, {str(library)!r})\n")
    meta = where / f"{module}-0.0.dist-info"
    meta.mkdir()
    (meta / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.0\n")
    (meta / "entry_points.txt").write_text(f"[dsrt]\n{backend} = {module}:plugin\n")
    return where


def test_pip_builds_and_installs_the_example_and_it_passes_the_kit(tmp_path: Path) -> None:
    target = tmp_path / "site"
    res = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                          "--target", str(target), str(ROOT / "examples" / "c-plugin")],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    library = target / "dsrt_c_example" / "libdsrt_c_example.so"
    assert library.exists(), sorted(p.name for p in (target / "dsrt_c_example").iterdir())
    # Registered under its own name here, so the editable install of the same package cannot shadow it.
    _plugin_package(tmp_path, "cbuilt", library)
    res = _kit("cbuilt", tmp_path)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert "passed" in res.stdout and "failed" not in res.stdout


def test_kit_catches_a_wrong_c_kernel(tmp_path: Path, build: Callable[..., Path]) -> None:
    source = EXAMPLE_SOURCE.read_text()
    right = "o[i] = a[i] + b[i];"
    assert source.count(right) == 1, "the example's float32 add loop changed; update this test"
    wrong = tmp_path / "cwrong.c"
    wrong.write_text(source.replace(right, "o[i] = a[i] + b[i] + (i == 3 ? 0.5f : 0.0f);"))
    library = build(name="libcwrong", source=wrong)
    _plugin_package(tmp_path, "cwrong", library)
    res = _kit("cwrong", tmp_path, "-k", "kernel_against_reference and (add or gemm or reduce_sum)")
    out = res.stdout
    assert res.returncode == 1, out[-4000:] + res.stderr[-2000:]
    assert "test_kernel_against_reference[cwrong:0-add-float32]" in out and "mismatches" in out
    assert "FAILED" in out and "test_kernel_against_reference[cwrong:0-gemm" not in out  # only add is wrong


@pytest.mark.parametrize("name", ["cexample"])
def test_installed_example_is_listed(name: str) -> None:
    """The example installed in this environment (CI: pip install -e ./examples/c-plugin) is a backend."""
    import dsrt

    rt = dsrt.Runtime(allow=["cpu", name])
    st = rt.backends.get(name)
    if st is None:
        pytest.skip(f"dsrt-c-example is not installed here (pip install ./examples/c-plugin); known: {sorted(rt.backends)}")
    assert st.status == "available", st.reason
    dev = st.devices[0]
    assert dev.info.properties["library"].endswith("libdsrt_c_example.so")
    assert {"add", "gemm", "reduce_sum"} <= set(dev.info.kernels)
    assert {"float16", "float32"} <= set(dev.info.kernels["gemm"])
