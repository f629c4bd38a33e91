"""An OpenQASM 2.0 reader (tokenizer + recursive descent), producing a :class:`Circuit`.

Supported: ``qreg``/``creg``, ``include "qelib1.inc"`` (its gates are built in, see
:mod:`dsrt_quantum.gates`) and other includes relative to the file, ``gate`` definitions (expanded
where called), ``U``/``CX``, register broadcasting, ``measure``, ``reset``, ``barrier`` and
``if (creg == n)``. Every error is a :class:`QasmError` whose message starts ``file:line:column:``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dsrt.errors import ConfigurationError

from .circuit import Circuit, CircuitError, Instruction
from .gates import GATES, gate_matrix

__all__ = ["QasmError", "parse_qasm2"]


class QasmError(ConfigurationError):
    """An OpenQASM program that does not parse or does not make sense; ``file``, ``line``, ``column``."""

    def __init__(self, message: str, *, file: str = "<qasm>", line: int | None = None, column: int | None = None) -> None:
        self.file, self.line, self.column, self.detail = file, line, column, message
        where = ":".join(str(p) for p in (file, line, column) if p is not None)
        super().__init__(f"{where}: {message}")


_TOKEN = re.compile(r"""
    (?P<ws>[ \t\r\n]+|//[^\n]*|/\*.*?\*/)
  | (?P<real>(?:\d+\.\d*|\.\d+)(?:[eE][-+]?\d+)?|\d+[eE][-+]?\d+)
  | (?P<int>\d+)
  | (?P<id>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<string>"[^"\n]*")
  | (?P<op>->|==|[;,()\[\]{}+\-*/^])
""", re.X | re.S)

_FUNCS: dict[str, Callable[[float], float]] = {
    "sin": math.sin, "cos": math.cos, "tan": math.tan, "exp": math.exp, "ln": math.log, "sqrt": math.sqrt,
}


@dataclass
class Tok:
    kind: str
    text: str
    line: int
    col: int


Expr = Callable[[dict[str, float]], float]


@dataclass
class _GateDef:
    name: str
    params: list[str]
    args: list[str]
    body: list[tuple[Tok, list[Expr], list[str]]]  # (name token, angle exprs, argument names)
    opaque: bool = False


def _tokenize(text: str, file: str) -> list[Tok]:
    out: list[Tok] = []
    pos, line, col = 0, 1, 1
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise QasmError(f"unexpected character {text[pos]!r}", file=file, line=line, column=col)
        kind = m.lastgroup or ""
        s = m.group()
        if kind != "ws":
            out.append(Tok(kind, s, line, col))
        nl = s.count("\n")
        if nl:
            line += nl
            col = len(s) - s.rfind("\n")
        else:
            col += len(s)
        pos = m.end()
    out.append(Tok("eof", "", line, col))
    return out


class _Parser:
    def __init__(self, text: str, file: str, base: Path | None) -> None:
        self.file = file
        self.base = base
        self.toks = _tokenize(text, file)
        self.i = 0
        self.gates: dict[str, _GateDef] = {}
        self.qelib = False
        self.qregs: dict[str, tuple[int, int]] = {}  # name -> (offset, size)
        self.cregs: dict[str, tuple[int, int]] = {}
        self.nq = 0
        self.nc = 0
        self.ops: list[tuple[Tok, Instruction]] = []

    # ------------------------------------------------------------------ token helpers
    def err(self, msg: str, tok: Tok | None = None) -> QasmError:
        t = tok or self.toks[self.i]
        return QasmError(msg, file=self.file, line=t.line, column=t.col)

    def peek(self) -> Tok:
        return self.toks[self.i]

    def next(self) -> Tok:
        t = self.toks[self.i]
        self.i += 1
        return t

    def expect(self, text: str | None = None, kind: str | None = None) -> Tok:
        t = self.peek()
        if (text is not None and t.text != text) or (kind is not None and t.kind != kind):
            want = repr(text) if text is not None else kind
            got = repr(t.text) if t.kind != "eof" else "end of file"
            raise self.err(f"expected {want}, got {got}")
        return self.next()

    def accept(self, text: str) -> bool:
        if self.peek().text == text and self.peek().kind in ("op", "id"):
            self.i += 1
            return True
        return False

    # ------------------------------------------------------------------ program
    def program(self, header: bool = True) -> None:
        if header:
            self.expect("OPENQASM")
            v = self.next()
            if v.text not in ("2.0", "2"):
                raise self.err(f"this reader takes OpenQASM 2.0, got version {v.text}", v)
            self.expect(";")
        while self.peek().kind != "eof":
            self.statement()

    def statement(self) -> None:
        t = self.peek()
        if t.kind != "id":
            raise self.err(f"expected a statement, got {t.text!r}")
        word = t.text
        if word == "include":
            self.next()
            s = self.expect(kind="string")
            self.expect(";")
            self.include(s)
        elif word in ("qreg", "creg"):
            self.next()
            name = self.expect(kind="id")
            self.expect("[")
            size_t = self.expect(kind="int")
            self.expect("]")
            self.expect(";")
            size = int(size_t.text)
            if size < 1:
                raise self.err("a register needs at least one bit", size_t)
            if name.text in self.qregs or name.text in self.cregs:
                raise self.err(f"register '{name.text}' is already declared", name)
            if word == "qreg":
                self.qregs[name.text] = (self.nq, size)
                self.nq += size
            else:
                self.cregs[name.text] = (self.nc, size)
                self.nc += size
        elif word in ("gate", "opaque"):
            self.gate_def()
        elif word == "if":
            self.next()
            self.expect("(")
            creg = self.expect(kind="id")
            if creg.text not in self.cregs:
                raise self.err(f"unknown classical register '{creg.text}'", creg)
            self.expect("==")
            val = self.expect(kind="int")
            self.expect(")")
            off, size = self.cregs[creg.text]
            self.qop(condition=(tuple(range(off, off + size)), int(val.text)))
        else:
            self.qop()

    def include(self, s: Tok) -> None:
        name = s.text[1:-1]
        if name == "qelib1.inc":
            self.qelib = True
            return
        path = (self.base / name) if self.base else Path(name)
        try:
            text = path.read_text()
        except OSError as exc:
            raise self.err(f"cannot include '{name}': {exc.strerror or exc}", s) from None
        sub = _Parser(text, str(path), path.parent)
        sub.gates, sub.qelib = self.gates, self.qelib
        sub.program(header=text.lstrip().startswith("OPENQASM"))
        self.qelib = sub.qelib
        if sub.nq or sub.nc or sub.ops:
            raise self.err(f"'{name}' may only define gates", s)

    def gate_def(self) -> None:
        opaque = self.next().text == "opaque"
        name = self.expect(kind="id")
        params: list[str] = []
        if self.accept("("):
            if not self.accept(")"):
                params = self.idlist()
                self.expect(")")
        args = self.idlist()
        body: list[tuple[Tok, list[Expr], list[str]]] = []
        if opaque:
            self.expect(";")
        else:
            self.expect("{")
            while not self.accept("}"):
                gt = self.expect(kind="id")
                if gt.text == "barrier":
                    self.idlist()
                    self.expect(";")
                    continue
                exprs: list[Expr] = []
                if self.accept("("):
                    if not self.accept(")"):
                        exprs = self.explist(set(params))
                        self.expect(")")
                gargs = self.idlist()
                self.expect(";")
                for a in gargs:
                    if a not in args:
                        raise self.err(f"'{a}' is not an argument of gate '{name.text}'", gt)
                body.append((gt, exprs, gargs))
        self.gates[name.text] = _GateDef(name.text, params, args, body, opaque)

    def idlist(self) -> list[str]:
        out = [self.expect(kind="id").text]
        while self.accept(","):
            out.append(self.expect(kind="id").text)
        return out

    # ------------------------------------------------------------------ expressions
    def explist(self, names: set[str]) -> list[Expr]:
        out = [self.expr(names)]
        while self.accept(","):
            out.append(self.expr(names))
        return out

    def expr(self, names: set[str]) -> Expr:
        left = self.term(names)
        while self.peek().text in ("+", "-"):
            op = self.next().text
            right = self.term(names)
            left = (lambda a, b: lambda env: a(env) + b(env))(left, right) if op == "+" else \
                (lambda a, b: lambda env: a(env) - b(env))(left, right)
        return left

    def term(self, names: set[str]) -> Expr:
        left = self.power(names)
        while self.peek().text in ("*", "/"):
            op_t = self.next()
            right = self.power(names)
            if op_t.text == "*":
                left = (lambda a, b: lambda env: a(env) * b(env))(left, right)
            else:
                left = (lambda a, b, t: lambda env: _div(a(env), b(env), t, self))(left, right, op_t)
        return left

    def power(self, names: set[str]) -> Expr:
        base = self.unary(names)
        if self.accept("^"):
            exp = self.power(names)
            return lambda env: base(env) ** exp(env)
        return base

    def unary(self, names: set[str]) -> Expr:
        if self.accept("-"):
            inner = self.unary(names)
            return lambda env: -inner(env)
        if self.accept("+"):
            return self.unary(names)
        return self.primary(names)

    def primary(self, names: set[str]) -> Expr:
        t = self.next()
        if t.kind in ("real", "int"):
            v = float(t.text)
            return lambda env: v
        if t.kind == "id":
            if t.text == "pi":
                return lambda env: math.pi
            if t.text in _FUNCS:
                fn = _FUNCS[t.text]
                self.expect("(")
                arg = self.expr(names)
                self.expect(")")
                return lambda env: _call(fn, arg(env), t, self)
            if t.text in names:
                key = t.text
                return lambda env: env[key]
            raise self.err(f"unknown identifier '{t.text}' in expression", t)
        if t.text == "(":
            e = self.expr(names)
            self.expect(")")
            return e
        raise self.err(f"expected an expression, got {t.text!r}", t)

    # ------------------------------------------------------------------ quantum operations
    def arg(self, regs: dict[str, tuple[int, int]], what: str) -> tuple[Tok, list[int]]:
        name = self.expect(kind="id")
        if name.text not in regs:
            raise self.err(f"unknown {what} register '{name.text}'", name)
        off, size = regs[name.text]
        if self.accept("["):
            idx = self.expect(kind="int")
            self.expect("]")
            k = int(idx.text)
            if k >= size:
                raise self.err(f"index {k} out of range for {what} register '{name.text}[{size}]'", idx)
            return name, [off + k]
        return name, list(range(off, off + size))

    def qop(self, condition: tuple[tuple[int, ...], int] | None = None) -> None:
        t = self.next()
        if t.text == "measure":
            qt, qs = self.arg(self.qregs, "quantum")
            self.expect("->")
            _ct, cs = self.arg(self.cregs, "classical")
            self.expect(";")
            if len(qs) != len(cs):
                raise self.err(f"measure: {len(qs)} qubit(s) into {len(cs)} bit(s)", qt)
            for q, c in zip(qs, cs, strict=True):
                self.emit(t, Instruction("measure", "measure", (q,), clbits=(c,), condition=condition))
        elif t.text == "reset":
            _qt, qs = self.arg(self.qregs, "quantum")
            self.expect(";")
            for q in qs:
                self.emit(t, Instruction("reset", "reset", (q,), condition=condition))
        elif t.text == "barrier":
            qs = self.arg(self.qregs, "quantum")[1]
            while self.accept(","):
                qs += self.arg(self.qregs, "quantum")[1]
            self.expect(";")
            self.emit(t, Instruction("barrier", "barrier", tuple(dict.fromkeys(qs))))
        elif t.kind == "id":
            exprs: list[Expr] = []
            if self.accept("("):
                if not self.accept(")"):
                    exprs = self.explist(set())
                    self.expect(")")
            args = [self.arg(self.qregs, "quantum")[1]]
            while self.accept(","):
                args.append(self.arg(self.qregs, "quantum")[1])
            self.expect(";")
            sizes = {len(a) for a in args if len(a) > 1}
            if len(sizes) > 1:
                raise self.err(f"gate '{t.text}': registers of different sizes {sorted(sizes)}", t)
            reps = sizes.pop() if sizes else 1
            angles = [e({}) for e in exprs]
            for r in range(reps):
                qubits = [a[r] if len(a) > 1 else a[0] for a in args]
                self.call(t, angles, qubits, condition, depth=0)
        else:
            raise self.err(f"expected a quantum operation, got {t.text!r}", t)

    def emit(self, tok: Tok, inst: Instruction) -> None:
        self.ops.append((tok, inst))

    def call(self, t: Tok, angles: list[float], qubits: list[int],
             condition: tuple[tuple[int, ...], int] | None, depth: int) -> None:
        if depth > 64:
            raise self.err(f"gate '{t.text}' expands recursively", t)
        if len(set(qubits)) != len(qubits):
            raise self.err(f"gate '{t.text}': the same qubit appears twice", t)
        g = self.gates.get(t.text)
        if g is not None:
            if g.opaque:
                raise self.err(f"opaque gate '{t.text}' has no definition to simulate", t)
            if len(angles) != len(g.params) or len(qubits) != len(g.args):
                raise self.err(f"gate '{t.text}' takes {len(g.params)} angle(s) and {len(g.args)} qubit(s),"
                               f" got {len(angles)} and {len(qubits)}", t)
            env = dict(zip(g.params, angles, strict=True))
            amap = dict(zip(g.args, qubits, strict=True))
            for gt, exprs, gargs in g.body:
                self.call(gt, [e(env) for e in exprs], [amap[a] for a in gargs], condition, depth + 1)
            return
        builtin = t.text in ("U", "CX") or (self.qelib and t.text in GATES)
        if not builtin:
            hint = ' (add include "qelib1.inc";?)' if t.text in GATES else ""
            raise self.err(f"unknown gate '{t.text}'{hint}", t)
        gd = GATES[t.text]
        if len(angles) != gd.nparams or len(qubits) != gd.nqubits:
            raise self.err(f"gate '{t.text}' takes {gd.nparams} angle(s) and {gd.nqubits} qubit(s),"
                           f" got {len(angles)} and {len(qubits)}", t)
        ps = tuple(angles)
        self.emit(t, Instruction("gate", t.text, tuple(qubits), ps, gate_matrix(t.text, ps), condition=condition))

    def circuit(self, name: str) -> Circuit:
        if self.nq == 0:
            raise QasmError("the program declares no qubits (qreg)", file=self.file)
        return assemble(self.nq, self.nc, name, self.ops, self.err)


def assemble(nq: int, nc: int, name: str, ops: Sequence[tuple[Any, Instruction]],
             err: Callable[[str, Any], QasmError]) -> Circuit:
    """A circuit from parsed ``(source location, instruction)`` pairs; a rejected instruction becomes a
    QasmError at its location (``err(message, location)``)."""
    c = Circuit(nq, nc, name=name)
    for where, inst in ops:
        try:
            c.append(inst)
        except CircuitError as exc:
            raise err(str(exc), where) from None
    return c


def _div(a: float, b: float, t: Tok, p: _Parser) -> float:
    if b == 0:
        raise p.err("division by zero", t)
    return a / b


def _call(fn: Callable[[float], float], x: float, t: Tok, p: _Parser) -> float:
    try:
        return fn(x)
    except (ValueError, OverflowError) as exc:
        raise p.err(f"{t.text}({x}): {exc}", t) from None


def parse_qasm2(text: str, *, file: str = "<qasm>", name: str | None = None) -> Circuit:
    """Parse OpenQASM 2.0 source into a circuit; includes resolve relative to ``file``'s folder."""
    base = Path(file).parent if file and not file.startswith("<") else None
    p = _Parser(text, file, base)
    p.program()
    return p.circuit(name or (Path(file).stem if base else "qasm"))
