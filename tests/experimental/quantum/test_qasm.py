"""OpenQASM 2 (own reader) and 3 (reference parser): programs, and errors with line and column."""

from __future__ import annotations

import numpy as np
import pytest
from quantum_helpers import dense_unitary

from dsrt_quantum import QasmError, load_qasm
from dsrt_quantum.gates import controlled, gate_matrix

QASM2 = """OPENQASM 2.0;
include "qelib1.inc";
// a user gate with angles and a body using qelib1 gates
gate rot(a, b) p, q { ry(a/2) p; cx p, q; rz(-b*pi^2 + sin(0.5)) q; }
qreg q[3];
qreg r[1];
creg c[3];
h q;
rot(pi/3, 0.25) q[0], r[0];
cx q, r[0];
U(0.1, 0.2, 0.3) q[1];
CX q[1], q[2];
barrier q, r;
measure q -> c;
if (c == 5) x r[0];
"""


def test_qasm2_program(qpu) -> None:  # type: ignore[no-untyped-def]
    c = load_qasm(QASM2)
    assert (c.num_qubits, c.num_clbits) == (4, 3)
    names = [i.name for i in c.instructions if i.kind == "gate"]
    assert names[:6] == ["h", "h", "h", "ry", "cx", "rz"]
    rz = c.instructions[5]
    assert rz.params[0] == pytest.approx(-0.25 * np.pi**2 + np.sin(0.5))
    assert [i.qubits for i in c.instructions if i.name == "cx"][1:4] == [(0, 3), (1, 3), (2, 3)]
    assert c.instructions[-1].condition == ((0, 1, 2), 5)
    assert sum(qpu.run(c, shots=50, seed=1).counts.values()) == 50


def test_qasm2_gates_match_qelib1_definitions() -> None:
    # Defined through U and CX exactly as qelib1.inc does, compared up to a global phase.
    src = """OPENQASM 2.0;
gate my_cu1(l) a, b { U(0, 0, l/2) a; CX a, b; U(0, 0, -l/2) b; CX a, b; U(0, 0, l/2) b; }
qreg q[2];
my_cu1(0.7) q[1], q[0];
"""
    u = dense_unitary(load_qasm(src))
    want = dense_unitary(load_qasm('OPENQASM 2.0; include "qelib1.inc"; qreg q[2]; cu1(0.7) q[1], q[0];'))
    phase = want[0, 0] / u[0, 0]
    np.testing.assert_allclose(u * phase, want, atol=1e-12)


@pytest.mark.parametrize("src, line, col, text", [
    ('OPENQASM 2.0;\nqreg q[2];\nh q[0];\n', 3, 1, 'unknown gate \'h\' (add include "qelib1.inc";?)'),
    ('OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[2];\ncx q[0], q[2];\n', 4, 12, "index 2 out of range"),
    ('OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[2];\n  rx(0.1 q[0];\n', 4, 10, "expected ')'"),
    ('OPENQASM 2.0;\nqreg q[1];\ncreg c[1];\nmeasure q -> d;\n', 4, 14, "unknown classical register 'd'"),
    ('OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[2];\ncx q[0], q[0];\n', 4, 1, "same qubit"),
    ('OPENQASM 2.0;\nqreg q[1];\nU(1/0, 0, 0) q[0];\n', 3, 4, "division by zero"),
    ('OPENQASM 2.0;\nqreg q[1];\n$\n', 3, 1, "unexpected character"),
    ('OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[1];\nrx q[0];\n', 4, 1, "takes 1 angle"),
])
def test_qasm2_errors_name_line_and_column(src, line, col, text) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(QasmError) as info:
        load_qasm(src)
    err = info.value
    assert (err.line, err.column) == (line, col), str(err)
    assert text in str(err)
    assert str(err).startswith(f"<qasm>:{line}:{col}:")


def test_qasm_file_and_include(tmp_path, qpu) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "mygates.inc").write_text("gate bell a, b { h a; cx a, b; }\n")
    f = tmp_path / "bell.qasm"
    f.write_text('OPENQASM 2.0;\ninclude "qelib1.inc";\ninclude "mygates.inc";\nqreg q[2];\nbell q[0], q[1];\n')
    np.testing.assert_allclose(qpu.run(load_qasm(str(f))).statevector, [2**-0.5, 0, 0, 2**-0.5], atol=1e-12)
    bad = tmp_path / "bad.qasm"
    bad.write_text('OPENQASM 2.0;\nqreg q[1];\nfoo q[0];\n')
    with pytest.raises(QasmError, match=r"bad\.qasm:3:1: unknown gate 'foo'"):
        load_qasm(str(bad))


def test_qasm3_program_with_modifiers(qpu) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("openqasm3.parser", reason="OpenQASM 3 needs pip install 'openqasm3[parser]'")
    src = """OPENQASM 3.0;
include "stdgates.inc";
gate myrot(t) a { rx(t) a; rz(t / 2) a; }
qubit[3] q;
bit[3] c;
h q[0];
ctrl @ x q[0], q[1];
inv @ s q[2];
pow(2) @ t q[1];
negctrl @ myrot(0.4) q[2], q[0];
ctrl(2) @ x q[0], q[1], q[2];
c = measure q;
"""
    c = load_qasm(src)
    mats = [i.matrix for i in c.instructions if i.kind == "gate"]
    np.testing.assert_allclose(mats[1], controlled(gate_matrix("x")), atol=1e-15)
    np.testing.assert_allclose(mats[2], gate_matrix("sdg"), atol=1e-15)
    np.testing.assert_allclose(mats[3], gate_matrix("s"), atol=1e-15)
    myrot = gate_matrix("rz", (0.2,)) @ gate_matrix("rx", (0.4,))
    x = gate_matrix("x")
    neg = np.kron(x, np.eye(2)) @ controlled(myrot) @ np.kron(x, np.eye(2))
    np.testing.assert_allclose(mats[4], neg, atol=1e-14)
    np.testing.assert_allclose(mats[5], gate_matrix("ccx"), atol=1e-15)
    assert c.num_clbits == 3 and sum(1 for i in c.instructions if i.kind == "measure") == 3
    assert sum(qpu.run(c, shots=20, seed=1).counts.values()) == 20


def test_qasm3_errors_name_line_and_column() -> None:
    pytest.importorskip("openqasm3.parser", reason="OpenQASM 3 needs pip install 'openqasm3[parser]'")
    with pytest.raises(QasmError) as info:
        load_qasm('OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[2] q;\nfoo q[0];\n')
    assert (info.value.line, info.value.column) == (4, 1) and "unknown gate 'foo'" in str(info.value)
    with pytest.raises(QasmError) as info:
        load_qasm("OPENQASM 3.0;\nqubit[2] q;\nh q[0]\n")
    assert info.value.line is not None and "syntax error" in str(info.value)
    with pytest.raises(QasmError, match=r"<qasm>:3:1: unsupported statement WhileLoop"):
        load_qasm("OPENQASM 3.0;\nqubit q;\nwhile (true) { }\n")
