"""One set of Channel Access ports per test process, for every test that starts a CA server.

libca (aioca's client) reads ``EPICS_CA_*`` once per process, when its context is made: two
test modules that chose different ports would leave the second one's client searching the
first one's port. Every module that serves PVs to this process uses `ca_environment`.
"""

from __future__ import annotations

import contextlib
import functools
import queue
import socket
import subprocess
import threading
import time


def free_tcp_udp_port() -> int:
    """A port free for both TCP and UDP on loopback (CA uses both)."""
    for _ in range(50):
        with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(port)
    raise RuntimeError("no port free for TCP and UDP")


@functools.cache
def ca_environment() -> dict[str, str]:
    """The loopback-only CA variables of this test process (same ports on every call)."""
    port, repeater = free_tcp_udp_port(), free_tcp_udp_port()
    return {
        "EPICS_CA_SERVER_PORT": str(port),
        "EPICS_CAS_SERVER_PORT": str(port),
        "EPICS_CA_REPEATER_PORT": str(repeater),
        "EPICS_CA_ADDR_LIST": "127.0.0.1",
        "EPICS_CA_AUTO_ADDR_LIST": "NO",
        "EPICS_CAS_INTF_ADDR_LIST": "127.0.0.1",
        "EPICS_CAS_BEACON_ADDR_LIST": "127.0.0.1",
        "EPICS_CAS_AUTO_BEACON_ADDR_LIST": "NO",
    }


def wait_for_banner(process: subprocess.Popen, banner: str, timeout_s: float) -> str:
    """Wait for a server's line starting with ``banner`` (printed once its sockets are bound).

    The first Channel Access search must not come earlier: here, an aioca channel searched
    from bluesky's event loop before its server existed returned None for every later get
    (not seen with a plain ``asyncio.run`` loop; not investigated further). The server's
    output keeps being drained afterwards, so its pipe never fills.

    Returns
    -------
    str
        The banner line.
    """
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(
        target=lambda: [lines.put(line) for line in process.stdout], daemon=True
    ).start()
    seen, deadline = [], time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(queue.Empty):
            seen.append(lines.get(timeout=0.2))
            if seen[-1].startswith(banner):
                return seen[-1]
        if process.poll() is not None:
            raise RuntimeError(f"{banner!r}: server exited ({process.returncode}): {seen[-20:]}")
    raise TimeoutError(f"{banner!r} not seen in {timeout_s} s: {seen[-20:]}")
