"""The JSON Schema of topology files and its validation with YAML locations (private).

:data:`SCHEMA` is the source of truth; ``specs/schema.json`` is its published copy (regenerate it
with ``python -m dsrt.topology.schema specs/schema.json``; a test checks they agree). The schema
checks shapes and types; :mod:`dsrt.topology.build` checks meaning (backends, ids, links, units).
"""

from __future__ import annotations

import difflib
import json
import sys
from typing import Any

import jsonschema
from jsonschema.exceptions import ValidationError, best_match

from .units import BANDWIDTH_HINT, LATENCY_HINT, SIZE_HINT
from .yaml import Doc

__all__ = ["SCHEMA", "LINK_KINDS", "validate_doc", "schema_json"]

#: Link kinds a file may name.
LINK_KINDS = (
    "pcie", "nvlink", "nvswitch", "hccs", "xgmi", "upi", "cxl", "infiniband", "roce", "ethernet",
    "shared-memory", "optical", "simulated", "other",
)

_EXT = {"^x-": {"description": "free-form extension (a place for YAML anchors)"}}
_NAME = {"type": "string", "pattern": r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$",
         "description": "a name of letters, digits, '_', '.', '-' (no '/' or ':')"}
_BANDWIDTH = {"description": BANDWIDTH_HINT, "type": ["number", "string"], "examples": ["25 GB/s", "200 Gbit/s"]}
_LATENCY = {"description": LATENCY_HINT, "type": ["number", "string"], "examples": ["2us", "800 ns"]}
_SIZE = {"description": SIZE_HINT, "type": ["integer", "string"], "examples": ["64GiB", "2 TB"]}
_KIND = {"description": "the link technology", "enum": list(LINK_KINDS)}
_BACKEND = {"type": "string", "pattern": r"^[a-z][a-z0-9_-]*$",
            "description": "a backend name such as cpu, opencl, cuda, npu, quantum, neuromorphic, photonic"}
_INDEX = {"type": "integer", "minimum": 0, "description": "device index within its backend"}
_COUNT = {"type": "integer", "minimum": 1, "maximum": 4096,
          "description": "declare this many devices, indices index..index+count-1"}
_PARAMS = {"type": "object", "description": "free-form parameters passed to the backend (e.g. a simulator's model)"}

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "dsrt device topology",
    "description": "Nodes, devices, links and simulated devices for the dsrt runtime. Sizes are bytes, "
                   "bandwidths bytes/s, latencies seconds; strings with units are accepted.",
    "type": "object",
    "additionalProperties": False,
    "patternProperties": _EXT,
    "properties": {
        "version": {"const": 1, "description": "format version (1)"},
        "name": {"type": "string", "description": "a name for this topology"},
        "description": {"type": "string"},
        "strict": {"type": "boolean", "description": "a declared device that is not present is an error"},
        "include": {
            "description": "a file name or a list of file names (relative to this file) whose nodes, links and"
                           " defaults are merged in first",
            "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
        },
        "defaults": {
            "type": "object",
            "additionalProperties": False,
            "description": "links used where none is declared",
            "properties": {
                "host": {"$ref": "#/$defs/link_default",
                         "description": "between a device and its node's host (PCIe unless said otherwise)"},
                "network": {"$ref": "#/$defs/link_default",
                            "description": "between nodes that have no declared link and no NICs"},
            },
        },
        "nodes": {"type": "array", "items": {"$ref": "#/$defs/node"}},
        "links": {"type": "array", "items": {"$ref": "#/$defs/link"},
                  "description": "links between devices ('node/cuda:0', or a local id) or nodes (by name)"},
    },
    "$defs": {
        "link_default": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"kind": _KIND, "bandwidth": _BANDWIDTH, "latency": _LATENCY},
        },
        "device": {
            "description": "a device: 'cuda:3', 'cuda' (index 0), 'cuda:*' (all found), or a mapping",
            "anyOf": [
                {"type": "string", "pattern": r"^[a-z][a-z0-9_-]*(:([0-9]+|\*))?$"},
                {
                    "type": "object",
                    "additionalProperties": False,
                    "patternProperties": _EXT,
                    "required": ["backend"],
                    "properties": {
                        "backend": _BACKEND,
                        "index": _INDEX,
                        "count": _COUNT,
                        "select": {"enum": ["all"], "description": "bind every device the backend finds"},
                        "params": _PARAMS,
                        "description": {"type": "string"},
                    },
                },
            ],
        },
        "simulated": {
            "type": "object",
            "description": "a simulated device created by its backend from the model parameters",
            "additionalProperties": False,
            "patternProperties": _EXT,
            "required": ["backend"],
            "properties": {
                "backend": _BACKEND,
                "index": _INDEX,
                "count": _COUNT,
                "params": _PARAMS,
                "description": {"type": "string"},
            },
        },
        "nics": {
            "type": "object",
            "description": "the node's network ports, used between nodes that have no declared link",
            "additionalProperties": False,
            "required": ["bandwidth"],
            "properties": {
                "kind": _KIND,
                "count": {"type": "integer", "minimum": 1, "maximum": 1024},
                "bandwidth": {**_BANDWIDTH, "description": BANDWIDTH_HINT + " (per port)"},
                "latency": {**_LATENCY, "description": LATENCY_HINT + " (port to port across the fabric)"},
            },
        },
        "node": {
            "type": "object",
            "additionalProperties": False,
            "patternProperties": _EXT,
            "properties": {
                "name": _NAME,
                "description": {"type": "string"},
                "replicas": {"type": "integer", "minimum": 1, "maximum": 65536,
                             "description": "declare this many identical nodes, named <name>00, <name>01, ..."},
                "from": {"type": "string",
                         "description": "take this node's definition from another file: 'dgx.yaml' or 'dgx.yaml#node'"},
                "host_memory": _SIZE,
                "leader": {"type": "string", "description": "the local id of the device that talks to other nodes"},
                "devices": {"type": "array", "items": {"$ref": "#/$defs/device"}},
                "simulated": {"type": "array", "items": {"$ref": "#/$defs/simulated"}},
                "links": {"type": "array", "items": {"$ref": "#/$defs/link"},
                          "description": "links between this node's devices (local ids; 'host' is the node)"},
                "nics": {"$ref": "#/$defs/nics"},
            },
        },
        "link": {
            "type": "object",
            "additionalProperties": False,
            "patternProperties": _EXT,
            "required": ["bandwidth"],
            "properties": {
                "name": {"type": "string"},
                "description": {"type": "string"},
                "between": {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 2,
                            "description": "the two endpoints"},
                "mesh": {
                    "description": "a list of endpoints, or a glob such as 'cuda:*'; every pair of them is linked",
                    "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 2}],
                },
                "kind": _KIND,
                "bandwidth": _BANDWIDTH,
                "latency": _LATENCY,
            },
        },
    },
}


