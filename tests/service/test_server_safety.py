"""Real server processes: one writer per data dir, dies with its parent, owner-only files,
no key in the access log, no registration outside the readable storage."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx
import pandas
import pytest

from opmap.service import (
    LOCK_FILE_NAME,
    DataDirInUseError,
    ServerHandle,
    ServerLock,
    start_server_subprocess,
    wait_until_answering,
)
from opmap.settings import OpmapSettings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One real server, shared by the tests that only read its state."""
    data_dir = tmp_path_factory.mktemp("safety") / "data"
    with start_server_subprocess(OpmapSettings(data_dir=data_dir)) as handle:
        yield handle


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_second_server_on_the_data_dir_is_refused_naming_the_pid(server: ServerHandle) -> None:
    data_dir = server.settings.data_dir
    config_before = server.settings.config_file.read_bytes()  # type: ignore[union-attr]
    lock_text = (data_dir / LOCK_FILE_NAME).read_text().strip()
    assert lock_text == str(server.process.pid), "the server process itself holds the lock"
    with pytest.raises(DataDirInUseError, match=rf"PID {server.process.pid} holds") as info:
        start_server_subprocess(OpmapSettings(data_dir=data_dir), startup_timeout_s=5)
    assert info.value.pid == server.process.pid
    assert server.settings.config_file.read_bytes() == config_before  # nothing rewritten
    command = [sys.executable, "-m", "opmap.cli", "serve", "--data-dir", str(data_dir)]
    second = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert second.returncode == 2
    assert f"PID {server.process.pid} holds" in second.stderr
    assert "Serving on" not in second.stdout


def test_files_and_directories_are_owner_only(server: ServerHandle) -> None:
    server.client().write_array([1, 2, 3], key="modes")  # makes the file storage write
    data_dir = server.settings.data_dir
    assert _mode(data_dir) == 0o700
    for name in ("catalog.db", "api-key", "tiled-config.yml", LOCK_FILE_NAME):
        assert _mode(data_dir / name) == 0o600, name
    assert _mode(server.log_file) == 0o600
    created = {p: _mode(p) for p in data_dir.rglob("*") if not p.is_symlink()}
    assert any(p.suffix == ".zarr" or "tiled-files" in p.parts for p in created)
    assert {p: m for p, m in created.items() if m & 0o077} == {}, "all owner-only"


def test_api_key_in_the_query_never_reaches_the_access_log(server: ServerHandle) -> None:
    answer = httpx.get(f"{server.url}/api/v1/metadata/?api_key={server.api_key}&x=1")
    assert answer.status_code == 200, "the query-string key is still accepted"
    time.sleep(0.5)  # the access line is flushed after the response
    log = server.log_file.read_text()
    assert "/api/v1/metadata/?api_key=[redacted]&x=1" in log
    assert server.api_key not in log


def _register_csv(server: ServerHandle, key: str, path: str) -> httpx.Response:
    """POST a CSV registration through Tiled's /register route; return the raw answer."""
    from tiled.structures.core import StructureFamily
    from tiled.structures.data_source import Asset, DataSource, Management
    from tiled.structures.table import TableStructure

    structure = TableStructure.from_pandas(pandas.DataFrame({"line": ["x"]}))
    source = DataSource(
        structure_family=StructureFamily.table,
        structure=structure,
        mimetype="text/csv",
        management=Management.external,
        assets=[
            Asset(data_uri=f"file://localhost{path}", is_directory=False, parameter="data_uris")
        ],
    )
    try:
        server.client().new(StructureFamily.table, [source], key=key)
    except httpx.HTTPStatusError as error:
        return error.response
    return httpx.Response(200)


def test_registration_outside_the_readable_storage_is_refused(
    server: ServerHandle, tmp_path: Path
) -> None:
    detector = server.settings.detector_dir
    secret = tmp_path / "secret.csv"
    secret.write_text("line\nSECRET\n")
    inside = detector / "ok.csv"
    inside.write_text("line\nfine\n")
    (detector / "escape").symlink_to(tmp_path)
    depth = "/..".join("" for _ in detector.parts)  # enough '..' to reach '/'
    attacks = {
        "dotdot": f"{detector}{depth}{secret}",
        "symlink": f"{detector}/escape/secret.csv",
    }
    for key, path in attacks.items():
        answer = _register_csv(server, key, path)
        assert answer.status_code == 403, (key, answer.text)
        assert "outside the readable storage" in answer.text
    headers = {"Authorization": f"Apikey {server.api_key}", "Accept": "text/csv"}
    for key in attacks:
        read = httpx.get(f"{server.url}/api/v1/table/full/{key}", headers=headers)
        assert read.status_code == 404, "nothing was registered"
        assert "SECRET" not in read.text
    assert _register_csv(server, "inside", str(inside)).status_code == 200
    read = httpx.get(f"{server.url}/api/v1/table/full/inside", headers=headers)
    assert read.status_code == 200 and "fine" in read.text


