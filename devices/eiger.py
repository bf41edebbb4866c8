"""Eiger X 4M: the detector API, on the areaDetector ADEiger driver and its file writer.

`Eiger` is a `StandardDetector` composed of trigger / acquire / data logic over
`EigerDriverIO` (ADEiger PV names). The same detector API straight on the Dectris SIMPLON
REST API (no IOC) is `opmap.devices.simplon.SimplonEiger`; see docs/real-hardware.md.
The simulated backend (`opmap.devices.sim.SimEiger`)
emits the same documents: the frame key ``<name>`` of shape ``[1, H, W]`` (ophyd-async's
convention, one frame per event), plus
``<name>-x_um`` and ``<name>-time_s`` in the simulation.

The Dectris file writer produces ``<pattern>_master.h5`` and ``<pattern>_data_NNNNNN.h5``
(layout in `opmap.devices._eiger_layout`). The stream resource points at the master's
``/entry/data/data``; the Dectris master has only the per-file links, so a real beamline
adds that virtual dataset when the file writer opens the master (not done yet here).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from ophyd_async.core import (
    DetectorAcquireLogic,
    DetectorDataLogic,
    DetectorTriggerLogic,
    Device,
    PathProvider,
    SignalDict,
    SignalR,
    StandardDetector,
    StreamableDataProvider,
    StreamResourceDataProvider,
    StreamResourceInfo,
    StrictEnum,
    set_and_wait_for_value,
    wait_for_value,
)
from ophyd_async.epics.core import epics_signal_r, epics_signal_rw, epics_signal_rw_rbv

from ._eiger_layout import DATA_PATH, FRAMES_PER_FILE

__all__ = ["Eiger", "EigerDriverIO", "EigerTriggerMode"]

#: Eiger X read-out dead time between frames (s).
EIGER_DEADTIME_S = 1e-7


class EigerTriggerMode(StrictEnum):
    """ADEiger trigger modes."""

    INTERNAL_SERIES = "Internal Series"
    INTERNAL_ENABLE = "Internal Enable"
    EXTERNAL_SERIES = "External Series"
    EXTERNAL_ENABLE = "External Enable"


class EigerDriverIO(Device):
    """The ADEiger driver signals opmap uses (``{prefix}cam1:...``)."""

    def __init__(self, prefix: str, name: str = "") -> None:
        cam = f"{prefix}cam1:"
        self.count_time_s = epics_signal_rw_rbv(float, f"{cam}AcquireTime")
        self.frame_time_s = epics_signal_rw_rbv(float, f"{cam}AcquirePeriod")
        self.nimages = epics_signal_rw_rbv(int, f"{cam}NumImages")
        self.ntrigger = epics_signal_rw_rbv(int, f"{cam}NumTriggers")
        self.trigger_mode = epics_signal_rw_rbv(EigerTriggerMode, f"{cam}TriggerMode")
        self.acquire = epics_signal_rw(bool, f"{cam}Acquire", f"{cam}Acquire")
        self.frames_written = epics_signal_r(int, f"{cam}NumImagesCounter_RBV")
        self.fw_enable = epics_signal_rw_rbv(bool, f"{cam}FWEnable")
        self.fw_name_pattern = epics_signal_rw_rbv(str, f"{cam}FWNamePattern")
        self.fw_nimages_per_file = epics_signal_rw_rbv(int, f"{cam}FWNImagesPerFile")
        self.beam_center_x_px = epics_signal_rw_rbv(float, f"{cam}BeamX")
        self.beam_center_y_px = epics_signal_rw_rbv(float, f"{cam}BeamY")
        self.detector_distance_m = epics_signal_rw_rbv(float, f"{cam}DetDist")
        self.wavelength_angstrom = epics_signal_rw_rbv(float, f"{cam}Wavelength")
        super().__init__(name=name)


@dataclass
class EigerTriggerLogic(DetectorTriggerLogic):
    """Internal series: count time, frame time and number of images, checked first."""

    driver: EigerDriverIO

    def config_sigs(self) -> set[SignalR]:
        return {self.driver.count_time_s, self.driver.frame_time_s}

    def get_deadtime(self, config_values: SignalDict) -> float:
        return EIGER_DEADTIME_S

    async def prepare_internal(self, num: int, livetime: float, deadtime: float) -> None:
        count_time_s = livetime or await self.driver.count_time_s.get_value()
        if not (math.isfinite(count_time_s) and count_time_s > 0):
            raise ValueError(f"exposure (livetime) = {count_time_s} s must be > 0")
        await self.driver.trigger_mode.set(EigerTriggerMode.INTERNAL_SERIES)
        await self.driver.count_time_s.set(count_time_s)
        await self.driver.frame_time_s.set(count_time_s + max(deadtime, EIGER_DEADTIME_S))
        await asyncio.gather(self.driver.nimages.set(num), self.driver.ntrigger.set(1))


@dataclass
class EigerAcquireLogic(DetectorAcquireLogic):
    """Arm with ``Acquire = 1``; idle when it reads back 0."""

    driver: EigerDriverIO

    async def start_acquiring(self) -> None:
        # Acquire's put completes only when the series ends: do not wait for it here.
        await set_and_wait_for_value(self.driver.acquire, True, wait_for_set_completion=False)

    async def wait_for_idle(self) -> None:
        await wait_for_value(self.driver.acquire, False, timeout=None)

    async def ensure_stopped(self) -> None:
        await set_and_wait_for_value(self.driver.acquire, False)


@dataclass
class EigerDataLogic(DetectorDataLogic):
    """Dectris file writer: name pattern from the path provider, frames in the master."""

    driver: EigerDriverIO
    path_provider: PathProvider
    frame_shape: tuple[int, int]

    async def prepare_unbounded(self, datakey_name: str) -> StreamableDataProvider:
        info = self.path_provider(datakey_name)
        await asyncio.gather(
            self.driver.fw_name_pattern.set(info.filename),
            self.driver.fw_nimages_per_file.set(FRAMES_PER_FILE),
            self.driver.fw_enable.set(True),
        )
        h, w = self.frame_shape
        frames = StreamResourceInfo(
            data_key=datakey_name,
            shape=(h, w),
            chunk_shape=(1, h, w),
            dtype_numpy=np.dtype(np.uint32).str,
            parameters={"dataset": DATA_PATH},
        )
        return StreamResourceDataProvider(
            uri=f"{info.directory_uri}{info.filename}_master.h5",
            resources=[frames],
            mimetype="application/x-hdf5",
            collections_written_signal=self.driver.frames_written,
        )

    def get_hinted_fields(self, datakey_name: str) -> Sequence[str]:
        return [datakey_name]


class Eiger(StandardDetector):
    """Dectris Eiger X 4M on ADEiger.

    Parameters
    ----------
    prefix
        PV prefix of the IOC.
    path_provider
        Directory and name pattern of the file writer.
    frame_shape
        Detector shape (rows, columns): (2167, 2070) for the Eiger X 4M.
    name
        Device name (the frame data key).
    """

    def __init__(
        self,
        prefix: str,
        path_provider: PathProvider,
        frame_shape: tuple[int, int] = (2167, 2070),
        name: str = "",
    ) -> None:
        self.driver = EigerDriverIO(prefix)
        self.add_detector_logics(
            EigerTriggerLogic(self.driver),
            EigerAcquireLogic(self.driver),
            EigerDataLogic(self.driver, path_provider, frame_shape),
        )
        self.add_config_signals(
            self.driver.beam_center_x_px,
            self.driver.beam_center_y_px,
            self.driver.detector_distance_m,
            self.driver.wavelength_angstrom,
        )
        super().__init__(name=name)
