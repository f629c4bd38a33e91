"""dsrt-c-example: a dsrt backend whose device is the C library next to this file.

Everything about the device lives in C (``csrc/cexample.c``); this module only names the library.
The entry point ``cexample = "dsrt_c_example:plugin"`` registers it.
"""

from __future__ import annotations

from pathlib import Path

from dsrt.cabi import library_plugin

#: The shared library built from csrc/cexample.c by ``pip install``.
LIBRARY = Path(__file__).resolve().with_name("libdsrt_c_example.so")

plugin = library_plugin(
    "cexample", LIBRARY, priority=-20, description="example C backend (host-emulated) through the dsrt C ABI",
    install_hint="pip install ./examples/c-plugin (needs a C compiler)",
)
