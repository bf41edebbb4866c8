"""How `recover_spool` reports sealing, with a stand-in catalog (no server).

The runs here are stored whole already (start and stop only), so nothing is re-sent; what
is checked is what happens next: sealed, skipped when sealed before, or stored but not
sealed (reported, not hidden). The same paths against a real server process are in
``tests/faults/test_writer_survives_server_death.py``.
"""

from __future__ import annotations

from typing import Any

from opmap.callbacks.sealing import SEALED_KEY
from opmap.callbacks.spool import RunSpool, recover_spool


class _Run:
    def __init__(self, metadata: dict[str, Any], refuse: str = "") -> None:
        self.metadata = metadata
        self.refuse = refuse
        self.validated = 0

    def validate(self, **options: Any) -> None:
        self.validated += 1

    def update_metadata(self, metadata: dict[str, Any]) -> None:
        if self.refuse:
            raise PermissionError(self.refuse)
        self.metadata = {**self.metadata, **metadata}


class _Runs(dict):
    """``runs[uid]`` as a Tiled container client gives it (KeyError when absent)."""


def _spooled(tmp_path, uid: str) -> tuple[RunSpool, dict, dict]:
    spool = RunSpool(tmp_path / "backup")
    start = {"uid": uid, "time": 1.0}
    stop = {"uid": f"{uid}-stop", "run_start": uid, "time": 2.0, "exit_status": "success"}
    spool.append("start", start)
    spool.append("stop", stop)
    return spool, start, stop


def test_a_run_stored_whole_is_validated_and_sealed(tmp_path) -> None:
    spool, start, stop = _spooled(tmp_path, "r1")
    runs = _Runs(r1=_Run({"start": start, "stop": stop}))
    (result,) = recover_spool(runs, spool)
    assert result.sealed and runs["r1"].metadata[SEALED_KEY] is True
    assert runs["r1"].validated == 1
    assert result.line().endswith("; sealed") and spool.pending() == []


def test_a_run_sealed_before_is_skipped_untouched(tmp_path) -> None:
    spool, start, stop = _spooled(tmp_path, "r2")
    refusing = _Run({"start": start, "stop": stop, SEALED_KEY: True}, refuse="403 sealed")
    (result,) = recover_spool(_Runs(r2=refusing), spool)
    assert result.already_sealed and result.stored and not result.error
    assert refusing.validated == 0  # not even validated: that may write
    assert result.line().endswith("already stored and sealed: skipped")
    assert spool.pending() == []


def test_a_run_that_cannot_be_sealed_is_stored_and_says_so(tmp_path) -> None:
    spool, start, stop = _spooled(tmp_path, "r3")
    runs = _Runs(r3=_Run({"start": start, "stop": stop}, refuse="server said no"))
    (result,) = recover_spool(runs, spool)
    assert result.stored and not result.sealed
    assert "NOT SEALED: PermissionError: server said no" in result.line()
    assert SEALED_KEY not in runs["r3"].metadata
    assert spool.pending() == []  # stored whole: the spool has nothing more to give


def test_sealing_can_be_left_off(tmp_path) -> None:
    spool, start, stop = _spooled(tmp_path, "r4")
    runs = _Runs(r4=_Run({"start": start, "stop": stop}))
    (result,) = recover_spool(runs, spool, seal=False)
    assert result.stored and not result.sealed and SEALED_KEY not in runs["r4"].metadata
