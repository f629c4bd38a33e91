"""The conformance kit: what every dsrt backend must do, as pytest tests that ship with dsrt.

Run it against a backend (yours, or a first-party one)::

    pytest --pyargs dsrt.testing --dsrt-backend acme
    dsrt conformance acme
    pytest --pyargs dsrt.testing --dsrt-backend mine --dsrt-plugin my_pkg.plugin   # not installed yet

``--dsrt-backend all`` runs it against every backend that is present; a backend that is absent or
has no devices is reported as skipped with its reason, never silently. The kit checks device info,
allocation and copy round trips at odd sizes, every standard kernel in every dtype the device claims
against the numpy reference (a pair it does not claim is a skipped test saying so, and launching it
must raise ``UnsupportedKernelError``), the kernels a plugin registered itself against their own
references, streams and events (on asynchronous devices: work on one stream is visible to a copy on
another once an event recorded after it has been waited for), and DLPack (an export stays valid after
the array is dropped and the device reuses its memory).
"""

from __future__ import annotations

from .inputs import GenericCase, generic_cases, kernel_cases, make_inputs

__all__ = ["GenericCase", "generic_cases", "kernel_cases", "make_inputs"]