def test_stale_lock_of_a_killed_server_is_cleared(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK.format(data_dir=str(tmp_path))], stdout=subprocess.PIPE
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == b"locked"
    with pytest.raises(DataDirInUseError, match=f"PID {holder.pid} holds"):
        ServerLock.acquire(tmp_path)
    holder.kill()
    holder.wait()
    assert (tmp_path / LOCK_FILE_NAME).read_text().strip() == str(holder.pid), "left behind"
    with ServerLock.acquire(tmp_path) as lock:
        assert (tmp_path / LOCK_FILE_NAME).read_text().strip() == str(os.getpid())
        assert lock.pid == os.getpid()


_HOLD_LOCK = (
    "from opmap.service import ServerLock; import time; "
    "lock = ServerLock.acquire({data_dir!r}); print('locked', flush=True); time.sleep(60)"
)

_PARENT = textwrap.dedent(
    """
    import sys, time
    from opmap.service import start_server_subprocess
    from opmap.settings import OpmapSettings
    server = start_server_subprocess(OpmapSettings(data_dir=sys.argv[1]))
    print(server.process.pid, server.url, flush=True)
    time.sleep(120)
    """
)


def _gone(pid: int, timeout_s: float) -> bool:
    """True once every thread of ``pid`` has exited (an unreaped zombie counts as exited).

    The thread-group leader turns zombie before its other threads finish exiting, and
    those still hold the open files (the lock): all threads must be zombies.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            states = [
                (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
                for task in Path(f"/proc/{pid}/task").iterdir()
            ]
        except FileNotFoundError:
            return True
        if all(state in ("Z", "X") for state in states):
            return True
        time.sleep(0.1)
    return False


def test_server_dies_with_a_killed_parent_and_a_rerun_serves(tmp_path: Path) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        pid_text, url = parent.stdout.readline().split()
        child = int(pid_text)
        assert httpx.get(f"{url}/api/v1/").status_code == 200
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        assert _gone(child, 15.0), f"server PID {child} outlived its killed parent"
    finally:
        parent.kill()
    with start_server_subprocess(OpmapSettings(data_dir=tmp_path)) as again:
        again.client().write_array([1.0, 2.0], key="after")  # DuckDB/SQLite lock is free
        assert again.client()["after"].read().tolist() == [1.0, 2.0]
    log = again.log_file.read_text()
    assert log.count("Application shutdown complete") == 2, "SIGTERM: graceful shutdown"
    # uvicorn re-raises SIGTERM after its graceful shutdown, so the PID stays in the file
    assert f"Cleared a stale server lock {tmp_path / LOCK_FILE_NAME} of PID {child}" in log


def test_remote_bind_prints_the_real_address_and_warns(tmp_path: Path) -> None:
    from opmap.service import free_port

    port = free_port("0.0.0.0")
    command = [sys.executable, "-m", "opmap.cli", "serve", "--data-dir", str(tmp_path)]
    refused = subprocess.run([*command, "--host", "0.0.0.0"], capture_output=True, text=True)
    assert refused.returncode == 2
    assert "host '0.0.0.0' is reachable" in refused.stderr and "--allow-remote" in refused.stderr
    assert not any(tmp_path.iterdir()), "nothing written"
    remote = [*command, "--host", "0.0.0.0", "--allow-remote", "--port", str(port)]
    served = subprocess.Popen(remote, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert served.stdout is not None and served.stderr is not None
        lines = [served.stdout.readline() for _ in range(3)]
        assert f"Serving on    http://0.0.0.0:{port}" in lines[2]
        assert "WARNING: 0.0.0.0 is reachable from other machines over plain HTTP" in (
            served.stderr.readline()
        )
        handle = ServerHandle(
            OpmapSettings(data_dir=tmp_path, port=port), "", served, tmp_path / "x"
        )
        wait_until_answering(handle, 60.0)
    finally:
        served.terminate()
        served.wait(20)
