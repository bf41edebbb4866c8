"""Decompression limit vs opmap end to end vs pyFAI, on the same Dectris bitshuffle-LZ4 files.

Writes full Eiger 4M frames (2167 × 2070 uint32, rings + Poisson noise, gap markers) in the
Dectris layout (master + data files of 100 frames, bitshuffle-LZ4 by hdf5plugin, one frame
per chunk) into a temporary directory, then in one run prints:

1. the decoders on one thread (bitshuffle, dectris-compression if installed, h5py) and
   whether they release the GIL;
2. decompression alone on all cores (chunks already in memory) = the limit;
3. opmap end to end: read + decompress + targeted reduction, ``FrameReducer.reduce_source``
   (the path ``opmap analyze`` takes locally), and the ratio to (2);
4. pyFAI's own route: h5py read + ``integrate2d_ng`` per frame (on fewer frames: slow).

Run: ``.venv/bin/python benchmarks/bench_decompression.py [n_frames]`` (default 300).
Ratios measured in the same run are the figures to trust on a shared machine.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np

from opmap.analysis.families import FamilyConfig
from opmap.analysis.frames import decode_bslz4_chunk, open_frames
from opmap.analysis.geometry import DetectorGeometry, eiger4m_detector
from opmap.analysis.pipeline import FrameReducer
from opmap.analysis.reduction import ReductionPlan, compile_reduction

sys.path.insert(0, str(Path(__file__).resolve().parent))  # runs from any folder
from bench_end_to_end import FRAMES_PER_DATA_FILE, write_dectris
from bench_reduction import FAMILIES, synthetic_frames

SHAPE = (2167, 2070)
TARGET_RATIO = 0.85
TARGET_FPS_2_CORES = 150.0


def raw_chunks(master: Path) -> list[bytes]:
    """Every frame's compressed chunk, in order, read into memory."""
    source = open_frames(master)
    chunks = []
    for piece in source.pieces:
        with h5py.File(piece.path, "r") as h5:
            dataset = h5[piece.dataset]
            chunks += [dataset.id.read_direct_chunk((k, 0, 0))[1] for k in range(len(dataset))]
    return chunks


def decoders() -> dict[str, Callable[[bytes], object]]:
    """opmap's decoder (checks, then dectris-compression) and the raw candidates."""
    import bitshuffle
    from dectris.compression import decompress

    def raw_bitshuffle(chunk: bytes) -> np.ndarray:
        data = np.frombuffer(chunk, np.uint8, offset=12)
        return bitshuffle.decompress_lz4(data, SHAPE, np.dtype(np.uint32), 2048)

    return {
        "opmap decode": lambda c: decode_bslz4_chunk(c, SHAPE, np.uint32),
        "dectris-compression": lambda c: decompress(c, "bslz4", elem_size=4),
        "bitshuffle": raw_bitshuffle,
    }


def single_thread_ms(
    decode: Callable[[bytes], object], chunks: list[bytes]
) -> tuple[float, float]:
    """ms per frame on one thread, and GIL acquisitions per frame by a sleeping thread.

    The probe thread sleeps 0.2 ms then takes the GIL, over and over: while a decoder that
    releases the GIL runs it gets in dozens of times per frame; while one that holds the
    GIL runs it gets in about once per frame (between calls).  Uses little CPU, so the
    verdict holds on a loaded machine.
    """
    stop, wakeups = threading.Event(), [0]

    def probe() -> None:
        while not stop.is_set():
            time.sleep(0.0002)
            wakeups[0] += 1

    thread = threading.Thread(target=probe)
    thread.start()
    t0 = time.perf_counter()
    for chunk in chunks:
        decode(chunk)
    seconds = time.perf_counter() - t0
    stop.set()
    thread.join()
    return 1e3 * seconds / len(chunks), wakeups[0] / len(chunks)


def _compare_decoder(name: str, decode: Callable[[bytes], object], chunks, cores: int) -> None:
    decode(chunks[0])  # compiled / loaded
    ms, wakeups = single_thread_ms(decode, chunks)
    fps = decode_all_fps(chunks * 2, cores, decode)
    verdict = "releases" if wakeups > 5 else "holds"
    print(
        f"  {name:20s} 1 thread {ms:5.1f} ms/frame ({1e3 / ms:4.0f} frames/s), {cores} threads "
        f"{fps:4.0f} frames/s; a sleeping thread took the GIL {wakeups:4.0f}× per frame: "
        f"{verdict} it"
    )


def h5py_fps(master: Path, workers: int, n_frames: int = 32) -> float:
    """hdf5plugin's codec through h5py (``dataset[k]``) on ``workers`` threads, frames/s."""
    with h5py.File(master, "r") as h5, ThreadPoolExecutor(workers) as pool:
        dataset = h5["entry/data/data_000001"]
        n_frames = min(n_frames, len(dataset))
        dataset[0]
        t0 = time.perf_counter()
        for _ in pool.map(dataset.__getitem__, range(n_frames)):
            pass
        return n_frames / (time.perf_counter() - t0)


