"""Direct-chunk bitshuffle-LZ4 decoding and the threaded frame pipeline, against h5py."""

from __future__ import annotations

from pathlib import Path

import bitshuffle
import h5py
import hdf5plugin
import numpy as np
import pytest

from opmap.analysis.frames import (
    FramePipeline,
    decode_bslz4_chunk,
    direct_chunk_codec,
    open_frames,
    read_frame_block,
)

FULL_4M = (2167, 2070)
BINNED_2 = (1083, 1035)


def _frames(n: int, shape: tuple[int, int], dtype: type, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    frames = rng.poisson(3.0, size=(n, *shape)).astype(dtype)
    frames[:, 10:12, :] = np.iinfo(dtype).max  # Eiger gap marker rows
    return frames


def _write(path: Path, frames: np.ndarray, **filters) -> Path:
    with h5py.File(path, "w") as h5:
        h5.create_dataset("entry/data/data", data=frames, chunks=(1, *frames.shape[1:]), **filters)
    return path


@pytest.mark.parametrize("dtype", [np.uint32, np.uint16])
@pytest.mark.parametrize("shape", [FULL_4M, BINNED_2])
def test_direct_decoder_returns_exactly_what_h5py_returns(tmp_path, dtype, shape):
    frames = _frames(2, shape, dtype)
    path = _write(tmp_path / "f.h5", frames, **hdf5plugin.Bitshuffle(cname="lz4"))
    with h5py.File(path, "r") as h5:
        dataset = h5["entry/data/data"]
        codec = direct_chunk_codec(dataset)
        assert codec is not None and codec.frame_shape == shape
        for k in range(2):
            mask, chunk = dataset.id.read_direct_chunk((k, 0, 0))
            decoded = codec.decode(chunk, mask)
            assert decoded.dtype == dtype
            np.testing.assert_array_equal(decoded, dataset[k])
            np.testing.assert_array_equal(decoded, frames[k])


def test_chunk_header_is_size_then_block_bytes_then_bitshuffle_lz4_blocks(tmp_path):
    frames = _frames(1, BINNED_2, np.uint32)
    path = _write(tmp_path / "f.h5", frames, **hdf5plugin.Bitshuffle(cname="lz4"))
    with h5py.File(path, "r") as h5:
        _, chunk = h5["entry/data/data"].id.read_direct_chunk((0, 0, 0))
    assert int.from_bytes(chunk[:8], "big") == frames[0].nbytes
    assert int.from_bytes(chunk[8:12], "big") == 8192  # bitshuffle's default block, bytes
    blocks = bitshuffle.compress_lz4(frames[0], 8192 // 4)
    assert chunk[12:] == blocks.tobytes()  # bit for bit what hdf5plugin's filter stored


def test_uncompressed_and_other_filters_fall_back_to_h5py(tmp_path):
    frames = _frames(3, (40, 30), np.uint32)
    for name, filters in [
        ("plain", {}),
        ("gzip", {"compression": "gzip"}),
        ("zstd", dict(hdf5plugin.Bitshuffle(cname="zstd"))),
    ]:
        path = _write(tmp_path / f"{name}.h5", frames, **filters)
        with h5py.File(path, "r") as h5:
            assert direct_chunk_codec(h5["entry/data/data"]) is None
        source = open_frames(path, dataset="entry/data/data")
        with FramePipeline(workers=2) as pipeline:
            streamed = np.stack(list(pipeline.map(source, np.copy)))
        np.testing.assert_array_equal(streamed, frames)
        np.testing.assert_array_equal(read_frame_block(path, "entry/data/data", 1, 3), frames[1:])


def test_unwritten_chunk_reads_as_the_fill_value(tmp_path):
    path = tmp_path / "f.h5"
    with h5py.File(path, "w") as h5:
        lz4 = hdf5plugin.Bitshuffle(cname="lz4")
        shape = {"shape": (2, 8, 8), "dtype": np.uint16, "chunks": (1, 8, 8)}
        dataset = h5.create_dataset("frames", fillvalue=7, **shape, **lz4)
        dataset[1] = np.arange(64, dtype=np.uint16).reshape(8, 8)
    source = open_frames(path, dataset="frames")
    with FramePipeline(workers=1) as pipeline:
        first, second = pipeline.map(source, np.copy)
    assert (first == 7).all() and second[7, 7] == 63


def test_pipeline_yields_frames_in_order_across_data_files(tmp_path):
    frames = np.arange(23, dtype=np.uint32)[:, None, None] * np.ones((1, 16, 24), np.uint32)
    master = tmp_path / "run_master.h5"
    with h5py.File(master, "w") as h5:
        for number, (lo, hi) in enumerate([(0, 10), (10, 23)], start=1):
            name = f"run_data_{number:06d}.h5"
            _write(tmp_path / name, frames[lo:hi], **hdf5plugin.Bitshuffle(cname="lz4"))
            h5[f"entry/data/data_{number:06d}"] = h5py.ExternalLink(name, "/entry/data/data")
    source = open_frames(master)
    with FramePipeline(workers=2, window=3) as pipeline:
        firsts = [int(v) for v in pipeline.map(source, lambda f: f[0, 0], start=4, stop=21)]
    assert firsts == list(range(4, 21))


def test_corrupt_chunk_error_names_file_dataset_and_frame(tmp_path):
    frames = _frames(4, (64, 48), np.uint32)
    path = _write(tmp_path / "f.h5", frames, **hdf5plugin.Bitshuffle(cname="lz4"))
    with h5py.File(path, "r+") as h5:
        dataset = h5["entry/data/data"]
        _, chunk = dataset.id.read_direct_chunk((2, 0, 0))
        dataset.id.write_direct_chunk((2, 0, 0), chunk[: len(chunk) // 2])  # truncated
    source = open_frames(path, dataset="entry/data/data")
    expected = rf"frame 2 of {path}:entry/data/data .*does not decompress"
    with FramePipeline(workers=2) as pipeline, pytest.raises(ValueError, match=expected):
        list(pipeline.map(source, np.copy))
    with pytest.raises(ValueError, match=expected):
        read_frame_block(path, "entry/data/data", 0, 4)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c[:8], "shorter than its 12-byte header"),
        (lambda c: (1).to_bytes(8, "big") + c[8:], "header says 1 bytes"),
        (lambda c: c[:8] + (12).to_bytes(4, "big") + c[12:], "block size 12 bytes"),
        (lambda c: c[:-3], "do not fill"),
        (lambda c: c[:12] + (2**31).to_bytes(4, "big") + c[16:], "do not fill"),
    ],
)
def test_bad_chunks_are_refused_before_decoding(edit, message):
    frame = np.arange(20 * 30, dtype=np.uint32).reshape(20, 30)
    chunk = frame.nbytes.to_bytes(8, "big") + (8192).to_bytes(4, "big")
    chunk += bitshuffle.compress_lz4(frame, 2048).tobytes()
    np.testing.assert_array_equal(decode_bslz4_chunk(chunk, frame.shape, np.uint32), frame)
    with pytest.raises(ValueError, match=message):
        decode_bslz4_chunk(edit(chunk), frame.shape, np.uint32)


def test_reduce_source_matches_reduce_packed_in_frame_order(tmp_path):
    from pyFAI.detectors import Detector

    from opmap.analysis.geometry import DetectorGeometry
    from opmap.analysis.pipeline import FrameReducer
    from opmap.analysis.reduction import ReductionPlan, compile_reduction

    detector = Detector(pixel1=3e-4, pixel2=3e-4, max_shape=(541, 517))
    geometry = DetectorGeometry(detector, distance_m=0.1, poni1_m=0.081, poni2_m=0.0775)
    family = {"name": "perp", "azimuths_003_deg": [25, 160, 205, 345]}
    plan = ReductionPlan.model_validate({"families": {"family": [family]}})
    reduction = compile_reduction(plan, geometry)
    frames = _frames(6, (541, 517), np.uint32)
    path = _write(tmp_path / "f.h5", frames, **hdf5plugin.Bitshuffle(cname="lz4"))
    source = open_frames(path, dataset="entry/data/data")
    with FrameReducer(reduction, workers=2) as reducer:
        reduced = reducer.reduce_source(source, start=1, stop=5)
    expected = reduction.unpack(reduction.reduce_packed(frames[1:5], threads=1))
    np.testing.assert_array_equal(reduced.profiles["perp:003"], expected.profiles["perp:003"])
    np.testing.assert_array_equal(reduced.li_window, expected.li_window)
