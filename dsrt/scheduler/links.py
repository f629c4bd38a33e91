"""Link cost models: predicted seconds to move bytes to the device a task runs on.

``None`` as a source means host memory of the local node. Three models share one method,
``time(src, dst, nbytes) -> seconds``:

- :class:`TopologyLinks` asks a :class:`dsrt.topology.Topology` (its declared links and defaults);
- :class:`StarLinks` is a star around host memory: each device has one ``(latency s, bandwidth B/s)``
  link to the host, and device-to-device traffic crosses two links (store and forward);
- :class:`DefaultLinks` is the fallback when no topology is known: devices whose memory is host memory
  (DLPack type 1) copy at their ``memory_bandwidth``; others use :data:`DEFAULT_LINK`.

:class:`RemoteLinks` puts the links to devices on other machines (cluster workers, measured when the
cluster is attached) in front of any of them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Protocol

__all__ = ["LinkModel", "TopologyLinks", "StarLinks", "DefaultLinks", "RemoteLinks", "DEFAULT_LINK"]

#: An undeclared host<->device link: PCIe 4.0 x16 order of magnitude, (latency s, bandwidth B/s).
DEFAULT_LINK = (10e-6, 16e9)


class LinkModel(Protocol):
    def time(self, src: str | None, dst: str, nbytes: int) -> float:
        """Seconds to move ``nbytes`` bytes from ``src`` (device id, None = host) to device ``dst``."""
        ...


class StarLinks:
    """Host-centred links: ``links[device id] = (latency seconds, bandwidth bytes/s)``."""

    def __init__(self, links: Mapping[str, tuple[float, float]], default: tuple[float, float] = DEFAULT_LINK) -> None:
        self.links = dict(links)
        self.default = default

    def _one(self, dev: str, nbytes: int) -> float:
        lat, bw = self.links.get(dev, self.default)
        return lat + (nbytes / bw if bw > 0 and math.isfinite(bw) else 0.0)

    def time(self, src: str | None, dst: str, nbytes: int) -> float:
        if nbytes <= 0 or src == dst:
            return 0.0
        t = self._one(dst, nbytes)
        return t if src is None else t + self._one(src, nbytes)


class DefaultLinks:
    """No topology: host-memory devices copy at ``memory_bandwidth``; others over :data:`DEFAULT_LINK`."""

    def __init__(self, infos: Mapping[str, Any]) -> None:
        self.infos = dict(infos)

    def _one(self, dev: str, nbytes: int) -> float:
        info = self.infos.get(dev)
        if info is not None and getattr(info, "dlpack_device_type", None) == 1 and info.memory_bandwidth > 0:
            return nbytes / info.memory_bandwidth
        lat, bw = DEFAULT_LINK
        return lat + nbytes / bw

    def time(self, src: str | None, dst: str, nbytes: int) -> float:
        if nbytes <= 0 or src == dst:
            return 0.0
        t = self._one(dst, nbytes)
        return t if src is None else t + self._one(src, nbytes)


class TopologyLinks:
    """Links from a topology. ``qualify(device id) -> qualified id``; the host is ``host`` (a node name)."""

    def __init__(self, topology: Any, qualify: Callable[[str], str], host: str, fallback: LinkModel) -> None:
        self.topology = topology
        self.qualify = qualify
        self.host = host
        self.fallback = fallback
        self._cache: dict[tuple[str | None, str], tuple[float, float] | None] = {}

    def _path(self, src: str | None, dst: str) -> tuple[float, float] | None:
        key = (src, dst)
        if key not in self._cache:
            a = self.host if src is None else self.qualify(src)
            b = self.qualify(dst)
            try:
                self._cache[key] = (float(self.topology.latency(a, b)), float(self.topology.bandwidth(a, b)))
            except Exception:  # noqa: BLE001 - an endpoint the topology cannot route: use the fallback
                self._cache[key] = None
        return self._cache[key]

    def time(self, src: str | None, dst: str, nbytes: int) -> float:
        if nbytes <= 0 or src == dst:
            return 0.0
        path = self._path(src, dst)
        if path is None:
            return self.fallback.time(src, dst, nbytes)
        lat, bw = path
        return lat + (nbytes / bw if bw > 0 and math.isfinite(bw) else 0.0)


class RemoteLinks:
    """Links to remote devices in front of a local model.

    ``links[device id] = (latency s, bandwidth B/s, machine)``: the measured round trip of a small
    chunk to the machine (``machine``: a cluster worker's address) that holds the device, and the
    bandwidth to it. Every chunk sent to a remote device pays the round trip, even when its inputs
    already live on that machine; host -> remote adds the bytes over the link; remote -> remote
    crosses both links unless both devices are on one machine; remote -> local crosses the remote
    link then the local model's host -> device leg; everything else goes to ``local``.
    """

    def __init__(self, links: Mapping[str, tuple[float, float, str]], local: LinkModel) -> None:
        self.links = dict(links)
        self.local = local

    def _one(self, dev: str, nbytes: int) -> float:
        lat, bw, _machine = self.links[dev]
        return lat + (nbytes / bw if bw > 0 and math.isfinite(bw) else 0.0)

    def time(self, src: str | None, dst: str, nbytes: int) -> float:
        src_remote = src is not None and src in self.links
        if dst in self.links:
            if src == dst or nbytes <= 0 or (src_remote and self.links[str(src)][2] == self.links[dst][2]):
                return self.links[dst][0]
            # From the host, or from a local device through the host (small next to the network).
            return self._one(dst, nbytes) + (self._one(str(src), nbytes) if src_remote else 0.0)
        if not src_remote:
            return self.local.time(src, dst, nbytes)
        if nbytes <= 0:
            return 0.0
        return self._one(str(src), nbytes) + self.local.time(None, dst, nbytes)
