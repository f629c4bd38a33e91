"""Corrupted, truncated and missing chunks are found by restore and by ``dsrt checkpoint verify``."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import dsrt
from dsrt.checkpoint import CheckpointCorruptError, Checkpointer, restore, save, verify_store
from dsrt.cli import main as cli

CHUNK = 4096


@pytest.fixture
def store(tmp_path):
    rng = np.random.default_rng(0)
    tree = {"p": {"w": rng.standard_normal((64, 100)).astype(np.float32)}, "b": np.arange(10)}
    with Checkpointer(tmp_path, keep=None, chunk_bytes=CHUNK) as ck:
        ck.save(1, tree, blocking=True)
        tree["b"] = tree["b"] + 1
        ck.save(2, tree, blocking=True)
    return tmp_path, tree


def _chunk(path, step: int, name: str, key: str) -> str:
    return os.path.join(path, "steps", str(step), "rank0", name, key)


def test_flipped_byte_is_reported_naming_array_and_chunk(store, capsys) -> None:
    path, _ = store
    target = _chunk(path, 2, "p/w", "c.3.0")
    with open(target, "r+b") as fh:  # the chunk is shared by steps 1 and 2 (a hard link): both break
        fh.seek(100)
        byte = fh.read(1)
        fh.seek(100)
        fh.write(bytes([byte[0] ^ 0x40]))
    with pytest.raises(CheckpointCorruptError, match=r"array 'p/w' chunk c\.3\.0 of step 2 rank 0: hash mismatch") as info:
        restore(path)
    assert isinstance(info.value, dsrt.DsrtError)
    assert (info.value.array, info.value.chunk, info.value.step, info.value.path) == ("p/w", "c.3.0", 2, target)
    problems = verify_store(path)
    assert [(p.step, p.array, p.chunk) for p in problems] == [(1, "p/w", "c.3.0"), (2, "p/w", "c.3.0")]
    assert cli(["checkpoint", "verify", str(path), "--step", "2"]) == 1
    out = capsys.readouterr().out
    assert out.count("CORRUPT") == 1 and "array 'p/w' chunk c.3.0 of step 2 rank 0" in out


def test_truncated_and_missing_chunks_and_manifest(store) -> None:
    path, _ = store
    os.truncate(_chunk(path, 2, "b", "c.0"), 10)
    os.unlink(_chunk(path, 2, "p/w", "c.0.0"))
    got = {(p.array, p.chunk): str(p) for p in verify_store(path, step=2)}
    assert "expected 80 bytes" in got[("b", "c.0")]
    assert "chunk file missing" in got[("p/w", "c.0.0")]
    with open(os.path.join(path, "manifests", "1.rank0.json"), "w") as fh:
        fh.write('{"format": "dsrt-checkpoint/1", "step": 1, "arr')
    with pytest.raises(CheckpointCorruptError, match="unreadable manifest of step 1 rank 0"):
        restore(path, 1)


def test_intact_store_verifies_and_lists(store, capsys) -> None:
    path, tree = store
    assert cli(["checkpoint", "verify", str(path)]) == 0
    assert "ok (2 step/rank(s)" in capsys.readouterr().out
    assert cli(["checkpoint", "ls", str(path), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(s["step"], s["rank"], s["arrays"]) for s in listed] == [(1, 0, 2), (2, 0, 2)]
    assert listed[0]["bytes"] == tree["p"]["w"].nbytes + tree["b"].nbytes
    assert cli(["checkpoint", "ls", str(path)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3


@pytest.mark.parametrize("argv, message", [
    (["verify", "{missing}"], "no complete step"),
    (["verify", "{path}", "--step", "9"], "no step 9"),
    (["ls", "{missing}"], "no such directory"),
    (["verify", "{path}", "--step", "x"], "invalid int value"),
])
def test_user_errors_print_one_line_and_exit_2(store, capsys, argv, message) -> None:
    path, _ = store
    args = [a.format(path=path, missing=os.path.join(path, "nope")) for a in argv]
    assert cli(["checkpoint", *args]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err


def test_blake2b_store_when_xxhash_is_missing(tmp_path, monkeypatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_xxhash(name, *args, **kwargs):
        if name == "xxhash":
            raise ImportError("no xxhash here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_xxhash)
    save(tmp_path, {"x": np.arange(3000)}, step=0, chunk_bytes=CHUNK)
    with open(os.path.join(tmp_path, "manifests", "0.rank0.json")) as fh:
        assert json.load(fh)["hash"] == "blake2b_128"
    monkeypatch.undo()
    assert np.array_equal(restore(tmp_path)["x"], np.arange(3000))
