"""``opmap recover DATA_DIR``: store the runs left in the spool, and say what is stored.

The writer spools every raw document to ``DATA_DIR/backup/<run uid>.jsonl`` before it
sends it to Tiled, and re-sends a run Tiled did not take by itself once the server is
back. What is still in the spool (the acquisition process died, or the server stayed down
until it ended) is re-sent here, oldest run first, idempotently by run uid: a run already
stored whole is left alone, a run stored in part is completed (what Tiled holds is reused,
only the rest is written; nothing is deleted or doubled). Each run stored whole with its
``stop`` is then validated and sealed, as the live writer seals the runs it stores (only
an admin key may change it afterwards); a run Tiled already holds whole and sealed is
skipped and reported as such.

If no server runs on the data directory, the embedded one is started for the time of the
recovery (it takes the data-directory lock); if one runs, it is used through its URL.

Prints one line per run (documents in the spool, stored now, stored before, sealed) and
exits with status 0 when every spooled document is stored, 1 when some run could not be
stored (it stays in the spool), 2 for bad input.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["register", "run"]


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``recover`` sub-command to the ``opmap`` parser."""
    parser = subparsers.add_parser(
        "recover",
        help="re-send the runs left in a data directory's spool into Tiled",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("data_dir", type=Path, metavar="DATA_DIR", help="the opmap data dir")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Recover the spool of ``args.data_dir``; see the module docstring for exit statuses."""
    from opmap.callbacks.spool import RunSpool, recover_spool
    from opmap.callbacks.tiled_writer import ensure_layout
    from opmap.settings import OpmapSettings

    data_dir: Path = args.data_dir
    if not data_dir.is_dir():
        print(f"opmap recover: DATA_DIR {data_dir} is not a directory", file=sys.stderr)
        return 2
    settings = OpmapSettings(data_dir=data_dir)
    if not settings.api_key_file.is_file():
        print(
            f"opmap recover: {data_dir} is not an opmap data directory "
            f"(no {settings.api_key_file.name})",
            file=sys.stderr,
        )
        return 2
    spool = RunSpool(settings.backup_dir)
    if not spool.pending():
        print(f"nothing to recover: the spool {settings.backup_dir} is empty")
        return 0
    with _server_client(settings) as client:
        results = recover_spool(ensure_layout(client)["raw"], spool)
    for result in results:
        print(result.line())
    failed = [r for r in results if not r.stored]
    sealed = sum(r.sealed for r in results)
    skipped = sum(r.already_sealed for r in results)
    unsealed = [r for r in results if r.seal_error]
    if unsealed:  # stored: the exit status stays 0, but the writer key can change them
        print(f"opmap recover: {len(unsealed)} stored run(s) could not be sealed; see above")
    print(
        f"{len(results) - len(failed)} of {len(results)} spooled run(s) stored "
        f"({sealed} sealed now, {skipped} already stored and sealed); "
        + (f"{len(failed)} left in {settings.backup_dir}" if failed else "the spool is empty")
    )
    return 1 if failed else 0


@contextlib.contextmanager
def _server_client(settings: Any) -> Iterator[Any]:
    """A writer client of the data dir's server, started here if none runs."""
    from tiled.client import from_uri

    from opmap.service import DataDirInUseError, ServerLock, start_server_subprocess

    try:
        ServerLock.acquire(settings.data_dir).release()  # a probe: is a server running?
    except DataDirInUseError as error:
        url = _running_url(settings)
        print(f"using the running server of PID {error.pid} at {url}")
        yield from_uri(url, api_key=settings.api_key_file.read_text().strip())
        return
    print(f"starting the Tiled server on {settings.data_dir} for the recovery ...")
    with start_server_subprocess(settings, startup_timeout_s=300.0) as server:
        yield server.client()


def _running_url(settings: Any) -> str:
    """The URL of the server that holds the data dir, from its generated config."""
    import yaml

    config = yaml.safe_load(settings.config_file.read_text())
    uvicorn = config.get("uvicorn", {})
    host = uvicorn.get("host", "127.0.0.1")
    host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    return f"http://{host}:{uvicorn.get('port', settings.port)}"