def decode_all_fps(
    chunks: list[bytes], workers: int, decode: Callable[[bytes], object] | None = None
) -> float:
    """Decompression alone on ``workers`` threads (one OpenMP thread each), frames/s."""
    from threadpoolctl import threadpool_limits

    decode = decoders()["opmap decode"] if decode is None else decode
    with ThreadPoolExecutor(
        workers, initializer=threadpool_limits, initargs=(1, "openmp")
    ) as pool:
        list(pool.map(decode, chunks[: 2 * workers]))  # threads started, caches warm
        t0 = time.perf_counter()
        for _ in pool.map(decode, chunks):
            pass
        return len(chunks) / (time.perf_counter() - t0)


def end_to_end_fps(master: Path, reducer: FrameReducer) -> float:
    """Read + decompress + reduce all frames through ``reduce_source``, frames/s."""
    source = open_frames(master)
    reducer.reduce_source(source, stop=4)  # threads started
    t0 = time.perf_counter()
    reduced = reducer.reduce_source(source)
    seconds = time.perf_counter() - t0
    assert reduced.n_frames == source.n_frames
    return source.n_frames / seconds


def pyfai_fps(master: Path, geometry: DetectorGeometry, n_frames: int) -> float:
    """h5py read + ``integrate2d_ng`` 1000 × 360 per frame (first call excluded), frames/s."""
    ai = geometry.integrator
    kwargs = {"unit": "q_A^-1", "method": ("full", "csr", "cython"), "polarization_factor": 0.99}
    with h5py.File(master, "r") as h5:
        frames = h5["entry/data/data_000001"]
        ai.integrate2d_ng(frames[0], 1000, 360, **kwargs)  # sparse-matrix build
        t0 = time.perf_counter()
        for k in range(n_frames):
            ai.integrate2d_ng(frames[k], 1000, 360, **kwargs)
        return n_frames / (time.perf_counter() - t0)


def write_files(directory: Path, geometry: DetectorGeometry, n_frames: int) -> Path:
    """Dectris-layout files of ``n_frames`` frames (16 distinct synthetic frames, cycled).

    Same layout as ``bench_end_to_end.write_dectris``, written frame by frame so that a few
    hundred 18 MB frames never sit in memory together.
    """
    distinct = synthetic_frames(geometry, 16)
    master = write_dectris(directory, distinct[:0])
    with h5py.File(master, "a") as m:
        for k, start in enumerate(range(0, n_frames, FRAMES_PER_DATA_FILE), start=1):
            name = f"series_data_{k:06d}.h5"
            count = min(FRAMES_PER_DATA_FILE, n_frames - start)
            with h5py.File(directory / name, "w") as f:
                layout = {"shape": (count, *SHAPE), "dtype": np.uint32, "chunks": (1, *SHAPE)}
                lz4 = hdf5plugin.Bitshuffle(cname="lz4")
                dataset = f.create_dataset("entry/data/data", **layout, **lz4)
                for j in range(count):
                    dataset[j] = distinct[(start + j) % len(distinct)]
            m["entry/data"][f"data_{k:06d}"] = h5py.ExternalLink(name, "/entry/data/data")
    return master


def main(n_frames: int = 300, n_pyfai: int = 16) -> None:
    logging.disable(logging.WARNING)
    cores = os.cpu_count() or 1
    geometry = DetectorGeometry(
        eiger4m_detector(), distance_m=0.1, poni1_m=0.081, poni2_m=0.0776, rot1_rad=0.01
    )
    reduction = compile_reduction(
        ReductionPlan(families=FamilyConfig.model_validate(FAMILIES)), geometry
    )
    with tempfile.TemporaryDirectory() as tmp:
        master = write_files(Path(tmp), geometry, n_frames)
        chunks = raw_chunks(master)
        size_mb = sum(len(c) for c in chunks) / 1e6
        print(f"{n_frames} frames {SHAPE} uint32, {size_mb:.0f} MB bitshuffle-LZ4, {cores} cores")
        for name, decode in decoders().items():
            _compare_decoder(name, decode, chunks[:32], cores)
        print(
            f"  {'h5py + hdf5plugin':20s} 1 thread {h5py_fps(master, 1):4.0f} frames/s, "
            f"{cores} threads {h5py_fps(master, cores):4.0f} frames/s (h5py serialises HDF5 calls)"
        )
        with FrameReducer(reduction, workers=cores) as reducer:
            limit = decode_all_fps(chunks, cores)
            e2e = end_to_end_fps(master, reducer)
            limit_after = decode_all_fps(chunks, cores)
        reference = pyfai_fps(master, geometry, min(n_pyfai, n_frames))
    _report(cores, 0.5 * (limit + limit_after), e2e, reference)


def _report(cores: int, limit: float, e2e: float, reference: float) -> None:
    ratio = e2e / limit
    print(
        f"(1) decompression alone, {cores} threads : {limit:6.0f} frames/s  (the limit; mean "
        "of before and after (2))"
    )
    print(
        f"(2) opmap end to end (reduce_source)  : {e2e:6.0f} frames/s  = {ratio:.2f} × (1)  "
        f"[target ≥ {TARGET_RATIO} × (1); ≥ {TARGET_FPS_2_CORES:.0f} frames/s on 2 cores]"
    )
    print(
        f"(3) pyFAI h5py + integrate2d_ng       : {reference:6.1f} frames/s  "
        f"(opmap is {e2e / reference:.0f}× faster)"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 300)
