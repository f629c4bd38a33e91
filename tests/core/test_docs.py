"""The project's documentation agrees with the code.

- ``docs/kernels.md`` lists every standard kernel exactly as ``dsrt.kernels.KERNELS`` defines it
  (run this file as a script to print the table: ``python tests/core/test_docs.py``);
- ``docs/writing-a-backend.md`` names every hook of ``dsrt/hookspecs.py``, and its ``tiny_dsrt``
  code blocks, assembled into a package, pass the conformance kit;
- every relative link in ``docs/*.md`` and ``README.md`` resolves inside the repository;
- no file points at notes outside the repository;
- every vendor-facing primitive and every hook says in its docstring when it is called and on
  which thread (or under which lock), sizes in bytes where it takes sizes, and what to raise.
"""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
NEW_DOCS = ("writing-a-backend.md", "kernels.md", "memory.md")

# --------------------------------------------------------------------------- the kernel table

#: Dtype groups the table uses (spelled out in docs/kernels.md).
_GROUPS = (
    ("floats", frozenset({"float16", "bfloat16", "float32", "float64", "float8_e4m3fn", "float8_e5m2"})),
    ("complex", frozenset({"complex64", "complex128"})),
    ("ints", frozenset({"int8", "int16", "int32", "int64", "uint8"})),
    ("signed ints", frozenset({"int8", "int16", "int32", "int64"})),
)


def _dtype_text(names: frozenset[str]) -> str:
    from dsrt import dtypes as dt

    if names == frozenset(dt.STANDARD_DTYPES):
        return "all"
    parts, left = [], set(names)
    for label, members in _GROUPS:
        if members <= left:
            parts.append(label)
            left -= members
    return ", ".join(parts + sorted(left))


def _output_text(name: str) -> str:
    """The output dtype rule of standard kernel ``name``, found by asking its ``infer``."""
    from dsrt import dtypes as dt
    from dsrt.kernels import KERNELS
    from dsrt.testing.inputs import kernel_cases, make_inputs

    spec = KERNELS[name]
    if "dtype" in spec.params:
        return "the `dtype` parameter"
    outs: dict[str, str] = {}
    for dname in sorted(spec.dtypes):
        inputs, params = make_inputs(name, dt.as_dtype(dname), next(iter(kernel_cases(name))))
        outs[dname] = dt.dtype_name(spec.infer(inputs, spec.bind(inputs, params))[1])
    targets = sorted({o for i, o in outs.items() if o != i})
    if not targets:
        return "input dtype"
    if len(set(outs.values())) == 1:
        return targets[0]
    mapped = [f"{_dtype_text(frozenset(i for i, o in outs.items() if o == t))} -> {t}" for t in targets]
    return "; ".join(mapped) + "; else input dtype"


def kernel_rows() -> dict[str, str]:
    """The table row of every standard kernel, as docs/kernels.md must show it."""
    from dsrt.kernels import KERNELS, REQUIRED, STANDARD_KERNELS

    rows = {}
    for name in STANDARD_KERNELS:
        spec = KERNELS[name]
        lo, hi = spec.arity
        arity = str(lo) if lo == hi else f"{lo}-{hi}"
        params = ", ".join(f"`{k}`" if v is REQUIRED else f"`{k}={v!r}`" for k, v in spec.params.items()) or "none"
        rows[name] = (f"| `{name}` | {arity} | {params} | {_dtype_text(spec.dtypes)} | {_output_text(name)}"
                      f" | {spec.doc} |")
    return rows


