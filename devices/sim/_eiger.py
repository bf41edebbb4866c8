"""Simulated Eiger: renders the twin at the stage position and writes Dectris files.

Each frame integrates the sample over its exposure: the scene is asked for the beam's x
travel during the exposure (from the stage trajectory on the simulation clock) and the
experiment time at mid-exposure; the renderer turns it into counts.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from ophyd_async.core import (
    DetectorAcquireLogic,
    DetectorDataLogic,
    DetectorTriggerLogic,
    PathProvider,
    StandardDetector,
    StreamableDataProvider,
    StreamResourceDataProvider,
    StreamResourceInfo,
    TriggerInfo,
    soft_signal_r_and_setter,
)

from opmap.devices._eiger_layout import (
    DATA_PATH,
    FRAMES_PER_FILE,
    TIME_PATH,
    X_PATH,
    EigerMetadata,
)
from opmap.twin import BeamScene

from ._clock import ClockMode, SharedTime, SimClock
from ._eiger_writer import DectrisWriter

__all__ = [
    "CellTimeScene",
    "FrameRenderer",
    "PositionSource",
    "SceneSource",
    "SimEiger",
    "metadata_from_integrator",
]


class SceneSource(Protocol):
    """What lies in the beam (the twin's ``CellTwin.scene``)."""

    def scene(
        self, *, z_um: float, x_start_um: float, x_stop_um: float, time_s: float
    ) -> BeamScene: ...


@dataclass(frozen=True)
class CellTimeScene:
    """A scene source asked at wall times of ``time.wall``: the cell at ``time``'s cell time.

    Parameters
    ----------
    source
        What lies in the beam, in cell time (the twin).
    time
        The wall and cell clocks (`SharedTime`).
    """

    source: SceneSource
    time: SharedTime

    def scene(
        self, *, z_um: float, x_start_um: float, x_stop_um: float, time_s: float
    ) -> BeamScene:
        """The scene at wall time ``time_s`` of ``time.wall`` (the cell at its cell time)."""
        return self.source.scene(
            z_um=z_um,
            x_start_um=x_start_um,
            x_stop_um=x_stop_um,
            time_s=self.time.cell_time_s(time_s),
        )


class FrameRenderer(Protocol):
    """The forward model: a scene to detector counts (uint32, frame shape)."""

    def render(
        self, scene: BeamScene, *, exposure_s: float, rng: np.random.Generator
    ) -> np.ndarray: ...


class PositionSource(Protocol):
    """An axis whose position (µm) is known at any experiment time (`SimAxis`)."""

    def position_at_um(self, time_s: float) -> float: ...


def metadata_from_integrator(ai: Any) -> EigerMetadata:
    """`EigerMetadata` of a pyFAI ``AzimuthalIntegrator`` (untilted geometry assumed)."""
    return EigerMetadata(
        x_pixel_size_m=float(ai.detector.pixel2),
        y_pixel_size_m=float(ai.detector.pixel1),
        detector_distance_m=float(ai.dist),
        beam_center_x_px=float(ai.poni2 / ai.detector.pixel2),
        beam_center_y_px=float(ai.poni1 / ai.detector.pixel1),
        wavelength_angstrom=float(ai.wavelength * 1e10),
        description="Dectris EIGER X 4M (opmap simulation)",
    )


#: Tag of the detector-noise generators (the twin's generators use other tags).
_NOISE_STREAM = 0xE16E

#: Threads rendering the frames of a series (the forward model's kernels release the GIL).
RENDER_THREADS = min(4, os.cpu_count() or 1)


@dataclass
class _Acquisition:
    """State shared by the trigger, acquire and data logics of one `SimEiger`."""

    clock: SimClock
    scene: SceneSource
    renderer: FrameRenderer
    x_axis: PositionSource
    z_axis: PositionSource
    seed: int
    count_time_s: float = 0.05
    frame_time_s: float = 0.05
    frames_requested: int = 0
    #: Frames rendered since the device was built: the noise stream of the next frame.
    frames_rendered: int = 0
    writer: DectrisWriter | None = None
    frames_written: Any = None
    _set_frames_written: Any = None
    task: asyncio.Task | None = field(default=None, repr=False)
    pool: concurrent.futures.ThreadPoolExecutor | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.frames_written, self._set_frames_written = soft_signal_r_and_setter(int, 0)

    async def run(self) -> None:
        writer = self.writer
        if writer is None:
            raise RuntimeError("the data logic has not opened a file")
        n_frames, start_s = self.frames_requested, self.clock.now_s()
        first_index, self.frames_rendered = self.frames_rendered, self.frames_rendered + n_frames
        if self.clock.mode == ClockMode.EVENT_DRIVEN:
            await self._run_at_once(writer, n_frames, start_s, first_index)
        else:
            await self._run_as_exposed(writer, n_frames, start_s, first_index)
        writer.sync()  # the series is complete: the master maps exactly its frames
        self._set_frames_written(writer.frames_written)

    async def _run_at_once(
        self, writer: DectrisWriter, n_frames: int, start_s: float, first_index: int
    ) -> None:
        # Event-driven: the series is one wait on the clock (frame times are known in
        # advance), then every frame is rendered for its own exposure window: the stage
        # positions and the twin's state are functions of time. Rendering runs in worker
        # threads (the forward model's kernels release the GIL) through the clock, which
        # hands the results back in order (no thread timing reaches the experiment). Each
        # frame's noise is seeded by (seed, the device's frame number since it was built),
        # unique across the maps of a session and independent of the number of threads.
        await self.clock.sleep(n_frames * self.frame_time_s)
        starts_s = start_s + self.frame_time_s * np.arange(n_frames)
        scenes = [self._scene(t0_s) for t0_s in starts_s]
        frames = await asyncio.gather(
            *(
                self.clock.run_in_thread(self._pool(), self._render, scene, first_index + k)
                for k, scene in enumerate(scenes)
            )
        )
        self._write(writer, scenes, frames)

    async def _run_as_exposed(
        self, writer: DectrisWriter, n_frames: int, start_s: float, first_index: int
    ) -> None:
        # Wall-clock modes: as a detector, each frame is rendered once its exposure has
        # ended (the stage trajectories are known up to now) while the next ones are
        # exposed, and written, in order, as soon as it and the frames before it are done
        # (``frames_written`` counts up through the series). Rendering after the whole
        # series instead made frames late by the series' render time, and a series longer
        # than a waiter's frame timeout (~10 s) timed out with nothing written.
        loop = asyncio.get_running_loop()
        pending: collections.deque[tuple[BeamScene, asyncio.Future]] = collections.deque()
        for k in range(n_frames):
            t0_s = start_s + k * self.frame_time_s
            await self.clock.sleep_until(t0_s + self.frame_time_s)
            scene = self._scene(t0_s)
            job = loop.run_in_executor(self._pool(), self._render, scene, first_index + k)
            pending.append((scene, job))
            self._write_done(writer, pending)
        while pending:
            await pending[0][1]
            self._write_done(writer, pending)

    def _write_done(
        self, writer: DectrisWriter, pending: collections.deque[tuple[BeamScene, Any]]
    ) -> None:
        """Write the rendered frames at the head of ``pending`` (series order)."""
        done = []
        while pending and pending[0][1].done():
            scene, job = pending.popleft()
            done.append((scene, job.result()))
        if done:
            self._write(writer, [d[0] for d in done], [d[1] for d in done])
            self._set_frames_written(writer.frames_written)

    @staticmethod
    def _write(writer: DectrisWriter, scenes: Sequence[BeamScene], frames: Sequence[Any]) -> None:
        writer.write_many(
            frames,
            x_um=np.array([0.5 * (sc.x_start_um + sc.x_stop_um) for sc in scenes]),
            time_s=np.array([sc.time_s for sc in scenes]),
        )

    def _scene(self, t0_s: float) -> BeamScene:
        t1_s = t0_s + self.count_time_s
        x0, x1 = self.x_axis.position_at_um(t0_s), self.x_axis.position_at_um(t1_s)
        mid_s = 0.5 * (t0_s + t1_s)
        return self.scene.scene(
            z_um=self.z_axis.position_at_um(mid_s), x_start_um=x0, x_stop_um=x1, time_s=mid_s
        )

    def _render(self, scene: BeamScene, frame_index: int) -> np.ndarray:
        rng = np.random.default_rng((self.seed, _NOISE_STREAM, frame_index))
        return np.asarray(self.renderer.render(scene, exposure_s=self.count_time_s, rng=rng))

    def _pool(self) -> concurrent.futures.ThreadPoolExecutor:
        if self.pool is None:
            self.pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=RENDER_THREADS, thread_name_prefix="sim-eiger-render"
            )
        return self.pool


