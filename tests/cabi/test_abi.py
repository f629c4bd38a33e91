"""The C ABI loader: version negotiation, failures at load time, and errors of every table entry."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cffi
import numpy as np
import pytest

import dsrt
from dsrt.cabi import library_plugin, load_devices
from dsrt.cabi.device import CDevice, CStreamDevice
from dsrt.errors import (
    DeviceError,
    DeviceLostError,
    DsrtError,
    KernelLaunchError,
    OutOfMemoryError,
    PluginVersionError,
)

from .conftest import ROOT

DSRT_ERR_INVALID_ARGUMENT, DSRT_ERR_OUT_OF_MEMORY, DSRT_ERR_DEVICE_LOST = 2, 3, 5


class _control:
    """The test library's own switches, in the same loaded image the core uses (dlopen shares it)."""

    def __init__(self, path: Path) -> None:
        self.ffi = cffi.FFI()
        self.ffi.cdef("void testlib_fail(const char* entry, int32_t code); int testlib_poison_calls(void);"
                      " int testlib_live_errors(void);")
        self.lib = self.ffi.dlopen(str(path))

    def testlib_fail(self, entry: bytes, code: int) -> None:
        self.lib.testlib_fail(entry, code)

    def testlib_poison_calls(self) -> int:
        return int(self.lib.testlib_poison_calls())

    def testlib_live_errors(self) -> int:
        return int(self.lib.testlib_live_errors())


def _runtime(*plugins: Any) -> dsrt.Runtime:
    return dsrt.Runtime(plugins=plugins, allow=["cpu"])


def _add_works(dev: dsrt.Device) -> None:
    x = np.arange(37, dtype=np.float32)
    a, b = dev.asarray(x), dev.asarray(2 * x)
    np.testing.assert_array_equal(dev.launch("add", a, b).numpy(), 3 * x)


