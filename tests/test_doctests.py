"""Run the docstring examples of the installed opmap modules.

Doctests are collected from the importable ``opmap.*`` modules (not from source paths), so the
examples exercise exactly the classes users import.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import opmap.analysis
import opmap.devices

FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _modules(package) -> list[str]:
    return sorted(
        info.name
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{package.__name__}.")
    )


@pytest.mark.parametrize("name", _modules(opmap.analysis) + _modules(opmap.devices))
def test_docstring_examples_pass(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=FLAGS, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
