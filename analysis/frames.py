"""Read detector frames from HDF5: Dectris master files or any file + dataset path.

A Dectris master file (``*_master.h5``) holds no frames itself: ``/entry/data/data_000001``,
``data_000002``, … are external links to the data files (opmap's writer adds a virtual
dataset ``/entry/data/data`` stacking them).  :func:`open_frames` resolves either form into a
:class:`FrameSource` — an ordered list of (file, dataset, frame count) pieces — after checking
that every piece exists and that all share one frame shape, so a missing data file is an error
here rather than frames of zeros later (a virtual dataset silently reads its fill value where
a source file is missing).

Frames are read as numpy (:meth:`FrameSource.read`), lazily as a dask array
(:meth:`FrameSource.to_dask`; each dask block opens the file itself, so the graph pickles to
``dask.distributed`` workers), or streamed through a :class:`FramePipeline` that decodes on
a pool of threads and applies a function to each frame, in order.  Datasets chunked one
bitshuffle-LZ4 frame per chunk (the Dectris file writer's layout) are decoded from their raw
chunks by ``dectris-compression`` outside h5py's global lock and the GIL (:mod:`._decompress`); any
other layout is read through h5py.  A chunk that fails to decompress (truncated or corrupt
file) raises ``ValueError`` naming the file, the dataset and the frame(s).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin  # noqa: F401  (registers bitshuffle-LZ4 and friends with h5py)
import numpy as np

from ._decompress import ChunkCodec, decode_bslz4_chunk, direct_chunk_codec
from ._frame_stream import FramePipeline
from .dectris_layout import DATA_GROUP, DATA_LINK_PREFIX, DATA_PATH

__all__ = [
    "ChunkCodec",
    "FramePiece",
    "FramePipeline",
    "FrameSource",
    "decode_bslz4_chunk",
    "direct_chunk_codec",
    "open_frame_series",
    "open_frames",
    "read_frame_block",
]


@dataclass(frozen=True)
class FramePiece:
    """``n_frames`` frames stored in dataset ``dataset`` of file ``path``."""

    path: Path
    dataset: str
    n_frames: int


@dataclass(frozen=True)
class FrameSource:
    """Frames spread over one or more HDF5 datasets, in acquisition order.

    Attributes
    ----------
    pieces : tuple of FramePiece
        Datasets in order (one for a plain file, one per data file for a Dectris master).
    frame_shape : (int, int)
        Shape (rows, columns) of one frame.
    dtype : numpy.dtype
        Stored pixel type (uint32 for the Eiger).
    """

    pieces: tuple[FramePiece, ...]
    frame_shape: tuple[int, int]
    dtype: np.dtype

    @property
    def n_frames(self) -> int:
        """Total number of frames."""
        return sum(p.n_frames for p in self.pieces)

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(n_frames, rows, columns)``."""
        return (self.n_frames, *self.frame_shape)

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Frames ``start:stop`` as numpy, shape (n, rows, columns), stored dtype.

        Raises
        ------
        ValueError
            Range outside ``[0, n_frames]`` or a chunk that does not decompress.
        """
        stop = self.n_frames if stop is None else stop
        if not 0 <= start <= stop <= self.n_frames:
            raise ValueError(f"frame range [{start}, {stop}) must lie in [0, {self.n_frames}]")
        blocks = [
            read_frame_block(piece.path, piece.dataset, lo, hi)
            for piece, lo, hi in self._pieces_in(start, stop)
        ]
        if not blocks:
            return np.zeros((0, *self.frame_shape), self.dtype)
        return blocks[0] if len(blocks) == 1 else np.concatenate(blocks)

    def _pieces_in(self, start: int, stop: int):
        offset = 0
        for piece in self.pieces:
            lo, hi = max(start - offset, 0), min(stop - offset, piece.n_frames)
            if lo < hi:
                yield piece, lo, hi
            offset += piece.n_frames

    def to_dask(self, *, chunk_frames: int = 64) -> Any:
        """Lazy dask array (n_frames, rows, columns), ``chunk_frames`` frames per block.

        Blocks never span two data files; each block is read by :func:`read_frame_block`
        (opens the file, reads, closes), so the graph is picklable for distributed workers.
        """
        import dask
        import dask.array as da

        if not 1 <= chunk_frames <= 100_000:
            raise ValueError(f"chunk_frames must be in [1, 100000], got {chunk_frames}")
        blocks = []
        for piece in self.pieces:
            for lo in range(0, piece.n_frames, chunk_frames):
                hi = min(lo + chunk_frames, piece.n_frames)
                task = dask.delayed(read_frame_block, pure=True)(
                    str(piece.path), piece.dataset, lo, hi
                )
                blocks.append(
                    da.from_delayed(task, shape=(hi - lo, *self.frame_shape), dtype=self.dtype)
                )
        if not blocks:
            return da.zeros((0, *self.frame_shape), dtype=self.dtype)
        return da.concatenate(blocks, axis=0)


def read_frame_block(path: str | Path, dataset: str, start: int, stop: int) -> np.ndarray:
    """Read frames ``start:stop`` of ``dataset`` in ``path`` (a picklable dask task).

    One-frame-per-chunk bitshuffle-LZ4 datasets are decoded from their raw chunks (outside
    h5py's lock, so dask's threads decode in parallel); other layouts go through h5py.

    Raises
    ------
    ValueError
        The file cannot be opened or a chunk does not decompress (truncated or corrupt);
        the message names the file, the dataset and the frame(s).
    """
    try:
        with h5py.File(path, "r") as h5:
            node = h5[dataset]
            codec = direct_chunk_codec(node)
            if codec is None:
                return np.asarray(node[start:stop])
            return _read_direct(node, codec, start, stop, f"{path}:{dataset}")
    except (OSError, KeyError, RuntimeError) as error:
        raise ValueError(
            f"frames {start}–{stop} of {path}:{dataset} cannot be read (truncated or corrupt "
            f"HDF5?): {error}"
        ) from error


def _read_direct(
    node: h5py.Dataset, codec: ChunkCodec, start: int, stop: int, where: str
) -> np.ndarray:
    out = np.empty((stop - start, *codec.frame_shape), codec.dtype)
    for k in range(start, stop):
        try:
            filter_mask, chunk = node.id.read_direct_chunk((k, 0, 0))
        except (OSError, RuntimeError, KeyError):  # chunk never written: h5py's fill value
            out[k - start] = node[k]
            continue
        try:
            out[k - start] = codec.decode(chunk, filter_mask)
        except ValueError as error:
            raise ValueError(
                f"frame {k} of {where} does not decompress (corrupt chunk?): {error}"
            ) from error
    return out


def open_frames(path: str | Path, *, dataset: str | None = None) -> FrameSource:
    """Describe the frames of a Dectris master file or of ``dataset`` in any HDF5 file.

    Parameters
    ----------
    path : str or Path
        HDF5 file.
    dataset : str, optional
        Path of a (n, rows, columns) dataset inside the file.  Default: the Dectris layout —
        the external links ``/entry/data/data_NNNNNN`` in order, else ``/entry/data/data``.

    Returns
    -------
    FrameSource

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        Not an HDF5 file, truncated or corrupt; ``dataset`` missing or not 3-D; a data file
        of a master file missing; pieces of different frame shapes or dtypes.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> with h5py.File(folder / "frames.h5", "w") as f:
    ...     stack = np.arange(24, dtype=np.uint32).reshape(2, 3, 4)
    ...     _ = f.create_dataset("scan/frames", data=stack)
    >>> source = open_frames(folder / "frames.h5", dataset="scan/frames")
    >>> source.shape, source.read(1, 2)[0, 0].tolist()
    ((2, 3, 4), [12, 13, 14, 15])
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"frames file not found: {path}")
    try:
        with h5py.File(path, "r") as h5:
            pieces = _pieces(h5, path, dataset)
    except OSError as error:
        raise ValueError(
            f"{path} is not a readable HDF5 file (truncated or corrupt?): {error}"
        ) from error
    return _check_pieces(path, pieces)


