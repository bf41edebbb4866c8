"""Remote operation end to end: the experiment submitted over HTTP lands in Tiled.

Real processes on this machine only: a Tiled server (`start_server_subprocess`), Redis
(Debian's ``redis-server``), RE Manager whose worker builds the profile's simulated beamline
from ``profile/qserver``, and bluesky-httpserver. Everything goes through HTTP with API keys,
and the runs are read back through a real Tiled client.
"""

from __future__ import annotations

import shutil
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from opmap.queue import QueueSettings, create_api_key, ensure_password, start_queue_subprocesses
from opmap.service import start_server_subprocess
from opmap.settings import OpmapSettings

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server"),
]

PROFILE_DIR = Path(__file__).resolve().parent.parent / "profile"
#: The rehearsal's small experiment: 6 x 5 maps, protocol at 0.02 of the paper's, 2 maps.
EXPERIMENT = {
    "name": "operando_experiment_plan",
    "item_type": "plan",
    "kwargs": {
        "geometry": {
            "z_start_um": -3.0,
            "z_count": 6,
            "x_start_um": 200.0,
            "x_stop_um": 365.0,
            "x_count": 5,
        },
        "protocol": "paper",
        "time_scale": 0.02,
        "max_maps": 2,
        "md": {"operator_note": "queued from afar"},
    },
}
READ_ONLY = ["read:status", "read:queue", "read:history"]


def _profile(folder: Path, data_dir: Path, tiled_port: int) -> Path:
    """A sim profile like ``profile/beamline.toml`` writing to the test's Tiled server."""
    settings = folder / "opmap.toml"
    settings.write_text(f'data_dir = "{data_dir.as_posix()}"\nport = {tiled_port}\n')
    path = folder / "beamline.toml"
    path.write_text(
        f'[beamline]\ndata_dir = "{data_dir.as_posix()}"\n[beamline.sim]\nbinning = 4\n'
        f'[live_analysis]\nparameters = "{(PROFILE_DIR / "analysis.toml").as_posix()}"\n'
        f'[tiled]\nsettings_file = "{settings.as_posix()}"\n'
    )
    return path


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1 (all held open while chosen)."""
    with ExitStack() as sockets:
        probes = [sockets.enter_context(socket.socket()) for _ in range(count)]
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any]]:
    """(Tiled server, queue processes), started side by side; stopped at the end."""
    folder = tmp_path_factory.mktemp("queue")
    tiled_port, http_port, control_port, info_port, redis_port = _free_ports(5)
    tiled_settings = OpmapSettings(data_dir=folder / "data", port=tiled_port)
    settings = QueueSettings(
        profile_config=_profile(folder, folder / "data", tiled_port),
        startup_dir=PROFILE_DIR / "qserver",
        run_dir=folder / "queue",
        http_port=http_port,
        zmq_control_port=control_port,
        zmq_info_port=info_port,
        redis_port=redis_port,
        live_analysis=False,
    )
    with ThreadPoolExecutor(2) as pool, ExitStack() as stop_at_exit:
        futures = (
            pool.submit(start_server_subprocess, tiled_settings, port=tiled_settings.port),
            pool.submit(start_queue_subprocesses, settings, persist_redis=False),
        )
        for future in futures:  # whatever failed to start, stop what did start
            if future.exception() is None:
                stop_at_exit.enter_context(future.result())
        tiled, queue = (future.result() for future in futures)
        yield tiled, queue


@pytest.fixture(scope="module")
def operator(servers: tuple[Any, Any]) -> Iterator[httpx.Client]:
    """An HTTP client with the operator's key, the worker's environment open."""
    _, queue = servers
    key = create_api_key(queue.url, "operator", ensure_password(queue.settings, "operator"))
    headers = {"Authorization": f"ApiKey {key}"}
    with httpx.Client(base_url=f"{queue.url}/api", headers=headers, timeout=30) as client:
        assert client.post("/environment/open").json()["success"]
        _wait(client, lambda s: s["worker_environment_exists"] and s["manager_state"] == "idle")
        yield client
        client.post("/environment/close")


def _wait(client: httpx.Client, done: Callable[[dict], bool], timeout_s: float = 90.0) -> dict:
    """Poll ``/status`` until ``done(status)``; fail with the last status after the timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = client.get("/status").json()
        if done(status):
            return status
        time.sleep(0.2)
    raise AssertionError(f"queue status not reached in {timeout_s} s: {status}")


