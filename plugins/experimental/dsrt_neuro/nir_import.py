"""Import NIR graphs (the ``nir`` package) as :class:`~dsrt_neuro.network.Network`.

Supported nodes: Input, Output, LIF, CubaLIF, IF, LI, CubaLI, I (neurons), Linear, Affine, Scale,
Flatten (transforms, composed into dense weight matrices between neuron populations; an Affine's
bias becomes a constant input current of the population it feeds) and Conv2d where its input shape
is known (unrolled into explicit synapses). Anything else is refused with the node's name.
Timing: an Input drives its targets in the same step (delay 0); spikes between populations take one
step (delay 1), as on Loihi.

Budgets, checked before allocating: a file must be a regular HDF5 file; before ``nir.read`` loads
it, the shapes of all its datasets are read and the bytes they take as float64 are summed, and
every dense matrix the import forms (identity, composed weights, unrolled convolutions) is sized
first. Either past ``max_bytes`` (default: :data:`DEFAULT_MAX_BYTES` or half the host memory
available now, whichever is less; ``DSRT_NIR_MAX_BYTES`` overrides it) is a
:class:`~dsrt_neuro.errors.NetworkError` naming the file, the node and the size. Groups nested
more than :data:`MAX_GROUP_DEPTH` deep, and arrays holding NaN or infinite values, are refused the
same way.
"""

from __future__ import annotations

import os
import stat
from typing import Any

import numpy as np

from dsrt.errors import format_bytes

from .errors import NetworkError, UnsupportedNodeError
from .network import Network

__all__ = ["from_nir", "NEURON_NODES", "TRANSFORM_NODES", "MAX_GROUP_DEPTH", "DEFAULT_MAX_BYTES", "default_max_bytes"]

#: Deepest nesting of HDF5 groups (graphs in graphs) a file may have.
MAX_GROUP_DEPTH = 32
#: Bytes per element of every array once imported (float64).
_ITEM = 8
#: Default budget of one import's arrays (1 GiB: a dense 11,585 x 11,585 float64 matrix, far more
#: synapses than the default chip's 16 MiB of synapse memory can hold).
DEFAULT_MAX_BYTES = 1 << 30


