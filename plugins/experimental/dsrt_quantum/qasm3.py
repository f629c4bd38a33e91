"""OpenQASM 3 through the ``openqasm3`` reference parser, for the subset a statevector simulator needs.

Supported: ``qubit``/``bit`` (and ``qreg``/``creg``) declarations, ``include "stdgates.inc"``, gate
definitions, gate calls with ``ctrl @``, ``negctrl @``, ``inv @`` and integer ``pow(k) @``
modifiers, ``measure`` (``c = measure q`` and ``measure q -> c``), ``reset``, ``barrier``, ``gphase``
(a global phase: ignored) and ``if (c == n)`` / ``if (c[i])`` around gate calls. Anything else is a
:class:`~dsrt_quantum.qasm2.QasmError` naming the line and column.
"""

from __future__ import annotations

import contextlib
import io
import math
import re
from collections.abc import Callable
from typing import Any

import numpy as np

from .circuit import MAX_GATE_QUBITS, Circuit, Instruction
from .gates import GATES, controlled, gate_matrix
from .qasm2 import QasmError, QasmLimits, assemble, check_nesting

__all__ = ["parse_qasm3"]

_CONSTS = {"pi": math.pi, "π": math.pi, "tau": 2 * math.pi, "τ": 2 * math.pi, "euler": math.e, "ℇ": math.e}
_FUNCS: dict[str, Callable[[float], float]] = {
    "sin": math.sin, "cos": math.cos, "tan": math.tan, "exp": math.exp, "ln": math.log, "sqrt": math.sqrt,
    "arcsin": math.asin, "arccos": math.acos, "arctan": math.atan,
}
_X = np.array([[0, 1], [1, 0]], dtype=np.complex128)