def _wait_for_runs(raw: Any, count: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while len(raw) < count:
        assert time.monotonic() < deadline, f"{len(raw)} runs in Tiled after {timeout_s} s"
        time.sleep(0.2)


def test_anonymous_and_read_only_requests_cannot_submit(servers, operator):
    _, queue = servers
    url = f"{queue.url}/api/queue/item/add"
    anonymous = httpx.post(url, json={"item": EXPERIMENT})
    assert anonymous.status_code == 401, anonymous.text
    observer = create_api_key(
        queue.url, "observer", ensure_password(queue.settings, "observer"), scopes=READ_ONLY
    )
    request = {"scopes": READ_ONLY, "expires_in": 600, "note": "read-only"}
    narrowed = operator.post("/auth/apikey", json=request).json()["secret"]
    for key in (observer, narrowed):
        headers = {"Authorization": f"ApiKey {key}"}
        assert httpx.get(f"{queue.url}/api/status", headers=headers).status_code == 200
        reply = httpx.post(url, json={"item": EXPERIMENT}, headers=headers)
        assert reply.status_code == 401, reply.text  # the server says 401 for missing scopes
        assert "Requires scopes ['write:queue:edit']" in reply.json()["detail"]
    assert operator.get("/queue/get").json()["items"] == []


def test_a_bad_argument_is_refused_naming_it(operator, servers):
    tiled, _ = servers
    wrong_type = {**EXPERIMENT, "kwargs": {**EXPERIMENT["kwargs"], "max_maps": "two"}}
    reply = operator.post("/queue/item/add", json={"item": wrong_type}).json()
    assert reply["success"] is False  # refused by the queue server from the annotations
    assert "max_maps\n  Input should be a valid integer" in reply["msg"]
    geometry = {**EXPERIMENT["kwargs"]["geometry"], "z_count": 0}
    out_of_range = {**EXPERIMENT, "kwargs": {**EXPERIMENT["kwargs"], "geometry": geometry}}
    item = operator.post("/queue/item/execute", json={"item": out_of_range}).json()
    _wait(operator, lambda s: s["manager_state"] == "idle" and s["items_in_history"] >= 1)
    history = operator.get("/history/get").json()["items"]
    result = next(h["result"] for h in history if h["item_uid"] == item["item"]["item_uid"])
    assert result["exit_status"] == "failed" and result["run_uids"] == []
    assert "geometry.z_count: Input should be greater than or equal to 1" in result["msg"]
    assert len(tiled.client()["raw"]) == 0  # refused before anything moved or was written


def test_experiment_runs_pauses_resumes_and_lands_in_tiled(operator, servers):
    tiled, _ = servers
    raw = tiled.client()["raw"]
    fly_map = {"name": "fly_map_plan", "item_type": "plan"}
    fly_map["kwargs"] = {"geometry": EXPERIMENT["kwargs"]["geometry"]}
    for item in (EXPERIMENT, fly_map):
        assert operator.post("/queue/item/add", json={"item": item}).json()["success"]
    assert operator.post("/queue/start").json()["success"]
    _wait_for_runs(raw, 1)  # the first map run has opened: acquisition is under way
    assert operator.post("/queue/stop").json()["success"]  # once the running item ends
    assert operator.post("/re/pause", json={"option": "immediate"}).json()["success"]
    paused = _wait(operator, lambda s: s["manager_state"] == "paused")
    assert paused["re_state"] == "paused" and paused["queue_stop_pending"]
    assert operator.post("/re/resume").json()["success"]
    done = _wait(operator, lambda s: s["manager_state"] == "idle")
    assert not done["queue_stop_pending"]
    assert [i["name"] for i in operator.get("/queue/get").json()["items"]] == ["fly_map_plan"]
    result = operator.get("/history/get").json()["items"][-1]["result"]
    assert result["exit_status"] == "completed", result["msg"]
    _check_runs_in_tiled(raw, result["run_uids"])


def _check_runs_in_tiled(raw: Any, uids: list[str]) -> None:
    """Map runs, then the electrochemistry tail, all of one experiment, complete.

    The potentiostat keeps cycling while the RunEngine is paused (on the event-driven twin
    its protocol runs ahead meanwhile), so the protocol may end before the second map.
    """
    starts = [raw[uid].metadata["start"] for uid in uids]
    maps = len(uids) - 1
    assert maps in (1, 2)
    assert [start["map_index"] for start in starts] == [*range(maps), None]
    assert len({start["experiment_id"] for start in starts}) == 1
    assert starts[0]["operator_note"] == "queued from afar"
    assert starts[0]["queue_arguments"]["max_maps"] == 2
    for uid in uids:
        assert raw[uid].metadata["stop"]["exit_status"] == "success"
    for uid in uids[:maps]:
        lines = raw[uid]["lines"].read()
        assert len(lines["time"]) == 6  # one event per completed line, a paused one re-taken
        frames = raw[uid]["primary"]["eiger"]
        assert frames.shape[-2:] == (541, 517)  # the binned Eiger 4M, read through Tiled
    assert len(raw[uids[-1]]["electrochemistry"].read()["time"]) > 0