def _doc(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def test_the_docs_exist_and_link_each_other() -> None:
    for name in (*NEW_DOCS, "architecture.md", "c-abi.md"):
        text = _doc(name)
        assert text.startswith("# "), f"docs/{name} has no title"
        assert len(text.split()) > 300, f"docs/{name} is nearly empty"
    backend = _doc("writing-a-backend.md")
    for target in ("c-abi.md", "architecture.md", "memory.md", "kernels.md", "../examples/vendor-plugin/",
                   "../examples/c-plugin/"):
        assert f"]({target})" in backend, f"writing-a-backend.md does not link {target}"


def test_kernels_md_lists_every_standard_kernel_as_the_code_defines_it() -> None:
    text = _doc("kernels.md")
    rows = kernel_rows()
    stale = [row for row in rows.values() if row not in text.splitlines()]
    assert not stale, ("docs/kernels.md disagrees with dsrt.kernels.KERNELS; regenerate the table with"
                       " `python tests/core/test_docs.py`. Expected rows:\n" + "\n".join(stale))
    listed = re.findall(r"^\| `([A-Za-z_][\w.]*)` \| [0-9]", text, re.M)
    assert sorted(listed) == sorted(rows), f"kernel rows in docs/kernels.md: {sorted(set(listed) ^ set(rows))} differ"


def test_the_table_generator_sees_the_dtype_rules() -> None:
    rows = kernel_rows()
    assert "| ints -> int64; else input dtype |" in rows["reduce_sum"]
    assert "| floats | int8 |" in rows["quantize_int8"] and "| int8 | int32 |" in rows["qgemm_int8"]
    assert "`alpha=1.0`, `beta=0.0`" in rows["gemm"] and "| 2-3 |" in rows["gemm"]
    assert "| `alpha` |" in rows["scale"]  # required parameters show no default


# --------------------------------------------------------------------------- hooks

def _hook_names() -> list[str]:
    from dsrt import hookspecs

    return sorted(n for n, f in vars(hookspecs).items() if n.startswith("dsrt_") and hasattr(f, "dsrt_spec"))


def test_writing_a_backend_names_every_hook() -> None:
    hooks = _hook_names()
    assert len(hooks) >= 7 and "dsrt_register_backends" in hooks
    text = _doc("writing-a-backend.md")
    missing = [h for h in hooks if f"| `{h}(" not in text]
    assert not missing, f"the hook table of docs/writing-a-backend.md lacks {missing}"


# --------------------------------------------------------------------------- links and stray references

_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return {_slug(m) for m in re.findall(r"^#+ (.+)$", text, re.M)}


def _broken_links(path: Path, root: Path = ROOT) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    broken = []
    for m in _LINK.finditer(text):
        link = m.group(1) or m.group(2)
        if re.match(r"[a-z][a-z0-9+.-]*:", link):  # http:, https:, mailto:
            continue
        target, _, anchor = link.partition("#")
        where = (path.parent / target).resolve() if target else path
        if target.startswith("/") or root not in (where, *where.parents):
            broken.append(f"{link} (leaves the repository)")
        elif not where.exists():
            broken.append(f"{link} (no such file)")
        elif anchor and where.suffix == ".md" and anchor not in _anchors(where):
            broken.append(f"{link} (no heading #{anchor} in {where.name})")
    return broken


def _markdown_files() -> list[Path]:
    return [*sorted(DOCS.glob("*.md")), ROOT / "README.md"]


def test_every_relative_link_resolves() -> None:
    broken = {str(p.relative_to(ROOT)): b for p in _markdown_files() if (b := _broken_links(p))}
    assert not broken, f"broken links: {broken}"


def test_the_link_check_catches_a_broken_link(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "b.md").write_text("# B title\n")
    page = tmp_path / "docs" / "a.md"
    page.write_text("# T\n[1](b.md#b-title) [2](b.md#nope) [3](no.md) [4](../../x.md) [5](#t) [6](#u)"
                    " [7](https://example.org/x.md)\n```\n[8](in-a-code-block.md)\n```\n")
    broken = [b.split()[0] for b in _broken_links(page, root=tmp_path)]
    assert broken == ["b.md#nope", "no.md", "../../x.md", "#u"]


#: Directories that are build output, caches or environments, not the repository's files.
_SKIP_DIRS = {".git", ".venv", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis",
              ".cache", "build", "dist", "node_modules"}


def _repository_files() -> list[Path]:
    found = []
    for top, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in _SKIP_DIRS and not d.startswith(".venv") and not d.endswith(".egg-info")]
        found += [Path(top, f) for f in files]
    return found


def test_no_file_points_outside_the_repository() -> None:
    # Spelled in pieces so that this file does not match itself.
    needles = ("../" + "shared", "DESIGN" + ".md")
    hits = []
    files = _repository_files()
    assert any(p.name == "README.md" for p in files) and any(p.suffix == ".py" for p in files)
    for path in files:
        try:
            if path.stat().st_size > 2_000_000:
                continue
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # binary (a built library, an image)
        hits += [f"{path.relative_to(ROOT)}: {n}" for n in needles if n in text]
    assert not hits, f"files refer to notes outside the repository: {hits}"


# --------------------------------------------------------------------------- docstrings

#: What a backend implements on ``dsrt.Device`` (required and optional).
DEVICE_PRIMITIVES = ("_allocate", "_free", "_copy_in", "_copy_out", "_copy_between", "_synchronize", "kernel_table",
                     "_translate_error", "_launch", "_create_stream", "_record_event", "_query_event", "_wait_event",
                     "_elapsed", "_compile", "_launch_user", "_export_dlpack", "_import_dlpack")
#: Primitives that must also say what to raise (or that errors are translated).
_RAISING = ("_allocate", "_free", "_copy_in", "_copy_out", "_copy_between", "_synchronize", "kernel_table",
            "_compile", "_launch_user", "_translate_error")
