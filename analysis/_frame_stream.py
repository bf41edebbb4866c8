"""`FramePipeline`: read chunks → decode and transform on threads → results in frame order.

One bounded pipeline per pool of threads::

    calling thread                 worker threads (GIL released while decoding)
    read_direct_chunk(k)  ──────▶  decode chunk k → transform(frame k)  ──▶ result k
    (h5py, under its lock)         (bitshuffle-LZ4, then e.g. the reduction)

The calling thread reads the compressed chunk of frame ``k + window`` while the workers
decode frames ``k … k + window − 1``; results come back in frame order (a FIFO of futures),
and at most ``window`` frames are in flight, so memory stays bounded whatever the number of
frames.  Doing the transform (the sparse reduction) in the worker that decoded the frame
keeps the 17 MB frame in that worker's cache and avoids stacking frames into batches (a
2.7 ms/frame copy, more than the reduction itself).

Datasets whose chunks are not one bitshuffle-LZ4 frame each (:func:`direct_chunk_codec`
returns None) are read frame by frame through h5py in the calling thread and only the
transform runs on the workers.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, TypeVar

import h5py
import numpy as np

from ._decompress import ChunkCodec, direct_chunk_codec

if TYPE_CHECKING:
    from .frames import FrameSource

__all__ = ["FramePipeline"]

T = TypeVar("T")


def _single_threaded_openmp() -> None:
    # bitshuffle (the fallback decoder) parallelises one chunk over OpenMP threads; inside
    # our pool that oversubscribes the cores (measured 28–50 vs 95–131 frames/s on 2
    # cores).  libgomp's thread count is per calling thread, so this limits only the pool's
    # own threads.
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="openmp")


class FramePipeline:
    """A pool of threads that decodes frames and applies a function to each, in order.

    Parameters
    ----------
    workers : int, optional
        Decoding threads (default: the number of cores).
    window : int, optional
        Frames in flight at most (default ``4 × workers``): bounds memory to about
        ``window`` decoded frames plus their compressed chunks.

    Examples
    --------
    >>> import tempfile, pathlib, hdf5plugin
    >>> from opmap.analysis.frames import open_frames
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "f.h5"
    >>> with h5py.File(path, "w") as f:
    ...     stack = np.arange(5 * 6 * 4, dtype=np.uint32).reshape(5, 6, 4)
    ...     _ = f.create_dataset("frames", data=stack, chunks=(1, 6, 4),
    ...                          **hdf5plugin.Bitshuffle(cname="lz4"))
    >>> source = open_frames(path, dataset="frames")
    >>> with FramePipeline(workers=2) as pipeline:
    ...     sums = list(pipeline.map(source, lambda frame: int(frame.sum()), start=1))
    >>> sums == [int(frame.sum()) for frame in stack[1:]]
    True
    """

    def __init__(self, *, workers: int | None = None, window: int | None = None) -> None:
        self.workers = (os.cpu_count() or 1) if workers is None else workers
        if not 1 <= self.workers <= 256:
            raise ValueError(f"workers must be in [1, 256], got {workers}")
        self.window = 4 * self.workers if window is None else window
        if not 1 <= self.window <= 65_536:
            raise ValueError(f"window must be in [1, 65536], got {window}")
        self._pool = ThreadPoolExecutor(
            self.workers, thread_name_prefix="opmap-decode", initializer=_single_threaded_openmp
        )

    def map(
        self,
        source: FrameSource,
        transform: Callable[[np.ndarray], T],
        *,
        start: int = 0,
        stop: int | None = None,
    ) -> Iterator[T]:
        """``transform(frame)`` for frames ``start:stop`` of ``source``, in frame order.

        Parameters
        ----------
        source : FrameSource
            The frames (`open_frames`).
        transform : callable
            Applied to each decoded frame (rows, columns) on a worker thread; must be
            thread-safe.  Its results are yielded.
        start, stop : int, optional
            Frame range (default all).

        Raises
        ------
        ValueError
            Range outside the source; a chunk that does not decompress (the message names
            the file, the dataset and the frame).
        """
        stop = source.n_frames if stop is None else stop
        if not 0 <= start <= stop <= source.n_frames:
            raise ValueError(f"frame range [{start}, {stop}) must lie in [0, {source.n_frames}]")
        pending: deque[Future[T]] = deque()
        try:
            for task in _tasks(source, start, stop, transform):
                pending.append(self._pool.submit(task))
                if len(pending) >= self.window:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()

    def close(self) -> None:
        """Stop the threads (after the frames in flight)."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> FramePipeline:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _tasks(
    source: FrameSource, start: int, stop: int, transform: Callable[[np.ndarray], T]
) -> Iterator[Callable[[], T]]:
    """One zero-argument task per frame; reading the chunk happens when a task is made."""
    offset = 0
    for piece in source.pieces:
        lo, hi = max(start - offset, 0), min(stop - offset, piece.n_frames)
        if lo < hi:
            with h5py.File(piece.path, "r") as h5:
                dataset = h5[piece.dataset]
                codec = direct_chunk_codec(dataset)
                for k in range(lo, hi):
                    where = f"frame {k} of {piece.path}:{piece.dataset} (frame {offset + k})"
                    yield _task(dataset, codec, k, where, transform)
        offset += piece.n_frames


def _task(
    dataset: h5py.Dataset,
    codec: ChunkCodec | None,
    k: int,
    where: str,
    transform: Callable[[np.ndarray], T],
) -> Callable[[], T]:
    """Read frame ``k``'s chunk now (calling thread); decode + transform later (worker)."""
    if codec is None:
        frame = read_frame_h5py(dataset, k, where)
        return lambda: transform(frame)
    try:
        filter_mask, chunk = dataset.id.read_direct_chunk((k, 0, 0))
    except (OSError, RuntimeError, KeyError):  # not allocated (fill value) or unreadable
        frame = read_frame_h5py(dataset, k, where)
        return lambda: transform(frame)

    def decode_and_transform() -> T:
        try:
            frame = codec.decode(chunk, filter_mask)
        except ValueError as error:
            raise ValueError(f"{where} does not decompress (corrupt chunk?): {error}") from error
        return transform(frame)

    return decode_and_transform


def read_frame_h5py(dataset: h5py.Dataset, k: int, where: str) -> np.ndarray:
    """Frame ``k`` of ``dataset`` through h5py's filters; errors name ``where``."""
    try:
        return np.asarray(dataset[k])
    except (OSError, RuntimeError, KeyError) as error:
        raise ValueError(
            f"{where} cannot be read (truncated or corrupt HDF5?): {error}"
        ) from error
