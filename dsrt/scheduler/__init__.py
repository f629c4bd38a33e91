"""The load balancer: cost-model scheduling across every device, explainable and fault tolerant.

``rt.map(kernel, chunks, policy=...)`` and ``rt.submit(...)`` go through :class:`Scheduler`. Policies
(``round_robin``, ``eager``, ``work_stealing``, ``dmda`` (default), ``heft``) are :class:`PolicySpec`
records; plugins add more through the ``dsrt_register_policies`` hook. The same engine runs on a
virtual clock over device and link cost models (:func:`simulate`).
"""

from __future__ import annotations

from .core import DEFAULT_POLICY, Scheduler
from .engine import POISON_AFTER, Engine, Worker
from .links import DefaultLinks, LinkModel, StarLinks, TopologyLinks
from .perfmodel import PerfModel, default_model_path
from .policies import BUILTIN_POLICIES, Policy, PolicyContext, PolicySpec
from .task import Candidate, Future, Placement, RunStats, ShapeStub, Task
from .virtual import VirtualDevice, make_chunks, make_tasks, simulate

__all__ = [
    "Scheduler",
    "DEFAULT_POLICY",
    "PolicySpec",
    "Policy",
    "PolicyContext",
    "BUILTIN_POLICIES",
    "PerfModel",
    "default_model_path",
    "Engine",
    "Worker",
    "POISON_AFTER",
    "LinkModel",
    "StarLinks",
    "DefaultLinks",
    "TopologyLinks",
    "Task",
    "Future",
    "Placement",
    "Candidate",
    "RunStats",
    "ShapeStub",
    "VirtualDevice",
    "make_chunks",
    "make_tasks",
    "simulate",
]
