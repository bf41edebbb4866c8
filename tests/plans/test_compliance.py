"""Every public plan: docstring, typed signature, no *args/**kwargs, optional md."""

from __future__ import annotations

import inspect

import pytest

import opmap.plans

STUBS = {"map_lines", "fly_line_stub"}  # stubs never open runs, so carry no metadata
PLANS = [
    getattr(opmap.plans, name)
    for name in opmap.plans.__all__
    if inspect.isgeneratorfunction(getattr(opmap.plans, name))
]


def test_the_package_exports_its_plans():
    names = {plan.__name__ for plan in PLANS}
    assert {"fly_map", "operando_experiment", "align_stack"} <= names


@pytest.mark.parametrize("plan", PLANS, ids=lambda p: p.__name__)
def test_plan_is_documented_typed_and_explicit(plan):
    assert plan.__doc__ and "Parameters" in plan.__doc__
    signature = inspect.signature(plan)
    assert signature.return_annotation is not inspect.Signature.empty
    for parameter in signature.parameters.values():
        assert parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
        assert parameter.annotation is not inspect.Parameter.empty, parameter.name
    if plan.__name__ not in STUBS:
        md = signature.parameters["md"]
        assert md.default is None and md.kind == md.KEYWORD_ONLY
