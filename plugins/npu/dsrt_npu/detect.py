"""Find CANN without side effects until the last step; every failing step says what is missing.

Steps, in order: the install directory (``ASCEND_HOME_PATH``, else ``ASCEND_TOOLKIT_HOME``, else
``Install_Path`` in the install-info file, else the default toolkit path), the runtime library
``lib64/libascendcl.so``, the device nodes ``/dev/davinci<N>`` (filtered by
``ASCEND_RT_VISIBLE_DEVICES``), the Python ``acl`` module that ships inside CANN (never the unrelated
PyPI package ``pyacl``), and finally ``acl.init()`` with a device count above zero.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dsrt.errors import DeviceUnavailableError

from .acl_errors import meaning_of

__all__ = ["CannInstall", "find_install", "find_device_nodes", "import_acl", "detect", "INSTALL_INFO", "DEFAULT_TOOLKIT"]

INSTALL_INFO = Path("/etc/Ascend/ascend_cann_install.info")
DEFAULT_TOOLKIT = Path("/usr/local/Ascend/ascend-toolkit/latest")


@dataclass(frozen=True)
class CannInstall:
    """What detection found: the toolkit root, the runtime library, visible device indices."""

    root: Path
    library: Path
    devices: tuple[int, ...]


def _install_info_path(info_file: Path) -> Path | None:
    try:
        text = info_file.read_text()
    except OSError:
        return None
    m = re.search(r"^\s*Install_Path\s*=\s*(\S+)", text, re.M)
    if not m:
        return None
    base = Path(m.group(1))
    return base / "latest" if (base / "latest").exists() else base


def find_install(env: dict[str, str] | None = None, info_file: Path = INSTALL_INFO) -> Path:
    """The CANN toolkit root, or DeviceUnavailableError naming every place looked at."""
    env = dict(os.environ if env is None else env)
    looked: list[str] = []
    for var in ("ASCEND_HOME_PATH", "ASCEND_TOOLKIT_HOME"):
        value = env.get(var)
        if value:
            if Path(value).is_dir():
                return Path(value)
            looked.append(f"${var}={value} (no such directory)")
    from_info = _install_info_path(info_file)
    if from_info is not None and from_info.is_dir():
        return from_info
    looked.append(f"{info_file} ({'no Install_Path' if info_file.exists() else 'absent'})")
    if DEFAULT_TOOLKIT.is_dir():
        return DEFAULT_TOOLKIT
    looked.append(f"{DEFAULT_TOOLKIT} (absent)")
    raise DeviceUnavailableError("CANN toolkit not found; looked at " + ", ".join(looked)
                                 + "; install CANN and source set_env.sh")


def find_device_nodes(dev_dir: Path, visible: str | None) -> tuple[int, ...]:
    """Indices of ``davinci<N>`` nodes in ``dev_dir``, filtered by ``ASCEND_RT_VISIBLE_DEVICES``."""
    present = sorted(int(m.group(1)) for p in dev_dir.glob("davinci*") if (m := re.fullmatch(r"davinci(\d+)", p.name)))
    if not present:
        raise DeviceUnavailableError(f"no Ascend device nodes ({dev_dir}/davinci<N>): is the NPU driver installed?")
    if visible is None or not visible.strip():
        return tuple(present)
    try:
        wanted = [int(x) for x in visible.split(",") if x.strip()]
    except ValueError:
        raise DeviceUnavailableError(f"ASCEND_RT_VISIBLE_DEVICES={visible!r} is not a comma-separated list of indices") from None
    chosen = tuple(i for i in wanted if i in present)
    if not chosen:
        raise DeviceUnavailableError(f"ASCEND_RT_VISIBLE_DEVICES={visible} selects none of the present devices {present}")
    return chosen


def import_acl(root: Path) -> Any:
    """The ``acl`` module shipped with CANN (adding ``<root>/python/site-packages`` if needed)."""
    try:
        return importlib.import_module("acl")
    except ImportError:
        pass
    candidate = root / "python" / "site-packages"
    if candidate.is_dir() and str(candidate) not in sys.path:
        sys.path.append(str(candidate))
        try:
            return importlib.import_module("acl")
        except ImportError as exc:
            raise DeviceUnavailableError(f"the acl module in {candidate} failed to import: {exc}") from None
    raise DeviceUnavailableError(
        f"the Python acl module that ships with CANN is not importable (looked in {candidate});"
        " source CANN's set_env.sh (note: the PyPI package 'pyacl' is unrelated)"
    )


def detect(env: dict[str, str] | None = None, *, dev_dir: Path | None = None) -> tuple[CannInstall, Any]:
    """Run every step; return the install and the initialised ``acl`` module."""
    env = dict(os.environ if env is None else env)
    root = find_install(env)
    library = root / "lib64" / "libascendcl.so"
    if not library.exists():
        raise DeviceUnavailableError(f"CANN runtime library missing: {library}")
    # Checked for its reason; ACL itself renumbers the visible devices below.
    find_device_nodes(dev_dir or Path(env.get("DSRT_NPU_DEV_DIR", "/dev")), env.get("ASCEND_RT_VISIBLE_DEVICES"))
    acl = import_acl(root)
    from .session import acl_session

    session = acl_session(acl)
    count, ret = acl.rt.get_device_count()
    if ret != 0:
        raise DeviceUnavailableError(f"acl.rt.get_device_count returned {ret} ({meaning_of(ret)})")
    if count <= 0:
        raise DeviceUnavailableError("acl.init succeeded but reports no NPU devices")
    # After ASCEND_RT_VISIBLE_DEVICES, ACL numbers the visible devices 0..count-1.
    return CannInstall(root, library, tuple(range(count))), session