@dataclass
class _TriggerLogic(DetectorTriggerLogic):
    acq: _Acquisition
    min_deadtime_s: float = 1e-7

    def get_deadtime(self, config_values: Any) -> float:
        return self.min_deadtime_s

    async def prepare_internal(self, num: int, livetime: float, deadtime: float) -> None:
        count_time_s = livetime or self.acq.count_time_s  # 0 means "as currently set"
        if not (math.isfinite(count_time_s) and count_time_s > 0):
            raise ValueError(f"exposure (livetime) = {count_time_s} s must be > 0")
        self.acq.count_time_s = count_time_s
        self.acq.frame_time_s = count_time_s + max(deadtime, self.min_deadtime_s)
        self.acq.frames_requested = num

    async def default_trigger_info(self) -> TriggerInfo:
        return TriggerInfo(livetime=self.acq.count_time_s)


@dataclass
class _AcquireLogic(DetectorAcquireLogic):
    acq: _Acquisition

    async def start_acquiring(self) -> None:
        self.acq.task = asyncio.ensure_future(self.acq.run())

    async def wait_for_idle(self) -> None:
        if self.acq.task is not None:
            await self.acq.task

    async def ensure_stopped(self) -> None:
        if self.acq.task is not None:
            self.acq.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.acq.task
            self.acq.task = None


