"""Helpers for the topology tests: the repository's specs directory and an error-asserting helper."""

from __future__ import annotations

from pathlib import Path

import pytest

from dsrt.errors import TopologyError
from dsrt.topology import load_topology

SPECS = Path(__file__).resolve().parents[2] / "specs"


def load_error(source: object, **kw: object) -> TopologyError:
    """Load ``source`` expecting a TopologyError; return it."""
    with pytest.raises(TopologyError) as info:
        load_topology(source, **kw)  # type: ignore[arg-type]
    return info.value
