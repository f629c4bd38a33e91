"""User kernels: rt.compile(lang="opencl"), build errors with the log, and the on-disk binary cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kernel_cache_common import CORRUPTIONS, check_case, copy_tree, corrupt, entry_is_valid, manifests, run_cases

import dsrt
from dsrt.errors import ConfigurationError, KernelCompileError

SAXPY = """
__kernel void saxpy(__global float* y, __global const float* x, const float a, const uint n) {
    uint i = get_global_id(0);
    if (i < n) y[i] = a * x[i] + y[i];
}
"""


def test_compile_and_launch(rt: dsrt.Runtime, ocl: dsrt.Device) -> None:
    k = rt.compile(SAXPY, lang="opencl", name="saxpy", device="opencl:0")
    x = np.arange(1023, dtype=np.float32)
    y = ocl.asarray(np.ones(1023, np.float32))
    k.launch(y, ocl.asarray(x), np.float32(2.0), np.uint32(1023), global_size=1024)
    np.testing.assert_allclose(y.numpy(), 2 * x + 1)
    again = rt.compile(SAXPY, lang="opencl", name="saxpy", device="opencl:0")
    assert again.cache_hit


def test_build_error_carries_the_compiler_log(ocl: dsrt.Device) -> None:
    bad = "__kernel void broken(__global float* y) { y[0] = undefined_name; }"
    with pytest.raises(KernelCompileError) as info:
        ocl.compile(bad, lang="opencl", name="broken")
    assert "undefined_name" in info.value.log and "opencl:0" in str(info.value)


def test_missing_kernel_name_and_global_size(ocl: dsrt.Device) -> None:
    with pytest.raises(ConfigurationError, match="no kernel 'nope'"):
        ocl.compile(SAXPY, lang="opencl", name="nope")
    k = ocl.compile(SAXPY, lang="opencl", name="saxpy")
    with pytest.raises(ConfigurationError, match="global_size"):
        k.launch(ocl.empty(4))


_CHILD = textwrap.dedent("""
    import json, sys
    import numpy as np
    import dsrt
    rt = dsrt.Runtime(backends=["opencl"])
    dev = rt.device("opencl:0")
    k = rt.compile(sys.argv[1], lang="opencl", name="saxpy", device=dev, options=["-DUNUSED=1"])
    y = dev.asarray(np.ones(8, np.float32))
    k.launch(y, dev.asarray(np.arange(8, dtype=np.float32)), np.float32(3), np.uint32(8), global_size=8)
    print(json.dumps({"hit": k.cache_hit, "stats": dev.programs.stats, "y": y.numpy().tolist()}))
