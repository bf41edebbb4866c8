"""``opmap resume`` seals the run it closes in Tiled directly (no spool file left).

A real server process: a run of a rehearsal stored without ``stop`` and without spool file
(the spool was lost with the control process's disk, say) is closed by
`read_stored_experiment` with an abort stop, validated and sealed: the writer key then
gets 403 on it.
"""

from __future__ import annotations

import time
import uuid

import httpx
import pytest
from bluesky_tiled_plugins import TiledWriter

from opmap.callbacks.sealing import is_sealed
from opmap.callbacks.tiled_writer import ensure_layout
from opmap.rehearse import ABORT_REASON, read_stored_experiment
from opmap.service import start_server_subprocess
from opmap.settings import OpmapSettings

pytestmark = pytest.mark.timeout(300)


def test_a_run_closed_in_tiled_by_resume_is_sealed(tmp_path) -> None:
    settings = OpmapSettings(data_dir=tmp_path / "data")
    with start_server_subprocess(settings, startup_timeout_s=240) as server:
        runs = ensure_layout(server.client())["raw"]
        uid = str(uuid.uuid4())
        start = {
            "uid": uid,
            "time": time.time(),
            "experiment_id": "cut-exp",
            "map_index": 0,
            "rehearsal_options": {"max_maps": 2},
        }
        TiledWriter(runs)("start", start)  # then the control process died
        assert not is_sealed(runs[uid].metadata)
        experiment = read_stored_experiment(runs, "cut-exp")
        assert experiment.closed == [uid]
        stored = runs[uid].metadata
        assert stored["stop"]["reason"] == ABORT_REASON and is_sealed(stored)
        put = httpx.put(
            f"{server.url}/api/v1/metadata/raw/{uid}",
            json={"metadata": {"touched": True}},
            headers={"Authorization": f"Apikey {server.api_key}"},
        )
        assert put.status_code == 403, put.text
