"""Plugins stay plugins: read from the source (nothing is imported), every ``.py`` under ``plugins/`` and
``examples/`` must

- import no other first-party plugin package (lazy imports inside functions count; imports under
  ``if TYPE_CHECKING:`` are annotations only and do not), and
- touch no underscored attribute of a core object: ``x._name`` fails when a class in ``dsrt/`` defines
  ``_name`` (a method, a ``self._name`` assignment, a class attribute or a ``__slots__`` entry), unless
  ``x`` is ``self``/``cls``/``super()`` inside a plugin class that defines ``_name`` itself (an
  override of a primitive such as ``_launch``, or the plugin's own attribute). Dunder names are free.
  A name that only an unrelated core class uses (not a contract class such as ``Array``, ``Device``,
  ``Allocation``, nor a core class the plugins subclass) is also free on any object when the plugin's
  own classes define it (``npu._bind()`` from the NPU's HCCL transport).

Backends reach what a kernel needs through ``Array``'s public backend surface (``allocation``,
``handle``, ``handle_offset``, ``byte_offset``, ``generation``, ``native``, ``native_generation``) and
share host memory through :mod:`dsrt.memory.hostmem`.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLUGIN_PACKAGES = frozenset({"dsrt_cpu", "dsrt_opencl", "dsrt_cuda", "dsrt_npu", "dsrt_quantum", "dsrt_neuro",
                             "dsrt_photonic", "acme_dsrt"})


def _is_dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__")


def _private(name: str) -> bool:
    return name.startswith("_") and not _is_dunder(name)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node except those under ``if TYPE_CHECKING:`` (their ``else:`` branches are kept)."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _targets(node: ast.AST) -> Iterator[ast.expr]:
    if isinstance(node, ast.Assign):
        for t in node.targets:
            yield from _flatten(t)
    elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
        yield from _flatten(node.target)


def _flatten(target: ast.expr) -> Iterator[ast.expr]:
    if isinstance(target, (ast.Tuple, ast.List)):
        for elt in target.elts:
            yield from _flatten(elt)
    else:
        yield target


def _class_defines(cls: ast.ClassDef) -> set[str]:
    """Underscored names a class defines: methods, class attributes, ``__slots__``, ``self._x = ...``."""
    names: set[str] = set()
    for stmt in cls.body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(stmt.name)
        for t in _targets(stmt):
            if isinstance(t, ast.Name):
                names.add(t.id)
                if t.id == "__slots__" and isinstance(stmt, (ast.Assign, ast.AnnAssign)) and stmt.value is not None:
                    for const in ast.walk(stmt.value):
                        if isinstance(const, ast.Constant) and isinstance(const.value, str):
                            names.add(const.value)
    for node in ast.walk(cls):
        for t in _targets(node):
            if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id in ("self", "cls"):
                names.add(t.attr)
    return {n for n in names if _private(n)}


def _base_name(expr: ast.expr) -> str:
    if isinstance(expr, ast.Name):
        return expr.id
    if isinstance(expr, ast.Attribute):
        return expr.attr
    return ""


#: Core classes whose objects plugins are handed or build on: their private names are never free.
CONTRACT_CLASSES = frozenset({"Array", "Allocation", "Device", "DeviceInfo", "Stream", "Event", "UserKernel",
                              "MemoryPool", "CachingPool", "Allocator", "Runtime"})


@functools.cache
def _core_classes() -> tuple[dict[str, set[str]], dict[str, list[str]]]:
    """Underscored names each core class defines, and each core class's bases (simple names)."""
    defines: dict[str, set[str]] = {}
    bases: dict[str, list[str]] = {}
    for path in (ROOT / "dsrt").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ClassDef):
                defines.setdefault(node.name, set()).update(_class_defines(node))
                bases.setdefault(node.name, []).extend(_base_name(b) for b in node.bases)
    return defines, bases


def _core_private_names() -> frozenset[str]:
    return frozenset(n for names in _core_classes()[0].values() for n in names)


def _contract_private_names(extended: set[str]) -> frozenset[str]:
    """Private names of the contract classes and of core classes in ``extended``, with their core bases."""
    defines, bases = _core_classes()
    todo, seen, names = [*CONTRACT_CLASSES, *extended], set(), set()
    while todo:
        cls = todo.pop()
        if cls in seen or cls not in defines:
            continue
        seen.add(cls)
        names |= defines[cls]
        todo.extend(bases.get(cls, ()))
    return frozenset(names)


@dataclass
class _Package:
    """The classes of one plugin package: what each defines and its bases (by simple name)."""

    defines: dict[str, set[str]] = field(default_factory=dict)
    bases: dict[str, list[str]] = field(default_factory=dict)

    def own(self, cls: str, seen: frozenset[str] = frozenset()) -> set[str]:
        """Names ``cls`` defines itself or through its bases in the same package."""
        names = set(self.defines.get(cls, ()))
        for base in self.bases.get(cls, ()):
            if base not in seen:
                names |= self.own(base, seen | {cls})
        return names


