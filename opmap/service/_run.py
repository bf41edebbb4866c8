"""Running the Tiled service: in the foreground, in a subprocess, or in-process for tests.

All three build the server from the same generated config file
(:func:`~opmap.service._config.write_server_config`), so what a test exercises is what
``opmap serve`` runs.

A served data directory is locked for the server's life
(:class:`~opmap.service._lock.ServerLock`), files the server creates are owner-only
(umask 077), and the access log has credentials redacted
(:mod:`opmap.service._log`). A server started by :func:`start_server_subprocess` dies
with the process that started it: the child asks Linux for SIGTERM when its parent dies
(``prctl(PR_SET_PDEATHSIG)``, when started from the main thread, since the signal follows
the *thread* that forked), and a watchdog thread in the child stops it within a second of
being re-parented, on any POSIX system.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from opmap import heap
from opmap._stop_on_exit import StopOnExit
from opmap.settings import OpmapSettings

from ._config import ensure_api_key, prepare_data_dir, server_config, write_server_config
from ._keys import ensure_service_keys
from ._lock import ServerLock

if TYPE_CHECKING:
    from fastapi import FastAPI
    from tiled.client.container import Container

__all__ = [
    "ServerHandle",
    "build_in_process_app",
    "free_port",
    "run_config_file",
    "serve",
    "start_server_subprocess",
]

logger = logging.getLogger(__name__)


def build_in_process_app(settings: OpmapSettings, *, access_control: bool = False) -> FastAPI:
    """Build the Tiled ASGI app of ``settings`` in this process.

    Use with ``tiled.client.Context.from_app(app)`` (tests, notebooks): no socket is opened.

    Parameters
    ----------
    settings : OpmapSettings
        What to serve.
    access_control : bool
        False (default): one user, the beamline writer key, with every scope (Tiled's
        single-user mode, so ``Context.from_app`` finds the key itself); nothing outside
        this process can reach the app. True: the served configuration exactly (roles,
        proposals); pass a key, ``Context.from_app(app, api_key=...)``.
    """
    from tiled.config import Config

    if access_control:
        return app_from_config_file(write_server_config(settings))
    prepare_data_dir(settings, hex_key=False)
    config = server_config(settings)
    for section in ("database", "access_control"):
        del config[section]
    single_user = {"single_user_api_key": ensure_api_key(settings)}
    config["authentication"] = single_user | {"allow_anonymous_access": False}
    return _build_app(Config.model_validate(config))


def app_from_config_file(config_file: Path) -> FastAPI:
    """The Tiled app a server config file describes (as ``tiled serve config`` builds it,
    with opmap's key cache), without a socket."""
    from tiled.config import parse_configs

    return _build_app(parse_configs(config_file))


def _build_app(config: Any, *, request_caches: bool = True, append_only: bool = True) -> FastAPI:
    from tiled.server.app import build_app_from_config

    from opmap.web import mount_live_page

    from ._dependants import memoise_dependants
    from ._keycache import install_key_cache
    from ._keyquery import ApiKeyQueryGuard
    from ._lookupcache import install_lookup_cache
    from ._request import RequestScope

    app = build_app_from_config(config)
    database = getattr(config, "database", None)
    if request_caches:  # docs/remote-access.md, "Latency of fetching one map"
        memoise_dependants()  # each route's dependencies analysed once
        install_key_cache(app, None if database is None else database.uri)  # per key
        install_lookup_cache(app.state.root_tree)  # per path, until catalog.db changes
    # the request being served: the access policy checks each data write of a non-admin
    # key (unless append_only is off); the lookup cache answers GET and HEAD only
    app.add_middleware(RequestScope, append_only=append_only)
    # outermost: an api_key no key could be is refused before Tiled copies it into a cookie
    app.add_middleware(ApiKeyQueryGuard)
    return mount_live_page(app)  # the live page beside the API


#: File mode bits masked off everything the server creates: owner-only files.
SERVER_UMASK = 0o077
_PR_SET_PDEATHSIG = 1
_WATCHDOG_PERIOD_S = 0.5
_WATCHDOG_GRACE_S = 15.0
#: How often the server returns its C heap's free pages to the system (s).
HEAP_TRIM_PERIOD_S = 30.0
#: glibc malloc arenas of a server subprocess (``MALLOC_ARENA_MAX``; glibc's default is
#: 8 per core). Uvicorn's, AnyIO's and DuckDB's threads each took an arena, whose partly
#: used pages neither ``free`` nor the heap trim return: capped at 2, the 24 h soak's
#: server grew less (`docs/operations.md`, "Soak"). An operator's own value is kept.
SERVER_MALLOC_ARENA_MAX = 2
#: glibc's mmap threshold of a server subprocess (bytes, ``MALLOC_MMAP_THRESHOLD_``). By
#: default glibc raises the threshold to the largest block freed (up to 32 MiB), after which
#: large request and response bodies and array buffers come from the heap and leave it
#: fragmented. Fixed at 128 KiB (glibc's initial value), they are mapped and unmapped: the
#: 24 h soak's server grew 3.4 % to its last map, against 4.9-5.5 % without (`docs/operations.md`,
#: "Soak"). An operator's own value is kept.
SERVER_MALLOC_MMAP_THRESHOLD_BYTES = 128 * 1024


def trim_heap_every(period_s: float) -> threading.Thread:
    """Return the C heap's free pages to the system every ``period_s`` s (a daemon thread).

    The server's threads (uvicorn's, the thread pool of synchronous routes, DuckDB's) each
    allocate from their own glibc malloc arena, which keeps the pages a request freed; over
    a long experiment that reads as RSS growth. ``malloc_trim`` hands them back
    (`opmap.heap.release_free_heap`; a no-op without glibc).
    """
    if not period_s > 0:
        raise ValueError(f"period_s must be > 0, got {period_s}")

    def trim() -> None:
        while True:
            time.sleep(period_s)
            heap.release_free_heap()

    thread = threading.Thread(target=trim, name="opmap-heap-trim", daemon=True)
    thread.start()
    return thread


def run_config_file(
    config_file: Path,
    lock_dir: Path | None = None,
    *,
    request_caches: bool = True,
    append_only: bool = True,
) -> None:
    """Serve a generated Tiled config file with uvicorn in the foreground (until interrupted).

    Parameters
    ----------
    config_file : Path
        From :func:`~opmap.service._config.write_server_config`.
    lock_dir : Path, optional
        The data directory to lock for the server's life (refused with
        :class:`~opmap.service._lock.DataDirInUseError` when another server holds it).
    request_caches : bool
        Answer API keys (:mod:`opmap.service._keycache`) and catalog paths
        (:mod:`opmap.service._lookupcache`) from caches and analyse route dependencies
        once (:mod:`opmap.service._dependants`), the default; False: Tiled's own
        per-request work (for benchmarks: the cost they save).
    append_only : bool
        Check that data writes of keys other than the admin's only append
        (:mod:`opmap.service._append`, default); False only for benchmarks of its cost.
    """
    import uvicorn
    from tiled.config import parse_configs

    from ._log import logging_config

    os.umask(SERVER_UMASK)  # catalog, DuckDB tables, written arrays: 0600
    lock = ServerLock.acquire(lock_dir) if lock_dir is not None else None
    trim_heap_every(HEAP_TRIM_PERIOD_S)
    try:
        config = parse_configs(config_file)
        app = _build_app(config, request_caches=request_caches, append_only=append_only)
        uvicorn.run(app, log_config=logging_config(), **config.uvicorn)
    finally:
        if lock is not None:
            lock.release()


def serve(settings: OpmapSettings) -> None:
    """Write the config and run the Tiled server in the foreground on ``settings.bind_url``."""
    config_file = write_server_config(settings)
    logger.info("Serving Tiled on %s with %s", settings.bind_url, config_file)
    run_config_file(config_file, lock_dir=settings.data_dir)


@dataclass
class ServerHandle(StopOnExit):
    """A Tiled server running in a subprocess; a context manager that stops it on exit.

    Attributes
    ----------
    settings : OpmapSettings
        The settings it runs with (``port`` is the one actually bound).
    api_key : str
        The beamline writer key (``DATA_DIR/api-key``): reads, creates and writes.
    process : subprocess.Popen
        The server process.
    log_file : Path
        Its standard output and error.
    admin_key : str
        The admin key (``DATA_DIR/admin-key``): also deletes and manages keys.
    """

    settings: OpmapSettings
    api_key: str = field(repr=False)
    process: subprocess.Popen[bytes]
    log_file: Path
    admin_key: str = field(default="", repr=False)

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321``."""
        return self.settings.url

    def client(self, **kwargs: Any) -> Container:
        """A Tiled client of this server, authenticated with its API key."""
        from tiled.client import from_uri

        return from_uri(self.url, api_key=self.api_key, **kwargs)

    def stop(self, timeout_s: float = 10.0) -> int:
        """Terminate the server (SIGTERM, then SIGKILL after ``timeout_s``); return its code."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                logger.warning("Tiled server %s ignored SIGTERM; killing it", self.url)
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def start_server_subprocess(
    settings: OpmapSettings,
    *,
    port: int | None = None,
    startup_timeout_s: float = 60.0,
    request_caches: bool = True,
    append_only: bool = True,
) -> ServerHandle:
    """Start the Tiled server of ``settings`` in a subprocess and wait until it answers.

    Parameters
    ----------
    settings : OpmapSettings
        What to serve; its ``port`` is replaced by ``port`` or a free one.
    port : int, optional
        Port to bind; default: a free port chosen by the OS.
    startup_timeout_s : float
        How long to wait for the first answer, in seconds (> 0).
    request_caches : bool
        False: serve without opmap's API-key and path caches and dependency memo (Tiled's
        own per-request work), for benchmarks that measure what they save.
    append_only : bool
        False: serve without the append-only check of data writes (benchmarks only).

    Returns
    -------
    ServerHandle
        Use as ``with start_server_subprocess(settings) as server: ...``.

    Raises
    ------
    ValueError
        For bad settings or a non-positive timeout, before anything is started.
    RuntimeError
        When the server exits or does not answer in time (its log is quoted).
    """
    if not startup_timeout_s > 0:
        raise ValueError(f"startup_timeout_s must be > 0 s; got {startup_timeout_s}")
    chosen = port if port is not None else free_port(settings.host)
    settings = OpmapSettings.model_validate(settings.model_dump() | {"port": chosen})
    config_file = write_server_config(settings)
    log_file = settings.data_dir / "tiled-server.log"
    command = [sys.executable, "-m", "opmap.service._run", str(config_file)]
    command += ["--lock-dir", str(settings.data_dir), "--parent-pid", str(os.getpid())]
    if threading.current_thread() is threading.main_thread():
        command.append("--parent-death-signal")
    if not request_caches:
        command.append("--no-request-caches")
    if not append_only:
        command.append("--no-append-only")
    fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "ab") as log:
        env = server_environment(os.environ)
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    admin_key = ensure_service_keys(settings, ensure_api_key(settings))
    handle = ServerHandle(settings, ensure_api_key(settings), process, log_file, admin_key)
    try:
        wait_until_answering(handle, startup_timeout_s)
    except BaseException:
        handle.stop()
        raise
    return handle