def test_header_compiles_as_c_and_cpp(tmp_path: Path) -> None:
    src = tmp_path / "use.c"
    src.write_text('#include "dsrt_plugin.h"\nsize_t table_size(void) { return sizeof(DsrtPluginApi); }\n')
    inc = f"-I{dsrt.c_header_path().parent}"
    for compiler, extra in (("gcc", ["-std=c99", "-x", "c"]), ("g++", ["-std=c++11", "-x", "c++"])):
        res = subprocess.run([compiler, *extra, "-Wall", "-Wextra", "-Werror", "-pedantic", inc, "-c", str(src),
                              "-o", str(tmp_path / "use.o")], capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
    assert dsrt.c_header_path().name == "dsrt_plugin.h"


def test_current_table(build: Callable[..., Path]) -> None:
    path = build()
    rt = _runtime(library_plugin("tlib", path))
    dev = rt.device("tlib:0")
    assert isinstance(dev, CStreamDevice) and not dev.synchronous
    assert dev.info.kernels == {"add": frozenset({"float32"})}
    assert dev.info.memory_bytes == 1 << 20 and dev.info.properties["c_abi"] == "1.0"
    _add_works(dev)
    stream = dev.create_stream("s")
    start = stream.record_event()
    end = stream.record_event()
    assert end.query() and start.elapsed_time(end) == pytest.approx(0.25)
    assert rt.device("cpu:0").launch("add", rt.device("cpu:0").asarray(np.ones(3, np.float32)),
                                     rt.device("cpu:0").asarray(np.ones(3, np.float32))).numpy()[0] == 2


def test_older_smaller_table_reads_missing_entries_as_absent(build: Callable[..., Path]) -> None:
    path = build("OLDER_TABLE", name="libolder")
    control = _control(path)
    dev = load_devices(path, "older")[0]
    assert not isinstance(dev, CStreamDevice), "entries beyond struct_size must be treated as absent"
    _add_works(dev)
    stream = dev.create_stream("s")
    ev = stream.record_event()
    assert ev.query()
    assert control.testlib_poison_calls() == 0, "the core called an entry beyond the table's struct_size"


def test_newer_larger_table_is_read_up_to_what_the_core_knows(build: Callable[..., Path]) -> None:
    path = build("NEWER_TABLE", name="libnewer")
    control = _control(path)
    dev = load_devices(path, "newer")[0]
    assert isinstance(dev, CStreamDevice) and dev.lib.abi == (1, 7)
    _add_works(dev)
    assert control.testlib_poison_calls() == 0


@pytest.mark.parametrize("defines,status,pieces", [
    (("WRONG_MAJOR",), "failed", ["ABI 2.0", "major 1", "dsrt_plugin.h"]),
    (("NO_SYMBOL",), "failed", ["does not export dsrt_plugin_get_api"]),
    (("INIT_UNAVAILABLE",), "unavailable", ["initialize failed", "injected failure in initialize",
                                            "DSRT_ERR_UNAVAILABLE"]),
    (("INIT_BROKEN",), "failed", ["initialize failed", "injected failure in initialize", "DSRT_ERR_INTERNAL"]),
])
def test_broken_library_is_listed_with_its_reason(build: Callable[..., Path], defines: tuple[str, ...], status: str,
                                                  pieces: list[str]) -> None:
    path = build(*defines, name="lib" + defines[0].lower())
    good = build(name="libgood")
    rt = _runtime(library_plugin("broken", path), library_plugin("good", good))
    st = rt.backends["broken"]
    assert st.status == status, st.reason
    for piece in pieces:
        assert piece in st.reason
    assert str(path) in st.reason or "initialize" in st.reason
    _add_works(rt.device("good:0"))  # every other backend keeps working
    _add_works(rt.device("cpu:0"))
    with pytest.raises(DsrtError, match="broken"):
        rt.device("broken:0")


def test_missing_library_is_unavailable(tmp_path: Path) -> None:
    rt = _runtime(library_plugin("gone", tmp_path / "libnothere.so"))
    st = rt.backends["gone"]
    assert st.status == "unavailable" and "libnothere.so" in st.reason and "not found" in st.reason
    _add_works(rt.device("cpu:0"))


def test_wrong_major_raises_plugin_version_error(build: Callable[..., Path]) -> None:
    with pytest.raises(PluginVersionError, match=r"implements dsrt C ABI 2\.0; this dsrt reads ABI major 1"):
        load_devices(build("WRONG_MAJOR", name="libmajor"), "major")


def test_probe_entries_fail_with_the_call_named(build: Callable[..., Path]) -> None:
    path = build(name="libprobe")
    control = _control(path)
    for entry in ("device_count", "device_describe"):
        control.testlib_fail(entry.encode(), DSRT_ERR_INVALID_ARGUMENT)
        with pytest.raises(DeviceError) as info:
            load_devices(path, "probe")
        msg = str(info.value)
        assert f"{entry} failed" in msg and f"injected failure in {entry}" in msg
        assert "DSRT_ERR_INVALID_ARGUMENT (2)" in msg and "probe" in msg
        assert info.value.call == entry and info.value.code == DSRT_ERR_INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert control.testlib_live_errors() == 0


def _operations(dev: dsrt.Device) -> dict[str, Callable[[], Any]]:
    x = np.arange(16, dtype=np.float32)
    a = dev.asarray(x)
    b = dev.asarray(x)
    stream = dev.create_stream("ops")
    ev = stream.record_event()
    return {
        "allocate": lambda: (dev.pool.empty_cache(), dev.empty((1 << 16,), "float32")),  # a new pool segment
        "free": lambda: dev._free(dev._allocate(64)),
        "copy_h2d": lambda: dev.asarray(x),
        "copy_d2h": lambda: a.numpy(),
        "copy_d2d": lambda: dev.copy(b, a),
        "synchronize": lambda: dev.synchronize(),
        "launch": lambda: dev.launch("add", a, b),
        "stream_create": lambda: dev.create_stream("another"),
        "event_record": lambda: stream.record_event(),
        "event_query": lambda: ev.query(),
        "event_synchronize": lambda: ev.synchronize(),
        "event_elapsed": lambda: ev.elapsed_time(ev),
    }


@pytest.mark.parametrize("entry", ["allocate", "free", "copy_h2d", "copy_d2h", "copy_d2d", "synchronize", "launch",
                                   "stream_create", "event_record", "event_query", "event_synchronize", "event_elapsed"])
def test_every_entry_error_becomes_a_dsrt_error(build: Callable[..., Path], entry: str) -> None:
    path = build(name="liberrors")
    control = _control(path)
    dev = load_devices(path, "errs")[0]
    op = _operations(dev)[entry]
    op()  # works before the failure is injected
    control.testlib_fail(entry.encode(), DSRT_ERR_INVALID_ARGUMENT)
    with pytest.raises(DsrtError) as info:
        op()
    err = info.value
    msg = str(err)
    assert "errs:0" in msg and f"injected failure in {entry}" in msg, msg
    assert entry in msg and "DSRT_ERR_INVALID_ARGUMENT (2)" in msg, msg
    assert err.code == DSRT_ERR_INVALID_ARGUMENT and entry in err.call  # type: ignore[attr-defined]
    assert isinstance(err, KernelLaunchError if entry == "launch" else DeviceError)
    if entry == "launch":
        assert isinstance(err, KernelLaunchError) and err.kernel == "add" and err.device == "errs:0"
    op()  # the failure was one call only; the device still works
    assert control.testlib_live_errors() == 0, "every error object is handed back with error_destroy"


def test_error_codes_pick_the_error_class(build: Callable[..., Path]) -> None:
    path = build(name="libcodes")
    control = _control(path)
    dev = load_devices(path, "codes")[0]
    x = dev.asarray(np.ones(4, np.float32))
    control.testlib_fail(b"launch", DSRT_ERR_DEVICE_LOST)
    with pytest.raises(DeviceLostError, match="codes:0: launch of kernel 'add' failed"):
        dev.launch("add", x, x)
    control.testlib_fail(b"allocate", DSRT_ERR_OUT_OF_MEMORY)
    with pytest.raises(OutOfMemoryError) as info:
        dev._allocate(4096)
    assert info.value.requested == 4096 and info.value.device == "codes:0"
    assert "injected failure in allocate" in str(info.value)
    control.testlib_fail(b"allocate", DSRT_ERR_OUT_OF_MEMORY)
    with pytest.raises(OutOfMemoryError):  # through the pool: it retries, then reports
        dev.empty((1 << 18,), "float32")
    assert control.testlib_live_errors() == 0


def test_parameters_that_cannot_cross_are_refused(build: Callable[..., Path]) -> None:
    dev = load_devices(build(name="libparams"), "params")[0]
    assert isinstance(dev, CDevice)
    with pytest.raises(dsrt.ConfigurationError, match="cannot be passed through the dsrt C ABI"):
        dev._pack_params("gemm", {"alpha": 1 + 2j})
    arr, count, _keep = dev._pack_params("gemm", {"alpha": 0.5, "trans_a": True, "axis": None, "dtype": "float16",
                                                  "shape": (3, 4), "n": 7})
    assert count == 6
    assert (arr[0].kind, arr[0].f) == (3, 0.5) and (arr[1].kind, arr[1].i) == (1, 1) and arr[2].kind == 0
    assert dev.ffi.string(arr[3].s) == b"float16" and list(arr[4].ints[0:arr[4].count]) == [3, 4]
    assert (arr[5].kind, arr[5].i) == (2, 7)


def test_pool_moves_keep_launch_operands_current(build: Callable[..., Path]) -> None:
    """A launch after the array's bytes were moved uses the new handle (cached operands follow the generation)."""
    dev = load_devices(build(name="libmoves"), "moves")[0]
    x = np.arange(8, dtype=np.float32)
    a = dev.asarray(x)
    np.testing.assert_array_equal(dev.launch("add", a, a).numpy(), 2 * x)
    al = a.allocation
    fresh = dev._allocate(al.nbytes)
    staged = np.empty(al.nbytes, np.uint8)
    dev._copy_out(al.handle, al.offset, staged, dev.default_stream)
    dev._copy_in(fresh, 0, 2 * staged.view(np.float32), dev.default_stream)  # new bytes: 2x
    old = (al.handle, al.offset)
    al.handle, al.offset = fresh, 0
    al.generation += 1
    try:
        np.testing.assert_array_equal(dev.launch("add", a, a).numpy(), 4 * x)
    finally:
        al.handle, al.offset = old
        al.generation += 1
        dev._free(fresh)


def test_example_package_source_is_where_ci_installs_it() -> None:
    assert (ROOT / "examples" / "c-plugin" / "pyproject.toml").exists()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "./examples/c-plugin" in ci
