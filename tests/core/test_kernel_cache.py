"""dsrt.kernel_cache: verified entries, rebuilds of every kind of corrupt entry, private fallback.

The C cases compile through ``rt.compile(lang="c")`` on cpu:0 (the same path the quantum and neuro
plugins' C kernels take). Every load of a corrupt entry runs in a forked child of one driver process
(see ``kernel_cache_common``), so a crash fails the case instead of killing pytest.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kernel_cache_common import (
    CORRUPTIONS,
    check_case,
    copy_tree,
    corrupt,
    entry_is_valid,
    manifests,
    run_cases,
)

from dsrt import kernel_cache
from dsrt.kernel_cache import CacheWarning, KernelCache, private_copy

IDENTITY = {"compiler": "/usr/bin/test-cc", "version": "1.0"}


@pytest.fixture
def fresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache root, and a process that has not warned yet."""
    monkeypatch.setenv("DSRT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(kernel_cache, "_warned", False)
    return tmp_path / "cache"


# ---------------------------------------------------------------------------- the store itself
def test_round_trip_manifest_and_stats(fresh: Path) -> None:
    cache = KernelCache("c", IDENTITY, suffix=".so")
    key = cache.key("source", "-O2")
    assert cache.load(key) is None and cache.stats["misses"] == 1
    path = cache.store(key, b"\x7fELF artifact bytes", {"name": "k"})
    assert path is not None and path.parent == fresh / "c"
    manifest = json.loads((fresh / "c" / f"{key}.json").read_text())
    assert manifest["size"] == 19 and manifest["identity"] == IDENTITY and manifest["key"] == key
    assert manifest["artifact"] == path.name and manifest["meta"] == {"name": "k"}
    assert cache.load(key) == b"\x7fELF artifact bytes" and cache.stats["hits"] == 1
    assert stat.S_IMODE(os.stat(fresh / "c").st_mode) == 0o700
    # The key covers parts, their boundaries and the identity.
    assert cache.key("sourc", "e-O2") != key
    assert KernelCache("c", {**IDENTITY, "version": "2.0"}).key("source", "-O2") != key


@pytest.mark.parametrize("how", sorted(CORRUPTIONS))
def test_each_corruption_is_rejected_then_rebuilt(fresh: Path, how: str) -> None:
    cache = KernelCache("c", IDENTITY, suffix=".so")
    ka, kb = cache.key("a"), cache.key("b")
    cache.store(ka, b"A" * 4096)
    cache.store(kb, b"B" * 1000)
    a, b = (json.loads((fresh / "c" / f"{k}.json").read_text()) for k in (ka, kb))
    corrupt(fresh / "c", how, a, b)
    assert cache.load(ka) is None
    assert cache.stats["rejected"] == 1 and set(cache.stats["reasons"]) <= CORRUPTIONS[how], cache.stats
    cache.store(ka, b"A" * 4096)
    assert cache.load(ka) == b"A" * 4096 and cache.load(kb) == b"B" * 1000


def test_identity_and_manifest_checks(fresh: Path) -> None:
    cache = KernelCache("opencl", IDENTITY)
    key = cache.key("x")
    cache.store(key, b"binary")
    mpath = fresh / "opencl" / f"{key}.json"
    manifest = json.loads(mpath.read_text())
    mpath.write_text(json.dumps({**manifest, "identity": {**IDENTITY, "version": "0.9"}}))
    assert cache.load(key) is None and cache.stats["reasons"] == {"identity-mismatch": 1}
    mpath.write_text(json.dumps({**manifest, "artifact": "../../etc/passwd"}))
    assert cache.load(key) is None and cache.stats["reasons"]["manifest-invalid"] == 1
    mpath.write_bytes(b"\x80not json")
    assert cache.load(key) is None and cache.stats["reasons"]["manifest-invalid"] == 2
    mpath.write_text(json.dumps({**manifest, "size": "many"}))
    assert cache.load(key) is None and cache.stats["rejected"] == 4
    cache.store(key, b"binary")
    assert cache.load(key) == b"binary"
    with pytest.raises(kernel_cache.ConfigurationError, match="empty artifact"):
        cache.store(key, b"")


def test_directory_others_can_write_is_not_used(fresh: Path) -> None:
    fresh.mkdir(mode=0o700)
    (fresh / "c").mkdir(mode=0o700)
    os.chmod(fresh / "c", 0o777)
    cache = KernelCache("c", IDENTITY)
    with pytest.warns(CacheWarning, match="writable by other users"):
        path = cache.store(cache.key("x"), b"data")
    assert path is not None and fresh not in path.parents and cache.stats["fallback"]
    assert stat.S_IMODE(os.stat(path.parent.parent).st_mode) == 0o700
    assert not list((fresh / "c").iterdir())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per process: a second cache stays quiet
        other = KernelCache("opencl", IDENTITY)
        assert other.store(other.key("y"), b"data") is not None and other.load(other.key("y")) == b"data"


def test_unusable_directory_falls_back(fresh: Path) -> None:
    fresh.parent.mkdir(exist_ok=True)
    fresh.write_text("a file where the cache directory should be")
    cache = KernelCache("c", IDENTITY)
    with pytest.warns(CacheWarning, match="cannot create"):
        assert cache.load(cache.key("unusable")) is None
    cache.store(cache.key("unusable"), b"data")
    assert cache.load(cache.key("unusable")) == b"data"


def test_private_copy_is_sealed_and_shared() -> None:
    data = os.urandom(3000)
    path = private_copy(data, ".so")
    assert Path(path).read_bytes() == data and private_copy(data, ".so") == path
    assert private_copy(data + b"x") != path
    with pytest.raises(OSError):
        with open(path, "r+b") as f:  # sealed memfd (EPERM) or 0500 private file (EACCES, non-root)
            f.write(b"changed")
            f.flush()
    assert Path(path).read_bytes() == data


# ---------------------------------------------------------------------------- C entries, end to end
def _c_kernel(factor: float, offset: float) -> dict[str, Any]:
    body = f"x[i] = x[i] * {factor:.1f} + {offset:.1f};"
    src = f"void kc(double* x, long n) {{ for (long i = 0; i < n; i++) {body} }}\n"
    return {"source": src, "name": "kc", "factor": factor, "offset": offset}


_RUN_ID = f"{os.getpid()}-{os.urandom(4).hex()}"
#: Corruptions whose rebuilt entry is loaded once more, by a third process, to show it is a hit.
_AGAIN = ("half", "other-entry")


@pytest.fixture(scope="module")
def c_outcomes() -> Iterator[tuple[dict[str, Any], Path, dict[str, Any]]]:
    """Every C case, run once: populate, corrupt copies, load each in its own child, load again."""
    top = Path(tempfile.mkdtemp(prefix="dsrt-kc-test-"))
    kernels = {"A": _c_kernel(2.0, 1.0), "B": _c_kernel(3.0, -1.0)}
    for k in kernels.values():
        k["source"] += f"// {_RUN_ID}\n"
    spec: dict[str, Any] = {"backend": "cpu", "device": "cpu:0", "lang": "c", "dtype": "float64", "kernels": kernels,
                            "preload": ["dsrt_cpu.device", "dsrt_cpu.compiler"]}
    base = top / "base"
    run = run_cases({**spec, "cases": [{"id": "A", "dir": str(base), "compile": ["A"]},
                                       {"id": "B", "dir": str(base), "compile": ["B"]}]})
    for cid in "AB":
        check_case(run[cid], cid)
    a, b = manifests(base / "c")
    cases: list[dict[str, Any]] = []
    for how in CORRUPTIONS:
        corrupt(copy_tree(base, top / how) / "c", how, a, b)
        cases.append({"id": how, "dir": str(top / how), "compile": ["A"]})
        if how in _AGAIN:
            cases.append({"id": how + "/again", "dir": str(top / how), "compile": ["A"]})
    empty = top / "read-only-empty"
    empty.mkdir()
    ro = copy_tree(base, top / "read-only-full")
    for d in (empty, ro, ro / "c"):
        os.chmod(d, 0o555)
    (top / "not-a-dir").write_text("x")
    cases += [{"id": "read-only-empty", "dir": str(empty), "compile": ["A", "B"], "read_only": True},
              {"id": "read-only-full", "dir": str(ro), "compile": ["A", "B"], "read_only": True},
              {"id": "unusable", "dir": str(top / "not-a-dir" / "cache"), "compile": ["A"]}]
    cases += [{"id": f"parallel-{i}", "dir": str(top / "parallel"), "compile": ["A", "B"]} for i in range(4)]
    serial = run_cases({**spec, "cases": [c for c in cases if not c["id"].startswith("parallel")]})
    parallel = run_cases({**spec, "parallel": True, "cases": [c for c in cases if c["id"].startswith("parallel")]})
    yield {**serial, **parallel}, top, a
    for d in (empty, ro, ro / "c"):
        os.chmod(d, 0o755)
    shutil.rmtree(top, ignore_errors=True)


@pytest.mark.parametrize("how", list(CORRUPTIONS))
def test_c_corrupt_entry_is_rebuilt(c_outcomes: tuple[dict[str, Any], Path, dict[str, Any]], how: str) -> None:
    outcomes, top, a = c_outcomes
    first = check_case(outcomes[how], how)
    assert first["A"] == {"hit": False, "ok": True}, first  # never reported as a hit, right numbers
    stats = first["stats"]
    assert stats["rejected"] == 1 and set(stats["reasons"]) <= CORRUPTIONS[how], stats
    assert stats["stores"] == 1 and stats["hits"] == 0 and not stats["fallback"]
    assert entry_is_valid(top / how / "c", a["key"])
    if how in _AGAIN:
        again = check_case(outcomes[how + "/again"], how)
        assert again["A"] == {"hit": True, "ok": True} and again["stats"]["rejected"] == 0, again


def test_c_read_only_and_unusable_directories(c_outcomes: tuple[dict[str, Any], Path, dict[str, Any]]) -> None:
    outcomes, _top, _a = c_outcomes
    for case, kernels in (("read-only-empty", "AB"), ("unusable", "A")):
        res = check_case(outcomes[case], case)
        assert all(res[k] == {"hit": False, "ok": True} for k in kernels), res
        # One warning per process, however many kernels it compiles.
        assert res["warnings"] == 1 and res["stats"]["fallback"] and res["stats"]["stores"] == len(kernels), res
    full = check_case(outcomes["read-only-full"], "read-only-full")
    assert full["A"] == {"hit": True, "ok": True} and full["B"] == {"hit": True, "ok": True}, full
    assert full["warnings"] == 0 and full["stats"]["rejected"] == 0, full


def test_c_four_processes_compiling_at_once(c_outcomes: tuple[dict[str, Any], Path, dict[str, Any]]) -> None:
    outcomes, top, _a = c_outcomes
    for i in range(4):
        res = check_case(outcomes[f"parallel-{i}"], f"parallel-{i}")
        assert res["A"]["ok"] and res["B"]["ok"] and res["stats"]["rejected"] == 0, res
    found = manifests(top / "parallel" / "c")
    assert len(found) == 2 and all(entry_is_valid(top / "parallel" / "c", m["key"]) for m in found)
