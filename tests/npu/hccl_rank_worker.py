"""Run under mpiexec by test_hccl_ranks.py: HCCL between processes, one emulated NPU per rank.

Usage: ``hccl_rank_worker.py MODE KERNELS TMPDIR`` with ``tests/npu/emulated`` on PYTHONPATH (so
``import acl`` is the emulated pyACL). Each rank stands up its own emulated CANN (one NPU) under
``TMPDIR/rank<r>``, replaces ``dsrt_npu.hccl.load_hccl`` by the emulated libhccl (what the unit tests
do with monkeypatch), and builds a Communicator over ``npu:0`` with MPI.

- KERNELS ``acl``: the NPU has ACL single operators only (no cast, no scale kernels);
  ``torch``: the emulated torch_npu (CPU torch) provides the standard kernels.
- MODE ``checks``: all-reduce (every op, int32/float32/float16 and fallbacks) and broadcast against
  numpy, the path each took, the HCCL calls made, error codes, close. Prints ``RESULT <json>``.
- MODE ``missing``: the last rank joins the first all-reduce (which sets HCCL up) and a second
  communicator's construction, then never joins again; the others report the CollectiveErrors they get.

Expected HCCL codes are written out from CANN's hccl_types.h here, not taken from dsrt_npu.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

#: HcclDataType and HcclReduceOp codes (CANN hccl_types.h).
TYPE = {"int8": 0, "int16": 1, "int32": 2, "float16": 3, "float32": 4, "int64": 5, "uint8": 7, "float64": 10,
        "bfloat16": 11}
OP = {"sum": 0, "avg": 0, "prod": 1, "max": 2, "min": 3}

sys.path.insert(0, str(HERE.parent))
from mpi_common import contribution, matches, run_worker  # noqa: E402 - after the path is set


def stand_up(base: Path, rank: int, kernels: str) -> tuple[Any, Any, Any]:
    """``(runtime, emulated libhccl, emulated acl)`` for this rank."""
    sys.path.insert(0, str(REPO))
    from tests.npu.conftest import make_cann
    from tests.npu.emulated import hccl as emulated_hccl

    env = make_cann(base / f"rank{rank}")
    os.environ.update(env)
    os.environ.pop("ASCEND_RT_VISIBLE_DEVICES", None)
    (Path(env["ASCEND_HOME_PATH"]) / "lib64" / "libhccl.so").write_bytes(b"")  # found; never really loaded
    import acl

    assert Path(acl.__file__).parent == HERE / "emulated", acl.__file__
    acl.state.progress_on_query = True  # the communicator polls events, as on hardware
    if kernels == "torch":
        sys.path.insert(0, str(HERE / "emulated_torch"))
        import torch_npu  # noqa: F401 - installs the emulated torch.npu

    import dsrt
    import dsrt_cpu
    import dsrt_npu
    from dsrt_npu import hccl

    lib = emulated_hccl.EmulatedHccl(acl, timeout=5.0)
    hccl.load_hccl = lambda path=None: lib  # what monkeypatch does in the unit tests
    rt = dsrt.Runtime(autoload=False, plugins=[dsrt_cpu, dsrt_npu])
    path = rt.device("npu:0").info.properties["kernel_path"]
    assert (path == "torch_npu") == (kernels == "torch"), path
    return rt, lib, acl


def checks(rt: Any, lib: Any, kernels: str, rank: int, size: int) -> dict[str, Any]:
    import dsrt
    from dsrt import dtypes as dt
    from dsrt.collective import Communicator
    from dsrt.collective.ops import plan_reduction, reference
    from dsrt_npu.hccl import HcclError

    dev = rt.device("npu:0")
    comm = Communicator([dev], runtime=rt, mpi=True, timeout=30.0)
    failures: list[str] = []
    paths: dict[str, str] = {}
    n = 29

    def check(ok: bool, what: str) -> None:
        if not ok:
            failures.append(what)

    def hccl_calls() -> list[tuple[str, tuple[int, ...]]]:
        return [(c, p["params"]) for c, r, p in lib.calls if r == rank]

    def staged(host: np.ndarray) -> Any:
        """A device array whose contents are still queued on the stream (a device-to-device copy over zeros,
        so reading it out of stream order gives zeros, not stale bytes that happen to be right)."""
        src = dev.asarray(host)
        dst = dev.asarray(np.zeros_like(host))
        dev.copy(dst, src)
        return dst

    check(comm.inter.name == "hccl-mpi", f"inter transport {comm.inter.name}")
    check(comm.intra_name == "inprocess", f"intra transport {comm.intra_name}")
    cases = [(name, op) for name in ("int32", "float32", "float16") for op in ("sum", "prod", "max", "min", "avg")]
    cases += [("complex64", "sum"), ("int64", "max"), ("int8", "sum")]
    fallbacks = [("float64", "sum"), ("float64", "min"), ("uint8", "max"), ("bool", "sum"), ("int16", "prod")]
    for name, op in cases + fallbacks:
        dtype = dt.STANDARD_DTYPES[name]
        try:
            plan = plan_reduction(op, dtype)
        except dsrt.ConfigurationError:
            continue  # avg of integers is undefined
        contributions = [contribution(g, dtype, n, op, seed=500, int_high=40) for g in range(size)]
        ref = reference(op, contributions)
        needs_kernels = plan.cast or plan.scale
        for in_place in (True, False):
            key = f"{op} {name} {'in place' if in_place else 'out of place'}"
            x = staged(contributions[rank])
            out = None if in_place else dev.empty((n,), dtype)
            lib.calls.clear()
            lib.acl.state.calls.clear()
            comm.last_algorithm = ""
            try:
                got = comm.all_reduce(x, op, out=out)
            except dsrt.DsrtError as exc:
                paths[key] = f"error: {type(exc).__name__}: {exc}"
                check(kernels == "acl" and needs_kernels, f"{key}: {exc}")
                continue
            paths[key] = comm.last_algorithm
            check(matches(got.numpy(), ref, name, same_dtype=True), f"{key}: values")
            if not in_place:
                check(np.array_equal(x.numpy(), contributions[rank]), f"{key}: input modified")
            if (name, op) in fallbacks:
                check(not hccl_calls(), f"{key}: reached HCCL {hccl_calls()}")
            else:
                compute = "float32" if plan.cast else ("float32" if name == "complex64" else name)
                count = n * (2 if name == "complex64" else 1)
                check(comm.last_algorithm == "hccl", f"{key}: algorithm {comm.last_algorithm}")
                check(hccl_calls() == [("HcclAllReduce", (count, TYPE[compute], OP[op], 0))], f"{key}: {hccl_calls()}")
                if kernels == "torch" and plan.cast:  # torch's cast landed (the device's fence) before HCCL read
                    timeline = lib.acl.state.calls
                    first = timeline.index("hccl.HcclAllReduce")
                    check("torch.npu.synchronize" in timeline[:first], f"{key}: no torch fence before HCCL {timeline}")
    # deterministic mode keeps MPI's fixed-order fold
    dcomm = Communicator([dev], runtime=rt, mpi=True, timeout=30.0, deterministic=True)
    contributions = [contribution(g, dt.float32, n, "sum", seed=500, int_high=40) for g in range(size)]
    x = staged(contributions[rank])
    lib.calls.clear()
    dcomm.all_reduce(x)
    check(np.array_equal(x.numpy(), reference("sum", contributions)), "deterministic values")
    check(dcomm.last_algorithm == "mpi" and not hccl_calls(), f"deterministic: {dcomm.last_algorithm}")
    dcomm.close()
    # broadcast: every dtype moves (as bytes where HCCL has no type)
    for name, code, per in (("float32", 4, 1), ("float64", 10, 1), ("bool", 0, 1), ("complex64", 0, 8)):
        dtype = dt.STANDARD_DTYPES[name]
        for root in (size - 1, 0):
            contributions = [contribution(g, dtype, n, "sum", seed=500, int_high=40) for g in range(size)]
            x = staged(contributions[rank])
            lib.calls.clear()
            got = comm.broadcast(x, root)
            check(np.array_equal(got.numpy(), contributions[root]), f"broadcast {name} root {root}: values")
            check(hccl_calls() == [("HcclBroadcast", (n * per, code, -1, root))], f"broadcast {name}: {hccl_calls()}")
    # a rank without an NPU: its transport is plain MPI, so every rank stays on MPI
    mixed = Communicator([dev if rank == 0 else rt.device("cpu:0")], runtime=rt, mpi=True, timeout=10.0)
    check(mixed.inter.name == ("hccl-mpi" if rank == 0 else "mpi"), f"mixed: {mixed.inter.name}")
    contributions = [contribution(g, dt.float32, n, "max", seed=500, int_high=40) for g in range(size)]
    x = mixed.devices[0].asarray(contributions[rank])
    lib.calls.clear()
    mixed.all_reduce(x, "max")
    check(np.array_equal(x.numpy(), reference("max", contributions)), "mixed job values")
    check(mixed.last_algorithm == "mpi" and not hccl_calls(), f"mixed job: {mixed.last_algorithm} {hccl_calls()}")
    y = mixed.devices[0].asarray(contributions[rank])
    mixed.broadcast(y, 0)
    check(np.array_equal(y.numpy(), contributions[0]) and not hccl_calls(), "mixed job broadcast")
    mixed.close()
    # opting out: inter_transport="mpi" stages NPU arrays through host memory, HCCL untouched
    plain = Communicator([dev], runtime=rt, mpi=True, timeout=10.0, inter_transport="mpi")
    x = dev.asarray(contributions[rank])
    lib.calls.clear()
    plain.all_reduce(x, "max")
    check(plain.inter.name == "mpi" and plain.last_algorithm == "mpi" and not hccl_calls(),
          f"opt-out: {plain.inter.name} {plain.last_algorithm} {hccl_calls()}")
    check(np.array_equal(x.numpy(), reference("max", contributions)), "opt-out values")
    plain.close()
    # an HCCL error code surfaces with code, meaning, device and rank; the communicator stays in step
    x = dev.asarray(np.ones(4, np.float32))
    lib._inject("HcclAllReduce", 9)
    try:
        comm.all_reduce(x)
        check(False, "injected HCCL_E_TIMEOUT did not raise")
    except HcclError as exc:
        check(exc.code == 9 and exc.call == "HcclAllReduce", f"HcclError fields {exc.code} {exc.call}")
        check(f"HcclAllReduce returned 9 (HCCL_E_TIMEOUT: timeout) [libhccl: HCCL_E_TIMEOUT (emulated)] on npu:0 "
              f"(rank {rank})" == str(exc), str(exc))
    comm.all_reduce(x)
    check(np.array_equal(x.numpy(), np.full(4, size, np.float32)), "all_reduce after an HCCL error")
    # asynchronous: issued from the communicator's worker thread (the device's context made current there)
    x = staged(np.full(6, rank + 1.0, np.float32))
    lib.calls.clear()
    got = comm.all_reduce(x, "max", async_op=True).wait()
    check(np.array_equal(got.numpy(), np.full(6, size, np.float32)) and comm.last_algorithm == "hccl"
          and [c for c, _p in hccl_calls()] == ["HcclAllReduce"], f"async all_reduce {comm.last_algorithm}")
    handles = list(lib._rank_comms.values())
    check(len(handles) == 1 and handles[0].alive, f"one HCCL communicator per transport, got {len(handles)}")
    comm.close()
    check(not handles[0].alive, "close destroys the HCCL communicator")
    # setup failures: rank 0's HcclGetRootInfo result reaches every rank; HcclCommInitRootInfo's is checked
    ecomm = Communicator([dev], runtime=rt, mpi=True, timeout=30.0)
    x = dev.asarray(np.ones(3, np.int32))
    for call, code, where, meaning in (("HcclGetRootInfo", 7, "rank 0", "HCCL_E_UNAVAIL: resource unavailable"),
                                       ("HcclCommInitRootInfo", 11, f"npu:0 (rank {rank})",
                                        "HCCL_E_TCP_CONNECT: TCP connection failed")):
        if call == "HcclCommInitRootInfo" or rank == 0:
            lib._inject(call, code)
        try:
            ecomm.all_reduce(x)
            check(False, f"injected {call} failure did not raise")
        except HcclError as exc:
            check(exc.call == call and exc.code == code and f"{call} returned {code} ({meaning})" in str(exc)
                  and f"on {where}" in str(exc), f"{call} failure: {exc}")
    ecomm.all_reduce(x)  # set up on the next try
    check(np.array_equal(x.numpy(), np.full(3, size, np.int32)) and ecomm.last_algorithm == "hccl",
          f"all_reduce after failed setups: {x.numpy()} {ecomm.last_algorithm}")
    ecomm.close()
    return {"failures": failures, "paths": paths}


def missing(rt: Any, lib: Any, rank: int, size: int) -> dict[str, Any] | None:
    """The last rank never joins after the first all-reduce; None on that rank."""
    from mpi4py import MPI

    import dsrt
    from dsrt.collective import Communicator

    dev = rt.device("npu:0")
    alive = MPI.COMM_WORLD.Split(0 if rank < size - 1 else 1)  # the ranks that report, to leave together
    warm_comm = Communicator([dev], runtime=rt, mpi=True, timeout=1.0)
    x = dev.asarray(np.ones(4, np.float32))
    warm_comm.all_reduce(x)  # every rank joins: the HCCL communicator is set up
    warm = [x.numpy().tolist(), warm_comm.last_algorithm]
    cold_comm = Communicator([dev], runtime=rt, mpi=True, timeout=1.0)  # set up by every rank, no HCCL yet
    if rank == size - 1:
        return None
    out: dict[str, Any] = {"warm": warm}
    for key, c in (("after_setup", warm_comm), ("first", cold_comm)):
        before = len(lib.calls)
        try:
            c.all_reduce(x)
            out[key] = {"error": None}
        except dsrt.CollectiveError as exc:
            out[key] = {"error": str(exc), "missing": exc.missing, "type": type(exc).__name__}
        out[key]["hccl_calls"] = [call for call, _r, _p in lib.calls[before:]]
    out["init_calls"] = [c for c in lib.acl.state.calls if c in ("hccl.HcclGetRootInfo", "hccl.HcclCommInitRootInfo")]
    try:
        warm_comm.barrier()
        out["second"] = None
    except dsrt.CollectiveError as exc:
        out["second"] = str(exc)
    out["alive"] = alive
    return out


def main() -> int:
    mode, kernels, base = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    from mpi4py import MPI

    rank, size = MPI.COMM_WORLD.Get_rank(), MPI.COMM_WORLD.Get_size()
    rt, lib, _acl = stand_up(base, rank, kernels)
    if mode == "missing":
        start = time.perf_counter()
        out = missing(rt, lib, rank, size)
        if out is None:
            time.sleep(20.0)  # never joins again; mpiexec ends it once the others have left
            os._exit(0)
        alive = out.pop("alive")
        print("RESULT " + json.dumps({"rank": rank, **out}), flush=True)
        req = alive.Ibarrier()  # every reporting rank has printed before any leaves (the first exit ends the job)
        while not req.Test() and time.perf_counter() < start + 20.0:
            time.sleep(0.01)
        os._exit(0)
    result = checks(rt, lib, kernels, rank, size)
    print("RESULT " + json.dumps({"rank": rank, **result}), flush=True)
    return 0 if not result["failures"] else 1


if __name__ == "__main__":
    run_worker(main)