@functools.cache
def _source_files() -> tuple[tuple[Path, str | None], ...]:
    """``(file, its first-party plugin package or None)`` for every .py under plugins/ and examples/."""
    files = []
    for top in ("plugins", "examples"):
        for path in sorted((ROOT / top).rglob("*.py")):
            if any(part in ("build", "__pycache__") or part.endswith(".egg-info") for part in path.parts):
                continue
            package = next((p for p in path.relative_to(ROOT).parts if p in PLUGIN_PACKAGES), None)
            files.append((path, package))
    return tuple(files)


@functools.cache
def _parse(path: Path, mtime_ns: int) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def _tree(path: Path) -> ast.Module:
    return _parse(path, path.stat().st_mtime_ns)


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name


def cross_plugin_imports(extra: Sequence[tuple[Path, str | None]] = ()) -> list[str]:
    """``file:line imports <package>`` for each import of one plugin package by another file."""
    found = []
    for path, package in (*_source_files(), *extra):
        for node in _runtime_nodes(_tree(path)):
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top in PLUGIN_PACKAGES and top != package:
                    found.append(f"{_name(path)}:{node.lineno} imports {top}")
    return found


def private_core_attributes(extra: Sequence[tuple[Path, str | None]] = ()) -> list[str]:
    """``file:line x._name`` for each use of a core class's underscored attribute from plugin code.

    ``extra``: more ``(file, package)`` pairs to scan as if they were part of the plugins."""
    core = _core_private_names()
    files = (*_source_files(), *extra)
    trees = {path: _tree(path) for path, _ in files}
    packages: dict[str | None, _Package] = {}
    for path, package in files:
        pkg = packages.setdefault(package or str(path), _Package())
        for node in ast.walk(trees[path]):
            if isinstance(node, ast.ClassDef):
                pkg.defines.setdefault(node.name, set()).update(_class_defines(node))
                pkg.bases.setdefault(node.name, []).extend(_base_name(b) for b in node.bases)
    core_classes = _core_classes()[0]
    extended = {b for pkg in packages.values() for bs in pkg.bases.values() for b in bs if b in core_classes}
    strict = _contract_private_names(extended)
    found = []
    for path, package in files:
        pkg = packages[package or str(path)]
        plugin_names = set().union(*pkg.defines.values()) if pkg.defines else set()
        stack: list[tuple[ast.AST, str | None]] = [(trees[path], None)]
        while stack:
            node, cls = stack.pop()
            if isinstance(node, ast.ClassDef):
                cls = node.name
            if isinstance(node, ast.Attribute) and node.attr in core:
                receiver = node.value
                on_self = (isinstance(receiver, ast.Name) and receiver.id in ("self", "cls")) or (
                    isinstance(receiver, ast.Call) and isinstance(receiver.func, ast.Name)
                    and receiver.func.id == "super")
                own = on_self and cls is not None and node.attr in pkg.own(cls)
                if not own and (node.attr in strict or node.attr not in plugin_names):
                    found.append(f"{_name(path)}:{node.lineno} {ast.unparse(node)}")
            stack.extend((child, cls) for child in ast.iter_child_nodes(node))
    return found


def test_the_scan_sees_the_plugins_and_the_core_names():
    files = _source_files()
    assert {pkg for _, pkg in files} >= PLUGIN_PACKAGES
    core = _core_private_names()
    # Private names of the contract classes are seen; the names plugins used to reach for are gone:
    # what a kernel needs from an Array is public (allocation, byte_offset, native, native_generation).
    assert {"_pool", "_impls", "_supported", "_signatures"} <= core
    assert not {"_alloc", "_byte_offset", "_native", "_native_gen"} & core


def test_no_plugin_imports_another_plugin():
    assert cross_plugin_imports() == []


def test_no_plugin_touches_a_private_attribute_of_a_core_object():
    assert private_core_attributes() == []


