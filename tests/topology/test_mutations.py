"""Hypothesis: mutated spec files load or fail with a located TopologyError, fast, never otherwise."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from _topo_helpers import SPECS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsrt.errors import TopologyError
from dsrt.topology import load_topology

_WORK = Path(tempfile.mkdtemp(prefix="dsrt-topo-mut-"))
for _p in SPECS.glob("*.yaml"):
    shutil.copy(_p, _WORK / _p.name)
_FILES = sorted(p.name for p in SPECS.glob("*.yaml"))
_TEXT = {name: (SPECS / name).read_bytes() for name in _FILES}


def _check(data: bytes) -> None:
    """Load ``data`` as a file next to the specs; only a Topology or a located TopologyError may result."""
    target = _WORK / "mutant.yaml"
    target.write_bytes(data)
    t0 = time.perf_counter()
    try:
        load_topology(target)
    except TopologyError as exc:
        assert exc.line is not None and exc.line >= 1, str(exc)
        assert exc.column is not None and exc.column >= 1, str(exc)
        assert str(exc).startswith(f"{exc.file}:{exc.line}:{exc.column}: "), str(exc)
    assert time.perf_counter() - t0 < 1.0


_common = settings(max_examples=50, deadline=2000, suppress_health_check=[HealthCheck.too_slow])


@_common
@given(st.sampled_from(_FILES), st.data())
def test_truncation(name: str, data: st.DataObject) -> None:
    raw = _TEXT[name]
    _check(raw[: data.draw(st.integers(0, len(raw)))])


@_common
@given(st.sampled_from(_FILES), st.data())
def test_random_bytes(name: str, data: st.DataObject) -> None:
    raw = bytearray(_TEXT[name])
    for _ in range(data.draw(st.integers(1, 6))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] = data.draw(st.integers(0, 255))
    _check(bytes(raw))


@_common
@given(st.sampled_from(_FILES), st.data())
def test_deleted_lines(name: str, data: st.DataObject) -> None:
    lines = _TEXT[name].split(b"\n")
    del lines[data.draw(st.integers(0, len(lines) - 1))]
    _check(b"\n".join(lines))


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


_WRONG = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True), st.text(max_size=8),
                   st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@_common
@given(st.sampled_from(_FILES), st.data())
def test_deleted_keys_and_wrong_types(name: str, data: st.DataObject) -> None:
    doc = yaml.safe_load(_TEXT[name])
    paths = [p for p in _paths(doc) if p]
    path = data.draw(st.sampled_from(paths))
    parent = doc
    for part in path[:-1]:
        parent = parent[part]
    if data.draw(st.booleans()):
        del parent[path[-1]]
    else:
        parent[path[-1]] = data.draw(_WRONG)
    _check(yaml.safe_dump(doc, sort_keys=False).encode())
