"""``load_qasm``: OpenQASM 2 or 3 from text or a file, by the version in its header."""

from __future__ import annotations

import re
from pathlib import Path

from .circuit import Circuit
from .qasm2 import QasmError, parse_qasm2
from .qasm3 import parse_qasm3

__all__ = ["load_qasm", "QasmError"]

_HEADER = re.compile(r"^\s*(?://[^\n]*\n\s*|/\*.*?\*/\s*)*OPENQASM\s+([0-9.]+)", re.S)


def load_qasm(source: str | Path) -> Circuit:
    """Parse a program; ``source`` is a path (``Path`` or a string naming an existing ``.qasm`` file) or text."""
    file = "<qasm>"
    if isinstance(source, Path) or ("\n" not in source and source.endswith((".qasm", ".qasm3", ".qasm2"))):
        path = Path(source)
        try:
            text = path.read_text()
        except OSError as exc:
            raise QasmError(f"cannot read: {exc.strerror or exc}", file=str(path)) from None
        file = str(path)
    else:
        text = str(source)
    m = _HEADER.match(text)
    version = m.group(1) if m else "3"
    name = Path(file).stem if file != "<qasm>" else "qasm"
    if version.startswith("2"):
        return parse_qasm2(text, file=file, name=name)
    return parse_qasm3(text, file=file, name=name)