@pytest.mark.parametrize("snippet, expected", [
    ("from dsrt_cpu.hostmem import host_view\n", "imports dsrt_cpu"),
    ("def f():\n    import dsrt_opencl.device\n", "imports dsrt_opencl"),
    ("def f(dev):\n    return dev._signatures.clear()\n", "dev._signatures"),
    ("def f(a):\n    a._pool, a._supported = None, 0\n", "a._supported"),
    ("class D:\n    def k(self, out):\n        self._impls['add'](out)\n", "self._impls"),
    # A plugin class that defines _impls for itself does not make dev._impls (a contract name) free.
    ("class T:\n    def __init__(self):\n        self._impls = 1\ndef f(dev):\n    return dev._impls\n", "dev._impls"),
    # ... nor may a subclass of a core class read a private name of that class it does not define.
    ("from dsrt.collective.mpi import MpiTransport\nclass U:\n    def __init__(self):\n        self._ops = 1\n"
     "class T(MpiTransport):\n    def f(self):\n        return self._ops\n", "self._ops"),
])
def test_the_checks_catch_a_violation(tmp_path, snippet, expected):
    """A violation in a file of a plugin package (dsrt_quantum here) is reported."""
    probe = tmp_path / "probe.py"
    probe.write_text(snippet)
    reported = cross_plugin_imports([(probe, "dsrt_quantum")]) + private_core_attributes([(probe, "dsrt_quantum")])
    assert any(r.startswith("probe.py:") and expected in r for r in reported), reported


def test_a_plugin_may_use_its_own_underscored_attributes(tmp_path):
    """``self._pool`` in a plugin class that defines ``_pool`` is its own attribute, not the core's; an
    override may call the primitive it overrides through ``super()``; a plugin imports itself freely."""
    probe = tmp_path / "probe.py"
    probe.write_text("from dsrt_quantum.circuit import Circuit\n"
                     "class T:\n    def __init__(self):\n        self._pool = 1\n"
                     "    def _launch(self):\n        return super()._launch() + self._pool\n")
    reported = cross_plugin_imports([(probe, "dsrt_quantum")]) + private_core_attributes([(probe, "dsrt_quantum")])
    assert not any(r.startswith("probe.py:") for r in reported), reported


# ---------------------------------------------------------------------------------------------------------------
# Every first-party plugin module imports (CuPy installed, no GPU needed), whatever is imported first.

_IMPORT_EVERY_MODULE = r"""
import importlib, pkgutil, sys, traceback
from pathlib import Path
root = Path(sys.argv[1])
packages = sorted({*root.glob("plugins/*/dsrt_*"), *root.glob("plugins/experimental/dsrt_*")})
imported, failed = [], []
for pkg in packages:
    if not (pkg / "__init__.py").is_file():
        continue
    names = [pkg.name] + [m.name for m in pkgutil.walk_packages([str(pkg)], prefix=pkg.name + ".")]
    for name in names:
        # Each module is imported first within its package, so an import cycle shows whichever module opens it.
        for loaded in [k for k in sys.modules if k == pkg.name or k.startswith(pkg.name + ".")]:
            del sys.modules[loaded]
        try:
            importlib.import_module(name)
            imported.append(name)
        except BaseException:
            failed.append(name + ": " + traceback.format_exc(limit=-3))
print("IMPORTED", " ".join(imported))
print("FAILED" if failed else "OK")
for f in failed:
    print(f)
"""


def test_every_module_of_every_first_party_plugin_imports():
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", _IMPORT_EVERY_MODULE, str(ROOT)], capture_output=True, text=True,
                         timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    imported = set(next(line for line in lines if line.startswith("IMPORTED")).split()[1:])
    assert "OK" in lines, run.stdout
    # The walk really covers every backend, CUDA's kernels and device included (CuPy is a CI dependency).
    assert {"dsrt_cpu.device", "dsrt_opencl.device", "dsrt_cuda.device", "dsrt_cuda.kernels", "dsrt_cuda.nccl",
            "dsrt_npu.device", "dsrt_quantum.device", "dsrt_neuro.device", "dsrt_photonic.device"} <= imported


# ---------------------------------------------------------------------------------------------------------------
# Capabilities are declared once (the kernel table) and the device's nature by declared flags.

def _all_kernel_names() -> list[str]:
    from dsrt.kernels import KERNELS

    return [*sorted(KERNELS), "no_such_kernel"]


def test_device_and_info_agree_on_every_kernel_and_dtype(rt):
    from dsrt import dtypes as dt

    dtypes = [None, *sorted(dt.STANDARD_DTYPES)]
    assert rt.devices
    for dev in rt.devices:
        for kernel in _all_kernel_names():
            for d in dtypes:
                assert dev.supports(kernel, d) == dev.info.supports(kernel, d), (dev.id, kernel, d)
        assert set(dev.info.kernels) == {k for k in _all_kernel_names() if dev.supports(k)}, dev.id


def _tiny_device():
    import numpy as np

    from dsrt.device import Device, DeviceInfo
    from dsrt.memory.hostmem import HostMemory, host_view

    def add(inputs, out, params, stream):
        np.add(host_view(inputs[0]), host_view(inputs[1]), out=host_view(out))

    class Tiny(HostMemory, Device):
        def kernel_table(self):
            return {"add": (frozenset({"float32"}), add)}

    info = DeviceInfo(id="tiny:0", backend="tiny", index=0, name="tiny", memory_bytes=1 << 20,
                      kernels={"gemm": frozenset({"float64"})}, synchronous=True, host_visible=True)
    return Tiny(info), add


