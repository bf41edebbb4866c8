"""A real ``opmap`` Tiled server in a subprocess: plain HTTP needs the API key."""

import os
from pathlib import Path

import httpx
import numpy as np
import pytest

from opmap.service import (
    SERVER_MALLOC_ARENA_MAX,
    SERVER_MALLOC_MMAP_THRESHOLD_BYTES,
    server_environment,
    start_server_subprocess,
)
from opmap.settings import OpmapSettings


@pytest.mark.slow
def test_array_over_http_needs_the_api_key_and_server_stops(tmp_path: Path) -> None:
    frame = np.arange(12, dtype=np.int32).reshape(3, 4)
    with start_server_subprocess(OpmapSettings(data_dir=tmp_path)) as server:
        assert server.url.startswith("http://127.0.0.1:")
        server.client().write_array(frame, key="frame")
        url = f"{server.url}/api/v1/array/full/frame"
        accept = {"Accept": "application/json"}
        granted = httpx.get(url, headers=accept | {"Authorization": f"Apikey {server.api_key}"})
        refused = httpx.get(url, headers=accept)
        wrong = httpx.get(url, headers=accept | {"Authorization": "Apikey 0123456789abcdef0"})
    assert granted.status_code == 200
    np.testing.assert_array_equal(np.asarray(granted.json()), frame)
    assert refused.status_code == 401
    assert wrong.status_code == 401
    assert server.process.poll() is not None, "leaving the context stops the server"
    with pytest.raises(httpx.TransportError):
        httpx.get(url, headers=accept, timeout=1.0)


def test_bad_port_is_refused_before_a_process_starts(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="port"):
        start_server_subprocess(OpmapSettings(data_dir=tmp_path), port=70000)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads /proc (Linux)")
def test_the_server_subprocess_runs_with_capped_malloc_arenas(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    with start_server_subprocess(OpmapSettings(data_dir=tmp_path)) as server:
        environ = Path(f"/proc/{server.process.pid}/environ").read_bytes().split(b"\0")
    assert f"MALLOC_ARENA_MAX={SERVER_MALLOC_ARENA_MAX}".encode() in environ
    threshold = f"MALLOC_MMAP_THRESHOLD_={SERVER_MALLOC_MMAP_THRESHOLD_BYTES}".encode()
    assert threshold in environ
    for name in ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_"):
        assert name not in os.environ, "only the server's environment has it"


def test_an_operators_own_malloc_settings_are_kept() -> None:
    own = {"MALLOC_ARENA_MAX": "4", "MALLOC_MMAP_THRESHOLD_": "65536", "A": "b"}
    assert server_environment(own) == own
    defaults = server_environment({})
    assert defaults["MALLOC_ARENA_MAX"] == str(SERVER_MALLOC_ARENA_MAX)
    assert defaults["MALLOC_MMAP_THRESHOLD_"] == str(SERVER_MALLOC_MMAP_THRESHOLD_BYTES)
