"""The stream source against tickit-devices' stream v2 (written by others, a subprocess).

tickit-devices 0.4.1 streams a captured EIGER2 16M message (``data/stream2/*.cbor``: a real
detector's start / image / end): every image is that one uint16 frame, whatever the
configuration. Its PUSH socket sends everything buffered since its last update as *one
multipart* ZeroMQ message (the Dectris stream v2 is single-part); each part is one whole
CBOR message, so the source reads it part by part.

Its PUSH socket also *connects to its own bound address* (tickit 0.4.3's
``create_zmq_push_socket``: ``aiozmq.create_zmq_stream(zmq.PUSH, connect=addr, bind=addr)``).
PUSH to PUSH is refused at the ZMTP handshake, but ZeroMQ has already queued a pipe for that
connection and round-robins a message into it now and then, which is never delivered
(a PUSH bound and connected to itself, with one PULL peer, loses its first message of 60
every time here). In CI one image of two never arrived. The test asks for three images and
accepts one lost: opmap's live analysis reads a lost image from the files.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import bitshuffle
import cbor2
import httpx
import numpy as np
import pytest

from opmap.callbacks.stream_frames import StreamFrameSource

from ._simplon_servers import API, free_port, initialize, tickit_eiger, tickit_python

pytestmark = pytest.mark.slow


def _captured_frame() -> np.ndarray:
    """The captured image decoded by the bitshuffle package (an independent decoder)."""
    python = tickit_python()
    where = (
        "import tickit_devices.eiger.data as d, pathlib; print(pathlib.Path(d.__file__).parent)"
    )
    out = subprocess.run([str(python), "-c", where], capture_output=True, text=True, check=True)
    body = cbor2.loads((Path(out.stdout.strip()) / "stream2" / "image.cbor").read_bytes())
    dims, typed = body["data"]["threshold_1"].value
    _, elem_size, chunk = typed.value.value
    block = int.from_bytes(chunk[8:12], "big") // elem_size
    pixels = np.frombuffer(chunk[12:], np.uint8)
    return bitshuffle.decompress_lz4(pixels, tuple(dims), np.dtype("<u2"), block)


#: Images in the series; one may be lost by tickit's socket (module docstring).
_IMAGES = 3


def _put(base: str, path: str, value) -> None:
    httpx.put(f"{base}/{path}", json={"value": value}, timeout=10).raise_for_status()


def test_tickit_stream_v2_images_decode_to_the_captured_frame(tmp_path):
    port = free_port()
    with (
        tickit_eiger(tmp_path, stream_cbor_port=port) as base,
        StreamFrameSource(f"tcp://127.0.0.1:{port}", series_wait_s=30.0) as source,
    ):
        initialize(base)
        _put(base, "stream/api/1.8.0/config/format", "cbor")
        _put(base, f"{API}/config/trigger_mode", "ints")
        _put(base, f"{API}/config/nimages", _IMAGES)
        _put(base, f"{API}/config/count_time", 0.01)
        arm = httpx.put(f"{base}/{API}/command/arm", timeout=10).json()
        httpx.put(f"{base}/{API}/command/trigger", timeout=30).raise_for_status()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            state = httpx.get(f"{base}/{API}/status/state", timeout=10).json()["value"]
            if state == "idle":
                break
            time.sleep(0.2)
        httpx.put(f"{base}/{API}/command/disarm", timeout=10).raise_for_status()
        ended = source.wait_for_series_end(timeout_s=30.0)
        assert ended, f"no end message; refused: {source.errors}"
        # the end may come before an image tickit swallowed (docstring): wait for all, or 30 s
        source.wait_for_images(ended[0], _IMAGES, timeout_s=30.0)
        frames = source.take(ended[0], range(_IMAGES))
    assert not source.errors
    # every image but at most the one tickit's self-connected PUSH socket may swallow
    assert len(frames) >= _IMAGES - 1 and set(frames) <= set(range(_IMAGES)), sorted(frames)
    # tickit answers arm with a fixed "sequence id", not the series its stream numbers
    assert (arm["sequence id"], ended) == (2, [1])
    captured = _captured_frame()
    for frame in frames.values():
        assert frame.value.shape == (4362, 4148) and frame.value.dtype == np.uint16
        np.testing.assert_array_equal(frame.value, captured)