def open_frame_series(paths: Sequence[str | Path], *, dataset: str | None = None) -> FrameSource:
    """The frames of several files, one file after the other, as one `FrameSource`.

    A Dectris detector writes one master per series (per ``arm``): a fly map armed once per
    line is one master per line, ``<name>_0001_master.h5``, ``<name>_0002_master.h5``, ….

    Parameters
    ----------
    paths : sequence of str or Path
        The files in acquisition order (at least one), each read as `open_frames` reads it.
    dataset : str, optional
        As for `open_frames`, the same in every file.

    Raises
    ------
    FileNotFoundError, ValueError
        As `open_frames` for any file; no file; files of different frame shapes or dtypes.
    """
    if not paths:
        raise ValueError("paths: give at least one frames file")
    sources = [open_frames(path, dataset=dataset) for path in paths]
    pieces = [(piece, (s.frame_shape, s.dtype)) for s in sources for piece in s.pieces]
    return _check_pieces(Path(paths[0]), pieces)


def _pieces(h5: h5py.File, path: Path, dataset: str | None) -> list[tuple[FramePiece, Any]]:
    if dataset is not None:
        if dataset not in h5:
            raise ValueError(f"dataset {dataset!r} not found in {path}")
        return [_piece(h5, path, dataset)]
    group = h5.get(DATA_GROUP)
    names = [] if group is None else list(group)
    links = sorted(k for k in names if k.startswith(DATA_LINK_PREFIX))
    if links:
        return [_linked_piece(h5, path, f"{DATA_GROUP}/{name}") for name in links]
    if DATA_PATH in h5:
        return [_piece(h5, path, DATA_PATH)]
    raise ValueError(
        f"{path} has no Dectris frames ({DATA_GROUP}/{DATA_LINK_PREFIX}NNNNNN or {DATA_PATH}); "
        "pass dataset= with the path of the frames"
    )


