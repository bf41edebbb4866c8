"""Running the queue server: Redis, RE Manager and the HTTP server as subprocesses.

`start_queue_subprocesses` starts the three from one `QueueSettings` (files written by
`write_queue_files`) and waits until the HTTP server answers; the returned `QueueHandle`
stops them, last started first. `create_api_key` logs an account in and mints an API key.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from opmap._stop_on_exit import StopOnExit

from ._config import PROVIDER, QueueSettings, queue_environment, write_queue_files

__all__ = ["QueueHandle", "create_api_key", "start_queue_subprocesses"]

logger = logging.getLogger(__name__)


@dataclass
class QueueHandle(StopOnExit):
    """Redis, RE Manager and the HTTP server in subprocesses; a context manager stopping them.

    Attributes
    ----------
    settings : QueueSettings
        What they run with.
    processes : dict of str to subprocess.Popen
        ``redis``, ``manager`` and ``http`` by name, in start order.
    log_dir : Path
        Each process' standard output and error, ``<name>.log``.
    """

    settings: QueueSettings
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    log_dir: Path = Path()

    @property
    def url(self) -> str:
        """Base URL of the HTTP server, e.g. ``http://127.0.0.1:60610``."""
        return self.settings.url

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM every process, last started first; SIGKILL one still alive after timeout."""
        for name, process in reversed(self.processes.items()):
            if process.poll() is not None:
                continue
            process.terminate()  # RE Manager's handler kills its worker on SIGTERM
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                logger.warning("queue %s ignored SIGTERM; killing it", name)
                process.kill()
                process.wait()


def start_queue_subprocesses(
    settings: QueueSettings, *, persist_redis: bool = True, startup_timeout_s: float = 60.0
) -> QueueHandle:
    """Start Redis, RE Manager and the HTTP server of ``settings``; wait for the HTTP server.

    Parameters
    ----------
    settings
        Ports, paths and the profile the worker builds.
    persist_redis
        Let Redis save the queue and history in ``run_dir`` (off for throw-away tests).
    startup_timeout_s
        How long to wait for each of Redis and the HTTP server (s, > 0).

    Returns
    -------
    QueueHandle
        Use as ``with start_queue_subprocesses(settings) as queue: ...``. The worker's
        environment is not open yet: ``POST /api/environment/open`` builds the beamline.

    Raises
    ------
    FileNotFoundError
        When ``redis-server`` or the profile is missing, before anything starts.
    RuntimeError
        When a process exits or does not answer in time (its log is quoted).
    """
    if not startup_timeout_s > 0:
        raise ValueError(f"startup_timeout_s must be > 0 s; got {startup_timeout_s}")
    if not settings.profile_config.is_file():
        raise FileNotFoundError(f"profile_config: no profile file at {settings.profile_config}")
    redis = shutil.which("redis-server")
    if redis is None:
        raise FileNotFoundError("redis-server is not installed (apt-get install redis-server)")
    paths = write_queue_files(settings)
    handle = QueueHandle(settings, log_dir=settings.run_dir.resolve())
    env = {**os.environ, **queue_environment(settings)}
    commands = {
        "redis": _redis_command(redis, settings, persist_redis),
        "manager": _manager_command(settings, paths),
        "http": [_script("start-bluesky-httpserver"), "--config_path", str(paths["httpserver"])],
    }
    try:
        for name, command in commands.items():
            handle.processes[name] = _spawn(name, command, env, handle.log_dir)
            if name == "redis":
                _wait_for_redis(handle, startup_timeout_s)
        _wait_for_http(handle, startup_timeout_s)
    except BaseException:
        handle.stop()
        raise
    return handle


def _redis_command(redis: str, settings: QueueSettings, persist: bool) -> list[str]:
    command = [redis, "--port", str(settings.redis_port), "--bind", "127.0.0.1"]
    command += ["--dir", str(settings.run_dir.resolve()), "--dbfilename", "queue.rdb"]
    return command if persist else [*command, "--save", "", "--appendonly", "no"]


def _manager_command(settings: QueueSettings, paths: dict[str, Path]) -> list[str]:
    return [
        _script("start-re-manager"),
        f"--startup-dir={settings.startup_folder}",
        f"--existing-plans-devices={paths['existing']}",
        "--update-existing-plans-devices=ENVIRONMENT_OPEN",
        f"--user-group-permissions={paths['permissions']}",
        "--user-group-permissions-reload=ON_STARTUP",
        f"--redis-addr=127.0.0.1:{settings.redis_port}",
        f"--redis-name-prefix={settings.redis_prefix}",
        f"--zmq-control-addr=tcp://127.0.0.1:{settings.zmq_control_port}",
        f"--zmq-info-addr=tcp://127.0.0.1:{settings.zmq_info_port}",
        "--zmq-publish-console=ON",
        "--use-ipython-kernel=OFF",
    ]


def _script(name: str) -> str:
    """A console script of this environment (beside the interpreter), else from PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} is not installed (pip install 'opmap[queue]')")
    return found


