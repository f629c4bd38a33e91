"""The conformance kit's tests. Each runs against every device selected by ``--dsrt-backend``."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

import dsrt
from dsrt import dtypes as dt
from dsrt.accuracy import relative_error, tolerance
from dsrt.errors import OutOfMemoryError, ShapeError, UnsupportedKernelError
from dsrt.kernels import KERNELS, STANDARD_KERNELS, KernelSpec, reference, register_kernel
from dsrt.testing.inputs import ODD_SIZES, kernel_cases, make_inputs

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def _accumulation(kernel: str, case: dict[str, Any]) -> int:
    if kernel in ("gemm", "qgemm_int8"):
        return int(case["mkn"][1])
    if kernel in ("reduce_sum", "dot", "softmax"):
        return int(case["shape"][-1] if case.get("params", {}).get("axis") == -1 or kernel == "softmax"
                   else np.prod(case["shape"]))
    return 1


def _frobenius_error(got: np.ndarray, want: np.ndarray) -> float:
    g, w = np.asarray(got, np.float64), np.asarray(want, np.float64)
    scale = float(np.linalg.norm(w))
    return float(np.linalg.norm(g - w)) / scale if scale > 0 else float(np.linalg.norm(g))


def _holds_arrays(device: dsrt.Device) -> None:
    if not device.info.dtypes:
        pytest.skip(f"{device.id} holds no arrays (its kernels take circuits, networks... as task inputs)")


def test_device_info(dsrt_device: dsrt.Device) -> None:
    info = dsrt_device.info
    _prefix, _, index = info.id.partition(":")
    assert index.isdigit() and int(index) == info.index, f"device id {info.id!r} is not '<prefix>:<index>'"
    assert info.compute_units >= 1
    assert info.memory_bytes > 0 or not info.dtypes, "a device that holds arrays must report its memory"
    assert info.peak_flops >= 0 and info.memory_bandwidth >= 0
    for name in info.dtypes:
        dt.as_dtype(name)
    for kernel, names in info.kernels.items():
        spec = KERNELS[kernel]
        assert spec.is_task or set(names) <= set(spec.dtypes), f"{kernel}: claims dtypes the kernel does not define"
        assert spec.is_task or set(names) <= set(info.dtypes), f"{kernel}: claims dtypes the device lacks"
    json.dumps(info.to_dict())


@pytest.mark.parametrize("size", (0, *ODD_SIZES, 65537))
def test_copy_round_trip(dsrt_device: dsrt.Device, size: int) -> None:
    rng = np.random.default_rng(size)
    for name in sorted(dsrt_device.info.dtypes):
        d = dt.as_dtype(name)
        host = rng.integers(0, 255, size=size * d.itemsize, dtype=np.uint8).view(d)
        arr = dsrt_device.asarray(host)
        assert arr.shape == (size,) and arr.dtype == d and arr.device is dsrt_device
        back = arr.numpy()
        assert back.view(np.uint8).tobytes() == host.view(np.uint8).tobytes(), f"{name} x {size} changed in a round trip"


def test_copy_between_devices(dsrt_device: dsrt.Device) -> None:
    host = np.arange(4097, dtype=np.float32) if "float32" in dsrt_device.info.dtypes else np.arange(4097, dtype=np.int32)
    if dt.dtype_name(host.dtype) not in dsrt_device.info.dtypes:
        pytest.skip(f"{dsrt_device.id} holds neither float32 nor int32")
    arr = dsrt_device.asarray(host)
    twin = dsrt_device.empty(arr.shape, arr.dtype)
    dsrt_device.copy(twin, arr)
    np.testing.assert_array_equal(twin.numpy(), host)
    cpu = dsrt.default_runtime().device("cpu:0")
    on_cpu = arr.to(cpu)
    np.testing.assert_array_equal(on_cpu.numpy(), host)
    back = on_cpu.to(dsrt_device)
    np.testing.assert_array_equal(back.numpy(), host)


@pytest.mark.parametrize("kernel", STANDARD_KERNELS)
def test_kernel_against_reference(dsrt_device: dsrt.Device, kernel: str) -> None:
    claimed = sorted(dsrt_device.info.kernels.get(kernel, ()))
    if not claimed:
        spec = KERNELS[kernel]
        held = sorted(spec.dtypes & dsrt_device.info.dtypes)
        if not held:
            return  # the device holds no dtype this kernel is defined for: nothing to launch
        inputs, params = make_inputs(kernel, dt.as_dtype(held[0]), next(iter(kernel_cases(kernel))))
        if kernel in ("cast", "fill"):
            params["dtype"] = held[0]
        if any(dt.dtype_name(x.dtype) not in dsrt_device.info.dtypes for x in inputs):
            return  # an auxiliary input (a float32 scale...) cannot even live on this device
        arrays = [dsrt_device.asarray(x) for x in inputs]
        with pytest.raises(UnsupportedKernelError, match=kernel):
            dsrt_device.launch(kernel, *arrays, **params)
        return
    failures = []
    for name in claimed:
        d = dt.as_dtype(name)
        for case in kernel_cases(kernel):
            targets: list[str | None] = [None]
            if kernel == "cast":
                targets = [t for t in sorted(dsrt_device.info.dtypes)
                           if not (d in (dt.complex64, dt.complex128) and t not in ("complex64", "complex128"))]
            for target in targets:
                params_extra: dict[str, Any] = {"dtype": target} if kernel == "cast" else {}
                if kernel == "fill":
                    params_extra = {"dtype": name}
                inputs, params = make_inputs(kernel, d, case)
                if kernel == "cast" and target in ("uint8", "bool"):
                    inputs = [np.abs(x) for x in inputs]
                params.update(params_extra)
                arrays = [dsrt_device.asarray(x) for x in inputs]
                got = dsrt_device.launch(kernel, *arrays, **params).numpy()
                want = reference(kernel, *inputs, **params)
                err = relative_error(got, want)
                tol = tolerance(want.dtype, accumulate=_accumulation(kernel, case))
                bits = dsrt_device.info.precision_bits
                if bits is not None and dt.is_float(want.dtype):
                    # Analog or noisy devices are held to the precision they advertise (effective bits
                    # = -log2 of the Frobenius relative error), with two bits of slack.
                    err = _frobenius_error(got, want)
                    tol = max(tol, 4.0 * 2.0 ** -bits)
                if kernel == "cast" and target is not None:
                    tol = max(tol, tolerance(d))
                if got.shape != want.shape or got.dtype != want.dtype or not err <= tol:
                    failures.append(f"{name} {case} -> {target}: error {err:.3g} > {tol:.3g}"
                                    f" (shape {got.shape} vs {want.shape}, dtype {got.dtype} vs {want.dtype})")
    assert not failures, f"{dsrt_device.id} {kernel}: {len(failures)} mismatches:\n" + "\n".join(failures[:20])


def test_unknown_kernel_is_refused(dsrt_device: dsrt.Device) -> None:
    _holds_arrays(dsrt_device)
    name = "conformance_probe_identity"
    if name not in KERNELS:
        register_kernel(KernelSpec(
            name=name, doc="identity, implemented by no backend", arity=(1, 1), params={},
            infer=lambda inputs, params: (tuple(inputs[0].shape), inputs[0].dtype),
            reference=lambda inputs, params: inputs[0], dtypes=frozenset(dt.STANDARD_DTYPES),
        ))
    some = sorted(dsrt_device.info.dtypes)[0]
    x = dsrt_device.asarray(np.zeros(3, dt.as_dtype(some)))
    with pytest.raises(UnsupportedKernelError) as info:
        dsrt_device.launch(name, x)
    assert dsrt_device.id in str(info.value) and name in str(info.value)


def test_shape_mismatch_is_refused(dsrt_device: dsrt.Device) -> None:
    for kernel, shapes, pattern in (  # noqa: B007 - used after the loop("add", ((3,), (4,)), r"\(3,\).*\(4,\)"),
                                    ("gemm", ((3, 4), (5, 2)), "inner dimensions"),
                                    ("copy", ((3,), (4,)), "out must be")):
        names = sorted(dsrt_device.info.kernels.get(kernel, ()))
        if names:
            break
    else:
        pytest.skip(f"{dsrt_device.id} implements none of add, gemm, copy")
    d = dt.as_dtype(names[0])
    a = dsrt_device.asarray(np.zeros(shapes[0], d))
    b = dsrt_device.asarray(np.zeros(shapes[1], d))
    with pytest.raises(ShapeError, match=pattern):
        if kernel == "copy":
            dsrt_device.launch(kernel, a, out=b)
        else:
            dsrt_device.launch(kernel, a, b)


def test_allocation_beyond_capacity_is_refused(dsrt_device: dsrt.Device) -> None:
    _holds_arrays(dsrt_device)
    too_big = dsrt_device.info.memory_bytes * 4 + 4096
    with pytest.raises(OutOfMemoryError) as info:
        dsrt_device.empty((too_big,), "uint8")
    err = info.value
    assert err.requested >= too_big and err.device == dsrt_device.id
    assert str(too_big) in str(err)


def test_streams_and_events(dsrt_device: dsrt.Device) -> None:
    kernel = "add" if dsrt_device.info.kernels.get("add") else "copy"
    names = sorted(dsrt_device.info.kernels.get(kernel, ()))
    if not names:
        pytest.skip(f"{dsrt_device.id} implements neither add nor copy")
    d = dt.as_dtype(names[0])
    stream = dsrt_device.create_stream("kit")
    host = (np.arange(1023) % 100).astype(d)
    a = dsrt_device.asarray(host)
    start = stream.record_event()
    out = dsrt_device.launch(kernel, *([a, a] if kernel == "add" else [a]), stream=stream)
    end = stream.record_event()
    end.synchronize()
    assert end.query() and start.query()
    assert start.elapsed_time(end) >= 0.0
    stream.synchronize()
    np.testing.assert_array_equal(out.numpy(), reference(kernel, *([host, host] if kernel == "add" else [host])))


def test_dlpack(dsrt_device: dsrt.Device) -> None:
    code = dsrt_device.info.dlpack_device_type
    if code is None:
        pytest.skip(f"{dsrt_device.id} declares no DLPack device type")
    if code != 1:
        pytest.skip(f"{dsrt_device.id} holds DLPack device type {code}; the kit's DLPack consumer here is numpy (CPU)")
    host = np.arange(1023, dtype=np.float32)
    arr = dsrt_device.asarray(host)
    view = np.from_dlpack(arr)
    np.testing.assert_array_equal(view, host)
    assert arr.__dlpack_device__()[0] == 1
    source = np.arange(7, dtype=np.float64)
    imported = dsrt.from_dlpack(source, device=dsrt_device)
    np.testing.assert_array_equal(imported.numpy(), source)
