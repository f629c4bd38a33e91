"""The conformance kit's tests. Each runs against every device selected by ``--dsrt-backend``."""

from __future__ import annotations

import gc
import json
from typing import Any

import numpy as np
import pytest

import dsrt
from dsrt import dtypes as dt
from dsrt.accuracy import relative_error, tolerance
from dsrt.array import DLPACK_CPU, DLPACK_CUDA
from dsrt.errors import DsrtError, OutOfMemoryError, ShapeError, UnsupportedKernelError
from dsrt.kernels import KERNELS, STANDARD_KERNELS, KernelSpec, reference, register_kernel
from dsrt.testing.inputs import ODD_SIZES, generic_cases, kernel_cases, make_inputs

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


def _precision_floor(device: dsrt.Device) -> float:
    """The error an inexact device may show: four times 2**-bits of the precision it advertises
    (two bits of slack), or 0 for an exact device."""
    bits = device.info.precision_bits
    return 0.0 if bits is None else 4.0 * 2.0 ** -bits


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
    rt = dsrt.default_runtime()
    others = [d for d in rt.devices if d is not dsrt_device and d.info.host_visible and not d.info.simulated]
    cpu = others[0] if others else rt.default_device  # a host-memory device other than the one under test
    on_cpu = arr.to(cpu)
    np.testing.assert_array_equal(on_cpu.numpy(), host)
    back = on_cpu.to(dsrt_device)
    np.testing.assert_array_equal(back.numpy(), host)


def _standard_case_failures(device: dsrt.Device, kernel: str, name: str) -> list[str]:
    """Run every kit case of standard ``kernel`` in dtype ``name`` on ``device``; one line per mismatch."""
    d = dt.as_dtype(name)
    failures = []
    for case in kernel_cases(kernel):
        targets: list[str | None] = [None]
        if kernel == "cast":
            targets = [t for t in sorted(device.info.dtypes)
                       if not (d in (dt.complex64, dt.complex128) and t not in ("complex64", "complex128"))]
        for target in targets:
            params_extra: dict[str, Any] = {"dtype": target} if kernel == "cast" else {}
            if kernel == "fill":
                params_extra = {"dtype": name}
            inputs, params = make_inputs(kernel, d, case)
            if kernel == "cast" and target in ("uint8", "bool"):
                inputs = [np.abs(x) for x in inputs]
            params.update(params_extra)
            arrays = [device.asarray(x) for x in inputs]
            got = device.launch(kernel, *arrays, **params).numpy()
            want = reference(kernel, *inputs, **params)
            err = relative_error(got, want)
            tol = tolerance(want.dtype, accumulate=_accumulation(kernel, case))
            bits = device.info.precision_bits
            if bits is not None and dt.is_float(want.dtype):
                # Analog or noisy devices are held to the precision they advertise (effective bits
                # = -log2 of the Frobenius relative error), with two bits of slack.
                err = _frobenius_error(got, want)
                tol = max(tol, _precision_floor(device))
            if kernel == "cast" and target is not None:
                tol = max(tol, tolerance(d))
            if got.shape != want.shape or got.dtype != want.dtype or not err <= tol:
                failures.append(f"{name} {case} -> {target}: error {err:.3g} > {tol:.3g}"
                                f" (shape {got.shape} vs {want.shape}, dtype {got.dtype} vs {want.dtype})")
    return failures


def test_kernel_against_reference(dsrt_device: dsrt.Device, dsrt_kernel: str, dsrt_dtype: str) -> None:
    """A standard kernel in one dtype the device claims, at every kit case, against the numpy reference.

    Parametrized by the kit's pytest plugin: a (kernel, dtype) the device holds but does not claim is
    a skipped param with that reason, so what a device does not implement never shows as passed."""
    failures = _standard_case_failures(dsrt_device, dsrt_kernel, dsrt_dtype)
    assert not failures, (f"{dsrt_device.id} {dsrt_kernel} {dsrt_dtype}: {len(failures)} mismatches:\n"
                          + "\n".join(failures[:20]))


