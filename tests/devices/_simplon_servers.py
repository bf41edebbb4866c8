"""Real SIMPLON servers in subprocesses for the SIMPLON tests: tickit-devices and sim-dcu.

tickit-devices cannot run in the project's venv: its apischema 0.19 imports graphql-core
when it is installed and breaks on graphql-core 3.3 (which tiled's strawberry-graphql
needs), and its CBOR stream breaks on cbor2 6. It gets its own venv,
``build/tickit-venv``, with `TICKIT_REQUIREMENTS`; ``make test`` creates it before pytest,
and `tickit_python` creates it when a test runs first (``python
tests/devices/_simplon_servers.py`` does the same by hand).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
TICKIT_VENV = ROOT / "build" / "tickit-venv"
TICKIT_REQUIREMENTS = ("tickit-devices==0.4.1", "tickit==0.4.3", "cbor2<6")
API = "detector/api/1.8.0"


def tickit_python() -> Path:
    """The tickit venv's Python, created (a minute, from PyPI) if missing or incomplete."""
    python = TICKIT_VENV / "bin" / "python"
    check = [str(python), "-c", "import tickit_devices.eiger"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--clear", str(TICKIT_VENV)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, *TICKIT_REQUIREMENTS], check=True)
    subprocess.run(check, check=True)
    return python


def free_port() -> int:
    """A TCP port free on localhost now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_serving(url: str, process: subprocess.Popen, timeout_s: float) -> None:
    """Poll ``url`` until it answers; fail with the server's output if it dies or hangs."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=1.0) as client:  # one TLS context for every poll
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"server exited ({process.returncode}): {_output(process)}")
            with contextlib.suppress(httpx.HTTPError):
                client.get(url)
                return
            time.sleep(0.2)
    process.kill()
    raise TimeoutError(f"{url} did not answer in {timeout_s} s: {_output(process)}")


def _output(process: subprocess.Popen) -> str:
    with contextlib.suppress(Exception):
        out, _ = process.communicate(timeout=5)
        return (out or b"").decode(errors="replace")[-3000:]
    return ""


@contextlib.contextmanager
def serving(command: list[str], url: str, timeout_s: float) -> Iterator[subprocess.Popen]:
    """Run ``command`` until the block ends (terminated, then killed if it lingers)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    try:
        wait_until_serving(url, process, timeout_s)
        yield process
    finally:
        stop_process(process)


def stop_process(process: subprocess.Popen) -> None:
    """Terminate a server process, kill it if it lingers, and close its output pipe."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if process.stdout is not None:
        process.stdout.close()


@contextlib.contextmanager
def tickit_eiger(tmp_path: Path, stream_cbor_port: int | None = None) -> Iterator[str]:
    """tickit-devices' Eiger simulator on a free port; yields its base URL.

    Its stream v2 (CBOR) PUSH socket binds ``stream_cbor_port`` (default: a free port).
    """
    port = free_port()
    config = tmp_path / "tickit-eiger.yaml"
    config.write_text(
        "- type: tickit_devices.eiger.Eiger\n  name: eiger\n  inputs: {}\n"
        f"  port: {port}\n  stream_legacy_port: {free_port()}\n"
        f"  stream_cbor_port: {stream_cbor_port or free_port()}\n"
    )
    command = [str(tickit_python()), "-m", "tickit", "--log-level", "WARNING", "all"]
    base = f"http://127.0.0.1:{port}"
    with serving([*command, str(config)], f"{base}/{API}/status/state", 60.0):
        yield base


@contextlib.contextmanager
def sim_dcu(data_dir: Path, *extra: str) -> Iterator[str]:
    """``opmap sim-dcu`` on a free port, files in ``data_dir``; yields its base URL."""
    port = free_port()
    opmap = Path(sys.executable).with_name("opmap")
    command = [str(opmap), "sim-dcu", "--port", str(port), "--data-dir", str(data_dir)]
    base = f"http://127.0.0.1:{port}"
    with serving([*command, *extra], f"{base}/{API}/status/state", 120.0):
        yield base


def initialize(base_url: str) -> None:
    """``PUT command/initialize`` (a fresh detector is in state ``na``)."""
    httpx.put(f"{base_url}/{API}/command/initialize", timeout=10.0).raise_for_status()


if __name__ == "__main__":
    print(tickit_python())  # noqa: T201
