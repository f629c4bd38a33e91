"""Devices of a Dask cluster as dsrt devices: ``dsrt.Runtime(cluster=ADDRESS_OR_CLIENT)``.

Every Dask worker gets a dsrt runtime through a ``WorkerPlugin`` the client registers (no extra
daemon); ``rt.devices`` then lists each worker's real devices as :class:`RemoteDevice` proxies named
``<worker>/<device>`` (``tcp://127.0.0.1:40123/cpu:0``). The scheduler places chunks on local and
remote devices by one cost model, with each worker's link measured at attach. A worker that dies
fails its chunks with ``DeviceLostError``; the engine places them again on the devices left, and
each result is still committed exactly once. See :mod:`dsrt.distributed.cluster`.

This package imports Dask; the core imports it only when a cluster is asked for. Worker processes
need dsrt (with the same plugins) installed; ``dask worker`` must run in that environment.
"""

from __future__ import annotations

from .cluster import Cluster, WorkerRecord, attach
from .remote import SCATTER_BYTES, RemoteArray, RemoteDevice
from .worker import PLUGIN_NAME, DsrtWorkerPlugin

__all__ = ["Cluster", "WorkerRecord", "attach", "RemoteDevice", "RemoteArray", "SCATTER_BYTES",
           "DsrtWorkerPlugin", "PLUGIN_NAME"]
