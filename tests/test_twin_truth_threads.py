"""The rehearsal's twin-truth bookkeeping is shared by the RunEngine thread (documents)
and the live analysis thread (truths): one of them at a time changes it."""

from __future__ import annotations

import threading
from types import SimpleNamespace

from opmap import rehearse


class _Twin:
    """Records what it is told to forget; the first call waits until released."""

    def __init__(self) -> None:
        self.forgotten_before_s: list[float] = []
        self.entered = threading.Event()
        self.release = threading.Event()

    def forget_before(self, time_s: float) -> None:
        first = not self.forgotten_before_s
        self.forgotten_before_s.append(time_s)
        if first:
            self.entered.set()
            assert self.release.wait(10), "never released"


def _truth() -> tuple[object, _Twin]:
    twin = _Twin()
    clock = SimpleNamespace(now_s=lambda: 500.0)
    return rehearse._TwinTruth(SimpleNamespace(clock=clock, twin=twin)), twin


def test_the_analysis_thread_waits_while_the_run_engine_thread_updates_the_truths() -> None:
    truth, twin = _truth()
    truth.on_document("start", {"uid": "map-0", "map_geometry": {}})
    engine = threading.Thread(target=truth.on_document, args=("stop", {"run_start": "map-0"}))
    engine.start()  # its stop makes the twin forget; the twin holds it there
    assert twin.entered.wait(10)
    analysis = threading.Thread(target=truth.remember, args=("map-old", 0, 100.0, 200.0))
    analysis.start()
    analysis.join(0.3)
    assert analysis.is_alive(), "the analysis thread changed the truths meanwhile"
    twin.release.set()
    engine.join(10)
    analysis.join(10)
    assert not engine.is_alive() and not analysis.is_alive()
    # the second decision saw the remembered map: keep from its start, less the margin
    assert twin.forgotten_before_s == [
        500.0 - truth.HISTORY_MARGIN_S,
        100.0 - truth.HISTORY_MARGIN_S,
    ]
