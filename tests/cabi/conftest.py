"""Building C backend libraries for the C ABI tests (gcc, into tmp_path)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

import dsrt

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
TESTLIB = HERE / "testlib.c"
EXAMPLE_SOURCE = ROOT / "examples" / "c-plugin" / "csrc" / "cexample.c"


def compile_library(source: Path, out: Path, defines: Sequence[str] = ()) -> Path:
    """Compile ``source`` into the shared library ``out`` against the shipped header."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler (gcc) on this machine")
    cmd = [cc, "-shared", "-fPIC", "-O1", "-std=c11", "-Wall", "-Wextra", "-Werror", "-Wno-unused-function",
           f"-I{dsrt.c_header_path().parent}", *(f"-D{d}" for d in defines), str(source), "-o", str(out), "-lpthread"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, f"{' '.join(cmd)}\n{res.stderr}"
    return out


@pytest.fixture(scope="session")
def build(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``build(*defines, name=..., source=...)``: compile a test library (once per session per name)."""
    built: dict[tuple[str, tuple[str, ...], Path], Path] = {}
    where = tmp_path_factory.mktemp("cabi-libs")

    def make(*defines: str, name: str = "libtest", source: Path = TESTLIB) -> Path:
        key = (name, defines, source)
        if key not in built:
            built[key] = compile_library(source, where / f"{name}.so", defines)
        return built[key]

    return make
