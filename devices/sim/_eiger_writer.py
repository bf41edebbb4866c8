"""Write frames in the Dectris file-writer layout (see `opmap.devices._eiger_layout`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path, PurePath

import h5py
import hdf5plugin
import numpy as np

from opmap.devices._eiger_layout import (
    DATA_PATH,
    FRAMES_PER_FILE,
    TIME_PATH,
    X_PATH,
    EigerMetadata,
)

__all__ = ["DectrisWriter"]

_SCALARS = ((X_PATH, "µm"), (TIME_PATH, "s"))


class DectrisWriter:
    """Master file + data files of at most ``frames_per_file`` frames each.

    Data files are opened in SWMR mode and flushed after every frame, so readers can follow
    the acquisition. The master's virtual datasets are rebuilt whenever a data file starts
    whenever a series completes (`sync`) and when the writer closes, then with the exact
    frame counts.

    Parameters
    ----------
    directory
        Existing directory to write into.
    name
        File name stem: ``<name>_master.h5``, ``<name>_data_000001.h5``, ...
    frame_shape
        (rows, columns) of a frame.
    metadata
        Detector description for the master file.
    count_time_s, frame_time_s
        Exposure and period of a frame (s).
    frames_per_file
        Frames per data file (> 0).
    """

    def __init__(
        self,
        directory: PurePath | str,
        name: str,
        frame_shape: tuple[int, int],
        metadata: EigerMetadata,
        *,
        count_time_s: float,
        frame_time_s: float,
        frames_per_file: int = FRAMES_PER_FILE,
    ) -> None:
        if frames_per_file < 1:
            raise ValueError(f"frames_per_file={frames_per_file} must be >= 1")
        self.directory = Path(directory)
        self.name = name
        self.frame_shape = tuple(frame_shape)
        self.frames_per_file = frames_per_file
        self.master_path = self.directory / f"{name}_master.h5"
        if self.master_path.exists():
            raise FileExistsError(f"{self.master_path} exists: opmap never overwrites data")
        self.frames_written = 0
        self._file: h5py.File | None = None
        self._counts: list[int] = []
        self._write_master(metadata, count_time_s, frame_time_s)

    def data_file_name(self, number: int) -> str:
        """Name of data file ``number`` (1-based)."""
        return f"{self.name}_data_{number:06d}.h5"

    def write(self, frame: np.ndarray, *, x_um: float, time_s: float) -> None:
        """Append one frame (uint32, ``frame_shape``) with its beam x (µm) and time (s)."""
        if frame.shape != self.frame_shape:
            raise ValueError(f"frame shape {frame.shape} != detector shape {self.frame_shape}")
        if self._file is None or self._counts[-1] == self.frames_per_file:
            self._start_data_file()
        assert self._file is not None
        index = self._counts[-1]
        self._file[DATA_PATH][index] = frame.astype(np.uint32, copy=False)
        self._file[X_PATH][index] = x_um
        self._file[TIME_PATH][index] = time_s
        self._file.flush()
        self._counts[-1] += 1
        self.frames_written += 1

    def write_many(
        self, frames: Sequence[np.ndarray] | np.ndarray, *, x_um: np.ndarray, time_s: np.ndarray
    ) -> None:
        """Append frames (each (rows, columns)) with their beam x (µm) and times (s), one flush.

        A list of frames is written frame by frame (each is one chunk), never stacked into a
        copy of the whole series.
        """
        for frame in frames:
            if frame.shape != self.frame_shape:
                raise ValueError(f"frame shape {frame.shape} != detector shape {self.frame_shape}")
        done = 0
        while done < len(frames):
            if self._file is None or self._counts[-1] == self.frames_per_file:
                self._start_data_file()
            assert self._file is not None
            start = self._counts[-1]
            n = min(len(frames) - done, self.frames_per_file - start)
            data = self._file[DATA_PATH]
            for k in range(n):
                data[start + k] = np.asarray(frames[done + k]).astype(np.uint32, copy=False)
            self._file[X_PATH][start : start + n] = x_um[done : done + n]
            self._file[TIME_PATH][start : start + n] = time_s[done : done + n]
            self._counts[-1] += n
            self.frames_written += n
            done += n
        if self._file is not None:
            self._file.flush()

    def stored_chunk(self, frame: int) -> tuple[int, bytes]:
        """``(filter mask, bytes)`` of frame ``frame`` (0-based in the series) as stored.

        The chunk the data file holds (one frame per chunk, bitshuffle-LZ4, HDF5 framing):
        what a DCU streams beside its files (``opmap sim-dcu``'s stream v2 publisher).
        """
        if not 0 <= frame < self.frames_written:
            raise ValueError(f"frame={frame} outside the {self.frames_written} frames written")
        number, row = divmod(frame, self.frames_per_file)
        if number == len(self._counts) - 1 and self._file is not None:
            return self._file[DATA_PATH].id.read_direct_chunk((row, 0, 0))
        with h5py.File(self.directory / self.data_file_name(number + 1), "r") as f:
            return f[DATA_PATH].id.read_direct_chunk((row, 0, 0))

    def sync(self) -> None:
        """Map exactly the frames written so far in the master's virtual datasets.

        Called when a series (a fly line) completes, before its frames are announced, so
        a reader of the master (the Tiled server registering the run, the live analysis)
        sees exactly the announced frames, not the data file's allocated rows.
        """
        if self._file is not None:
            self._file.flush()
            self._link_data_files(exact=True)

    def close(self) -> None:
        """Trim the last data file to its frames and write the exact virtual datasets."""
        if self._file is not None:
            for path in (DATA_PATH, X_PATH, TIME_PATH):
                self._file[path].resize(self._counts[-1], axis=0)
            self._file.close()
            self._file = None
            self._link_data_files(exact=True)

    def _write_master(self, meta: EigerMetadata, count_time_s: float, frame_time_s: float) -> None:
        with h5py.File(self.master_path, "w") as f:
            det = f.create_group("/entry/instrument/detector")
            for key, value, units in (
                ("x_pixel_size", meta.x_pixel_size_m, "m"),
                ("y_pixel_size", meta.y_pixel_size_m, "m"),
                ("detector_distance", meta.detector_distance_m, "m"),
                ("beam_center_x", meta.beam_center_x_px, "pixel"),
                ("beam_center_y", meta.beam_center_y_px, "pixel"),
                ("count_time", count_time_s, "s"),
                ("frame_time", frame_time_s, "s"),
            ):
                det.create_dataset(key, data=float(value)).attrs["units"] = units
            det["description"] = meta.description
            beam = f.create_group("/entry/instrument/beam")
            wl = beam.create_dataset("incident_wavelength", data=meta.wavelength_angstrom)
            wl.attrs["units"] = "angstrom"
            f.create_group("/entry/data")

    def _start_data_file(self) -> None:
        if self._file is not None:
            self._file.close()
        self._counts.append(0)
        path = self.directory / self.data_file_name(len(self._counts))
        f = h5py.File(path, "w", libver="latest")
        n, (h, w) = self.frames_per_file, self.frame_shape
        f.create_dataset(
            DATA_PATH,
            shape=(n, h, w),
            maxshape=(None, h, w),
            chunks=(1, h, w),
            dtype=np.uint32,
            **hdf5plugin.Bitshuffle(cname="lz4"),
        ).attrs["units"] = "counts"
        for path_in_file, units in _SCALARS:
            ds = f.create_dataset(path_in_file, shape=(n,), maxshape=(None,), dtype=np.float64)
            ds.attrs["units"] = units
        f.swmr_mode = True
        self._file = f
        self._link_data_files(exact=False)

    def _link_data_files(self, *, exact: bool) -> None:
        # Virtual datasets map fixed extents, so while a data file is open it is mapped with
        # its allocated frames_per_file rows (unwritten rows read as 0); `close` maps exact.
        counts = list(self._counts)
        if not exact:
            counts[-1] = self.frames_per_file
        # No HDF5 file lock: readers in other processes (the live analysis, an analysis
        # worker, the Tiled server validating) hold the master open while a line ends, and
        # their shared lock would make this, the only writer, fail (errno 11).
        with h5py.File(self.master_path, "a", locking=False) as f:
            for number in range(1, len(counts) + 1):
                link = f"/entry/data/data_{number:06d}"
                if link not in f:
                    f[link] = h5py.ExternalLink(self.data_file_name(number), DATA_PATH)
            for path, row_shape, dtype in (
                (DATA_PATH, self.frame_shape, np.uint32),
                (X_PATH, (), np.float64),
                (TIME_PATH, (), np.float64),
            ):
                self._write_virtual(f, path, counts, row_shape, dtype)

    def _write_virtual(self, f: h5py.File, path: str, counts, row_shape, dtype) -> None:
        layout = h5py.VirtualLayout(shape=(sum(counts), *row_shape), dtype=dtype)
        start = 0
        for number, count in enumerate(counts, start=1):
            if count:
                source = h5py.VirtualSource(
                    self.data_file_name(number), path, shape=(count, *row_shape)
                )
                layout[start : start + count] = source
            start += count
        if path in f:
            del f[path]
        f.create_virtual_dataset(path, layout, fillvalue=0)