@dataclass
class _DataLogic(DetectorDataLogic):
    acq: _Acquisition
    path_provider: PathProvider
    frame_shape: tuple[int, int]
    metadata: EigerMetadata
    frames_per_file: int

    async def prepare_unbounded(self, datakey_name: str) -> StreamableDataProvider:
        info = self.path_provider(datakey_name)
        self.acq.writer = DectrisWriter(
            info.directory_path,
            info.filename,
            self.frame_shape,
            self.metadata,
            count_time_s=self.acq.count_time_s,
            frame_time_s=self.acq.frame_time_s,
            frames_per_file=self.frames_per_file,
        )
        self.acq._set_frames_written(0)
        h, w = self.frame_shape
        resources = [
            StreamResourceInfo(
                data_key=datakey_name,
                shape=(h, w),
                chunk_shape=(1, h, w),
                dtype_numpy=np.dtype(np.uint32).str,
                parameters={"dataset": DATA_PATH},
            ),
            *(
                StreamResourceInfo(
                    data_key=f"{datakey_name}-{key}",
                    shape=(),
                    chunk_shape=(self.frames_per_file,),
                    dtype_numpy=np.dtype(np.float64).str,
                    parameters={"dataset": path},
                )
                for key, path in (("x_um", X_PATH), ("time_s", TIME_PATH))
            ),
        ]
        return StreamResourceDataProvider(
            uri=f"{info.directory_uri}{info.filename}_master.h5",
            resources=resources,
            mimetype="application/x-hdf5",
            collections_written_signal=self.acq.frames_written,
        )

    async def stop(self) -> None:
        if self.acq.writer is not None:
            self.acq.writer.close()
            self.acq.writer = None

    def get_hinted_fields(self, datakey_name: str) -> Sequence[str]:
        return [datakey_name]


class SimEiger(StandardDetector):
    """Simulated Eiger X 4M writing the Dectris layout; one frame per trigger/fly bin.

    Parameters
    ----------
    path_provider
        Where files go (absolute directory) and their name stem.
    clock
        Shared simulation clock.
    scene_source
        The twin (``CellTwin``): what the beam sees.
    renderer
        The forward model (``FrameRenderer``).
    x_axis, z_axis
        Stage axes, asked for their position at any experiment time.
    frame_shape
        Detector shape (rows, columns), e.g. the 4x4-binned Eiger (541, 517).
    metadata
        Geometry for the master file (see `metadata_from_integrator`).
    frames_per_file
        Frames per data file (Dectris default 1000).
    seed
        Seed of the Poisson noise: frame n of the device's life draws from a generator seeded
        by (seed, tag, n), so every frame of every map has its own noise.
    name
        Device name (the frame data key).
    """

    def __init__(
        self,
        path_provider: PathProvider,
        clock: SimClock,
        scene_source: SceneSource,
        renderer: FrameRenderer,
        x_axis: PositionSource,
        z_axis: PositionSource,
        frame_shape: tuple[int, int],
        metadata: EigerMetadata,
        *,
        frames_per_file: int = FRAMES_PER_FILE,
        seed: int = 0,
        name: str = "",
    ) -> None:
        self.acquisition = _Acquisition(clock, scene_source, renderer, x_axis, z_axis, seed)
        self.add_detector_logics(
            _TriggerLogic(self.acquisition),
            _AcquireLogic(self.acquisition),
            _DataLogic(self.acquisition, path_provider, frame_shape, metadata, frames_per_file),
        )
        super().__init__(name=name)
