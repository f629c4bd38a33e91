import json
import os
import subprocess
import sys


def dsrt_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "dsrt", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def test_devices_json_lists_cpu():
    res = dsrt_cli("devices", "--json")
    assert res.returncode == 0, res.stderr
    backends = {b["name"]: b for b in json.loads(res.stdout)["backends"]}
    assert backends["cpu"]["status"] == "available"
    assert backends["cpu"]["devices"][0]["id"] == "cpu:0"


def test_user_error_is_one_line_exit_2_and_debug_shows_traceback():
    res = dsrt_cli("run", "--device", "warp:0")
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and "no backend 'warp'" in res.stderr
    assert "Traceback" not in res.stderr
    res = dsrt_cli("--debug", "run", "--device", "warp:0")
    assert res.returncode == 2 and "Traceback" in res.stderr


def test_bad_argument_is_one_line():
    res = dsrt_cli("devices", "--no-such-flag")
    assert res.returncode == 2 and res.stderr.strip().count("\n") == 0


def test_run_on_cpu_passes_every_check():
    res = dsrt_cli("run", "--quick", "--json", "--device", "cpu:0")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    report = json.loads(res.stdout)
    assert report["verdict"] == "PASS"
    checks = [c for c in report["checks"] if c["device"] == "cpu:0"]
    assert len(checks) >= 10 and all(c["ok"] for c in checks)
    assert {"gemm float32 256x256x256", "qgemm_int8 256^3"} <= {c["check"] for c in checks}


def test_run_balancing_uses_plain_map_defaults_and_checks_every_result(tmp_path):
    res = dsrt_cli("run", "--quick", "--json", "--device", "cpu:0", "--device", "opencl:0",
                   env={"DSRT_CACHE_DIR": str(tmp_path)})
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    balance = json.loads(res.stdout)["balance"]
    assert balance["ok"] and balance["worst_error_over_tolerance"] <= 1.0
    report = balance["report"]
    assert sum(d["chunks"] for d in report["devices"].values()) == balance["chunks"]
    # Default placement: no simulated device takes a chunk; each one is listed with why.
    simulated = [d for d, why in report["excluded"].items() if "simulated" in why]
    assert "photonic:0" in simulated
    assert all(report["devices"][d]["chunks"] == 0 for d in simulated)
    assert "rt.map" in dsrt_cli("run", "--quick", "--device", "cpu:0", "--device", "opencl:0",
                                env={"DSRT_CACHE_DIR": str(tmp_path)}).stdout
