"""Fault-injection tests: the soak variants run only in ``make soak`` (``OPMAP_SOAK=1``)."""

from __future__ import annotations

import os

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "soak: long fault-injection variants (make soak)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("OPMAP_SOAK") == "1":
        return
    skip = pytest.mark.skip(reason="soak variant: run with `make soak` (OPMAP_SOAK=1)")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)