def test_unclaimed_kernels_are_refused(dsrt_device: dsrt.Device) -> None:
    """Every standard kernel in every dtype the device holds but does not claim raises UnsupportedKernelError."""
    _holds_arrays(dsrt_device)
    info = dsrt_device.info
    wrong = []
    checked = 0
    for kernel in STANDARD_KERNELS:
        spec = KERNELS[kernel]
        for name in sorted((spec.dtypes & info.dtypes) - set(info.kernels.get(kernel, ()))):
            inputs, params = make_inputs(kernel, dt.as_dtype(name), next(iter(kernel_cases(kernel))))
            if kernel in ("cast", "fill"):
                params["dtype"] = name
            if any(dt.dtype_name(x.dtype) not in info.dtypes for x in inputs):
                continue  # an auxiliary input (a float32 scale...) cannot even live on this device
            arrays = [dsrt_device.asarray(x) for x in inputs]
            checked += 1
            try:
                dsrt_device.launch(kernel, *arrays, **params)
            except UnsupportedKernelError as exc:
                if kernel not in str(exc) or dsrt_device.id not in str(exc):
                    wrong.append(f"{kernel} {name}: the refusal names neither kernel nor device: {exc}")
            except Exception as exc:  # noqa: BLE001 - any other outcome is the finding
                wrong.append(f"{kernel} {name}: raised {type(exc).__name__}: {exc}")
            else:
                wrong.append(f"{kernel} {name}: ran, but {dsrt_device.id} does not claim it")
    if not checked:
        pytest.skip(f"{dsrt_device.id} claims every standard kernel in every dtype it holds")
    assert not wrong, f"{dsrt_device.id}: unclaimed kernels not refused with UnsupportedKernelError:\n" + "\n".join(wrong)


def test_out_may_be_one_of_the_inputs(dsrt_device: dsrt.Device) -> None:
    """``out=`` an input gives the reference result, for every standard kernel the device claims, at
    every kit case where an input has the output's shape and dtype (``gemm(a, b, c, beta=..., out=c)``,
    ``add(x, y, out=x)``...): every input is read before ``out`` is written."""
    _holds_arrays(dsrt_device)
    wrong, checked = [], 0
    for kernel in STANDARD_KERNELS:
        claimed = sorted(dsrt_device.info.kernels.get(kernel, ()))
        if not claimed or kernel in ("fill", "cast"):
            continue
        name = "float32" if "float32" in claimed else claimed[0]
        cases = list(kernel_cases(kernel))
        if kernel == "gemm":  # square, so out= may also be a or b
            cases += [{"mkn": (16, 16, 16)}, {"mkn": (16, 16, 16), "params": {"trans_b": True, "alpha": 2.0, "beta": 0.5}}]
        for case in cases:
            inputs, params = make_inputs(kernel, dt.as_dtype(name), case)
            want = reference(kernel, *inputs, **params)
            for i, x in enumerate(inputs):
                if x.shape != want.shape or x.dtype != want.dtype:
                    continue
                arrays = [dsrt_device.asarray(v) for v in inputs]
                got = dsrt_device.launch(kernel, *arrays, out=arrays[i], **params).numpy()
                checked += 1
                tol = max(tolerance(want.dtype, accumulate=_accumulation(kernel, case)), _precision_floor(dsrt_device))
                err = relative_error(got, want)
                if not err <= tol:
                    wrong.append(f"{kernel} {name} {case} out=input {i}: error {err:.3g} > {tol:.3g}")
    if not checked:
        pytest.skip(f"{dsrt_device.id} claims no standard kernel whose output has an input's shape and dtype")
    assert not wrong, f"{dsrt_device.id}: out= an input gave wrong results:\n" + "\n".join(wrong[:20])


_EDGE_CASES: list[tuple[str, list[tuple[int, ...]], dict[str, Any]]] = [
    ("add", [(0,), (0,)], {}), ("exp", [(3, 0)], {}), ("add", [(), ()], {}), ("exp", [()], {}),
    ("copy", [()], {}), ("scale", [(0,)], {"alpha": 2.0}), ("reduce_sum", [(0,)], {}),
    ("reduce_sum", [(3, 0)], {"axis": -1}), ("reduce_sum", [()], {}), ("reduce_max", [()], {}),
    ("dot", [(0,), (0,)], {}), ("softmax", [(0, 4)], {}), ("gemm", [(3, 0), (0, 4)], {}),
    ("gemm", [(3, 0), (0, 4), (3, 4)], {"beta": 0.5}), ("gemm", [(0, 5), (5, 4)], {}),
]


def test_empty_and_zero_dimensional_operands(dsrt_device: dsrt.Device) -> None:
    """Operands with no elements (a zero extent, a GEMM with k = 0) and 0-d operands give the
    reference result, shape included, for every such case of a kernel the device claims in float32."""
    _holds_arrays(dsrt_device)
    rng = np.random.default_rng(0)
    wrong, checked = [], 0
    for kernel, shapes, params in _EDGE_CASES:
        if "float32" not in dsrt_device.info.kernels.get(kernel, ()):
            continue
        inputs = [(rng.standard_normal(shape) + 0.5).astype(np.float32) for shape in shapes]
        want = reference(kernel, *inputs, **params)
        got = dsrt_device.launch(kernel, *[dsrt_device.asarray(x) for x in inputs], **params).numpy()
        checked += 1
        terms = max([1, *(int(np.prod(s)) for s in shapes)])
        tol = max(tolerance(want.dtype, accumulate=terms), _precision_floor(dsrt_device))
        if got.shape != want.shape or not relative_error(got, want) <= tol:
            wrong.append(f"{kernel}{shapes} {params}: got {got.shape} {got.ravel()[:3]}, want {want.shape} {want.ravel()[:3]}")
    if not checked:
        pytest.skip(f"{dsrt_device.id} claims none of the edge-case kernels in float32")
    assert not wrong, f"{dsrt_device.id}: empty or 0-d operands gave wrong results:\n" + "\n".join(wrong)


