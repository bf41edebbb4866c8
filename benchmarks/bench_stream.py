"""Live frames over the Dectris stream v2: lag from frame to reduced profile, sustained rate.

A publisher process pushes full Eiger 4M frames (2167 × 2070 uint32, rings + Poisson noise)
as stream v2 image messages (bitshuffle-LZ4 chunks, HDF5 framing, as a DCU sends them) over
ZeroMQ on localhost; opmap's `StreamFrameSource` pulls, decompresses and reduces them with
the targeted reduction on its decoding threads. In one run it prints:

1. decompression alone on all cores (chunks already in memory): the limit;
2. the stream sustained: the publisher sends as fast as the consumer takes (ZeroMQ
   back-pressure), frames/s received → reduced, and its ratio to (1);
3. the lag at the paper's cadence (20 frames/s): from the publisher's ``send`` (its
   monotonic clock, stamped in ``user_data``) to the reduced profile, p50 and p99.

Targets: (2) ≥ 0.85 × (1), the issue's end-to-end target, since the stream removes the
file read but not the decompression; (3) p99 below one frame period (50 ms): the analysis
keeps up at the cadence, no frame waits for the next.

Run: ``.venv/bin/python benchmarks/bench_stream.py [n_frames]`` (default 200). The
publisher's own CPU (CBOR encoding, the socket) shares the machine's cores with the
consumer, as a DCU on its own hardware would not.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import bitshuffle
import numpy as np
import zmq

from opmap.analysis.families import FamilyConfig
from opmap.analysis.geometry import DetectorGeometry, eiger4m_detector
from opmap.analysis.reduction import ReductionPlan, compile_reduction
from opmap.callbacks.stream_frames import StreamFrameSource
from opmap.devices.stream2 import CompressedFrame, encode_end, encode_image, encode_start

sys.path.insert(0, str(Path(__file__).resolve().parent))  # runs from any folder
from bench_decompression import decode_all_fps
from bench_reduction import FAMILIES, synthetic_frames

SHAPE = (2167, 2070)
TARGET_RATIO = 0.85
CADENCE_FPS = 20.0
BLOCK_BYTES = 8192


def bslz4_chunk(frame: np.ndarray) -> bytes:
    """The HDF5 bitshuffle-LZ4 chunk of one frame (what a DCU streams and stores)."""
    header = frame.nbytes.to_bytes(8, "big") + BLOCK_BYTES.to_bytes(4, "big")
    return header + bitshuffle.compress_lz4(frame, BLOCK_BYTES // frame.itemsize).tobytes()


def publish(endpoint: str, chunks: list[bytes], series_id: int, n: int, fps: float) -> None:
    """Publisher process: one series of ``n`` images, at ``fps`` (0: as fast as taken)."""
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.setsockopt(zmq.SNDHWM, 4)
    push.bind(endpoint)
    time.sleep(0.5)  # the consumer connects
    start = encode_start(
        series_id, "bench", number_of_images=n, image_size_x=SHAPE[1], image_size_y=SHAPE[0]
    )
    push.send(start)
    t0 = time.monotonic()
    for k in range(n):
        if fps:
            time.sleep(max(0.0, t0 + k / fps - time.monotonic()))
        frame = CompressedFrame("bslz4", 4, chunks[k % len(chunks)], SHAPE, np.dtype("<u4"))
        sent = {"sent_s": time.monotonic()}
        message = encode_image(series_id, "bench", k, {"threshold_1": frame}, user_data=sent)
        push.send(message, copy=False)
    push.setsockopt(zmq.SNDTIMEO, 2000)  # the consumer may have all it wanted and left
    with contextlib.suppress(zmq.Again):
        push.send(encode_end(series_id, "bench"))
    push.close(linger=1000)


@dataclass(frozen=True)
class Measured:
    """One measurement: wall-clock frames/s, this process's CPU ms per frame, lags (s)."""

    fps: float
    cpu_ms: float
    lag_s: np.ndarray | None = None


