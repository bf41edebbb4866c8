"""`FrameReducer`: lazy (dask) frame stacks → reduced products, locally or on a cluster."""

from __future__ import annotations

import contextlib
import sys
from collections import deque
from collections.abc import Callable, Generator, Iterable, Sequence
from functools import partial
from typing import Any, TypeVar

import numpy as np

from ..frames import FramePipeline, FrameSource
from ..reduction import CompiledReduction, ReducedFrames

__all__ = ["FrameReducer"]

T = TypeVar("T")


def _reduce_block(block: np.ndarray, reduction: CompiledReduction) -> np.ndarray:
    return reduction.reduce_packed(block, threads=1)


def _analyse_packed(
    packed: np.ndarray, reduction: CompiledReduction, analyse: Callable[..., T], index: int
) -> T:
    return analyse(reduction.unpack(packed), index)


def _reduce_frame(reduction: CompiledReduction, frame: np.ndarray) -> np.ndarray:
    return reduction.reduce_packed(frame, threads=1)[0]


class FrameReducer:
    """Reduce dask frame stacks one map at a time, with threads or a dask.distributed cluster.

    The offline analysis (`analyze_files`) and the replay of a stored experiment use one
    reducer for all the maps of an experiment: with a scheduler, the compiled sparse matrix
    is shipped to every worker once (``scatter(broadcast=True)``) and each block task refers
    to it, instead of pickling the matrix into every task. `analysed_each` submits every
    map at once and fits each map on a worker right after its reduction, so only the map
    results come back to the caller.

    Parameters
    ----------
    reduction : CompiledReduction
        The reduction of the frames' geometry (`compile_reduction`).
    scheduler : str, optional
        Address of a ``dask.distributed`` scheduler (``"tcp://host:8786"``); None (default)
        computes with dask's local threaded scheduler.
    progress : bool, optional
        Show dask's progress bar on stderr (default False).
    workers : int, optional
        Threads of the local decode-and-reduce pipeline (`reduce_source`); default the
        number of cores.

    Examples
    --------
    >>> import dask.array as da
    >>> from pyFAI.detectors import Detector
    >>> from opmap.analysis.geometry import DetectorGeometry
    >>> from opmap.analysis.reduction import ReductionPlan, compile_reduction
    >>> detector = Detector(pixel1=3e-4, pixel2=3e-4, max_shape=(541, 517))
    >>> geo = DetectorGeometry(detector, distance_m=0.1, poni1_m=0.081, poni2_m=0.0775)
    >>> plan = ReductionPlan.model_validate({"families": {"family": [
    ...     {"name": "perp", "azimuths_003_deg": [25, 160, 205, 345]}]}})
    >>> frames = da.ones((4, 541, 517), dtype=np.uint32, chunks=(2, 541, 517))
    >>> with FrameReducer(compile_reduction(plan, geo)) as reducer:
    ...     reduced = reducer.reduce(frames)
    >>> reduced.n_frames, reduced.profiles["perp:003"].shape
    (4, (4, 40))
    """

    def __init__(
        self,
        reduction: CompiledReduction,
        *,
        scheduler: str | None = None,
        progress: bool = False,
        workers: int | None = None,
    ) -> None:
        self.reduction = reduction
        self.progress = progress
        self.workers = workers
        self._pipeline: FramePipeline | None = None
        self.client: Any = None
        self._handle: Any = reduction
        if scheduler is not None:
            from distributed import Client

            self.client = Client(scheduler)
            # Ship the compiled matrix to every worker once; tasks then refer to it.
            self._handle = self.client.scatter(reduction, broadcast=True)

    def packed(self, frames: Any) -> np.ndarray:
        """Packed reduction of a dask stack, float32 (n_frames, ``reduction.n_outputs``).

        Parameters
        ----------
        frames : dask.array.Array
            Frames (n, H, W) of the reduction's detector shape, one whole frame per block
            along the last two axes.
        """
        return next(self.packed_each([frames]))

    def packed_each(self, stacks: Iterable[Any]) -> Generator[np.ndarray, None, None]:
        """Packed reductions of several dask stacks (e.g. one per map), yielded in order.

        With a scheduler every stack is submitted at once, in order (earlier stacks keep a
        higher priority on the cluster), and each result is yielded as soon as it is ready:
        the workers reduce the next maps while the caller analyses the one just yielded, so
        the cluster never idles between maps.  Locally each stack is computed when the
        caller asks for it (the local threads are the caller's cores).

        Parameters
        ----------
        stacks : iterable of dask.array.Array
            Frame stacks (n, H, W) as for `packed`.

        Yields
        ------
        numpy.ndarray
            float32 (n_frames, ``reduction.n_outputs``) of each stack, in the given order.
        """
        if self.client is None:
            for frames in stacks:
                yield np.asarray(self._local(self._lazy(frames)))
            return
        futures = [self.client.compute(self._lazy(frames)) for frames in stacks]
        for packed in self._in_order(futures):
            yield np.asarray(packed)

    def analysed_each(
        self, stacks: Iterable[Any], analyse: Callable[[ReducedFrames, int], T]
    ) -> Generator[T, None, None]:
        """``analyse(reduced, i)`` of each stack's reduced frames, yielded in order.

        With a scheduler the analysis runs on the workers as well, right after the stack's
        reduction, and every stack is submitted at once: the fits of the maps run in
        parallel like their reductions, and only the results come back (``analyse`` and
        its result are pickled; e.g. a `MapAnalysis`).  Locally each stack is reduced and
        analysed in this process when the caller asks for it.

        Parameters
        ----------
        stacks : iterable of dask.array.Array
            Frame stacks (n, H, W) as for `packed`, one per map.
        analyse : callable
            Called as ``analyse(reduced_frames, i)`` for the ``i``-th stack.
        """
        if self.client is None:
            for index, packed in enumerate(self.packed_each(stacks)):
                yield analyse(self.reduction.unpack(packed), index)
            return
        futures = []
        for index, frames in enumerate(stacks):
            packed = self.client.compute(self._lazy(frames))
            task = (_analyse_packed, packed, self._handle, analyse, index)
            futures.append(self.client.submit(*task, pure=False))
        yield from self._in_order(futures)

    def _in_order(self, futures: list[Any]) -> Generator[Any, None, None]:
        """Each future's result in order, dropping it once yielded; the rest cancelled."""
        pending = deque(futures)
        futures.clear()
        try:
            while pending:
                yield self._result(pending[0])
                pending.popleft()  # drop our reference: the workers free the result
        finally:
            for future in pending:
                future.cancel()

    def _lazy(self, frames: Any) -> Any:
        """The dask graph of the packed reduction of ``frames`` (one task per block)."""
        return frames.map_blocks(
            _reduce_block,
            self._handle,
            dtype=np.float32,
            drop_axis=2,
            chunks=(frames.chunks[0], (self.reduction.n_outputs,)),
        )

    def _result(self, future: Any) -> Any:
        if self.progress:
            from distributed import progress

            with contextlib.redirect_stdout(sys.stderr):
                progress(future)
        return future.result()

    def reduce(self, frames: Any) -> ReducedFrames:
        """Reduced products of a dask stack (n, H, W): ``reduction.unpack(packed(frames))``."""
        return self.reduction.unpack(self.packed(frames))

    def reduce_source(
        self,
        source: FrameSource,
        *,
        start: int = 0,
        stop: int | None = None,
        chunk_frames: int = 64,
    ) -> ReducedFrames:
        """Reduced products of frames ``start:stop`` of a `FrameSource` (n = stop − start).

        Locally (no scheduler) the frames stream through a `FramePipeline`: the compressed
        chunks are read in this thread while a pool of threads decodes each frame and
        reduces it (``reduce_packed`` of one frame) — reading, decompression and reduction
        overlap, and results come back in frame order.  With a scheduler, the frames go to
        the cluster as a dask stack of ``chunk_frames`` frames per block.
        """
        if self.client is not None:
            stop = source.n_frames if stop is None else stop
            return self.reduce(source.to_dask(chunk_frames=chunk_frames)[start:stop])
        if self._pipeline is None:
            self._pipeline = FramePipeline(workers=self.workers)
        rows = self._pipeline.map(
            source, partial(_reduce_frame, self.reduction), start=start, stop=stop
        )
        packed = np.array(list(rows), dtype=np.float32).reshape(-1, self.reduction.n_outputs)
        return self.reduction.unpack(packed)

    def analysed_source_each(
        self,
        source: FrameSource,
        bounds: Sequence[tuple[int, int]],
        analyse: Callable[[ReducedFrames, int], T],
        *,
        chunk_frames: int = 64,
    ) -> Generator[T, None, None]:
        """``analyse(reduced, i)`` of frames ``bounds[i]`` (start, stop) of ``source``.

        Locally each range streams through `reduce_source` when the caller asks for it;
        with a scheduler every range is submitted at once and reduced and analysed on the
        workers (`analysed_each`), ``chunk_frames`` frames per block.
        """
        if self.client is None:
            for index, (start, stop) in enumerate(bounds):
                yield analyse(self.reduce_source(source, start=start, stop=stop), index)
            return
        stack = source.to_dask(chunk_frames=chunk_frames)
        stacks = [stack[start:stop] for start, stop in bounds]
        with contextlib.closing(self.analysed_each(stacks, analyse)) as results:
            yield from results

    def _local(self, lazy: Any) -> Any:
        from dask.diagnostics import ProgressBar

        bar = ProgressBar(minimum=1.0, out=sys.stderr) if self.progress else None
        with bar if bar is not None else contextlib.nullcontext():
            return lazy.compute(scheduler="threads")

    def close(self) -> None:
        """Stop the local threads; close the distributed client (its scheduler keeps running)."""
        if self._pipeline is not None:
            self._pipeline.close()
            self._pipeline = None
        if self.client is not None:
            self.client.close()

    def __enter__(self) -> FrameReducer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
