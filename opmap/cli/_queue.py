"""``opmap queue``: run the experiment from afar through the queue server.

``opmap queue serve`` starts Redis, RE Manager (its worker builds the profile's beamline) and
the HTTP server, and keeps them running until interrupted. ``opmap queue api-key`` mints an
API key for the ``operator`` (submit, pause, stop) or the ``observer`` (read only). See
``docs/remote-operation.md``.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["register"]

logger = logging.getLogger(__name__)

#: Scopes of a read-only key: what is queued, running and done, nothing else.
READ_ONLY_SCOPES = ["read:status", "read:queue", "read:history", "read:monitor"]


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``queue`` sub-command (``serve``, ``api-key``) to the ``opmap`` parser."""
    parser = subparsers.add_parser(
        "queue", help="remote operation: queue server + HTTP server", description=__doc__
    )
    actions = parser.add_subparsers(dest="queue_command", metavar="ACTION", required=True)
    serve = actions.add_parser("serve", help="start Redis, RE Manager and the HTTP server")
    _common(serve)
    serve.add_argument("--profile", type=Path, default=Path("profile/beamline.toml"))
    serve.add_argument("--host", default="127.0.0.1", help="HTTP interface (this machine)")
    serve.add_argument("--port", type=int, default=60610, help="HTTP port (60610)")
    serve.add_argument("--no-live-analysis", action="store_true")
    serve.add_argument("--config-only", action="store_true", help="write the files and exit")
    serve.set_defaults(func=_serve)
    key = actions.add_parser("api-key", help="mint an API key (printed once)")
    _common(key)
    key.add_argument("--account", choices=("operator", "observer"), default="observer")
    key.add_argument("--read-only", action="store_true", help="read scopes only")
    key.add_argument("--expires-in", type=int, default=None, help="lifetime (s)")
    key.add_argument("--note", default="", help="who the key is for")
    key.add_argument("--url", default="http://127.0.0.1:60610", help="HTTP server")
    key.set_defaults(func=_api_key)
    return parser


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--run-dir", type=Path, default=Path("opmap-queue"), help="generated files, logs"
    )


def _serve(args: argparse.Namespace) -> int:
    from opmap.queue import QueueSettings, start_queue_subprocesses, write_queue_files

    settings = QueueSettings(
        profile_config=args.profile,
        run_dir=args.run_dir,
        host=args.host,
        http_port=args.port,
        live_analysis=not args.no_live_analysis,
    )
    paths = write_queue_files(settings)
    for name, path in paths.items():
        print(f"{name:12s} {path}")
    if args.config_only:
        return 0
    # SIGTERM (kill, systemd) unwinds like Ctrl+C, so the three processes are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with start_queue_subprocesses(settings) as queue:
        print(f"queue server at {queue.url} (logs in {queue.log_dir}); Ctrl+C stops it")
        print(
            f"  operator key: opmap queue api-key --account operator --run-dir {args.run_dir} "
            f"--url {queue.url}"
        )
        try:
            while all(process.poll() is None for process in queue.processes.values()):
                time.sleep(1.0)
        except KeyboardInterrupt:
            print("stopping the queue server ...")
    return 0


def _api_key(args: argparse.Namespace) -> int:
    from opmap.queue import QueueSettings, create_api_key, ensure_password

    settings = QueueSettings(run_dir=args.run_dir)
    if not settings.password_file(args.account).is_file():
        logger.error("no %s password in %s (the server's --run-dir?)", args.account, args.run_dir)
        return 2
    password = ensure_password(settings, args.account)
    scopes = READ_ONLY_SCOPES if args.read_only or args.account == "observer" else None
    print(
        create_api_key(
            args.url,
            args.account,
            password,
            scopes=scopes,
            expires_in_s=args.expires_in,
            note=args.note,
        )
    )
    return 0
