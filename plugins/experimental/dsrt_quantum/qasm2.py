"""An OpenQASM 2.0 reader (tokenizer + recursive descent), producing a :class:`Circuit`.

Supported: ``qreg``/``creg``, ``include "qelib1.inc"`` (its gates are built in, see
:mod:`dsrt_quantum.gates`) and other includes relative to the file, ``gate`` definitions (expanded
where called), ``U``/``CX``, register broadcasting, ``measure``, ``reset``, ``barrier`` and
``if (creg == n)``. Every error is a :class:`QasmError` whose message starts ``file:line:column:``.
"""

from __future__ import annotations

import math
import os
import re
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from dsrt.errors import ConfigurationError

from .circuit import Circuit, CircuitError, Instruction
from .gates import GATES, gate_matrix

__all__ = ["QasmError", "QasmLimits", "parse_qasm2", "read_qasm_file", "check_nesting"]


class QasmError(ConfigurationError):
    """An OpenQASM program that does not parse or does not make sense; ``file``, ``line``, ``column``."""

    def __init__(self, message: str, *, file: str = "<qasm>", line: int | None = None, column: int | None = None) -> None:
        self.file, self.line, self.column, self.detail = file, line, column, message
        where = ":".join(str(p) for p in (file, line, column) if p is not None)
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class QasmLimits:
    """Budgets of one OpenQASM program, checked before the work they bound.

    ``max_qubits``/``max_clbits``: register bits in total; ``max_operations``: instructions after
    gate definitions are expanded and registers broadcast (counted before expanding; one million
    instructions take about 0.7 GB of memory); ``max_include_depth``: nested ``include`` files;
    ``max_bytes``: one source file; ``max_nesting``: parentheses/brackets/braces and unary signs
    nested in one place; ``max_expression_tokens``: tokens of one angle expression. Each can be set
    with ``DSRT_QASM_<NAME>`` (e.g. ``DSRT_QASM_MAX_OPERATIONS``).
    """

    max_qubits: int = 64
    max_clbits: int = 4096
    max_operations: int = 1_000_000
    max_include_depth: int = 8
    max_bytes: int = 4 << 20
    max_nesting: int = 64
    max_expression_tokens: int = 4096

    @classmethod
    def from_env(cls) -> QasmLimits:
        """The defaults, each replaced by ``DSRT_QASM_<NAME>`` when that variable is set."""
        values: dict[str, int] = {}
        for f in fields(cls):
            var = "DSRT_QASM_" + f.name.upper()
            text = os.environ.get(var, "").strip()
            if text:
                try:
                    values[f.name] = int(text)
                except ValueError:
                    raise ConfigurationError(f"{var}='{text}' is not an integer") from None
                if values[f.name] < 1:
                    raise ConfigurationError(f"{var} must be positive, got {text}")
        return cls(**values)


def _line_col(text: str, pos: int) -> tuple[int, int]:
    return text.count("\n", 0, pos) + 1, pos - (text.rfind("\n", 0, pos) + 1) + 1


def read_qasm_file(path: Path, *, shown: str, limits: QasmLimits, at: tuple[str, int, int] | None = None) -> str:
    """The text of a source file, which must be a regular UTF-8 file of at most ``limits.max_bytes``.

    The file is opened non-blocking and checked on its descriptor, so ``/dev/zero``, a FIFO or a
    directory is refused without blocking. Errors are located at ``at`` (``file, line, column`` of
    an include) when given, else at the file itself; bytes that are not UTF-8 at their line and column.
    """
    where = {"file": shown} if at is None else {"file": at[0], "line": at[1], "column": at[2]}
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise QasmError(f"cannot read '{shown}': {reason}", **where) from None  # type: ignore[arg-type]
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode) else \
                "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "not a regular file"
            raise QasmError(f"'{shown}' is {kind}; an OpenQASM source must be a regular file",
                            **where)  # type: ignore[arg-type]
        if st.st_size > limits.max_bytes:
            raise QasmError(f"'{shown}' is {st.st_size} bytes; the limit is {limits.max_bytes}"
                            " (DSRT_QASM_MAX_BYTES)", **where)  # type: ignore[arg-type]
        raw = b""
        while len(raw) <= limits.max_bytes:
            chunk = os.read(fd, min(1 << 20, limits.max_bytes + 1 - len(raw)))
            if not chunk:
                break
            raw += chunk
    except OSError as exc:
        raise QasmError(f"cannot read '{shown}': {exc.strerror or exc}", **where) from None  # type: ignore[arg-type]
    finally:
        os.close(fd)
    if len(raw) > limits.max_bytes:
        raise QasmError(f"'{shown}' is over {limits.max_bytes} bytes (DSRT_QASM_MAX_BYTES)", **where)  # type: ignore[arg-type]
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise QasmError(f"not UTF-8 text (byte 0x{raw[exc.start]:02x})", file=shown, line=line, column=col) from None


