"""Fixtures shared by the whole suite."""

from __future__ import annotations

import pytest
from bluesky import RunEngine


@pytest.fixture
def RE():
    """A RunEngine for one test (created before any device connects), halted if left busy."""
    run_engine = RunEngine(call_returns_result=True)
    yield run_engine
    if run_engine.state != "idle":
        run_engine.halt()
