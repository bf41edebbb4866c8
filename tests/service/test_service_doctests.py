"""Docstring examples of the service modules (lock, guard, log redaction, settings)."""

import doctest
import importlib

import pytest

MODULES = ["opmap._service_lock", "opmap._service_guard", "opmap._service_log", "opmap.settings"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_pass(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
