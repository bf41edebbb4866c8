"""Analyse each dependency of the server's routes once, not on every request.

Why
    With any entry in ``app.dependency_overrides`` (Tiled sets one for its settings,
    opmap's key cache three), FastAPI 0.165 rebuilds the dependency tree below every
    route on every request: ``get_dependant`` for each sub-dependency, each an
    ``inspect.signature`` and a parameter analysis. On 2 cores that is ~5 ms of server CPU
    per request, a quarter of a slice fetch once the key and path caches answer
    (``benchmarks/probe_dependency_overrides.py``, docs/remote-access.md).

What opmap does
    ``fastapi.dependencies.utils.get_dependant`` is memoised in the server process: the
    same arguments (the same callable, by identity, and the same path, name, scopes and
    flags) return the :class:`~fastapi.dependencies.models.Dependant` built the first time.
    ``get_dependant`` depends on nothing else (a function's signature does not change
    while the server runs), and FastAPI does not modify a dependant once built, so the
    routes resolve the same dependencies with the same parameters as before; an override
    installed later is a different callable, hence a new entry. :func:`memoise_dependants`
    refuses to start if FastAPI's function no longer has the parameters it expects.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any

__all__ = ["memoise_dependants"]

logger = logging.getLogger(__name__)

#: The keyword parameters of ``get_dependant`` the memo keys on (FastAPI 0.165).
EXPECTED_PARAMETERS = (
    "path",
    "call",
    "name",
    "own_oauth_scopes",
    "parent_oauth_scopes",
    "use_cache",
    "scope",
    "concurrency",
)
#: Most dependants kept (the memo is emptied beyond that; routes x dependencies in use).
MAX_DEPENDANTS = 20_000
_MARK = "_opmap_memoised"


def _hashable(value: Any) -> Any:
    """``value`` as part of a memo key: lists as tuples, unhashable objects by identity."""
    if isinstance(value, list):
        return tuple(value)
    try:
        hash(value)
    except TypeError:
        return ("id", id(value))
    return value


def _memoised(original: Callable[..., Any]) -> Callable[..., Any]:
    memo: dict[tuple[Any, ...], tuple[Any, Any]] = {}

    @functools.wraps(original)
    def get_dependant(**kwargs: Any) -> Any:
        call = kwargs.get("call")
        key = (id(call), *((k, _hashable(v)) for k, v in sorted(kwargs.items()) if k != "call"))
        found = memo.get(key)
        if found is not None and found[0] is call:
            return found[1]
        dependant = original(**kwargs)
        if len(memo) >= MAX_DEPENDANTS:
            memo.clear()
        memo[key] = (call, dependant)  # the call is kept: its id is not reused meanwhile
        return dependant

    setattr(get_dependant, _MARK, True)
    return get_dependant


def memoise_dependants() -> None:
    """Memoise FastAPI's ``get_dependant`` in this process (idempotent).

    Raises
    ------
    RuntimeError
        When FastAPI's ``get_dependant`` is gone or takes other parameters than
        :data:`EXPECTED_PARAMETERS` (the memo could then return a wrong dependant).
    """
    import fastapi.dependencies.utils as utils

    original = getattr(utils, "get_dependant", None)
    if getattr(original, _MARK, False):
        return
    parameters = tuple(inspect.signature(original).parameters) if callable(original) else ()
    if parameters != EXPECTED_PARAMETERS:
        raise RuntimeError(
            "fastapi.dependencies.utils.get_dependant takes "
            f"{parameters or 'nothing (gone)'}, not {EXPECTED_PARAMETERS}: opmap's "
            "dependency memo cannot be installed; check opmap/service/_dependants.py "
            "against this FastAPI version"
        )
    utils.get_dependant = _memoised(original)
