"""User kernels: rt.compile(lang="opencl"), build errors with the log, and the on-disk binary cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

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
    cache = ProgramCache(ocl.cl, ocl.context, ocl.cl_device, ocl.id)
    source = SAXPY + "// corrupt-entry test\n"
    path = tmp_path / "opencl" / f"{cache.key(source, ())}.bin"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a binary")
    _prg, hit = cache.build(source, ())
    assert not hit and cache.stats["compiles"] == 1
    assert path.read_bytes() != b"not a binary"
