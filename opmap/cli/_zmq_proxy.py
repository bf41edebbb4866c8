"""``opmap zmq-proxy``: bluesky's 0MQ proxy, bound to this machine only unless told otherwise.

The acquisition publishes its documents to ``HOST:IN_PORT``; analysis workers subscribe to
``HOST:OUT_PORT``. 0MQ has no authentication here, and a worker builds file names from what
it receives, so the proxy binds to 127.0.0.1 by default. Another address needs
``--allow-remote`` and prints a warning; across hosts prefer an SSH tunnel to the loopback
proxy, or CurveZMQ (``bluesky-0MQ-proxy`` with its curve options); see
``docs/operations.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Any

__all__ = ["register", "run"]


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``zmq-proxy`` sub-command to the ``opmap`` parser."""
    parser = subparsers.add_parser(
        "zmq-proxy",
        help="run bluesky's 0MQ document proxy on 127.0.0.1 (for opmap analysis-worker)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--in-port", type=int, default=5577, help="publishers connect here")
    parser.add_argument("--out-port", type=int, default=5578, help="workers subscribe here")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (127.0.0.1)")
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a --host reachable from other machines (no authentication, no encryption)",
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the proxy until interrupted; bad options exit with status 2 before binding."""
    from bluesky.callbacks.zmq import Proxy

    from opmap.settings import is_loopback

    for name in ("in_port", "out_port"):
        port = getattr(args, name)
        if not 1 <= port <= 65535:
            print(f"opmap zmq-proxy: --{name.replace('_', '-')} {port} must be 1-65535")
            return 2
    if args.in_port == args.out_port:
        print(f"opmap zmq-proxy: --in-port and --out-port must differ (both {args.in_port})")
        return 2
    if not is_loopback(args.host):
        if not args.allow_remote:
            print(
                f"opmap zmq-proxy: --host {args.host!r} is reachable from other machines; "
                "the 0MQ documents carry no authentication: pass --allow-remote to accept "
                "that, or keep 127.0.0.1 and use an SSH tunnel (docs/operations.md)"
            )
            return 2
        print(
            f"WARNING: the 0MQ proxy on {args.host} accepts and serves documents without "
            "authentication or encryption",
            file=sys.stderr,
        )
    proxy = Proxy((args.host, args.in_port), (args.host, args.out_port))
    print(f"0MQ proxy: publish to tcp://{args.host}:{args.in_port}, ", end="")
    print(f"subscribe to tcp://{args.host}:{args.out_port}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        proxy.start()
    return 0