""")


def test_second_process_compiles_nothing(ocl: dsrt.Device, tmp_path: Path) -> None:
    env = dict(os.environ, DSRT_CACHE_DIR=str(tmp_path))
    source = SAXPY + f"\n// unique to this test run: {tmp_path.name}\n"
    runs = []
    for _ in range(2):
        res = subprocess.run([sys.executable, "-c", _CHILD, source], env=env, capture_output=True, text=True,
                             timeout=120, check=False)
        assert res.returncode == 0, res.stderr
        runs.append(json.loads(res.stdout.strip().splitlines()[-1]))
    first, second = runs
    assert first["stats"]["compiles"] == 1 and not first["hit"]
    assert second["stats"]["compiles"] == 0 and second["stats"]["disk_hits"] == 1 and second["hit"]
    assert second["y"] == [1 + 3 * i for i in range(8)]
    assert len(list((tmp_path / "opencl").glob("*.bin"))) == 1


def test_corrupt_cache_entry_is_rebuilt(ocl: dsrt.Device, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dsrt_opencl.cache import ProgramCache

    monkeypatch.setenv("DSRT_CACHE_DIR", str(tmp_path))
    dev: Any = ocl
    source = SAXPY + "// corrupt-entry test\n"
    ProgramCache(dev.cl, dev.context, dev.cl_device, dev.id).build(source, ())
    (manifest,) = manifests(tmp_path / "opencl")
    artifact = tmp_path / "opencl" / manifest["artifact"]
    artifact.write_bytes(b"not a binary".ljust(manifest["size"], b"\0"))  # same size: only the hash tells
    cache = ProgramCache(dev.cl, dev.context, dev.cl_device, dev.id)
    _prg, hit = cache.build(source, ())
    assert not hit and cache.stats["compiles"] == 1 and cache.stats["reasons"] == {"hash-mismatch": 1}
    assert entry_is_valid(tmp_path / "opencl", manifest["key"])


# ---------------------------------------------------------------------------- corrupt entries, each load in its own process
def _cl_kernel(factor: float, offset: float) -> dict[str, Any]:
    src = ("__kernel void kk(__global float* x, const uint n) {\n"
           f"    uint i = get_global_id(0); if (i < n) x[i] = x[i] * {factor:.1f}f + {offset:.1f}f;\n}}\n"
           f"// {os.getpid()}-{id(object())}\n")
    return {"source": src, "name": "kk", "factor": factor, "offset": offset}


@pytest.fixture(scope="module")
def cl_outcomes(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path, dict[str, Any]]:
    """Populate a cache with kernels A and B, corrupt A in a copy per corruption kind, and load each
    copy in a forked child (a crash fails that case only); plus a read-only directory and two runs
    that count pickle.loads with pyopencl's cache directory pointed at a fresh XDG_CACHE_HOME."""
    top = tmp_path_factory.mktemp("cl-kernel-cache")
    spec: dict[str, Any] = {"backend": "opencl", "device": "opencl:0", "lang": "opencl", "dtype": "float32",
                            "kernels": {"A": _cl_kernel(2.0, 1.0), "B": _cl_kernel(3.0, -1.0)},
                            "preload": ["pyopencl", "dsrt_opencl.device"]}
    xdg = {"XDG_CACHE_HOME": str(top / "xdg")}
    base = top / "base"
    run = run_cases({**spec, "cases": [{"id": "A", "dir": str(base), "compile": ["A"], "env": xdg},
                                       {"id": "B", "dir": str(base), "compile": ["B"], "env": xdg}]})
    a, b = manifests(base / "opencl")
    cases: list[dict[str, Any]] = []
    for how in CORRUPTIONS:
        corrupt(copy_tree(base, top / how) / "opencl", how, a, b)
        cases.append({"id": how, "dir": str(top / how), "compile": ["A"], "env": xdg})
    empty = top / "read-only"
    empty.mkdir(mode=0o555)
    cases.append({"id": "read-only", "dir": str(empty), "compile": ["A"], "read_only": True, "env": xdg})
    outcomes = {**run, **run_cases({**spec, "cases": cases})}
    empty.chmod(0o755)
    return outcomes, top, a


@pytest.mark.parametrize("how", list(CORRUPTIONS))
def test_corrupt_binary_is_rebuilt_not_loaded(cl_outcomes: tuple[dict[str, Any], Path, dict[str, Any]],
                                              how: str) -> None:
    outcomes, top, a = cl_outcomes
    res = check_case(outcomes[how], how)
    assert res["A"] == {"hit": False, "ok": True}, res  # never a hit, right numbers
    stats = res["stats"]
    assert stats["rejected"] == 1 and set(stats["reasons"]) <= CORRUPTIONS[how] and stats["stores"] == 1, stats
    assert entry_is_valid(top / how / "opencl", a["key"])


def test_read_only_cache_directory_still_compiles(cl_outcomes: tuple[dict[str, Any], Path, dict[str, Any]]) -> None:
    res = check_case(cl_outcomes[0]["read-only"], "read-only")
    assert res["A"] == {"hit": False, "ok": True} and res["warnings"] == 1 and res["stats"]["fallback"], res


def test_launches_unpickle_nothing(cl_outcomes: tuple[dict[str, Any], Path, dict[str, Any]]) -> None:
    """pyopencl would unpickle its invoker cache (generated Python code) from the user's cache
    directory on each kernel's first launch; dsrt turns that cache off."""
    outcomes, top, _a = cl_outcomes
    for case in ("A", "B", *CORRUPTIONS, "read-only"):
        assert check_case(outcomes[case], case)["pickle_loads"] == 0, case
    assert not (top / "xdg" / "pytools").exists()