class _Builder:
    def __init__(self, file: str, limits: QasmLimits | None = None) -> None:
        self.file = file
        self.limits = limits or QasmLimits.from_env()
        self.count = 0
        self.costs: dict[str, int] = {}
        self.std = False
        self.qregs: dict[str, tuple[int, int]] = {}
        self.cregs: dict[str, tuple[int, int]] = {}
        self.nq = self.nc = 0
        self.gates: dict[str, Any] = {}
        self.ops: list[tuple[Any, Instruction]] = []

    def err(self, msg: str, node: Any) -> QasmError:
        span = getattr(node, "span", None)
        line = getattr(span, "start_line", None)
        col = getattr(span, "start_column", None)
        return QasmError(msg, file=self.file, line=line if isinstance(line, int) else None,
                         column=col + 1 if isinstance(col, int) else None)

    def real(self, e: Any, env: dict[str, float]) -> float:
        """A finite real value of an expression; overflow, complex and non-finite values are located errors."""
        try:
            v = self.value(e, env)
        except OverflowError:
            raise self.err("value overflows a float", e) from None
        except (ValueError, ZeroDivisionError, TypeError) as exc:
            raise self.err(f"cannot evaluate: {exc}", e) from None
        except RecursionError:
            raise self.err("expression nested too deeply", e) from None
        if not isinstance(v, (int, float)) or not math.isfinite(v):
            raise self.err(f"value {v!r} is not a finite real number", e)
        return float(v)

    def integer(self, e: Any, what: str, lo: int, hi: int) -> int:
        """An integer in ``[lo, hi]`` (a size, an index, a modifier argument)."""
        v = self.real(e, {})
        if v != int(v):
            raise self.err(f"{what} must be an integer, got {v}", e)
        if not lo <= v <= hi:
            raise self.err(f"{what} {int(v) if abs(v) < 1e18 else v} is out of range ({lo} to {hi})", e)
        return int(v)

    def reserve(self, n: int, node: Any) -> None:
        """Count ``n`` instructions about to be emitted; refuse past ``limits.max_operations`` before emitting."""
        if self.count + n > self.limits.max_operations:
            raise self.err(f"this brings the program to {self.count + n} instructions after gate expansion; the"
                           f" limit is {self.limits.max_operations} (DSRT_QASM_MAX_OPERATIONS)", node)
        self.count += n

    def cost(self, name: str, node: Any, depth: int = 0) -> int:
        """Instructions one call of ``name`` (without modifiers) expands to, counted without expanding."""
        from openqasm3 import ast

        d = self.gates.get(name)
        if d is None:
            return 1
        if name in self.costs:
            return self.costs[name]
        if depth > 64:
            raise self.err(f"gate '{name}' expands recursively", node)
        total = 0
        for st in d.body:
            if isinstance(st, ast.QuantumGate):
                total += 1 if st.modifiers else self.cost(st.name.name, st, depth + 1)
        self.costs[name] = total
        return total

    # ------------------------------------------------------------------ expressions
    def value(self, e: Any, env: dict[str, float]) -> float:
        from openqasm3 import ast

        if isinstance(e, (ast.FloatLiteral, ast.IntegerLiteral)):
            return float(e.value)
        if isinstance(e, ast.Identifier):
            if e.name in env:
                return env[e.name]
            if e.name in _CONSTS:
                return _CONSTS[e.name]
            raise self.err(f"unknown identifier '{e.name}' in expression", e)
        if isinstance(e, ast.UnaryExpression):
            v = self.value(e.expression, env)
            if e.op.name == "-":
                return -v
            raise self.err(f"unsupported unary operator '{e.op.name}'", e)
        if isinstance(e, ast.BinaryExpression):
            a, b = self.value(e.lhs, env), self.value(e.rhs, env)
            op = e.op.name
            if op == "+":
                return a + b
            if op == "-":
                return a - b
            if op == "*":
                return a * b
            if op == "/":
                if b == 0:
                    raise self.err("division by zero", e)
                return a / b
            if op == "**":
                return a ** b
            raise self.err(f"unsupported operator '{op}' in an angle", e)
        if isinstance(e, ast.FunctionCall) and e.name.name in _FUNCS and len(e.arguments) == 1:
            return _FUNCS[e.name.name](self.value(e.arguments[0], env))
        raise self.err(f"unsupported expression {type(e).__name__}", e)

    # ------------------------------------------------------------------ operands
    def operand(self, node: Any, regs: dict[str, tuple[int, int]], what: str, amap: dict[str, int] | None) -> list[int]:
        from openqasm3 import ast

        if isinstance(node, ast.Identifier):
            if amap is not None and node.name in amap:
                return [amap[node.name]]
            if node.name not in regs:
                raise self.err(f"unknown {what} '{node.name}'", node)
            off, size = regs[node.name]
            return list(range(off, off + size))
        if isinstance(node, ast.IndexedIdentifier):
            name = node.name.name
            if name not in regs:
                raise self.err(f"unknown {what} register '{name}'", node)
            off, size = regs[name]
            if len(node.indices) != 1 or not isinstance(node.indices[0], list) or len(node.indices[0]) != 1:
                raise self.err("only single indices like q[3] are supported", node)
            idx = self.integer(node.indices[0][0], "index", -size, size - 1)
            return [off + idx % size]
        raise self.err(f"unsupported operand {type(node).__name__}", node)

    # ------------------------------------------------------------------ statements
    def statement(self, s: Any, condition: tuple[tuple[int, ...], int] | None = None) -> None:
        from openqasm3 import ast

        if isinstance(s, ast.Include):
            if s.filename != "stdgates.inc":
                raise self.err(f"cannot include '{s.filename}' (only stdgates.inc)", s)
            self.std = True
        elif isinstance(s, ast.QubitDeclaration):
            cap = self.limits.max_qubits - self.nq
            size = 1 if s.size is None else self.integer(s.size, "register size", 1, max(cap, 1))
            if size > cap:
                raise self.err(f"'{s.qubit.name}' brings the program past {self.limits.max_qubits} qubits"
                               " (DSRT_QASM_MAX_QUBITS)", s)
            self.declare(self.qregs, s.qubit.name, size, s, quantum=True)
        elif isinstance(s, ast.ClassicalDeclaration):
            if not isinstance(s.type, ast.BitType) or s.init_expression is not None:
                raise self.err("only uninitialised bit registers are supported", s)
            cap = self.limits.max_clbits - self.nc
            size = 1 if s.type.size is None else self.integer(s.type.size, "register size", 1, max(cap, 1))
            if size > cap:
                raise self.err(f"'{s.identifier.name}' brings the program past {self.limits.max_clbits} bits"
                               " (DSRT_QASM_MAX_CLBITS)", s)
            self.declare(self.cregs, s.identifier.name, size, s, quantum=False)
        elif isinstance(s, ast.QuantumGateDefinition):
            self.gates[s.name.name] = s
            self.costs.clear()
        elif isinstance(s, ast.QuantumGate):
            operands = [self.operand(q, self.qregs, "qubit", None) for q in s.qubits]
            reps = max([len(o) for o in operands] + [1])
            self.reserve(reps * (1 if s.modifiers else self.cost(s.name.name, s)), s)
            self.gate_call(s, {}, None, condition)
        elif isinstance(s, ast.QuantumMeasurementStatement):
            qs = self.operand(s.measure.qubit, self.qregs, "qubit", None)
            if s.target is None:
                raise self.err("a measurement needs a target bit", s)
            cs = self.operand(s.target, self.cregs, "bit", None)
            if len(qs) != len(cs):
                raise self.err(f"measure: {len(qs)} qubit(s) into {len(cs)} bit(s)", s)
            self.reserve(len(qs), s)
            for q, c in zip(qs, cs, strict=True):
                self.ops.append((s, Instruction("measure", "measure", (q,), clbits=(c,), condition=condition)))
        elif isinstance(s, ast.QuantumReset):
            resets = self.operand(s.qubits, self.qregs, "qubit", None)
            self.reserve(len(resets), s)
            for q in resets:
                self.ops.append((s, Instruction("reset", "reset", (q,), condition=condition)))
        elif isinstance(s, ast.QuantumBarrier):
            qs = [q for node in s.qubits for q in self.operand(node, self.qregs, "qubit", None)]
            self.reserve(1, s)
            self.ops.append((s, Instruction("barrier", "barrier", tuple(dict.fromkeys(qs)) or
                                            tuple(range(self.nq)))))
        elif isinstance(s, ast.QuantumPhase):
            return
        elif isinstance(s, ast.BranchingStatement):
            if s.else_block:
                raise self.err("'else' branches are not supported", s)
            cond = self.condition(s.condition)
            for inner in s.if_block:
                self.statement(inner, cond)
        else:
            raise self.err(f"unsupported statement {type(s).__name__}", s)

    def declare(self, regs: dict[str, tuple[int, int]], name: str, size: int, node: Any, *, quantum: bool) -> None:
        if name in self.qregs or name in self.cregs:
            raise self.err(f"'{name}' is already declared", node)
        if quantum:
            regs[name] = (self.nq, size)
            self.nq += size
        else:
            regs[name] = (self.nc, size)
            self.nc += size

    def condition(self, e: Any) -> tuple[tuple[int, ...], int]:
        from openqasm3 import ast

        if isinstance(e, ast.BinaryExpression) and e.op.name == "==":
            bits = self.operand(e.lhs, self.cregs, "bit", None)
            return tuple(bits), self.integer(e.rhs, "condition value", 0, (1 << len(bits)) - 1)
        if isinstance(e, (ast.Identifier, ast.IndexedIdentifier)):
            bits = self.operand(e, self.cregs, "bit", None)
            if len(bits) == 1:
                return (bits[0],), 1
        raise self.err("only conditions like (c == 3) or (c[0]) are supported", e)

    def gate_call(self, g: Any, env: dict[str, float], amap: dict[str, int] | None,
                  condition: tuple[tuple[int, ...], int] | None, depth: int = 0) -> None:
        from openqasm3 import ast

        if depth > 64:
            raise self.err(f"gate '{g.name.name}' expands recursively", g)
        angles = [self.real(a, env) for a in g.arguments]
        operands = [self.operand(q, self.qregs, "qubit", amap) for q in g.qubits]
        sizes = {len(o) for o in operands if len(o) > 1}
        if len(sizes) > 1:
            raise self.err(f"gate '{g.name.name}': registers of different sizes", g)
        reps = sizes.pop() if sizes else 1
        for r in range(reps):
            qubits = [o[r] if len(o) > 1 else o[0] for o in operands]
            if len(set(qubits)) != len(qubits):
                raise self.err(f"gate '{g.name.name}': the same qubit appears twice", g)
            if not g.modifiers and g.name.name in self.gates:
                d = self.gates[g.name.name]
                if len(angles) != len(d.arguments) or len(qubits) != len(d.qubits):
                    raise self.err(f"gate '{g.name.name}' takes {len(d.arguments)} angle(s) and {len(d.qubits)}"
                                   f" qubit(s), got {len(angles)} and {len(qubits)}", g)
                inner_env = {a.name: v for a, v in zip(d.arguments, angles, strict=True)}
                inner_map = {q.name: v for q, v in zip(d.qubits, qubits, strict=True)}
                for st in d.body:
                    if isinstance(st, ast.QuantumPhase):
                        continue
                    if not isinstance(st, ast.QuantumGate):
                        raise self.err(f"unsupported statement {type(st).__name__} in a gate body", st)
                    self.gate_call(st, inner_env, inner_map, condition, depth + 1)
                continue
            m = self.matrix(g, angles, len(qubits))
            self.ops.append((g, Instruction("gate", g.name.name, tuple(qubits), tuple(angles), m,
                                            condition=condition)))

    def matrix(self, g: Any, angles: list[float], nqubits: int) -> np.ndarray:
        name = g.name.name
        known = name in ("U",) or (self.std and name in GATES)
        m: Any
        if name in self.gates:
            d = self.gates[name]
            if len(angles) != len(d.arguments):
                raise self.err(f"gate '{name}' takes {len(d.arguments)} angle(s), got {len(angles)}", g)
            if len(d.qubits) > MAX_GATE_QUBITS:
                raise self.err(f"gate '{name}' acts on {len(d.qubits)} qubits; a modified gate may act on at most"
                               f" {MAX_GATE_QUBITS}", g)
            self.reserve(self.cost(name, g), g)
            m = _unitary_of(self, d, angles)
        elif known:
            gd = GATES[name]
            if len(angles) != gd.nparams:
                raise self.err(f"gate '{name}' takes {gd.nparams} angle(s), got {len(angles)}", g)
            m = gate_matrix(name, tuple(angles))
        else:
            hint = ' (add include "stdgates.inc";?)' if name in GATES else ""
            raise self.err(f"unknown gate '{name}'{hint}", g)
        # The matrix of a modified gate grows with its controls: check the width before building it.
        width = m.shape[0].bit_length() - 1
        args = []
        for mod in g.modifiers:
            kind = mod.modifier.name
            hi = MAX_GATE_QUBITS if kind in ("ctrl", "negctrl") else 1 << 62
            lo = 1 if kind in ("ctrl", "negctrl") else -(1 << 62)
            arg = 1 if mod.argument is None else self.integer(mod.argument, f"{kind} argument", lo, hi)
            args.append(arg)
            if kind in ("ctrl", "negctrl"):
                width += arg
        if width != nqubits or width > MAX_GATE_QUBITS:
            raise self.err(f"gate '{name}' with its modifiers acts on {width} qubit(s), got {nqubits}"
                           f" (at most {MAX_GATE_QUBITS})", g)
        for mod, arg in reversed(list(zip(g.modifiers, args, strict=True))):
            kind = mod.modifier.name
            if kind == "inv":
                m = m.conj().T
            elif kind == "pow":
                m = np.linalg.matrix_power(m, arg) if arg >= 0 else np.linalg.matrix_power(m.conj().T, -arg)
            elif kind == "ctrl":
                m = controlled(m, arg)
            elif kind == "negctrl":
                flip: Any = np.eye(1, dtype=np.complex128)
                for _ in range(arg):
                    flip = np.kron(flip, _X)
                c = controlled(m, arg)
                f = np.kron(flip, np.eye(m.shape[0]))
                m = f @ c @ f
        if m.shape[0] != 1 << nqubits:
            raise self.err(f"gate '{name}' acts on {m.shape[0].bit_length() - 1} qubit(s), got {nqubits}", g)
        return m


