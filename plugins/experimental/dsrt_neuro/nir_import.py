"""Import NIR graphs (the ``nir`` package) as :class:`~dsrt_neuro.network.Network`.

Supported nodes: Input, Output, LIF, CubaLIF, IF, LI, CubaLI, I (neurons), Linear, Affine, Scale,
Flatten (transforms, composed into dense weight matrices between neuron populations; an Affine's
bias becomes a constant input current of the population it feeds) and Conv2d where its input shape
is known (unrolled into explicit synapses). Anything else is refused with the node's name.
Timing: an Input drives its targets in the same step (delay 0); spikes between populations take one
step (delay 1), as on Loihi.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import NetworkError, UnsupportedNodeError
from .network import Network

__all__ = ["from_nir", "NEURON_NODES", "TRANSFORM_NODES"]

NEURON_NODES = {"LIF": "lif", "CubaLIF": "cuba_lif", "IF": "if", "LI": "li", "CubaLI": "cuba_li", "I": "i"}
TRANSFORM_NODES = ("Linear", "Affine", "Scale", "Flatten", "Conv2d")


def _flat(x: Any) -> np.ndarray:
    return np.asarray(x, np.float64).reshape(-1)


def _neuron_params(kind: str, node: Any) -> dict[str, np.ndarray]:
    if kind == "LIF":
        return {"tau_mem": _flat(node.tau), "r": _flat(node.r), "v_leak": _flat(node.v_leak),
                "v_threshold": _flat(node.v_threshold), "v_reset": _flat(node.v_reset)}
    if kind == "CubaLIF":
        return {"tau_mem": _flat(node.tau_mem), "tau_syn": _flat(node.tau_syn), "r": _flat(node.r),
                "v_leak": _flat(node.v_leak), "v_threshold": _flat(node.v_threshold), "v_reset": _flat(node.v_reset),
                "w_in": _flat(node.w_in)}
    if kind == "IF":
        return {"r": _flat(node.r), "v_threshold": _flat(node.v_threshold), "v_reset": _flat(node.v_reset)}
    if kind == "LI":
        return {"tau_mem": _flat(node.tau), "r": _flat(node.r), "v_leak": _flat(node.v_leak)}
    if kind == "CubaLI":
        return {"tau_mem": _flat(node.tau_mem), "tau_syn": _flat(node.tau_syn), "r": _flat(node.r),
                "v_leak": _flat(node.v_leak), "w_in": _flat(node.w_in)}
    return {"r": _flat(node.r)}  # I


def _conv2d_matrix(name: str, node: Any, in_shape: tuple[int, ...]) -> np.ndarray:
    w = np.asarray(node.weight, np.float64)
    if len(in_shape) != 3 or w.ndim != 4 or in_shape[0] != w.shape[1]:
        raise UnsupportedNodeError(f"NIR node '{name}' (Conv2d): needs a known (C, H, W) input with C = {w.shape[1]},"
                                   f" got {in_shape}", node=name)
    if int(np.prod(np.atleast_1d(node.groups))) != 1 or np.any(np.atleast_1d(node.dilation) != 1):
        raise UnsupportedNodeError(f"NIR node '{name}' (Conv2d): groups and dilation other than 1 are not supported",
                                   node=name)
    cin, h, wd = in_shape
    cout, _, kh, kw = w.shape
    sh, sw = (np.broadcast_to(np.asarray(node.stride), (2,)).astype(int))
    pad = node.padding
    if isinstance(pad, str):
        raise UnsupportedNodeError(f"NIR node '{name}' (Conv2d): string padding '{pad}' is not supported", node=name)
    ph, pw = np.broadcast_to(np.asarray(pad), (2,)).astype(int)
    oh, ow = (h + 2 * ph - kh) // sh + 1, (wd + 2 * pw - kw) // sw + 1
    m = np.zeros((cout * oh * ow, cin * h * wd))
    for co in range(cout):
        for y in range(oh):
            for x in range(ow):
                row = (co * oh + y) * ow + x
                for ci in range(cin):
                    for dy in range(kh):
                        iy = y * sh - ph + dy
                        if not 0 <= iy < h:
                            continue
                        for dx in range(kw):
                            ix = x * sw - pw + dx
                            if 0 <= ix < wd:
                                m[row, (ci * h + iy) * wd + ix] += w[co, ci, dy, dx]
    return m


class _Importer:
    def __init__(self, graph: Any, dt: float) -> None:
        self.g = graph
        self.dt = dt
        self.preds: dict[str, list[str]] = {k: [] for k in graph.nodes}
        for a, b in graph.edges:
            a, b = a.split(".")[0], b.split(".")[0]
            if a not in self.preds or b not in self.preds:
                raise NetworkError(f"NIR edge ({a} -> {b}) names a node the graph does not have")
            self.preds[b].append(a)
        self.size: dict[str, int] = {}
        self.shape: dict[str, tuple[int, ...]] = {}

    def kind(self, name: str) -> str:
        k = type(self.g.nodes[name]).__name__
        if k not in NEURON_NODES and k not in TRANSFORM_NODES and k not in ("Input", "Output"):
            raise UnsupportedNodeError(
                f"NIR node '{name}' has type {k}, which this backend does not run (supported: Input, Output, "
                f"{', '.join(NEURON_NODES)}, {', '.join(TRANSFORM_NODES)})", node=name)
        return k

    def source_shape(self, name: str) -> tuple[int, ...]:
        node = self.g.nodes[name]
        k = self.kind(name)
        if k == "Input":
            return tuple(int(s) for s in np.atleast_1d(node.input_type["input"]))
        return tuple(int(s) for s in np.atleast_1d(node.output_type["output"]))

    def signal(self, name: str, stack: tuple[str, ...] = ()) -> tuple[dict[str, np.ndarray], np.ndarray, tuple[int, ...]]:
        """What node ``name`` outputs: ({source population: matrix}, bias vector, shape)."""
        if name in stack:
            raise NetworkError(f"NIR graph has a cycle without neurons through '{name}'")
        k = self.kind(name)
        node = self.g.nodes[name]
        if k == "Input" or k in NEURON_NODES:
            shp = self.source_shape(name)
            n = int(np.prod(shp))
            return {name: np.eye(n)}, np.zeros(n), shp
        if k == "Output":
            raise NetworkError(f"NIR node '{name}' (Output) feeds another node")
        terms, bias, shp = self.inputs_of(name, (*stack, name))
        if k == "Flatten":
            return terms, bias, (int(np.prod(shp)),)
        if k == "Scale":
            s = _flat(node.scale)
            return {src: s[:, None] * m for src, m in terms.items()}, s * bias, shp
        if k == "Conv2d":
            w = _conv2d_matrix(name, node, shp)
            b = np.asarray(node.bias, np.float64)
            cout = node.weight.shape[0]
            out_n = w.shape[0]
            bb = np.repeat(np.broadcast_to(b, (cout,)), out_n // cout)
            return {src: w @ m for src, m in terms.items()}, w @ bias + bb, (out_n,)
        w = np.asarray(node.weight, np.float64)
        if w.ndim != 2 or w.shape[1] != bias.size:
            raise NetworkError(f"NIR node '{name}' ({k}): weight shape {w.shape} does not take {bias.size} inputs")
        b = _flat(node.bias) if k == "Affine" else np.zeros(w.shape[0])
        return {src: w @ m for src, m in terms.items()}, w @ bias + b, (w.shape[0],)

    def inputs_of(self, name: str, stack: tuple[str, ...]) -> tuple[dict[str, np.ndarray], np.ndarray, tuple[int, ...]]:
        preds = self.preds[name]
        if not preds:
            raise NetworkError(f"NIR node '{name}' has no input edge")
        terms: dict[str, np.ndarray] = {}
        bias: np.ndarray | None = None
        shp: tuple[int, ...] = ()
        for p in preds:
            t, b, s = self.signal(p, stack)
            if bias is not None and b.size != bias.size:
                raise NetworkError(f"NIR node '{name}': inputs of sizes {bias.size} and {b.size} cannot be summed")
            bias = b if bias is None else bias + b
            shp = s
            for src, m in t.items():
                terms[src] = terms[src] + m if src in terms else m
        assert bias is not None
        return terms, bias, shp

    def build(self) -> Network:
        net = Network()
        g = self.g
        for name in g.nodes:
            if self.kind(name) == "Input":
                net.add_input(name, int(np.prod(self.source_shape(name))))
        plans = []
        for name, node in g.nodes.items():
            k = self.kind(name)
            if k not in NEURON_NODES:
                continue
            params = _neuron_params(k, node)
            n = max(v.size for v in params.values())
            terms, bias, _ = self.inputs_of(name, (name,)) if self.preds[name] else ({}, np.zeros(n), ())
            if bias.size != n:
                raise NetworkError(f"NIR node '{name}' ({k}) has {n} neurons but receives {bias.size} inputs")
            net.add_population(name, n, NEURON_NODES[k], bias=bias, **params)
            plans.append((name, terms))
        for name, terms in plans:
            for src, m in terms.items():
                net.connect(src, name, m, delay=0 if net.populations[src].kind == "input" else 1)
        for name in g.nodes:
            if self.kind(name) == "Output":
                preds = self.preds[name]
                if len(preds) != 1 or self.kind(preds[0]) not in NEURON_NODES:
                    raise UnsupportedNodeError(f"NIR node '{name}' (Output) must be fed by one neuron node", node=name)
                net.outputs[name] = preds[0]
        return net


def from_nir(graph: Any, dt: float) -> Network:
    """Build a Network from an ``nir.NIRGraph`` or an NIR file path (``dt`` in seconds, for checks)."""
    import nir

    if isinstance(graph, (str, bytes)) or hasattr(graph, "__fspath__"):
        try:
            graph = nir.read(graph)
        except Exception as exc:
            raise NetworkError(f"{graph}: cannot read NIR file: {type(exc).__name__}: {exc}") from exc
    if not isinstance(graph, nir.NIRGraph):
        raise NetworkError(f"expected an NIR graph or file, got {type(graph).__name__}")
    for name, node in graph.nodes.items():
        if isinstance(node, nir.NIRGraph):
            raise UnsupportedNodeError(f"NIR node '{name}' is a nested graph; flatten it first", node=name)
    return _Importer(graph, dt).build()
