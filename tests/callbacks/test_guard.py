"""GuardedCallback: analysis failures never abort a real fly map; they are counted and logged."""

from __future__ import annotations

import logging

import pytest
from event_model import DocumentNames, schema_validators

from opmap.callbacks.guard import GuardedCallback
from opmap.plans import fly_map

from ._live_rig import RE, SMALL_MAP, rig  # noqa: F401


class FailsEveryTenth:
    """Records every document it is given and raises on every 10th."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict]] = []

    def __call__(self, name, doc):
        self.seen.append((name, doc))
        if len(self.seen) % 10 == 0:
            raise RuntimeError(f"analysis broke on document {len(self.seen)}")


def test_guarded_failures_do_not_abort_the_map_and_lose_no_document(RE, rig, caplog):  # noqa: F811
    stage, eiger, _ = rig
    collected: list[tuple[str, dict]] = []

    def collect(name, doc):
        schema_validators[DocumentNames(name)].validate(doc)
        collected.append((name, doc))

    failing = FailsEveryTenth()
    guard = GuardedCallback(failing, name="live")
    RE.subscribe(collect)
    RE.subscribe(guard)
    with caplog.at_level(logging.WARNING, logger="opmap.callbacks.guard"):
        (uid,) = RE(fly_map(eiger, stage.x, stage.z, SMALL_MAP)).run_start_uids
    stops = [doc for name, doc in collected if name == "stop"]
    assert [s["exit_status"] for s in stops] == ["success"]
    n_docs = len(collected)
    assert n_docs >= 20, "the map must produce enough documents for the guard to act"
    assert [n for n, _ in failing.seen] == [n for n, _ in collected]
    lines = [d for n, d in collected if n == "event"]
    assert len(lines) == SMALL_MAP.z_count  # every line event reached the collector
    assert guard.failures[uid] == n_docs // 10 == guard.total_failures
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == n_docs // 10 and all(uid in r.getMessage() for r in errors)
    assert any(
        r.levelno == logging.WARNING and f"{n_docs // 10} document(s) of run {uid}" in r.message
        for r in caplog.records
    )


def test_without_the_guard_the_same_failure_aborts_the_run(RE, rig):  # noqa: F811
    stage, eiger, _ = rig
    stops: list[dict] = []
    RE.subscribe(lambda name, doc: stops.append(doc) if name == "stop" else None)
    RE.subscribe(FailsEveryTenth())
    with pytest.raises(RuntimeError, match="analysis broke on document 10"):
        RE(fly_map(eiger, stage.x, stage.z, SMALL_MAP))
    assert [s["exit_status"] for s in stops] == ["fail"]


def test_guard_rejects_non_callables():
    with pytest.raises(ValueError, match="callback must be callable"):
        GuardedCallback(42)  # type: ignore[arg-type]