ALLOCATOR_METHODS = ("allocate", "free", "copy_in", "copy_out", "transfer", "synchronize", "allocate_pinned",
                     "free_pinned", "_allocate", "_free", "_copy_in", "_copy_out", "_transfer", "_synchronize",
                     "_allocate_pinned", "_free_pinned", "_translate")


def _contract_gaps(owner: Any, names: tuple[str, ...], raising: tuple[str, ...] = ()) -> list[str]:
    """What each docstring of ``owner.name`` fails to say: when it is called, on which thread (or
    under which lock), bytes for a method taking sizes or offsets, and errors for ``raising``."""
    gaps = []
    for name in names:
        fn = getattr(owner, name)
        doc = (inspect.getdoc(fn) or "").lower()
        params = inspect.signature(fn).parameters
        if "called" not in doc:
            gaps.append(f"{owner.__name__}.{name}: does not say when it is called")
        if "thread" not in doc and "lock held" not in doc:
            gaps.append(f"{owner.__name__}.{name}: does not say on which thread")
        if any(p in params for p in ("nbytes", "offset", "dst_offset")) and "byte" not in doc:
            gaps.append(f"{owner.__name__}.{name}: takes sizes but does not say they are bytes")
        if name in raising and not re.search(r"raise|translat", doc):
            gaps.append(f"{owner.__name__}.{name}: does not say which error to raise")
    return gaps


def test_every_vendor_primitive_states_its_contract() -> None:
    from dsrt.device import Device
    from dsrt.memory.allocator import Allocator

    gaps = _contract_gaps(Device, DEVICE_PRIMITIVES, _RAISING) + _contract_gaps(Allocator, ALLOCATOR_METHODS)
    assert not gaps, "\n".join(gaps)


def test_every_hook_states_when_and_where_it_is_called() -> None:
    from dsrt import hookspecs

    gaps = []
    for name in _hook_names():
        doc = (inspect.getdoc(getattr(hookspecs, name)) or "").lower()
        gaps += [f"{name}: no '{word}'" for word in ("called", "thread") if word not in doc]
    assert not gaps, "\n".join(gaps)


def test_the_contract_check_catches_a_silent_docstring() -> None:
    class Bare:
        def _allocate(self, nbytes: int) -> None:
            """Reserve memory."""

    assert len(_contract_gaps(Bare, ("_allocate",), ("_allocate",))) == 4


# --------------------------------------------------------------------------- the tutorial's backend

def tutorial_package() -> dict[str, str]:
    """The files of the ``tiny_dsrt`` package, assembled from the blocks of writing-a-backend.md
    whose first line is ``# tiny_dsrt/<file>`` (blocks of one file concatenate in order)."""
    files: dict[str, list[str]] = {}
    for block in re.findall(r"```python\n(.*?)```", _doc("writing-a-backend.md"), re.S):
        first, _, body = block.partition("\n")
        m = re.fullmatch(r"# (tiny_dsrt/\w+\.py)", first.strip())
        if m:
            files.setdefault(m.group(1), []).append(body)
    return {path: "".join(parts) for path, parts in files.items()}


def test_the_tutorial_backend_passes_the_conformance_kit(tmp_path: Path) -> None:
    files = tutorial_package()
    assert sorted(files) == ["tiny_dsrt/__init__.py", "tiny_dsrt/device.py", "tiny_dsrt/plugin.py"]
    text = _doc("writing-a-backend.md")
    assert 'tiny = "tiny_dsrt.plugin"' in text  # the entry point names the module the blocks build
    for rel, source in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(source)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
           "DSRT_PLUGINS": "cpu"}  # the kit copies to and from cpu:0; nothing else needs probing
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "--pyargs", "dsrt.testing", "--dsrt-plugin", "tiny_dsrt.plugin",
         "--dsrt-backend", "tiny", "-p", "no:cacheprovider", "-q", "-rA"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    passed = set(re.findall(r"^PASSED \S+::(\S+)", out, re.M))
    for test in ("test_device_info[tiny:0]", "test_kernel_against_reference[tiny:0-add-float32]",
                 "test_kernel_against_reference[tiny:0-reduce_sum-float64]",
                 "test_plugin_kernel_against_reference[tiny:0-tiny.leaky_relu-float32]",
                 "test_unclaimed_kernels_are_refused[tiny:0]", "test_copy_between_devices[tiny:0]"):
        assert test in passed, f"{test} did not pass:\n{out[-4000:]}"
    assert "tiny:0 does not implement softmax for float32" in out  # unclaimed: skipped with the reason


if __name__ == "__main__":  # print the table of docs/kernels.md
    print("\n".join(kernel_rows().values()))