def _unitary_of(b: _Builder, d: Any, angles: list[float]) -> np.ndarray:
    """The matrix of a user-defined gate (for modifiers applied to it)."""
    k = len(d.qubits)
    sub = _Builder(b.file, b.limits)
    sub.std, sub.gates, sub.costs = b.std, b.gates, b.costs
    sub.qregs = {q.name: (i, 1) for i, q in enumerate(d.qubits)}
    sub.nq = k
    env = {a.name: v for a, v in zip(d.arguments, angles, strict=True)}
    from openqasm3 import ast

    for st in d.body:
        if isinstance(st, ast.QuantumGate):
            sub.gate_call(st, env, None, None, 1)
    from .fusion import compose_dense

    # compose_dense is big-endian in the order given; declare qubit 0 most significant.
    return compose_dense(tuple(range(k)), [(i.qubits, i.matrix) for _t, i in sub.ops if i.matrix is not None])


def _locate(exc: BaseException) -> tuple[int | None, int | None, str]:
    """Line, 1-based column and a message from the parser's exception (or the ANTLR one it wraps)."""
    m = re.match(r"L(\d+):C(\d+): (.*)", str(exc))
    if m:
        return int(m.group(1)), int(m.group(2)) + 1, m.group(3)
    seen: BaseException | None = exc
    while seen is not None:
        for cand in (seen, *getattr(seen, "args", ())):
            tok = getattr(cand, "offendingToken", None)
            if tok is not None:
                text = getattr(tok, "text", "")
                what = "end of file" if text == "<EOF>" else repr(text)
                return int(tok.line), int(tok.column) + 1, f"unexpected {what}"
        seen = seen.__cause__ or seen.__context__
    return None, None, "the program does not parse"


