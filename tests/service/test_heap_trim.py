"""The server gives its free C heap back to the system on a timer (`trim_heap_every`)."""

from __future__ import annotations

import threading

import pytest

from opmap import heap
from opmap.service import trim_heap_every


def test_the_server_trims_its_heap_on_a_timer(monkeypatch) -> None:
    calls = threading.Semaphore(0)
    monkeypatch.setattr(heap, "release_free_heap", lambda: bool(calls.release()))
    thread = trim_heap_every(0.01)
    assert thread.daemon and thread.name == "opmap-heap-trim"
    for _ in range(3):  # it goes on trimming, not once
        assert calls.acquire(timeout=10), "no heap trim within 10 s"


@pytest.mark.parametrize("period_s", [0.0, -1.0, float("nan")])
def test_a_trim_period_that_is_not_positive_is_refused(period_s) -> None:
    with pytest.raises(ValueError, match="period_s must be > 0"):
        trim_heap_every(period_s)