def _linked_piece(h5: h5py.File, path: Path, name: str) -> tuple[FramePiece, Any]:
    link = h5.get(name, getlink=True)
    if isinstance(link, h5py.ExternalLink):
        target = (path.parent / link.filename).resolve()
        if not target.is_file():
            raise ValueError(f"{path}: {name} links to the missing data file {link.filename}")
        try:
            with h5py.File(target, "r") as data:
                piece, meta = _piece(data, target, link.path)
        except OSError as error:
            raise ValueError(
                f"data file {target} is not readable HDF5 (truncated or corrupt?): {error}"
            ) from error
        return piece, meta
    return _piece(h5, path, name)


def _piece(h5: h5py.File, path: Path, name: str) -> tuple[FramePiece, Any]:
    try:
        node = h5[name]
    except (KeyError, OSError) as error:
        raise ValueError(f"{path}:{name} cannot be opened: {error}") from error
    if not isinstance(node, h5py.Dataset) or node.ndim != 3:
        shape = getattr(node, "shape", None)
        raise ValueError(f"{path}:{name} must be a 3-D (n, rows, columns) dataset, got {shape}")
    if node.is_virtual:
        for source in node.virtual_sources():
            file_name = source.file_name
            source_path = path if file_name == "." else path.parent / file_name
            if not source_path.is_file():
                raise ValueError(f"{path}:{name} maps the missing data file {file_name}")
    return FramePiece(path, name, int(node.shape[0])), (tuple(node.shape[1:]), node.dtype)


def _check_pieces(path: Path, pieces: Sequence[tuple[FramePiece, Any]]) -> FrameSource:
    shapes = {meta[0] for _, meta in pieces}
    dtypes = {np.dtype(meta[1]) for _, meta in pieces}
    if len(shapes) != 1 or len(dtypes) != 1:
        raise ValueError(f"{path}: data files differ in frame shape {shapes} or dtype {dtypes}")
    (shape,), (dtype,) = shapes, dtypes
    if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
        raise ValueError(f"{path}: frames must hold integers or floats, got dtype {dtype}")
    return FrameSource(tuple(p for p, _ in pieces), (int(shape[0]), int(shape[1])), dtype)
