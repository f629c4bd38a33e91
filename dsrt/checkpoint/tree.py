"""Trees of arrays and scalars: flattening them into named leaves and building them back.

A tree is a dict (or list or tuple) nesting dicts, lists and tuples whose leaves are dsrt
:class:`~dsrt.array.Array` objects, numpy arrays, numpy scalars and plain Python scalars (``bool``,
``int``, ``float``, ``complex``, ``str``, ``None``). Dict keys must be strings.

Array leaves get a *name*: the path of keys and list indices from the root joined by ``/``, each
component escaped (:func:`escape`) so that it is a valid zarr node name and a safe file name.
Scalars live in the structure itself (JSON, floats as exact ``float.hex`` strings).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..array import Array
from ..errors import ConfigurationError

__all__ = ["Leaf", "flatten", "unflatten", "escape", "unescape"]

_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


def escape(key: str) -> str:
    """A file- and zarr-safe, injective spelling of one key: letters, digits, ``_`` and ``-`` stay,
    every other byte of its UTF-8 becomes ``%XX``; a leading ``__`` (reserved by zarr) has its first
    ``_`` escaped; the empty key becomes ``%``."""
    if key == "":
        return "%"
    out = "".join(ch if ch in _SAFE else "".join(f"%{b:02X}" for b in ch.encode("utf-8")) for ch in key)
    if out.startswith("__"):
        out = "%5F" + out[1:]
    return out


def unescape(name: str) -> str:
    """The key :func:`escape` spelt as ``name``."""
    if name == "%":
        return ""
    raw = bytearray()
    i = 0
    while i < len(name):
        if name[i] == "%":
            raw.append(int(name[i + 1:i + 3], 16))
            i += 3
        else:
            raw.extend(name[i].encode("ascii"))
            i += 1
    return raw.decode("utf-8")


@dataclass
class Leaf:
    """One array leaf: ``name`` (escaped path), ``value`` (the Array or numpy array as given) and
    ``kind``: ``'dsrt'`` (a dsrt Array), ``'numpy'`` (an ndarray) or ``'scalar'`` (a numpy scalar)."""

    name: str
    value: Any
    kind: str


def flatten(tree: Any) -> tuple[dict[str, Any], list[Leaf]]:
    """``(structure, leaves)``: a JSON-ready description of ``tree`` and its array leaves in order.

    Raises :class:`~dsrt.errors.ConfigurationError` naming the path of anything that is not a
    supported node (a non-string dict key, an object that is neither an array nor a scalar).
    """
    if not isinstance(tree, (dict, list, tuple)):
        raise ConfigurationError(f"a checkpoint tree must be a dict, list or tuple, not {type(tree).__name__}")
    leaves: list[Leaf] = []
    structure = _encode(tree, [], leaves, set())
    return structure, leaves


def _encode(node: Any, path: list[str], leaves: list[Leaf], seen: set[int]) -> dict[str, Any]:
    where = "/".join(path) or "<root>"
    if isinstance(node, (dict, list, tuple)):
        if id(node) in seen:
            raise ConfigurationError(f"checkpoint tree: {where} contains itself")
        seen.add(id(node))
        try:
            if isinstance(node, dict):
                items: dict[str, Any] = {}
                for key, value in node.items():
                    if not isinstance(key, str):
                        raise ConfigurationError(
                            f"checkpoint tree: key {key!r} under {where} is a {type(key).__name__}; keys must be str"
                        )
                    items[key] = _encode(value, [*path, escape(key)], leaves, seen)
                return {"t": "dict", "v": items}
            kind = "list" if isinstance(node, list) else "tuple"
            return {"t": kind, "v": [_encode(v, [*path, str(i)], leaves, seen) for i, v in enumerate(node)]}
        finally:
            seen.discard(id(node))
    name = "/".join(path)
    if isinstance(node, Array):
        leaves.append(Leaf(name, node, "dsrt"))
        return {"t": "array", "name": name}
    if isinstance(node, np.ndarray):
        leaves.append(Leaf(name, node, "numpy"))
        return {"t": "array", "name": name}
    if isinstance(node, np.generic):
        leaves.append(Leaf(name, np.asarray(node), "scalar"))
        return {"t": "array", "name": name}
    if node is None:
        return {"t": "none"}
    if isinstance(node, bool):
        return {"t": "bool", "v": node}
    if isinstance(node, int):
        return {"t": "int", "v": node}
    if isinstance(node, float):
        return {"t": "float", "v": node.hex()}
    if isinstance(node, complex):
        return {"t": "complex", "v": [node.real.hex(), node.imag.hex()]}
    if isinstance(node, str):
        return {"t": "str", "v": node}
    raise ConfigurationError(
        f"checkpoint tree: {where} is a {type(node).__name__}; leaves must be dsrt Arrays, numpy arrays or"
        " scalars (bool, int, float, complex, str, None)"
    )


def unflatten(structure: dict[str, Any], arrays: dict[str, Any]) -> Any:
    """The tree described by ``structure``, with ``arrays[name]`` at each array leaf."""
    t = structure["t"]
    if t == "dict":
        return {k: unflatten(v, arrays) for k, v in structure["v"].items()}
    if t == "list":
        return [unflatten(v, arrays) for v in structure["v"]]
    if t == "tuple":
        return tuple(unflatten(v, arrays) for v in structure["v"])
    if t == "array":
        return arrays[structure["name"]]
    if t == "none":
        return None
    if t in ("bool", "int", "str"):
        return structure["v"]
    if t == "float":
        return float.fromhex(structure["v"])
    if t == "complex":
        re, im = structure["v"]
        return complex(float.fromhex(re), float.fromhex(im))
    raise ConfigurationError(f"checkpoint tree: unknown node type {t!r}")


def array_names(structure: dict[str, Any]) -> Iterator[str]:
    """The names of the array leaves of ``structure``, in tree order."""
    t = structure["t"]
    if t == "dict":
        for v in structure["v"].values():
            yield from array_names(v)
    elif t in ("list", "tuple"):
        for v in structure["v"]:
            yield from array_names(v)
    elif t == "array":
        yield structure["name"]
