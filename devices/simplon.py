"""Eiger over the Dectris SIMPLON REST API: the detector API of `opmap.devices.eiger` on HTTP.

`SimplonEiger` is a `StandardDetector` with the trigger / acquire / data logic pattern of
`Eiger`, whose driver signals (`SimplonDriverIO`) sit on `SimplonSignalBackend`: GET on
read, PUT ``{"value": ...}`` on set. Trigger modes (from ``TriggerInfo.trigger``):

=================  ======  ===========================================================
ophyd-async        SIMPLON  series
=================  ======  ===========================================================
``INTERNAL``       ints     ``nimages = N``, ``ntrigger = 1``; opmap sends ``trigger``
``EXTERNAL_EDGE``  exts     ``nimages = 1``, ``ntrigger = N``; each edge one exposure
``EXTERNAL_LEVEL`` exte     ``nimages = 1``, ``ntrigger = N``; each gate one exposure
=================  ======  ===========================================================

Every arm is a series with its own master file ``<filename>_NNNN_master.h5`` in the
directory of the path provider (the file writer's data directory as mounted where the
RunEngine runs); the stream resources describe its per-file links (`_simplon_series`).

An ``ints`` series is armed in ``prepare`` and triggered in ``kickoff``, so the kickoff
returns as the exposures start: a fly plan kicks off the stage (at speed when its kickoff
returns), then the detector, and the frames fall on the line (`_simplon_acquire`). A second
``prepare`` with the same `TriggerInfo` before the kickoff keeps the armed series; any other
disarms it first (its empty master file stays on disk, its name is not reused).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

from ophyd_async.core import (
    AsyncStatus,
    DetectorAcquireLogic,
    DetectorDataLogic,
    DetectorTrigger,
    DetectorTriggerLogic,
    Device,
    PathProvider,
    SignalDict,
    SignalR,
    StandardDetector,
    StreamableDataProvider,
    StrictEnum,
    TriggerInfo,
)

from ._eiger_layout import FRAMES_PER_FILE
from ._simplon_acquire import SeriesPlan, SeriesRunner
from ._simplon_client import SimplonClient, SimplonError, simplon_r, simplon_rw
from ._simplon_series import SeriesBook, SeriesStreamProvider

__all__ = ["SimplonDriverIO", "SimplonEiger", "SimplonError", "SimplonTriggerMode"]


class SimplonTriggerMode(StrictEnum):
    """Dectris trigger modes (``detector/config/trigger_mode``)."""

    INTS = "ints"
    INTE = "inte"
    EXTS = "exts"
    EXTE = "exte"
    EXTG = "extg"
    EIES = "eies"


class SimplonDriverIO(Device):
    """The SIMPLON resources opmap uses, as signals (units in the names)."""

    def __init__(self, client: SimplonClient, name: str = "") -> None:
        self.client = client
        det, fw = "detector", "filewriter"
        self.count_time_s = simplon_rw(float, client, det, "count_time", units="s")
        self.frame_time_s = simplon_rw(float, client, det, "frame_time", units="s")
        self.nimages = simplon_rw(int, client, det, "nimages")
        self.ntrigger = simplon_rw(int, client, det, "ntrigger")
        self.trigger_mode = simplon_rw(SimplonTriggerMode, client, det, "trigger_mode")
        self.compression = simplon_rw(str, client, det, "compression")
        self.beam_center_x_px = simplon_rw(float, client, det, "beam_center_x", units="pixel")
        self.beam_center_y_px = simplon_rw(float, client, det, "beam_center_y", units="pixel")
        self.detector_distance_m = simplon_rw(float, client, det, "detector_distance", units="m")
        self.wavelength_angstrom = simplon_rw(float, client, det, "wavelength", units="Å")
        self.readout_time_s = simplon_r(
            float, client, det, "config", "detector_readout_time", units="s"
        )
        self.width_px = simplon_r(int, client, det, "config", "x_pixels_in_detector")
        self.height_px = simplon_r(int, client, det, "config", "y_pixels_in_detector")
        self.bit_depth = simplon_r(int, client, det, "config", "bit_depth_image")
        self.state = simplon_r(str, client, det, "status", "state")
        self.fw_mode = simplon_rw(str, client, fw, "mode")
        self.fw_name_pattern = simplon_rw(str, client, fw, "name_pattern")
        self.fw_nimages_per_file = simplon_rw(int, client, fw, "nimages_per_file")
        self.fw_compression_enabled = simplon_rw(bool, client, fw, "compression_enabled")
        self.fw_state = simplon_r(str, client, fw, "status", "state")
        super().__init__(name=name)


def _check_exposure(count_time_s: float) -> float:
    if not (math.isfinite(count_time_s) and count_time_s > 0):
        raise ValueError(f"exposure (livetime) = {count_time_s} s must be > 0")
    return count_time_s


@dataclass
class SimplonTriggerLogic(DetectorTriggerLogic):
    """Trigger mode, count time, frame time, images and triggers, checked first."""

    driver: SimplonDriverIO
    runner: SeriesRunner

    def config_sigs(self) -> set[SignalR]:
        return {self.driver.count_time_s, self.driver.frame_time_s, self.driver.readout_time_s}

    def get_deadtime(self, config_values: SignalDict) -> float:
        return float(config_values[self.driver.readout_time_s])

    async def prepare_internal(self, num: int, livetime: float, deadtime: float) -> None:
        count_time_s = _check_exposure(livetime or await self.driver.count_time_s.get_value())
        readout_s = await self.driver.readout_time_s.get_value()
        frame_time_s = count_time_s + max(deadtime, readout_s)
        await self._configure(SimplonTriggerMode.INTS, count_time_s, frame_time_s, num, 1)
        self.runner.plan = SeriesPlan(SimplonTriggerMode.INTS.value, num, frame_time_s)

    async def prepare_edge(self, num: int, livetime: float) -> None:
        count_time_s = _check_exposure(livetime or await self.driver.count_time_s.get_value())
        frame_time_s = count_time_s + await self.driver.readout_time_s.get_value()
        await self._configure(SimplonTriggerMode.EXTS, count_time_s, frame_time_s, 1, num)
        self.runner.plan = SeriesPlan(SimplonTriggerMode.EXTS.value, num, frame_time_s)

    async def prepare_level(self, num: int) -> None:
        await self.driver.trigger_mode.set(SimplonTriggerMode.EXTE)
        await asyncio.gather(self.driver.nimages.set(1), self.driver.ntrigger.set(num))
        frame_time_s = await self.driver.frame_time_s.get_value()
        self.runner.plan = SeriesPlan(SimplonTriggerMode.EXTE.value, num, frame_time_s)

    async def _configure(
        self, mode: SimplonTriggerMode, count_s: float, frame_s: float, nimages: int, ntrig: int
    ) -> None:
        # count_time first: a DCU may move frame_time when count_time changes.
        await self.driver.trigger_mode.set(mode)
        await self.driver.count_time_s.set(count_s)
        await self.driver.frame_time_s.set(frame_s)
        await asyncio.gather(self.driver.nimages.set(nimages), self.driver.ntrigger.set(ntrig))


@dataclass
class SimplonAcquireLogic(DetectorAcquireLogic):
    """Arm (a new series and file name), trigger in ``ints``, wait, disarm."""

    runner: SeriesRunner

    async def ensure_ready(self) -> None:
        await self.runner.check_usable()
        await self.ensure_stopped()

    async def start_acquiring(self) -> None:
        await self.runner.start()

    async def wait_for_idle(self) -> None:
        await self.runner.wait()

    async def ensure_stopped(self) -> None:
        await self.runner.stop()


@dataclass
class SimplonDataLogic(DetectorDataLogic):
    """Dectris file writer: enabled, ``nimages_per_file``, bitshuffle-LZ4, a resource/series."""

    driver: SimplonDriverIO
    book: SeriesBook
    path_provider: PathProvider
    frames_per_file: int
    stream_v2: bool = False

    async def prepare_unbounded(self, datakey_name: str) -> StreamableDataProvider:
        info = self.path_provider(datakey_name)
        if self.stream_v2:  # the frames pushed as taken too (CBOR over ZeroMQ, port 31001)
            client = self.driver.client
            await client.put("stream", "config", "mode", "enabled")
            await client.put("stream", "config", "format", "cbor")
        await asyncio.gather(
            self.driver.fw_mode.set("enabled"),
            self.driver.fw_nimages_per_file.set(self.frames_per_file),
            self.driver.fw_compression_enabled.set(True),
            self.driver.compression.set("bslz4"),
        )
        width, height, bits = await asyncio.gather(
            self.driver.width_px.get_value(),
            self.driver.height_px.get_value(),
            self.driver.bit_depth.get_value(),
        )
        self.book.reset(datakey_name, info.directory_uri, info.filename, self.frames_per_file)
        dtype = {8: "|u1", 16: "<u2", 32: "<u4"}.get(int(bits), "<u4")
        source = self.driver.fw_name_pattern.source
        return SeriesStreamProvider(self.book, (int(height), int(width)), dtype, source)

    def get_hinted_fields(self, datakey_name: str) -> Sequence[str]:
        return [datakey_name]


class SimplonEiger(StandardDetector):
    """Dectris Eiger driven over SIMPLON HTTP (API 1.8.0 by default).

    Parameters
    ----------
    base_url
        ``http://host:port`` of the detector control unit.
    path_provider
        Directory (the file writer's data directory as mounted here) and file stem.
    api_version
        SIMPLON API version in the URLs.
    frames_per_file
        ``nimages_per_file`` of the file writer (Dectris default 1000).
    request_timeout_s
        Timeout of one ordinary HTTP request (s).
    external_timeout_s
        How long a series in ``exts`` / ``exte`` may wait for its triggers (s).
    stream_v2
        Also enable the DCU's stream v2 (``stream/config/mode`` ``enabled``, ``format``
        ``cbor``) when prepared, for a live analysis that takes its frames from it
        (`opmap.callbacks.stream_frames`); the files are written either way.
    name
        Device name (the frame data key).
    """

    def __init__(
        self,
        base_url: str,
        path_provider: PathProvider,
        *,
        api_version: str = "1.8.0",
        frames_per_file: int = FRAMES_PER_FILE,
        request_timeout_s: float = 10.0,
        external_timeout_s: float = 600.0,
        stream_v2: bool = False,
        name: str = "",
    ) -> None:
        self.client = SimplonClient(base_url, api_version, request_timeout_s, name or "eiger")
        self.driver = SimplonDriverIO(self.client)
        self.book = SeriesBook()
        self.runner = runner = SeriesRunner(self.driver, self.book, external_timeout_s)
        self._armed_for: TriggerInfo | None = None
        self.add_detector_logics(
            SimplonTriggerLogic(self.driver, runner),
            SimplonAcquireLogic(runner),
            SimplonDataLogic(self.driver, self.book, path_provider, frames_per_file, stream_v2),
        )
        self.add_config_signals(
            self.driver.beam_center_x_px,
            self.driver.beam_center_y_px,
            self.driver.detector_distance_m,
            self.driver.wavelength_angstrom,
        )
        super().__init__(name=name)

    @AsyncStatus.wrap
    async def prepare(self, value: TriggerInfo) -> None:
        """Configure the next series; an internally triggered one is armed here, so that
        its ``kickoff`` only triggers it (see the module notes).

        Parameters
        ----------
        value
            Frames, exposure and trigger of the series.
        """
        if await self._still_armed_for(value):
            return  # prepared twice before its kickoff: the armed series is this one
        await self.runner.release()
        self._armed_for = None
        await super().prepare(value)
        if value.trigger == DetectorTrigger.INTERNAL:
            await self.runner.arm()
            self._armed_for = value

    def series_start_window_s(self) -> tuple[float, float]:
        """Bounds (s, `time.time`) of when the last ``ints`` series started exposing.

        The ``trigger`` request left after the first; the DCU answered that it was past
        ``ready`` before the second. NaN before any ``ints`` series. A fly plan times the
        frames from the first and trusts that only when the two are close
        (`opmap.plans.frame_positions_um`).
        """
        return self.runner.start_window_s

    async def _still_armed_for(self, value: TriggerInfo) -> bool:
        # the DCU still holds that series (a restarted DCU has forgotten it)
        if self.runner.armed is None or value != self._armed_for:
            return False
        return await self.runner.state("detector") == "ready"

    def set_name(self, name: str, *, child_name_separator: str | None = None) -> None:
        """Name the device; errors of its HTTP client carry the name."""
        super().set_name(name, child_name_separator=child_name_separator)
        self.client.label = name or "eiger"

    async def aclose(self) -> None:
        """Close the HTTP connections (the device can connect again later)."""
        with contextlib.suppress(Exception):
            await self.client.aclose()