def parse_qasm3(text: str, *, file: str = "<qasm>", name: str = "qasm", limits: QasmLimits | None = None) -> Circuit:
    """Parse OpenQASM 3 source into a circuit.

    ``limits`` (default :meth:`QasmLimits.from_env`) bounds registers, instructions after expansion
    and nesting. The reference parser is third-party code: what it raises on malformed input (its
    syntax errors, and internal ``AttributeError``/``RecursionError``... on odd spans) becomes a
    located :class:`QasmError` here, and what ANTLR would print to stderr is kept out of the output.
    """
    lim = limits or QasmLimits.from_env()
    try:
        from openqasm3 import parser
    except ImportError as exc:
        raise QasmError(f"OpenQASM 3 needs the reference parser: pip install 'openqasm3[parser]' ({exc})",
                        file=file) from None
    check_nesting(text, file=file, limits=lim)
    chatter = io.StringIO()
    try:
        with contextlib.redirect_stderr(chatter):
            program = parser.parse(text)
    except parser.QASM3ParsingError as exc:
        line, col, msg = _locate(exc)
        raise QasmError(f"syntax error: {msg}", file=file, line=line, column=col) from None
    except RecursionError:
        raise QasmError("the program is nested too deeply for the OpenQASM 3 parser", file=file) from None
    except Exception as exc:  # noqa: BLE001 - the third-party parser's internal failures on bad input
        line, col, _msg = _locate(exc)
        raise QasmError(f"the OpenQASM 3 parser cannot read this program ({type(exc).__name__}: {exc})".splitlines()[0],
                        file=file, line=line, column=col) from None
    b = _Builder(file, lim)
    for s in program.statements:
        try:
            b.statement(s)
        except RecursionError:
            raise b.err("statement nested too deeply", s) from None
    if b.nq == 0:
        raise QasmError("the program declares no qubits", file=file)
    return assemble(b.nq, b.nc, name, b.ops, b.err)