_NEST = re.compile(r'//[^\n]*|/\*.*?\*/|"[^"\n]*"|[(\[{]|[)\]}]|[-+~!](?:\s*[-+~!])*', re.S)


def check_nesting(text: str, *, file: str, limits: QasmLimits) -> None:
    """Refuse brackets or unary signs nested past ``limits.max_nesting`` (before any recursive parser sees them)."""
    depth = 0
    for m in _NEST.finditer(text):
        s = m.group()
        c = s[0]
        if c in "([{":
            depth += 1
            if depth > limits.max_nesting:
                line, col = _line_col(text, m.start())
                raise QasmError(f"brackets nested more than {limits.max_nesting} deep", file=file, line=line,
                                column=col)
        elif c in ")]}":
            depth = max(0, depth - 1)
        elif c in "-+~!" and len(s) > limits.max_nesting:
            signs = sum(ch in "-+~!" for ch in s)
            if signs > limits.max_nesting:
                line, col = _line_col(text, m.start())
                raise QasmError(f"{signs} unary signs in a row; at most {limits.max_nesting}", file=file, line=line,
                                column=col)


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
    def __init__(self, text: str, file: str, base: Path | None, limits: QasmLimits | None = None,
                 stack: tuple[Path, ...] = ()) -> None:
        self.file = file
        self.base = base
        self.limits = limits or QasmLimits.from_env()
        self.stack = stack
        check_nesting(text, file=file, limits=self.limits)
        self.toks = _tokenize(text, file)
        self.costs: dict[str, int] = {}
        self.count = 0
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
            start = self.peek()
            try:
                self.statement()
            except RecursionError:
                raise self.err("statement nested too deeply", start) from None

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
            size = self.integer(size_t)
            if size < 1:
                raise self.err("a register needs at least one bit", size_t)
            if name.text in self.qregs or name.text in self.cregs:
                raise self.err(f"register '{name.text}' is already declared", name)
            have, cap, var = ((self.nq, self.limits.max_qubits, "MAX_QUBITS") if word == "qreg"
                              else (self.nc, self.limits.max_clbits, "MAX_CLBITS"))
            if have + size > cap:
                raise self.err(f"{word} '{name.text}[{size}]' brings the program to {have + size}"
                               f" {'qubits' if word == 'qreg' else 'bits'}; the limit is {cap} (DSRT_QASM_{var})",
                               size_t)
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
            self.qop(condition=(tuple(range(off, off + size)), self.integer(val)))
        else:
            self.qop()

    def include(self, s: Tok) -> None:
        name = s.text[1:-1]
        if name == "qelib1.inc":
            self.qelib = True
            return
        path = (self.base / name) if self.base else Path(name)
        try:
            resolved = path.resolve()
        except (OSError, ValueError, RuntimeError) as exc:
            raise self.err(f"cannot include '{name}': {exc}", s) from None
        if resolved in self.stack:
            chain = " -> ".join(p.name for p in (*self.stack[self.stack.index(resolved):], resolved))
            raise self.err(f"include cycle: {chain}", s)
        if len(self.stack) > self.limits.max_include_depth:
            raise self.err(f"includes nested more than {self.limits.max_include_depth} deep", s)
        text = read_qasm_file(path, shown=str(path), limits=self.limits, at=(self.file, s.line, s.col))
        sub = _Parser(text, str(path), path.parent, self.limits, (*self.stack, resolved))
        sub.gates, sub.qelib = self.gates, self.qelib
        sub.program(header=text.lstrip().startswith("OPENQASM"))
        self.costs.clear()
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
        self.costs.clear()

    def cost(self, t: Tok, depth: int = 0) -> int:
        """Instructions one call of gate ``t`` expands to, counted without expanding (memoised)."""
        g = self.gates.get(t.text)
        if g is None or g.opaque:
            return 1
        if t.text in self.costs:
            return self.costs[t.text]
        if depth > 64:
            raise self.err(f"gate '{t.text}' expands recursively", t)
        total = sum(self.cost(gt, depth + 1) for gt, _e, _a in g.body)
        self.costs[t.text] = total
        return total

    def integer(self, tok: Tok) -> int:
        """An integer token's value; more than 18 digits is refused (no register or index is that large)."""
        if len(tok.text) > 18:
            raise self.err(f"integer of {len(tok.text)} digits is too large", tok)
        return int(tok.text)

    def angles(self, exprs: list[Expr], env: dict[str, float], tok: Tok) -> list[float]:
        """Evaluate angle expressions; an overflow, a complex or a non-finite value is a located error."""
        out = []
        for e in exprs:
            try:
                v = e(env)
            except OverflowError:
                raise self.err("angle overflows a float", tok) from None
            except ZeroDivisionError:
                raise self.err("division by zero", tok) from None
            except RecursionError:
                raise self.err("angle expression nested too deeply", tok) from None
            if not isinstance(v, (int, float)) or not math.isfinite(v):
                raise self.err(f"angle {v!r} is not a finite real number", tok)
            out.append(float(v))
        return out

    def idlist(self) -> list[str]:
        out = [self.expect(kind="id").text]
        while self.accept(","):
            out.append(self.expect(kind="id").text)
        return out

    # ------------------------------------------------------------------ expressions
    def explist(self, names: set[str]) -> list[Expr]:
        start = self.peek()
        first = self.i
        out = [self.expr(names)]
        while self.accept(","):
            out.append(self.expr(names))
        if self.i - first > self.limits.max_expression_tokens:
            raise self.err(f"angle expressions of {self.i - first} tokens; at most {self.limits.max_expression_tokens}",
                           start)
        return out

    # Operator chains are parsed and evaluated with loops, not nested closures, so a long chain
    # cannot exhaust the interpreter's stack; only brackets nest (bounded by check_nesting).
    def expr(self, names: set[str]) -> Expr:
        first = self.term(names)
        rest: list[tuple[str, Expr]] = []
        while self.peek().text in ("+", "-"):
            op = self.next().text
            rest.append((op, self.term(names)))
        if not rest:
            return first

        def add(env: dict[str, float]) -> float:
            v = first(env)
            for op, t in rest:
                v = v + t(env) if op == "+" else v - t(env)
            return v
        return add

    def term(self, names: set[str]) -> Expr:
        first = self.power(names)
        rest: list[tuple[Tok, Expr]] = []
        while self.peek().text in ("*", "/"):
            op_t = self.next()
            rest.append((op_t, self.power(names)))
        if not rest:
            return first

        def mul(env: dict[str, float]) -> float:
            v = first(env)
            for op_t, f in rest:
                v = v * f(env) if op_t.text == "*" else _div(v, f(env), op_t, self)
            return v
        return mul

    def power(self, names: set[str]) -> Expr:
        parts = [self.unary(names)]
        while self.accept("^"):
            parts.append(self.unary(names))
        if len(parts) == 1:
            return parts[0]

        def pw(env: dict[str, float]) -> float:
            v = parts[-1](env)
            for base in reversed(parts[:-1]):  # right-associative
                v = base(env) ** v
            return v
        return pw

    def unary(self, names: set[str]) -> Expr:
        negate = False
        while self.peek().text in ("-", "+") and self.peek().kind == "op":
            negate ^= self.next().text == "-"
        inner = self.primary(names)
        if negate:
            return lambda env: -inner(env)
        return inner

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
            k = self.integer(idx)
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
            angles = self.angles(exprs, {}, t)
            self.reserve(reps * self.cost(t), t)
            for r in range(reps):
                qubits = [a[r] if len(a) > 1 else a[0] for a in args]
                self.call(t, angles, qubits, condition, depth=0)
        else:
            raise self.err(f"expected a quantum operation, got {t.text!r}", t)

    def reserve(self, n: int, tok: Tok) -> None:
        """Count ``n`` instructions about to be emitted; refuse past ``limits.max_operations`` before emitting."""
        if self.count + n > self.limits.max_operations:
            raise self.err(f"'{tok.text}' brings the program to {self.count + n} instructions after gate"
                           f" expansion; the limit is {self.limits.max_operations} (DSRT_QASM_MAX_OPERATIONS)", tok)
        self.count += n

    def emit(self, tok: Tok, inst: Instruction) -> None:
        if inst.kind != "gate":  # gates were reserved with their expansion
            self.reserve(1, tok)
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
                self.call(gt, self.angles(exprs, env, gt), [amap[a] for a in gargs], condition, depth + 1)
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
    except (ValueError, OverflowError, TypeError) as exc:
        raise p.err(f"{t.text}({x}): {exc}", t) from None


def parse_qasm2(text: str, *, file: str = "<qasm>", name: str | None = None,
                limits: QasmLimits | None = None) -> Circuit:
    """Parse OpenQASM 2.0 source into a circuit; includes resolve relative to ``file``'s folder.

    ``limits`` (default :meth:`QasmLimits.from_env`) bounds registers, instructions after expansion,
    includes and nesting; every refusal is a :class:`QasmError` at the offending line and column.
    """
    base = Path(file).parent if file and not file.startswith("<") else None
    stack: tuple[Path, ...] = ()
    if base is not None:
        try:
            stack = (Path(file).resolve(),)
        except (OSError, ValueError, RuntimeError):
            stack = ()
    p = _Parser(text, file, base, limits, stack)
    p.program()
    return p.circuit(name or (Path(file).stem if base else "qasm"))
