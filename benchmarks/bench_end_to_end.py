"""End to end: Dectris-layout bitshuffle-LZ4 HDF5 → read + decompress → targeted reduction.

Writes a master file and data files (``/entry/data/data_000001`` external links to
``*_data_000001.h5`` holding ``/entry/data/data``, uint32, bitshuffle-LZ4 per frame)
into a temporary directory, then reads them back frame-chunk by frame-chunk and
reduces.  Prints frames/s and where the time goes.  This is the serial h5py route (one
thread decompresses under h5py's lock), kept as the "before"; ``bench_decompression.py``
measures the path ``opmap analyze`` takes (threaded direct-chunk decoding + reduction)
beside the decompression limit and pyFAI.  Run:
``.venv/bin/python benchmarks/bench_end_to_end.py [n_frames]``.  Figures measured on a
shared machine are pessimistic.
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np

from opmap.analysis.families import FamilyConfig
from opmap.analysis.geometry import DetectorGeometry, eiger4m_detector
from opmap.analysis.reduction import ReductionPlan, compile_reduction

sys.path.insert(0, str(Path(__file__).resolve().parent))  # runs from any folder
from bench_reduction import FAMILIES, synthetic_frames

FRAMES_PER_DATA_FILE = 100


def write_dectris(directory: Path, frames: np.ndarray) -> Path:
    """Master + data files in the Dectris file-writer layout; returns the master path."""
    master = directory / "series_master.h5"
    with h5py.File(master, "w") as m:
        detector = m.create_group("entry/instrument/detector")
        detector["x_pixel_size"] = 75e-6
        detector["y_pixel_size"] = 75e-6
        detector["detector_distance"] = 0.1
        data = m.create_group("entry/data")
        for k, start in enumerate(range(0, len(frames), FRAMES_PER_DATA_FILE), start=1):
            name = f"series_data_{k:06d}.h5"
            with h5py.File(directory / name, "w") as f:
                f.create_dataset(
                    "entry/data/data",
                    data=frames[start : start + FRAMES_PER_DATA_FILE],
                    chunks=(1, *frames.shape[1:]),
                    **hdf5plugin.Bitshuffle(cname="lz4"),
                )
            data[f"data_{k:06d}"] = h5py.ExternalLink(name, "/entry/data/data")
    return master


def read_all(master: Path, batch: int):
    with h5py.File(master, "r") as m:
        for key in sorted(m["entry/data"]):
            dataset = m["entry/data"][key]
            for start in range(0, dataset.shape[0], batch):
                yield dataset[start : start + batch]


def main(n_frames: int = 64, batch: int = 16) -> None:
    logging.disable(logging.WARNING)
    geometry = DetectorGeometry(
        eiger4m_detector(), distance_m=0.1, poni1_m=0.081, poni2_m=0.0776, rot1_rad=0.01
    )
    plan = ReductionPlan(families=FamilyConfig.model_validate(FAMILIES))
    reduction = compile_reduction(plan, geometry)
    frames = synthetic_frames(geometry, n_frames)
    with tempfile.TemporaryDirectory() as tmp:
        master = write_dectris(Path(tmp), frames)
        size_mb = sum(p.stat().st_size for p in Path(tmp).iterdir()) / 1e6
        print(f"{n_frames} frames, {size_mb:.0f} MB on disk ({frames.nbytes / 1e6:.0f} MB raw)")
        read_s = reduce_s = 0.0
        results = []
        t_all = time.perf_counter()
        t0 = time.perf_counter()
        for block in read_all(master, batch):
            t1 = time.perf_counter()
            results.append(reduction.reduce_packed(block, threads=2))
            t2 = time.perf_counter()
            read_s += t1 - t0
            reduce_s += t2 - t1
            t0 = time.perf_counter()
        total = time.perf_counter() - t_all
    packed = np.concatenate(results)
    assert packed.shape == (n_frames, reduction.n_outputs)
    print(
        f"end to end: {n_frames / total:.0f} frames/s; read+decompress "
        f"{1e3 * read_s / n_frames:.1f} ms/frame, reduce {1e3 * reduce_s / n_frames:.2f} ms/frame"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 64)