def schema_json() -> str:
    """The published text of :data:`SCHEMA` (what ``specs/schema.json`` holds)."""
    return json.dumps(SCHEMA, indent=2, ensure_ascii=False) + "\n"


_VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def _path_text(path: tuple[Any, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "top level"


def _short(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_JSON_TYPES = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
               float: "a number", type(None): "null"}


def _type_name(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _hint(error: ValidationError) -> str | None:
    desc = error.schema.get("description") if isinstance(error.schema, dict) else None
    return desc if isinstance(desc, str) else None


def _message(error: ValidationError, inherited: str | None) -> tuple[tuple[Any, ...], str, bool]:
    """(path to point at, message, point at the key) for one schema error."""
    path = tuple(error.absolute_path)
    where = _path_text(path)
    inst = error.instance
    v = error.validator
    if v == "additionalProperties" and isinstance(inst, dict):
        allowed = sorted(error.schema.get("properties", {}))
        extras = [k for k in inst if k not in allowed and not str(k).startswith("x-")]
        key = extras[0] if extras else "?"
        close = difflib.get_close_matches(str(key), allowed, n=1)
        tip = f"; did you mean '{close[0]}'?" if close else ""
        return (*path, key), f"{where}: unknown key '{key}' (expected one of: {', '.join(allowed)}){tip}", True
    if v == "required":
        missing = error.message.split("'")[1] if "'" in error.message else str(error.validator_value)
        return path, f"{where}: missing required key '{missing}'", False
    if v in ("type", "anyOf", "oneOf", "pattern"):
        hint = _hint(error) or inherited or (_hint(error.parent) if error.parent is not None else None)
        if v == "type" and not isinstance(error.validator_value, list):
            names = [str(error.validator_value)]
            hint = " or ".join({"object": "a mapping", "array": "a list", "string": "a string",
                                "integer": "an integer", "number": "a number",
                                "boolean": "a boolean (true/false)"}.get(n, n) for n in names)
        if hint is not None:
            return path, f"{where}: expected {hint}, got {_type_name(inst)} {_short(inst)}", False
    if v == "enum":
        choices = ", ".join(str(x) for x in error.validator_value)
        close = difflib.get_close_matches(str(inst), [str(x) for x in error.validator_value], n=1)
        tip = f"; did you mean '{close[0]}'?" if close else ""
        return path, f"{where}: {_short(inst)} is not one of: {choices}{tip}", False
    if v == "const":
        return path, f"{where}: expected {error.validator_value!r}, got {_short(inst)}", False
    if v in ("minimum", "maximum", "minItems", "maxItems"):
        return path, f"{where}: {error.message[:160]}", False
    return path, f"{where}: {error.message[:200]}", False


def validate_doc(doc: Doc) -> None:
    """Validate ``doc.data`` against :data:`SCHEMA`; raise ``TopologyError`` at the failing value."""
    if not isinstance(doc.data, dict):
        raise doc.error((), f"expected a mapping with 'nodes' at the top level, got {_type_name(doc.data)}")
    error = best_match(_VALIDATOR.iter_errors(doc.data))
    if error is None:
        return
    # Descend into anyOf branches whose type fits the value: their errors are the precise ones.
    inherited = None
    while error.validator in ("anyOf", "oneOf") and error.context:
        fitting = [e for e in error.context
                   if e.validator != "type" and e.relative_schema_path and len(e.relative_schema_path) > 0]
        if not fitting or (_hint(error) is not None and not isinstance(error.instance, dict)):
            break
        inherited = _hint(error)
        error = best_match(fitting) or error
    path, message, key = _message(error, inherited)
    raise doc.error(path, message, key=key)


if __name__ == "__main__":  # pragma: no cover - a maintenance tool
    target = sys.argv[1] if len(sys.argv) > 1 else "specs/schema.json"
    with open(target, "w", encoding="utf-8") as fh:
        fh.write(schema_json())