def server_environment(base: Mapping[str, str]) -> dict[str, str]:
    """The environment of a server subprocess: ``base`` with glibc's malloc tuned for a long run.

    Parameters
    ----------
    base : mapping of str to str
        The environment to start from (this process's).

    Returns
    -------
    dict of str to str
        ``base`` with ``MALLOC_ARENA_MAX`` = `SERVER_MALLOC_ARENA_MAX` and
        ``MALLOC_MMAP_THRESHOLD_`` = `SERVER_MALLOC_MMAP_THRESHOLD_BYTES`, each unless
        ``base`` sets it.
    """
    env = dict(base)
    env.setdefault("MALLOC_ARENA_MAX", str(SERVER_MALLOC_ARENA_MAX))
    env.setdefault("MALLOC_MMAP_THRESHOLD_", str(SERVER_MALLOC_MMAP_THRESHOLD_BYTES))
    return env


def wait_until_answering(handle: ServerHandle, timeout_s: float) -> None:
    """Block until the server of ``handle`` answers HTTP, or raise after ``timeout_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    # one client for every poll: httpx.get() builds a client and its TLS context per call,
    # ~37 ms of CPU each, which at 10 polls/s took a third of a core from the starting server
    with httpx.Client(timeout=1.0) as client:
        while time.monotonic() < deadline:
            if _answers(client, f"{handle.url}/api/v1/"):
                return
            try:  # waiting on the process doubles as the poll interval
                handle.process.wait(0.1)
            except subprocess.TimeoutExpired:
                continue
            error = ValueError if handle.process.returncode == 2 else RuntimeError  # bad input
            raise error(
                f"Tiled server exited with code {handle.process.returncode}:\n"
                + _tail(handle.log_file)
            )
    raise RuntimeError(
        f"Tiled server did not answer on {handle.url} within {timeout_s} s:\n"
        + _tail(handle.log_file)
    )


def _answers(client: httpx.Client, url: str) -> bool:
    try:
        return client.get(url).status_code == 200
    except httpx.TransportError:
        return False  # not listening yet


def _tail(path: Path, lines: int = 20) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _die_with_parent(parent_pid: int, *, death_signal: bool) -> None:
    """Stop this process (SIGTERM) when ``parent_pid`` is no longer its parent."""
    if death_signal and sys.platform == "linux":
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            logger.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
    if os.getppid() != parent_pid:  # the parent died before we got here
        sys.exit(f"opmap server: parent PID {parent_pid} is gone before start-up")

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(_WATCHDOG_PERIOD_S)
        logger.warning("Parent PID %d is gone; stopping the Tiled server", parent_pid)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(_WATCHDOG_GRACE_S)
        os._exit(1)  # graceful shutdown hung

    threading.Thread(target=watch, name="opmap-parent-watchdog", daemon=True).start()


def _main(argv: list[str] | None = None) -> int:
    """Entry point of the server subprocess; exit status 2 when the data dir is locked."""
    parser = argparse.ArgumentParser(prog="python -m opmap.service._run")
    parser.add_argument("config_file", type=Path)
    parser.add_argument("--lock-dir", type=Path, help="data directory to lock")
    parser.add_argument("--parent-pid", type=int, help="stop when this process is gone")
    parser.add_argument("--parent-death-signal", action="store_true", help="Linux prctl too")
    parser.add_argument(
        "--no-request-caches", action="store_true", help="Tiled's per-request lookups"
    )
    parser.add_argument("--no-append-only", action="store_true", help="benchmarks only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.parent_pid is not None:
        _die_with_parent(args.parent_pid, death_signal=args.parent_death_signal)
    try:
        run_config_file(
            args.config_file,
            lock_dir=args.lock_dir,
            request_caches=not args.no_request_caches,
            append_only=not args.no_append_only,
        )
    except ValueError as error:  # DataDirInUseError
        logger.error("%s", error)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(_main())