def _spawn(
    name: str, command: list[str], env: dict[str, str], log_dir: Path
) -> subprocess.Popen[bytes]:
    logger.info("starting queue %s: %s", name, " ".join(command))
    with (log_dir / f"{name}.log").open("ab") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)


def _wait_for_redis(handle: QueueHandle, timeout_s: float) -> None:
    import redis

    client = redis.Redis(host="127.0.0.1", port=handle.settings.redis_port)
    _wait(handle, "redis", timeout_s, lambda: bool(client.ping()), redis.ConnectionError)


def _wait_for_http(handle: QueueHandle, timeout_s: float) -> None:
    with httpx.Client(timeout=1.0) as client:  # one TLS context, not one per poll

        def answers() -> bool:
            # Anonymous access is off: 401 means the server is up and checking keys.
            return client.get(f"{handle.url}/api/status").status_code in (200, 401)

        _wait(handle, "http", timeout_s, answers, httpx.TransportError)


def _wait(
    handle: QueueHandle,
    name: str,
    timeout_s: float,
    ready: Any,
    not_yet: type[Exception],
) -> None:
    deadline = time.monotonic() + timeout_s
    process = handle.processes[name]
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log = _tail(handle, name)
            raise RuntimeError(f"queue {name} exited ({process.returncode}):\n{log}")
        try:
            if ready():
                return
        except not_yet:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"queue {name} did not answer within {timeout_s} s:\n{_tail(handle, name)}")


def _tail(handle: QueueHandle, name: str, lines: int = 30) -> str:
    path = handle.log_dir / f"{name}.log"
    text = path.read_text(errors="replace") if path.is_file() else ""
    return "\n".join(text.splitlines()[-lines:])


def create_api_key(
    url: str,
    account: str,
    password: str,
    *,
    scopes: list[str] | None = None,
    expires_in_s: int | None = None,
    note: str = "",
) -> str:
    """Log ``account`` in to the HTTP server at ``url`` and mint an API key.

    Parameters
    ----------
    url
        Base URL of the HTTP server.
    account, password
        Credentials of an account of the HTTP server (``operator`` or ``observer``).
    scopes
        The key's scopes, a subset of the account's (e.g. ``["read:status", "read:queue",
        "read:history"]`` for a read-only key); None: all of the account's.
    expires_in_s
        Lifetime of the key (s); None: until revoked.
    note
        A note stored with the key (who it is for).

    Raises
    ------
    httpx.HTTPStatusError
        For wrong credentials (401) or scopes the account does not have (400).
    """
    token_url = f"{url}/api/auth/provider/{PROVIDER}/token"
    login = httpx.post(token_url, data={"username": account, "password": password}, timeout=10)
    login.raise_for_status()
    request = {"scopes": scopes or ["inherit"], "expires_in": expires_in_s, "note": note}
    headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
    reply = httpx.post(f"{url}/api/auth/apikey", json=request, headers=headers, timeout=10)
    reply.raise_for_status()
    return str(reply.json()["secret"])
