"""``load_qasm``: OpenQASM 2 or 3 from text or a file, by the version in its header.

Reading is bounded (:class:`~dsrt_quantum.qasm2.QasmLimits`): a source must be a regular UTF-8 file
within the size limit, and every problem -- bytes that are not UTF-8, nesting, registers or gate
expansions past their budget, an internal failure of the OpenQASM 3 reference parser -- is a
:class:`~dsrt_quantum.qasm2.QasmError` whose message starts ``file:line:column:``.
"""

from __future__ import annotations

import re
from pathlib import Path

from .circuit import Circuit
from .qasm2 import QasmError, QasmLimits, parse_qasm2, read_qasm_file
from .qasm3 import parse_qasm3

__all__ = ["load_qasm", "QasmError", "QasmLimits"]

_HEADER = re.compile(r"^\s*(?://[^\n]*\n\s*|/\*.*?\*/\s*)*OPENQASM\s+([0-9.]+)", re.S)


def load_qasm(source: str | Path, *, limits: QasmLimits | None = None) -> Circuit:
    """Parse a program; ``source`` is a path (a ``Path``, or a string naming a ``.qasm`` file) or text.

    ``limits`` defaults to :meth:`QasmLimits.from_env`.
    """
    lim = limits or QasmLimits.from_env()
    file = "<qasm>"
    if isinstance(source, Path) or ("\n" not in source and source.endswith((".qasm", ".qasm3", ".qasm2"))):
        path = Path(source)
        file = str(path)
        text = read_qasm_file(path, shown=file, limits=lim)
    else:
        text = str(source)
        if len(text) > lim.max_bytes:
            raise QasmError(f"program of {len(text)} characters; the limit is {lim.max_bytes} (DSRT_QASM_MAX_BYTES)",
                            file=file)
    if not text.strip():
        raise QasmError("the program is empty", file=file, line=1, column=1)
    m = _HEADER.match(text)
    version = m.group(1) if m else "3"
    name = Path(file).stem if file != "<qasm>" else "qasm"
    if version.startswith("2"):
        return parse_qasm2(text, file=file, name=name, limits=lim)
    return parse_qasm3(text, file=file, name=name, limits=lim)