def _mismatch(got: np.ndarray, want: np.ndarray) -> float:
    """relative_error over the positions where ``got`` and ``want`` are not the same non-finite value."""
    g, w = np.asarray(got), np.asarray(want)
    if g.shape != w.shape:
        return float("inf")
    if g.dtype.kind in "fc" or dt.is_float(g.dtype) or dt.is_float(w.dtype):
        kind = np.complex128 if np.iscomplexobj(w) else np.float64
        g, w = g.astype(kind), w.astype(kind)
        same = ~np.isfinite(w) & ((g == w) | (np.isnan(g) & np.isnan(w)))
        if (~np.isfinite(w) & ~same).any() or (~np.isfinite(g) & np.isfinite(w)).any():
            return float("inf")
        g, w = g[~same], w[~same]
    return relative_error(g, w)


def _tolerance_or_exact(dtype: Any, terms: int) -> float:
    """The dtype's tolerance; 0 (exact) for a dtype dsrt does not define one for."""
    try:
        return tolerance(dtype, accumulate=terms)
    except (KeyError, TypeError, DsrtError):
        return 0.0


def test_plugin_kernel_against_reference(dsrt_device: dsrt.Device, dsrt_plugin_kernel: str, dsrt_dtype: str) -> None:
    """A kernel a plugin registered (``dsrt_register_kernels``), in one dtype the device claims, against
    the spec's own numpy reference, on inputs built from the spec alone (:func:`generic_cases`).

    The pass mark is the dtype's :func:`~dsrt.accuracy.tolerance`, allowing for accumulation over the
    terms each output element sums as the kit can tell from shapes alone (1 for elementwise kernels,
    the input size for full reductions, the contracted length for matrix products)."""
    kernel, name = dsrt_plugin_kernel, dsrt_dtype
    spec = KERNELS[kernel]
    cases, why = generic_cases(spec, dt.as_dtype(name))
    if not cases:
        pytest.skip(f"{dsrt_device.id} {kernel} {name}: {why}")
    failures = []
    for case in cases:
        inputs, params = case.inputs, case.params
        arrays = [dsrt_device.asarray(x) for x in inputs]
        bound = spec.bind(inputs, params)
        inferred = spec.infer(inputs, bound)
        assert inferred is not None, f"{kernel}: generic_cases leaves out task kernels"
        shape, out_dtype = inferred
        got = dsrt_device.launch(kernel, *arrays, **params).numpy()
        with np.errstate(all="ignore"):
            want = np.asarray(spec.reference(inputs, bound))
            err = _mismatch(got, want)
        tol = _tolerance_or_exact(out_dtype, case.terms)
        bits = dsrt_device.info.precision_bits
        if bits is not None and dt.is_float(out_dtype):
            err = _frobenius_error(got, want)
            tol = max(tol, _precision_floor(dsrt_device))
        if got.shape != tuple(shape) or got.dtype != out_dtype or not err <= tol:
            shapes = " and ".join(str(tuple(x.shape)) for x in inputs)
            failures.append(f"{name} {shapes}: error {err:.3g} > {tol:.3g} (shape {got.shape}, spec"
                            f" {tuple(shape)}; dtype {got.dtype}, spec {out_dtype})")
    assert not failures, (f"{dsrt_device.id} {kernel} (a plugin kernel) disagrees with its reference in"
                          f" {len(failures)} of {len(cases)} cases:\n" + "\n".join(failures))


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
    for kernel, shapes, pattern in (("add", ((3,), (4,)), r"\(3,\).*\(4,\)"),  # noqa: B007 - used after the loop
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


def _torch() -> Any:
    """torch, if it imports here (the kit's second DLPack consumer); else ``None``."""
    try:
        import torch
    except Exception:  # noqa: BLE001 - absent or broken: the kit checks with numpy alone
        return None
    return torch


def _exchange_dtype(device: dsrt.Device) -> np.dtype | None:
    """A dtype the device holds that numpy and torch both exchange through DLPack."""
    for name in ("float32", "int32", "float64", "int64", "int16", "uint8"):
        if name in device.info.dtypes:
            return dt.as_dtype(name)
    return None


def _churn(device: dsrt.Device, dtype: np.dtype, n: int, rounds: int = 24) -> None:
    """Allocate and free many arrays on ``device`` (``n`` elements and other sizes), each filled with a
    value in [100, 197) that differs round to round, so memory the pool hands out again is overwritten."""
    sizes = (n, n, n, n // 2 + 1, 2 * n, 1, 257, n + 3)
    held: list[dsrt.Array] = []
    for r in range(rounds):
        value = 100 + (r * 37) % 97
        held += [device.asarray(np.full(s, value, dtype)) for s in sizes]
        if r % 2:
            held.clear()  # freed by reference counting: no gc pass needed (and a full one costs ~0.2 s)
    held.clear()


def test_dlpack_export_outlives_the_array(dsrt_device: dsrt.Device) -> None:
    """A DLPack export keeps the memory it hands out: the consumer's view is unchanged after every dsrt
    reference to the array is gone and the device has allocated, filled and freed many arrays."""
    code = dsrt_device.info.dlpack_device_type
    if code is None:
        pytest.skip(f"{dsrt_device.id} declares no DLPack device type (it does not export)")
    d = _exchange_dtype(dsrt_device)
    if d is None:
        pytest.skip(f"{dsrt_device.id} holds none of float32, int32, float64, int64, int16, uint8")
    torch = _torch()
    consumers: list[tuple[str, Any, Any]] = []
    if code == DLPACK_CPU:
        consumers.append(("numpy", np.from_dlpack, np.asarray))
    if torch is not None and (code == DLPACK_CPU or (code == DLPACK_CUDA and torch.cuda.is_available())):
        consumers.append(("torch", torch.from_dlpack, lambda t: t.cpu().numpy()))
    if not consumers:
        pytest.skip(f"{dsrt_device.id} exports DLPack device type {code}; no consumer here reads it"
                    " (numpy reads CPU memory; torch CUDA memory when built with CUDA)")
    n = 4099
    host = (np.arange(n) % 89 + 1).astype(d)
    for name, consume, to_host in consumers:
        arr = dsrt_device.asarray(host)
        view = consume(arr)
        np.testing.assert_array_equal(to_host(view), host, err_msg=f"{name} view of a live {dsrt_device.id} array")
        del arr
        gc.collect()
        _churn(dsrt_device, d, n)
        got = to_host(view)
        changed = int(np.count_nonzero(got != host))
        assert changed == 0, (
            f"{dsrt_device.id}: {changed} of {n} elements of a {name} view from __dlpack__ changed after the array"
            f" was dropped and the device reused memory (first: {got[got != host][:5]}); _export_dlpack must keep"
            " the array, or its allocation, alive as long as the consumer's tensor")
        del view


def test_work_is_ordered_across_streams_by_events(dsrt_device: dsrt.Device) -> None:
    """On an asynchronous device: launch on one stream, record an event there, wait for it, then copy
    the result out on another stream (to the host, and device to device): the copies see the result."""
    info = dsrt_device.info
    if info.synchronous:
        pytest.skip(f"{dsrt_device.id} is synchronous (every launch has finished when it returns):"
                    " no ordering between streams to check")
    kernel = "add" if info.kernels.get("add") else "copy"
    names = sorted(info.kernels.get(kernel, ()))
    if not names:
        pytest.skip(f"{dsrt_device.id} implements neither add nor copy")
    name = next((x for x in ("float32", "int32") if x in names), names[0])
    d = dt.as_dtype(name)
    n = 1 << 20  # large enough that a device which does not order the copy is still running the kernel
    host = (np.arange(n) % 50 + 1).astype(d)
    launch_stream = dsrt_device.create_stream("kit-launch")
    copy_stream = dsrt_device.create_stream("kit-copy")
    a = dsrt_device.asarray(host, stream=launch_stream)
    out = dsrt_device.asarray(np.zeros(n, d), stream=launch_stream)
    inputs = [a, a] if kernel == "add" else [a]
    want = reference(kernel, *([host, host] if kernel == "add" else [host]))
    dsrt_device.launch(kernel, *inputs, out=out, stream=launch_stream)
    done = launch_stream.record_event()
    done.synchronize()
    assert done.query(), f"{dsrt_device.id}: an event reports not complete after synchronize()"
    got = dsrt_device.copy_to_host(out, stream=copy_stream)
    twin = dsrt_device.empty(out.shape, out.dtype, stream=copy_stream)
    dsrt_device.copy(twin, out, stream=copy_stream)
    got_twin = dsrt_device.copy_to_host(twin, stream=copy_stream)
    for what, seen in (("copy to host", got), ("device-to-device copy", got_twin)):
        stale = int(np.count_nonzero(seen != want))
        assert stale == 0, (
            f"{dsrt_device.id}: {kernel} {name} on stream 'kit-launch', event recorded and waited for, then a {what}"
            f" on stream 'kit-copy' saw {stale} of {n} elements not yet written: waiting on the event did not"
            " wait for the launch")
