"""FrameReader against a real fly map of the sim Eiger (Dectris files written while read)."""

from __future__ import annotations

import h5py
import hdf5plugin  # noqa: F401
import numpy as np
import pytest

from opmap.callbacks.frames import FrameReader, FrameReadError, local_path
from opmap.plans import fly_map

from ._live_rig import GEOMETRY, RE, SMALL_MAP, rig  # noqa: F401


def test_reader_returns_every_frame_live_equal_to_the_files(RE, rig):  # noqa: F811
    stage, eiger, directory = rig
    reader = FrameReader(data_keys={eiger.name, f"{eiger.name}-x_um"})
    frames: dict[int, np.ndarray] = {}
    x_um: dict[int, float] = {}

    def follow(name, doc):
        batch = reader(name, doc)
        if batch is None:
            return
        target = frames if batch.data_key == eiger.name else x_um
        for index, row in zip(batch.frame_indices, batch.values, strict=True):
            assert index not in target, "a row was announced twice"
            target[int(index)] = row

    RE.subscribe(follow)
    RE(fly_map(eiger, stage.x, stage.z, SMALL_MAP))
    n = SMALL_MAP.z_count * SMALL_MAP.x_count
    assert sorted(frames) == list(range(n)) == sorted(x_um)
    (master,) = directory.glob("*_master.h5")
    with h5py.File(master, "r") as f:
        stored = f["/entry/data/data"][()]
        stored_x = f["/entry/opmap/x_um"][()]
    assert stored.shape == (n, *GEOMETRY.shape)
    np.testing.assert_array_equal(np.stack([frames[i] for i in range(n)]), stored)
    np.testing.assert_array_equal([x_um[i] for i in range(n)], stored_x)
    # frames really differ (not zeros read from a not-yet-written virtual dataset)
    assert all(frames[i].sum() > 0 for i in range(n))


def _resource(path, dataset="/entry/data/data"):
    return {
        "uid": "r1",
        "data_key": "det",
        "uri": f"file://localhost{path}",
        "mimetype": "application/x-hdf5",
        "parameters": {"dataset": dataset},
    }


def _datum(start, stop):
    return {
        "uid": f"r1/{start}",
        "stream_resource": "r1",
        "descriptor": "d1",
        "indices": {"start": start, "stop": stop},
        "seq_nums": {"start": start + 1, "stop": stop + 1},
    }


def test_rows_beyond_the_file_raise_after_retries(tmp_path):
    path = tmp_path / "short.h5"
    with h5py.File(path, "w") as f:
        f["/entry/data/data"] = np.arange(2 * 3 * 4, dtype=np.uint32).reshape(2, 3, 4)
    reader = FrameReader(retries=2, retry_delay_s=0.001)
    reader("descriptor", {"uid": "d1", "name": "primary"})
    reader("stream_resource", _resource(path))
    batch = reader("stream_datum", _datum(1, 2))
    assert batch.stream == "primary" and batch.seq_start == 2
    np.testing.assert_array_equal(batch.values[0], np.arange(12, 24).reshape(3, 4))
    with pytest.raises(FrameReadError, match="rows up to 3 announced"):
        reader("stream_datum", _datum(1, 3))


def test_corrupt_file_is_a_frame_read_error(tmp_path):
    path = tmp_path / "corrupt.h5"
    path.write_bytes(b"not an hdf5 file at all")
    reader = FrameReader(retries=1, retry_delay_s=0.001)
    reader("stream_resource", _resource(path))
    with pytest.raises(FrameReadError, match="unreadable after 2 attempts"):
        reader("stream_datum", _datum(0, 1))


def test_remote_file_without_tiled_run_is_an_error(tmp_path):
    reader = FrameReader()
    reader("stream_resource", _resource("/nowhere/on/this/machine/x_master.h5"))
    with pytest.raises(FrameReadError, match="no tiled_run"):
        reader("stream_datum", _datum(0, 1))


def test_local_path_translates_prefix_and_rejects_other_schemes():
    assert str(local_path("file://localhost/a/b/c.h5", {"/a": "/z"})) == "/z/b/c.h5"
    assert str(local_path("file:///ab/c.h5", {"/a": "/z"})) == "/ab/c.h5"
    with pytest.raises(ValueError, match="only file://"):
        local_path("http://host/c.h5")


@pytest.mark.parametrize(("retries", "delay"), [(-1, 0.1), (1, 0.0)])
def test_reader_validates_retry_options(retries, delay):
    with pytest.raises(ValueError, match="retr"):
        FrameReader(retries=retries, retry_delay_s=delay)


@pytest.mark.parametrize(
    ("declared", "stored", "per_frame"),
    [
        ([1, 3, 4], (5, 1, 3, 4), (3, 4)),  # ophyd-async's key, Tiled before validation
        ([1, 3, 4], (5, 3, 4), (3, 4)),  # ... after validation (the files' shape)
        ([3, 4], (5, 3, 4), (3, 4)),  # an older run's key
        ([1], (5,), ()),  # a per-frame scalar: Tiled keeps one column
    ],
)
def test_tiled_rows_come_one_per_frame_whatever_the_declared_leading_1(
    tmp_path, declared, stored, per_frame
):
    node = np.arange(np.prod(stored), dtype=np.uint32).reshape(stored)
    reader = FrameReader(tiled_run={"primary": {"det": node}}, prefer_tiled=True)
    keys = {"det": {"shape": declared}}
    reader("descriptor", {"uid": "d1", "name": "primary", "data_keys": keys})
    reader("stream_resource", _resource(tmp_path / "elsewhere.h5"))
    batch = reader("stream_datum", _datum(1, 4))
    assert batch.values.shape == (3, *per_frame)
    np.testing.assert_array_equal(batch.values, node[1:4].reshape(3, *per_frame))
