import json
import os
import subprocess
import sys
import textwrap
import types

import numpy as np
import pytest

import dsrt
import dsrt_cpu
from dsrt.errors import BackendNotFoundError, DeviceUnavailableError


def _fake_distribution(tmp_path, name, module_source, ep_name=None):
    """A distribution on tmp_path whose entry point in group 'dsrt' points at a module."""
    ep_name = ep_name or name
    (tmp_path / f"{name}_mod.py").write_text(textwrap.dedent(module_source))
    info = tmp_path / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[dsrt]\n{ep_name} = {name}_mod\n")


def _dsrt(args, tmp_path, **env):
    full = {**os.environ, "PYTHONPATH": str(tmp_path), **env}
    return subprocess.run([sys.executable, "-m", "dsrt", *args], capture_output=True, text=True, env=full,
                          timeout=120)


def test_plugin_that_raises_on_import_is_listed_and_cpu_still_works(tmp_path):
    _fake_distribution(tmp_path, "brokenvendor", "raise RuntimeError('driver library libacme.so.3 missing')\n")
    res = _dsrt(["devices", "--json"], tmp_path)
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    by_name = {b["name"]: b for b in report["backends"]}
    assert by_name["cpu"]["status"] == "available"
    assert any(d["id"] == "cpu:0" for d in by_name["cpu"]["devices"])
    broken = by_name["<brokenvendor>"]
    assert broken["status"] == "failed"
    assert "libacme.so.3 missing" in broken["reason"] and "RuntimeError" in broken["reason"]


def test_deny_list_and_allow_list(tmp_path):
    _fake_distribution(tmp_path, "brokenvendor", "raise RuntimeError('boom')\n")
    res = _dsrt(["devices", "--json"], tmp_path, DSRT_DISABLE_PLUGINS="brokenvendor")
    names = {b["name"] for b in json.loads(res.stdout)["backends"]}
    assert "<brokenvendor>" not in names and "cpu" in names
    res = _dsrt(["devices", "--json"], tmp_path, DSRT_PLUGINS="cpu")
    names = {b["name"] for b in json.loads(res.stdout)["backends"]}
    assert names == {"cpu"}


def test_autoload_off_loads_only_explicit_plugins():
    rt = dsrt.Runtime(autoload=False, plugins=[dsrt_cpu])
    assert [d.id for d in rt.devices] == ["cpu:0"]
    assert set(rt.backends) == {"cpu"}


def _backend_plugin(name, api_version=1, probe=None):
    mod = types.ModuleType(f"plugin_{name}_{api_version}")

    def dsrt_register_backends():
        return [dsrt.BackendSpec(name=name, api_version=api_version, probe=probe or (lambda rt: []))]

    mod.dsrt_register_backends = dsrt.hookimpl(dsrt_register_backends)
    return mod


def test_duplicate_backend_names_are_an_error_naming_both():
    rt = dsrt.Runtime(autoload=False, plugins=[dsrt_cpu, _backend_plugin("cpu")])
    status = rt.backends["cpu"]
    assert status.status == "failed"
    assert "dsrt_cpu" in status.reason and "plugin_cpu_1" in status.reason
    with pytest.raises(BackendNotFoundError, match="registered by plugins"):
        rt.device("cpu:0")


def test_incompatible_api_version_is_refused_with_supported_versions():
    rt = dsrt.Runtime(autoload=False, plugins=[dsrt_cpu, _backend_plugin("future", api_version=99)])
    status = rt.backends["future"]
    assert status.status == "failed" and "API 99" in status.reason and "supports 1" in status.reason
    assert rt.device("cpu:0").id == "cpu:0"


def test_probe_failures_carry_their_reason():
    def unavailable(rt):
        raise DeviceUnavailableError("no Acme card in any PCIe slot")

    def crashing(rt):
        raise OSError("ioctl failed")

    rt = dsrt.Runtime(autoload=False, plugins=[
        dsrt_cpu, _backend_plugin("acme", probe=unavailable), _backend_plugin("crashy", probe=crashing)])
    assert rt.backends["acme"].reason == "no Acme card in any PCIe slot"
    with pytest.raises(DeviceUnavailableError, match="no Acme card"):
        rt.device("acme:0")
    with pytest.raises(BackendNotFoundError, match="ioctl failed") as info:
        rt.device("crashy:0")
    # The lookup error carries the probe's failure, which carries the vendor exception.
    assert isinstance(info.value.cause, dsrt.PluginError) and isinstance(info.value.cause.cause, OSError)
    assert rt.launch("add", rt.asarray(np.ones(2)), rt.asarray(np.ones(2))).numpy().tolist() == [2, 2]


def test_hook_that_raises_at_registration_is_isolated():
    mod = types.ModuleType("explodes")

    def dsrt_register_backends():
        raise ValueError("registration exploded")

    mod.dsrt_register_backends = dsrt.hookimpl(dsrt_register_backends)
    rt = dsrt.Runtime(autoload=False, plugins=[dsrt_cpu, mod])
    assert rt.device("cpu:0")
    failed = {r.name: r for r in rt.plugins.failed()}
    assert "registration exploded" in str(failed["explodes"].error)


def test_unknown_backend_lists_what_exists(rt):
    with pytest.raises(BackendNotFoundError, match=r"no backend 'warp'.*cpu:0"):
        rt.device("warp:0")