def test_the_kernel_table_is_the_truth_and_add_kernel_updates_info():
    import dataclasses

    dev, add = _tiny_device()
    assert dict(dev.info.kernels) == {"add": frozenset({"float32"})}  # what info claimed is ignored
    assert not dev.supports("gemm", "float64") and not dev.info.supports("gemm", "float64")
    before = dev.info
    dev.add_kernel("mul", {"float32", "float64"}, add)
    assert dev.supports("mul", "float64") and dev.info.supports("mul", "float64")
    assert "mul" not in before.kernels  # a held DeviceInfo is a snapshot: frozen data
    dev.info = dataclasses.replace(dev.info, kernels={}, peak_flops=5.0)  # a backend updating a measured figure
    assert dev.info.peak_flops == 5.0 and dev.info.supports("mul", "float32") and dev.info.supports("add")
    with pytest.raises(dataclasses.FrozenInstanceError):
        dev.info.kernels = {}  # type: ignore[misc]


def test_no_backend_writes_into_its_frozen_info_and_each_declares_its_nature():
    """No ``object.__setattr__`` anywhere in plugins/examples; every ``DeviceInfo(...)`` they build says
    ``synchronous=`` and ``host_visible=`` and leaves ``kernels=`` to the kernel table."""
    calls = 0
    for path, _ in _source_files():
        for node in ast.walk(_tree(path)):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr == "__setattr__":
                pytest.fail(f"{_name(path)}:{node.lineno}: {ast.unparse(node)}")
            if _base_name(func) == "DeviceInfo":
                calls += 1
                given = {k.arg for k in node.keywords}
                assert {"synchronous", "host_visible"} <= given, f"{_name(path)}:{node.lineno} declares {sorted(given)}"
                assert "kernels" not in given, f"{_name(path)}:{node.lineno} repeats its kernel table in info"
    assert calls >= 8  # cpu, opencl, cuda, npu, quantum, neuro, photonic, acme


def test_declared_flags_match_what_the_devices_do(rt):
    import numpy as np

    from dsrt.memory.hostmem import host_view

    for dev in rt.devices:
        assert dev.synchronous is dev.info.synchronous
        if dev.info.synchronous:
            ev = dev.default_stream.record_event()
            assert ev.query(), dev.id
        if dev.info.host_visible:
            a = dev.asarray(np.arange(6, dtype=np.float32).reshape(2, 3)) if dev.info.dtypes else dev.empty(6)
            a.allocation.touch()
            assert isinstance(a.handle, np.ndarray) and a.handle.dtype == np.uint8, dev.id
            if dev.info.dtypes:
                np.testing.assert_array_equal(host_view(a), np.arange(6, dtype=np.float32).reshape(2, 3))


# ---------------------------------------------------------------------------------------------------------------
# The backend surface of Array.

def test_array_backend_surface_follows_the_allocation_when_the_pool_moves_it(cpu):
    import numpy as np

    from dsrt.memory.hostmem import host_view

    x = cpu.asarray(np.arange(12, dtype=np.float64))
    m = x.reshape(3, 4)
    assert m.allocation is x.allocation and m.byte_offset == x.byte_offset == 0
    assert m.handle is x.allocation.handle and m.handle_offset == x.allocation.offset
    view = host_view(m)
    assert m.native is view and m.native_generation == m.generation == x.allocation.generation
    assert host_view(m) is view  # cached while the allocation stays put
    gen = m.generation
    assert cpu.pool.spill(m.allocation) > 0  # the pool moves the bytes to a host tier
    assert m.handle is None and m.generation != gen  # the cached view is stale now
    m.allocation.touch()  # back on the device, somewhere else
    fresh = host_view(m)
    # a view of the bytes where they are now (the view cached on the pool's block where they came
    # back to the same place)
    assert m.native is fresh and m.native_generation == m.generation
    assert fresh.ctypes.data == m.handle.ctypes.data + m.handle_offset
    np.testing.assert_array_equal(fresh, np.arange(12, dtype=np.float64).reshape(3, 4))
    np.testing.assert_array_equal(cpu.launch("add", m, m).numpy(), 2 * np.arange(12.0).reshape(3, 4))


def test_ci_installs_cupy_and_the_readme_runs_what_ci_runs():
    """CI installs CuPy (``[cuda12]``) so the CUDA backend is imported and type-checked, and the README's
    test command is the CI's, word for word."""
    ci = (ROOT / ".ci" / "run").read_text()
    command = next(line for line in ci.splitlines() if "pip install" in line)
    assert '".[all,cuda12,test-npu]"' in command and "mypy dsrt" in command and "plugins/cuda" in command
    readme_command = command.replace('"$PYTHON"', "python3")
    assert readme_command in (ROOT / "README.md").read_text()
