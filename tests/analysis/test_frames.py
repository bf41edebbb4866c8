import h5py
import hdf5plugin
import numpy as np
import pytest

from opmap.analysis.frames import open_frames

SHAPE = (6, 5)


def frames(n: int) -> np.ndarray:
    return (np.arange(n * 30, dtype=np.uint32).reshape(n, *SHAPE) * 7) % 1000


def write_master(folder, stack, per_file: int = 4):
    """Dectris layout: master with external links to bitshuffle-LZ4 data files."""
    master = folder / "cell_master.h5"
    with h5py.File(master, "w") as m:
        group = m.create_group("entry/data")
        for k, start in enumerate(range(0, len(stack), per_file), start=1):
            name = f"cell_data_{k:06d}.h5"
            with h5py.File(folder / name, "w") as f:
                f.create_dataset(
                    "entry/data/data",
                    data=stack[start : start + per_file],
                    chunks=(1, *SHAPE),
                    **hdf5plugin.Bitshuffle(cname="lz4"),
                )
            group[f"data_{k:06d}"] = h5py.ExternalLink(name, "/entry/data/data")
    return master


def test_master_file_reads_all_data_files_in_order(tmp_path):
    stack = frames(10)
    source = open_frames(write_master(tmp_path, stack))
    assert source.shape == (10, *SHAPE)
    assert [p.n_frames for p in source.pieces] == [4, 4, 2]
    np.testing.assert_array_equal(source.read(), stack)
    np.testing.assert_array_equal(source.read(3, 9), stack[3:9])


def test_dask_blocks_never_span_data_files_and_equal_the_frames(tmp_path):
    stack = frames(10)
    lazy = open_frames(write_master(tmp_path, stack)).to_dask(chunk_frames=3)
    assert lazy.chunks[0] == (3, 1, 3, 1, 2)
    np.testing.assert_array_equal(lazy.compute(scheduler="sync"), stack)


def test_plain_file_with_dataset_path(tmp_path):
    path = tmp_path / "scan.h5"
    with h5py.File(path, "w") as f:
        f["a/frames"] = frames(3).astype(np.float32)
    source = open_frames(path, dataset="a/frames")
    assert source.dtype == np.float32 and source.n_frames == 3


def test_missing_data_file_is_an_error_not_zeros(tmp_path):
    master = write_master(tmp_path, frames(10))
    (tmp_path / "cell_data_000002.h5").unlink()
    with pytest.raises(ValueError, match=r"missing data file cell_data_000002\.h5"):
        open_frames(master)


def test_truncated_file_is_reported(tmp_path):
    path = tmp_path / "scan.h5"
    with h5py.File(path, "w") as f:
        f["frames"] = frames(8)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        open_frames(path, dataset="frames")


def test_corrupt_compressed_chunk_fails_on_read_naming_the_frames(tmp_path):
    master = write_master(
        tmp_path,
        np.random.default_rng(0).integers(0, 9, (4, 64, 64)).astype(np.uint32),
        per_file=4,
    )
    data_file = tmp_path / "cell_data_000001.h5"
    with h5py.File(data_file, "r") as f:
        offset = f["entry/data/data"].id.get_chunk_info(2).byte_offset
    raw = bytearray(data_file.read_bytes())
    raw[offset + 12 : offset + 60] = b"\xff" * 48
    data_file.write_bytes(bytes(raw))
    source = open_frames(master)
    with pytest.raises(ValueError, match=r"frames 0–4 of .*cell_data_000001\.h5"):
        source.read()


def test_not_hdf5_and_wrong_dataset(tmp_path):
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    with pytest.raises(ValueError, match="not a readable HDF5"):
        open_frames(text)
    path = tmp_path / "scan.h5"
    with h5py.File(path, "w") as f:
        f["line"] = np.zeros(5)
    with pytest.raises(ValueError, match="3-D"):
        open_frames(path, dataset="line")
    with pytest.raises(ValueError, match="'nope' not found"):
        open_frames(path, dataset="nope")
    with pytest.raises(ValueError, match="no Dectris frames"):
        open_frames(path)
    with pytest.raises(FileNotFoundError):
        open_frames(tmp_path / "absent.h5")