def default_max_bytes() -> int:
    """``DSRT_NIR_MAX_BYTES`` when set, else :data:`DEFAULT_MAX_BYTES` or half the host memory
    available now, whichever is less (bytes)."""
    text = os.environ.get("DSRT_NIR_MAX_BYTES", "").strip()
    if text:
        try:
            return max(1, int(text))
        except ValueError:
            raise NetworkError(f"DSRT_NIR_MAX_BYTES='{text}' is not an integer") from None
    avail = 0
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if not avail:
        try:
            avail = int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            avail = 8 << 30
    return min(DEFAULT_MAX_BYTES, avail // 2)


def _prescan(path: str, max_bytes: int) -> None:
    """Refuse a file that is not a regular file, nests groups too deeply, or holds more than ``max_bytes``
    of arrays (as float64), reading only its metadata."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise NetworkError(f"{path}: cannot read NIR file: {reason}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NetworkError(f"{path}: not a regular file; an NIR file is an HDF5 file")
    finally:
        os.close(fd)
    import h5py

    found: list[tuple[str, tuple[int, ...], int]] = []
    deep: list[str] = []

    def visit(name: str, obj: Any) -> Any:
        if name.count("/") > MAX_GROUP_DEPTH:
            deep.append(name)
            return True  # stops the walk
        if isinstance(obj, h5py.Dataset):
            shape = tuple(int(d) for d in (obj.shape or ()))
            n = 1
            for d in shape:
                n *= d
            found.append((name, shape, n * max(_ITEM, obj.dtype.itemsize)))
        return None

    try:
        with h5py.File(path, "r") as f:
            f.visititems(visit)
    except NetworkError:
        raise
    except Exception as exc:  # noqa: BLE001 - h5py's errors for a file that is not HDF5
        raise NetworkError(f"{path}: not a readable NIR (HDF5) file: {type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
    if deep:
        raise NetworkError(f"{path}: groups nested more than {MAX_GROUP_DEPTH} deep at '{deep[0][:120]}...'")
    total = 0
    for name, shape, nbytes in found:
        if nbytes > max_bytes:
            raise NetworkError(f"{path}: '{name}' of shape {shape} needs {format_bytes(nbytes)} as float64; the"
                               f" budget is {format_bytes(max_bytes)} (DSRT_NIR_MAX_BYTES); refusing before reading it")
        total += nbytes
    if total > max_bytes:
        raise NetworkError(f"{path}: its arrays need {format_bytes(total)} as float64; the budget is"
                           f" {format_bytes(max_bytes)} (DSRT_NIR_MAX_BYTES)")

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
    def __init__(self, graph: Any, dt: float, max_bytes: int, where: str) -> None:
        self.g = graph
        self.dt = dt
        self.max_bytes = max_bytes
        self.where = where
        self.preds: dict[str, list[str]] = {k: [] for k in graph.nodes}
        for a, b in graph.edges:
            a, b = a.split(".")[0], b.split(".")[0]
            if a not in self.preds or b not in self.preds:
                raise NetworkError(f"NIR edge ({a} -> {b}) names a node the graph does not have")
            self.preds[b].append(a)
        self.size: dict[str, int] = {}
        self.shape: dict[str, tuple[int, ...]] = {}

    def dense(self, rows: int, cols: int, name: str, what: str) -> None:
        """Refuse a dense float64 ``rows x cols`` matrix past the byte budget, before it is made."""
        nbytes = rows * cols * _ITEM
        if nbytes > self.max_bytes:
            raise NetworkError(f"{self.where}NIR node '{name}': {what} of {rows} x {cols} needs {format_bytes(nbytes)};"
                               f" the budget is {format_bytes(self.max_bytes)} (DSRT_NIR_MAX_BYTES)")

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
            if any(d < 0 for d in shp):
                raise NetworkError(f"{self.where}NIR node '{name}': negative size in shape {shp}")
            n = 1
            for d in shp:
                n *= d
            self.dense(n, n, name, "an identity")
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
            wshape = np.shape(node.weight)
            if len(shp) == 3 and len(wshape) == 4:
                self.dense(int(wshape[0]) * shp[1] * shp[2], shp[0] * shp[1] * shp[2], name, "an unrolled convolution")
            w = _conv2d_matrix(name, node, shp)
            b = np.asarray(node.bias, np.float64)
            cout = node.weight.shape[0]
            out_n = w.shape[0]
            bb = np.repeat(np.broadcast_to(b, (cout,)), out_n // cout)
            return {src: w @ m for src, m in terms.items()}, w @ bias + bb, (out_n,)
        w = np.asarray(node.weight, np.float64)
        if w.ndim != 2 or w.shape[1] != bias.size:
            raise NetworkError(f"NIR node '{name}' ({k}): weight shape {w.shape} does not take {bias.size} inputs")
        for m in terms.values():
            self.dense(w.shape[0], m.shape[1], name, "a composed weight matrix")
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


def from_nir(graph: Any, dt: float, *, max_bytes: int | None = None) -> Network:
    """Build a Network from an ``nir.NIRGraph`` or an NIR file path (``dt`` in seconds, for checks).

    ``max_bytes`` bounds the float64 arrays read from a file and every dense matrix the import forms
    (default :func:`default_max_bytes`); it is checked before allocating. Every problem with the file
    or the graph is a :class:`~dsrt_neuro.errors.NetworkError` whose message names the file.
    """
    import nir

    budget = default_max_bytes() if max_bytes is None else int(max_bytes)
    where = ""
    if isinstance(graph, (str, bytes)) or hasattr(graph, "__fspath__"):
        path = os.fsdecode(graph)
        where = f"{path}: "
        _prescan(path, budget)
        try:
            graph = nir.read(path)
        except RecursionError:
            raise NetworkError(f"{path}: cannot read NIR file: graphs nested too deeply") from None
        except Exception as exc:  # noqa: BLE001 - the nir package's errors for a malformed file
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise NetworkError(f"{path}: cannot read NIR file: {type(exc).__name__}: {first[:300]}") from None
    if not isinstance(graph, nir.NIRGraph):
        raise NetworkError(f"expected an NIR graph or file, got {type(graph).__name__}")
    for name, node in graph.nodes.items():
        if isinstance(node, nir.NIRGraph):
            raise UnsupportedNodeError(f"{where}NIR node '{name}' is a nested graph; flatten it first", node=name)
        for field_name, value in vars(node).items():
            if isinstance(value, np.ndarray) and value.dtype.kind in "fc" and not np.all(np.isfinite(value)):
                raise NetworkError(f"{where}NIR node '{name}': '{field_name}' holds NaN or infinite values")
    try:
        return _Importer(graph, dt, budget, where).build()
    except UnsupportedNodeError as exc:
        if where and not str(exc).startswith(where):
            raise UnsupportedNodeError(where + str(exc), node=exc.node) from None
        raise
    except NetworkError as exc:
        if where and not str(exc).startswith(where) and type(exc) is NetworkError:
            raise NetworkError(where + str(exc)) from None
        raise
    except (ValueError, TypeError, IndexError, KeyError, AttributeError, OverflowError) as exc:
        # Values the nir package accepted but that do not make a network (mismatched shapes, odd types).
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise NetworkError(f"{where}the NIR graph does not make a network: {type(exc).__name__}: {first[:300]}") from None
