"""Docstring examples of the service modules (lock, guard, log redaction, settings)."""

import doctest
import importlib

import pytest

MODULES = ["opmap.service._lock", "opmap.service._guard", "opmap.service._log", "opmap.settings"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_pass(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
