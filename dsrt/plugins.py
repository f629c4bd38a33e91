"""Plugin discovery and isolation.

Plugins come from the entry-point group ``dsrt`` (and from objects passed to ``Runtime(plugins=...)``).
A plugin that fails to import or to register is recorded with its error and skipped; every other
plugin still loads. Environment variables, read when a :class:`PluginManager` is created:

- ``DSRT_PLUGINS``: comma-separated allow list of entry-point names (only these load);
- ``DSRT_DISABLE_PLUGINS``: comma-separated deny list;
- ``DSRT_DISABLE_PLUGIN_AUTOLOAD``: any non-empty value other than ``0`` turns entry-point loading off.
"""

from __future__ import annotations

import functools
import logging
import os
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import pluggy

import dsrt.hookspecs as hookspecs

from .errors import PluginError, PluginVersionError
from .hookspecs import SUPPORTED_API_VERSIONS, BackendSpec

__all__ = ["PluginRecord", "BackendRecord", "PluginManager", "ENTRY_POINT_GROUP", "installed_backends"]

ENTRY_POINT_GROUP = "dsrt"

log = logging.getLogger("dsrt.plugins")
_warned_names: set[tuple[str, str]] = set()


@dataclass
class PluginRecord:
    """What happened to one plugin: ``status`` is ``loaded``, ``failed`` or ``disabled``."""

    name: str
    source: str
    status: str
    error: PluginError | None = None
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "status": self.status,
                "error": str(self.error) if self.error else None}


@dataclass
class BackendRecord:
    """A backend as registered: its spec (``None`` if registration failed) and the plugin behind it."""

    name: str
    plugin: str
    spec: BackendSpec | None
    error: PluginError | None = None


def _env_list(name: str) -> list[str] | None:
    raw = os.environ.get(name)
    if raw is None:
        return None
    return [p.strip() for p in raw.split(",") if p.strip()]


