"""The conformance kit: what every dsrt backend must do, as pytest tests that ship with dsrt.

Run it against a backend (yours, or a first-party one)::

    pytest --pyargs dsrt.testing --dsrt-backend acme
    dsrt conformance acme

``--dsrt-backend all`` runs it against every backend that is present; a backend that is absent or
has no devices is reported as skipped with its reason, never silently. The kit checks device info,
allocation and copy round trips at odd sizes, every kernel and dtype the device claims against the
numpy reference, errors for what it does not claim, streams and events, and DLPack.
"""

from __future__ import annotations

from .inputs import kernel_cases, make_inputs

__all__ = ["kernel_cases", "make_inputs"]
