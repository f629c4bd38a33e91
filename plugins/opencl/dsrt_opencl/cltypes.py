"""How each dsrt dtype is stored and computed in OpenCL C.

Every dtype has a storage type (the buffer's element type), a compute type (what arithmetic happens
in) and load/store expressions between the two. float16 uses the core ``vload_half``/``vstore_half_rte``
(storage only; arithmetic in float); bfloat16 and fp8 use the conversion functions in ``common.cl``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CType", "CTYPES", "unsigned_of", "type_min"]


@dataclass(frozen=True)
class CType:
    """``load``: format string with ``{p}`` (pointer) and ``{i}`` (element index) giving a compute value;
    ``store``: a statement with ``{p}``, ``{i}`` and ``{v}``. ``vector``: compute vector width for GEMM."""

    name: str
    storage: str
    compute: str
    load: str
    store: str
    is_float: bool
    vector: int = 8

    def ld(self, p: str, i: str) -> str:
        return self.load.format(p=p, i=i)

    def st(self, p: str, i: str, v: str) -> str:
        return self.store.format(p=p, i=i, v=v)


def _plain(name: str, c: str, is_float: bool, vector: int = 8) -> CType:
    return CType(name, c, c, "{p}[{i}]", "{p}[{i}] = ({v});", is_float, vector)


CTYPES: dict[str, CType] = {
    "bool": CType("bool", "uchar", "uchar", "{p}[{i}]", "{p}[{i}] = (uchar)(({v}) != 0);", False),
    "int8": _plain("int8", "char", False),
    "int16": _plain("int16", "short", False),
    "int32": _plain("int32", "int", False),
    "int64": _plain("int64", "long", False, 4),
    "uint8": _plain("uint8", "uchar", False),
    "float32": _plain("float32", "float", True),
    "float64": _plain("float64", "double", True, 4),
    "float16": CType("float16", "half", "float", "vload_half({i}, {p})", "vstore_half_rte(({v}), {i}, {p});", True),
    "bfloat16": CType("bfloat16", "ushort", "float", "dsrt_bf16_to_f32({p}[{i}])",
                      "{p}[{i}] = dsrt_f32_to_bf16({v});", True),
    "float8_e4m3fn": CType("float8_e4m3fn", "uchar", "float", "dsrt_e4m3_to_f32({p}[{i}])",
                           "{p}[{i}] = dsrt_f32_to_e4m3({v});", True),
    "float8_e5m2": CType("float8_e5m2", "uchar", "float", "dsrt_e5m2_to_f32({p}[{i}])",
                         "{p}[{i}] = dsrt_f32_to_e5m2({v});", True),
}

_UNSIGNED = {"char": "uchar", "short": "ushort", "int": "uint", "long": "ulong", "uchar": "uchar"}
_MIN = {"char": "CHAR_MIN", "short": "SHRT_MIN", "int": "INT_MIN", "long": "LONG_MIN", "uchar": "0"}


def unsigned_of(c: str) -> str:
    """The unsigned C type of the same width (integer arithmetic wraps through it, like numpy)."""
    return _UNSIGNED[c]


def type_min(c: str) -> str:
    """The identity of ``max`` for compute type ``c``."""
    return "-INFINITY" if c in ("float", "double") else _MIN[c]
