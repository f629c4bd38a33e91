"""Builds ``dsrt_c_example/libdsrt_c_example.so`` from ``csrc/cexample.c`` (gcc through setuptools).

The library is an ordinary shared library, not a Python extension: setuptools only compiles and
links it. It includes ``dsrt_plugin.h`` from the installed dsrt package (or, when dsrt is not
importable in the build environment, from the dsrt source tree this example lives in).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent


def dsrt_include_dir() -> str:
    """The directory holding dsrt_plugin.h."""
    spec = importlib.util.find_spec("dsrt")  # locates the package without importing it
    for root in (spec.submodule_search_locations or []) if spec else []:
        if (Path(root) / "cabi" / "dsrt_plugin.h").exists():
            return str(Path(root) / "cabi")
    tree = HERE.parent.parent / "dsrt" / "cabi"
    if (tree / "dsrt_plugin.h").exists():
        return str(tree)
    raise SystemExit("dsrt_plugin.h not found: install dsrt first (pip install dsrt), then this package")


class BuildSharedLibrary(build_ext):
    """Names the output lib<name>.so (no Python ABI tag) and exports no PyInit_ symbol."""

    def get_ext_filename(self, fullname: str) -> str:
        parts = fullname.split(".")
        return os.path.join(*parts[:-1], parts[-1] + ".so")

    def get_export_symbols(self, ext: Extension) -> list[str]:
        return list(ext.export_symbols or [])


setup(
    ext_modules=[
        Extension(
            "dsrt_c_example.libdsrt_c_example",
            sources=["csrc/cexample.c"],
            include_dirs=[dsrt_include_dir()],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra"],
            libraries=["pthread"],
        )
    ],
    cmdclass={"build_ext": BuildSharedLibrary},
)