def run_series(
    chunks: list[bytes], reduce, n: int, fps: float, series_id: int, cores: int
) -> Measured:
    """Stream one series through a fresh source (the publisher in its own process)."""
    endpoint = f"tcp://127.0.0.1:{_free_port()}"
    publisher = multiprocessing.get_context("spawn").Process(
        target=publish, args=(endpoint, chunks, series_id, n, fps)
    )
    publisher.start()
    with StreamFrameSource(endpoint, decode_threads=cores, series_wait_s=600.0) as source:
        source.reduce_with(reduce)
        while not source.series_seen(series_id):  # the publisher process starts
            time.sleep(0.01)
        cpu0 = time.process_time()
        frames = source.take(series_id, range(n))
        cpu_s = time.process_time() - cpu0
    publisher.join()
    assert len(frames) == n and not source.errors, source.errors
    received = min(f.received_s for f in frames.values())
    done = max(f.done_s for f in frames.values())
    lag = np.array([f.done_s - f.user_data["sent_s"] for f in frames.values()])
    return Measured(n / (done - received), 1e3 * cpu_s / n, lag)


def decode_alone(chunks: list[bytes], cores: int) -> Measured:
    """Decompression alone on ``cores`` threads: frames/s and CPU ms per frame."""
    cpu0 = time.process_time()
    fps = decode_all_fps(chunks, cores)
    return Measured(fps, 1e3 * (time.process_time() - cpu0) / len(chunks))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main(n_frames: int = 200) -> None:
    logging.disable(logging.WARNING)
    cores = os.cpu_count() or 1
    geometry = DetectorGeometry(
        eiger4m_detector(), distance_m=0.1, poni1_m=0.081, poni2_m=0.0776, rot1_rad=0.01
    )
    reduction = compile_reduction(
        ReductionPlan(families=FamilyConfig.model_validate(FAMILIES)), geometry
    )
    chunks = [bslz4_chunk(f) for f in synthetic_frames(geometry, 16)]
    size_mb = np.mean([len(c) for c in chunks]) / 1e6

    def reduce(frames: np.ndarray) -> np.ndarray:
        return reduction.reduce_packed(frames, threads=1)

    reduce(np.zeros((1, *SHAPE), np.uint32))  # warm
    print(f"{n_frames} frames {SHAPE} uint32, {size_mb:.1f} MB each bitshuffle-LZ4, {cores} cores")
    cycled = chunks * max(1, n_frames // len(chunks))
    alone, streams = [], []
    for repeat in range(2):  # interleaved: a shared machine's load drifts
        alone.append(decode_alone(cycled, cores))
        streams.append(run_series(chunks, reduce, n_frames, 0.0, 1 + repeat, cores))
    alone.append(decode_alone(cycled, cores))
    n_paced = int(min(n_frames, 10 * CADENCE_FPS))
    paced = run_series(chunks, reduce, n_paced, CADENCE_FPS, 9, cores)
    _report(cores, alone, streams, paced)


def _report(cores: int, alone: list[Measured], streams: list[Measured], paced: Measured) -> None:
    limit = float(np.median([m.fps for m in alone]))
    limit_cpu = float(np.median([m.cpu_ms for m in alone]))
    fps = float(np.median([m.fps for m in streams]))
    cpu = float(np.median([m.cpu_ms for m in streams]))
    print(f"load average {os.getloadavg()[0]:.1f} on {cores} cores (medians of interleaved runs)")
    print(
        f"(1) decompression alone, {cores} threads : {limit:6.0f} frames/s, "
        f"{limit_cpu:5.1f} ms CPU per frame  (the limit)"
    )
    print(
        f"(2) stream → reduced, sustained        : {fps:6.0f} frames/s = {fps / limit:.2f} × (1); "
        f"{cpu:5.1f} ms CPU per frame: (1)/(2) = {limit_cpu / cpu:.2f}  "
        f"[target ≥ {TARGET_RATIO}; the CPU ratio is the one a loaded machine does not move]"
    )
    assert paced.lag_s is not None
    p50, p90, p99 = (1e3 * np.percentile(paced.lag_s, q) for q in (50, 90, 99))
    period_ms = 1e3 / CADENCE_FPS
    n_paced = len(paced.lag_s)
    print(
        f"(3) lag send → reduced profile at {CADENCE_FPS:.0f} frames/s ({n_paced} frames): "
        f"p50 {p50:.1f} ms, p90 {p90:.1f} ms, p99 {p99:.1f} ms, max "
        f"{1e3 * paced.lag_s.max():.1f} ms; p99 = {p99 / period_ms:.2f} × the {period_ms:.0f} ms "
        f"frame period [target < 1]"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