class PluginManager:
    """Loads plugins and collects what they register, isolating failures plugin by plugin."""

    def __init__(
        self,
        *,
        autoload: bool | None = None,
        allow: Sequence[str] | None = None,
        deny: Sequence[str] | None = None,
        extra: Iterable[Any] = (),
    ) -> None:
        self.pm = pluggy.PluginManager("dsrt")
        self.pm.add_hookspecs(hookspecs)
        self.records: dict[str, PluginRecord] = {}
        if autoload is None:
            flag = os.environ.get("DSRT_DISABLE_PLUGIN_AUTOLOAD", "")
            autoload = not flag or flag == "0"
        self.allow = list(allow) if allow is not None else _env_list("DSRT_PLUGINS")
        self.deny = list(deny) if deny is not None else (_env_list("DSRT_DISABLE_PLUGINS") or [])
        if autoload:
            self._load_entry_points()
        for obj in extra:
            name = getattr(obj, "__name__", None) or type(obj).__name__
            self._register(name, obj, source="explicit")

    # ------------------------------------------------------------------ loading
    def _load_entry_points(self) -> None:
        seen: set[str] = set()
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in seen:
                continue
            seen.add(ep.name)
            source = ep.value
            if self.allow is not None and ep.name not in self.allow:
                self.records[ep.name] = PluginRecord(ep.name, source, "disabled", detail="not in DSRT_PLUGINS")
                continue
            if ep.name in self.deny:
                self.records[ep.name] = PluginRecord(ep.name, source, "disabled", detail="in DSRT_DISABLE_PLUGINS")
                continue
            try:
                obj = ep.load()
            except BaseException as exc:
                if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                    raise
                self._fail(ep.name, source, f"import of '{source}' failed", exc)
                continue
            self._register(ep.name, obj, source=source)
        for variable, names in (("DSRT_PLUGINS", self.allow or []), ("DSRT_DISABLE_PLUGINS", self.deny)):
            for name in names:
                if name not in seen and (variable, name) not in _warned_names:
                    _warned_names.add((variable, name))
                    known = ", ".join(sorted(seen)) or "none"
                    log.warning("%s names '%s', which matches no installed plugin (installed: %s)",
                                variable, name, known)

    def _register(self, name: str, obj: Any, *, source: str) -> None:
        try:
            self.pm.register(obj, name=name)
        except Exception as exc:  # noqa: BLE001
            self._fail(name, source, "registration failed", exc)
            return
        self.records[name] = PluginRecord(name, source, "loaded")

    def fail(self, name: str, what: str, exc: BaseException) -> None:
        """Mark plugin ``name`` failed (it contributes nothing from now on) with ``exc`` as the reason."""
        record = self.records.get(name)
        self._fail(name, record.source if record else name, what, exc)

    def _fail(self, name: str, source: str, what: str, exc: BaseException) -> None:
        err = PluginError(f"plugin '{name}': {what}: {type(exc).__name__}: {exc}", plugin=name, cause=exc)
        detail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        self.records[name] = PluginRecord(name, source, "failed", err, detail)
        if self.pm.is_registered(self.pm.get_plugin(name)):
            self.pm.unregister(name=name)

    # ------------------------------------------------------------------ collecting
    def collect(self, hook_name: str, **kwargs: Any) -> list[tuple[str, Any]]:
        """Call ``hook_name`` on each plugin separately; return ``(plugin, item)`` for every item.

        A plugin whose hook raises is marked failed (with the error) and contributes nothing.
        """
        caller = getattr(self.pm.hook, hook_name)
        out: list[tuple[str, Any]] = []
        for impl in caller.get_hookimpls():
            name = impl.plugin_name
            record = self.records.get(name)
            if record is not None and record.status == "failed":
                continue
            try:
                items = impl.function(**{k: kwargs[k] for k in impl.argnames})
            except Exception as exc:  # noqa: BLE001
                self._fail(name, record.source if record else name, f"hook {hook_name} raised", exc)
                continue
            for item in items or ():
                out.append((name, item))
        return out

    def backends(self) -> dict[str, BackendRecord]:
        """Every backend by name; duplicates and bad API versions are recorded as errors."""
        found: dict[str, BackendRecord] = {}
        for plugin, spec in self.collect("dsrt_register_backends"):
            if not isinstance(spec, BackendSpec):
                err = PluginError(
                    f"plugin '{plugin}': dsrt_register_backends returned {type(spec).__name__}, not BackendSpec",
                    plugin=plugin,
                )
                found[f"<{plugin}>"] = BackendRecord(f"<{plugin}>", plugin, None, err)
                continue
            if spec.api_version not in SUPPORTED_API_VERSIONS:
                supported = ", ".join(str(v) for v in sorted(SUPPORTED_API_VERSIONS))
                err = PluginVersionError(
                    f"plugin '{plugin}': backend '{spec.name}' targets dsrt plugin API {spec.api_version};"
                    f" this dsrt supports {supported}",
                    plugin=plugin,
                )
                found[spec.name] = BackendRecord(spec.name, plugin, None, err)
                continue
            previous = found.get(spec.name)
            if previous is not None:
                err = PluginError(
                    f"backend name '{spec.name}' is registered by plugins '{previous.plugin}' and '{plugin}';"
                    f" disable one with DSRT_DISABLE_PLUGINS",
                    plugin=plugin,
                )
                found[spec.name] = BackendRecord(spec.name, f"{previous.plugin}, {plugin}", None, err)
                continue
            found[spec.name] = BackendRecord(spec.name, plugin, spec)
        return found

    def failed(self) -> list[PluginRecord]:
        return [r for r in self.records.values() if r.status == "failed"]


@functools.lru_cache(maxsize=1)
def installed_backends() -> dict[str, BackendSpec]:
    """The registration records of every backend installed here (by name), read once per process.

    What the core knows of backends it has not probed (their names and device-id prefixes, for a
    topology file; a typical peak, for planning) comes from here, never from a list in the core.
    Registration hooks do no expensive work, so this costs the plugins' imports only.
    """
    return {name: rec.spec for name, rec in PluginManager().backends().items() if rec.spec is not None}

