"""Shared rig of the live-analysis tests: sim stage + sim Eiger rendering known rings.

The renderer draws a textured LiCoO2 (003) ring whose q follows a known c(x), a (110) ring,
a Ti (100) ring whose intensity peaks at a known height, and a flat background, through the
binned Eiger geometry, so every frame has a physical truth the analysis can recover.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from bluesky import RunEngine
from ophyd_async.core import StaticPathProvider, UUIDFilenameProvider, init_devices

from opmap.analysis.geometry import DetectorGeometry, eiger4m_detector
from opmap.devices.sim import SimClock, SimEiger, SimMapStage, metadata_from_integrator
from opmap.plans import MapGeometry

BINNING = 4
GEOMETRY = DetectorGeometry(
    eiger4m_detector(binning=BINNING), distance_m=0.1, poni1_m=0.0812, poni2_m=0.0776
)
SMALL_MAP = MapGeometry(
    z_start_um=18.0,
    z_step_um=1.0,
    z_count=4,
    x_start_um=0.0,
    x_stop_um=198.0,
    x_count=6,
    exposure_s=0.05,
)
TI_Z_UM = 19.6
#: Ti (100) of hcp Ti, a = 2.951 Å: d = a·√3/2 (the sample sits at the calibrated distance,
#: so the distance correction must read no offset from it).
TI_100_Q_INV_ANGSTROM = 2 * math.pi / (2.951 * math.sqrt(3.0) / 2.0)


def c_truth_angstrom(x_um: float) -> float:
    """The c lattice parameter the renderer draws at beam position ``x_um``."""
    return 14.0 + 0.3 * x_um / 200.0


class RingRenderer:
    """Frames of rings at known q (Poisson noise), for the `GEOMETRY` above."""

    def __init__(self) -> None:
        self.q = GEOMETRY.q_array()
        self.chi = GEOMETRY.chi_deg_array()

    def frame(self, x_um: float, z_um: float, rng: np.random.Generator) -> np.ndarray:
        q003 = 6 * math.pi / c_truth_angstrom(x_um)
        ring = 400 * np.exp(-0.5 * ((self.q - q003) / 0.008) ** 2)
        ring += 200 * np.exp(-0.5 * ((self.q - 4 * math.pi / 2.8035) / 0.008) ** 2)
        ti = 300 * math.exp(-0.5 * ((z_um - TI_Z_UM) / 0.7) ** 2)
        ring += ti * np.exp(-0.5 * ((self.q - TI_100_Q_INV_ANGSTROM) / 0.006) ** 2)
        return rng.poisson(ring + 5.0).astype(np.uint32)

    def render(self, scene, *, exposure_s, rng) -> np.ndarray:
        x_um = 0.5 * (scene.x_start_um + scene.x_stop_um)
        return self.frame(x_um, scene.z_um, rng)


class _Scene:
    def scene(self, *, z_um, x_start_um, x_stop_um, time_s):
        from opmap.twin import BeamScene

        return BeamScene(time_s, z_um, x_start_um, x_stop_um, layer_weights={"lco": 1.0})


@pytest.fixture
def RE() -> Iterator[RunEngine]:
    engine = RunEngine(call_returns_result=True)
    yield engine
    if engine.state != "idle":
        engine.halt()


def build_rig(
    directory: Path, *, x_following_lag_s: float = 0.0, frames_per_file: int | None = None
) -> tuple[SimMapStage, SimEiger]:
    """(stage, eiger) on one event-driven simulation clock, the Eiger writing into
    ``directory``; ``x_following_lag_s`` makes the stage's x lag its commanded trajectory."""
    clock = SimClock()
    files = {} if frames_per_file is None else {"frames_per_file": frames_per_file}
    with init_devices():
        stage = SimMapStage(clock, x_following_lag_s=x_following_lag_s)
        eiger = SimEiger(
            StaticPathProvider(UUIDFilenameProvider(), directory),
            clock,
            _Scene(),
            RingRenderer(),
            stage.x,
            stage.z,
            GEOMETRY.shape,
            metadata_from_integrator(GEOMETRY.integrator),
            **files,
        )
    return stage, eiger


@pytest.fixture
def rig(RE: RunEngine, tmp_path: Path):
    """(stage, eiger, detector directory) on one event-driven simulation clock."""
    directory = tmp_path / "detector"
    directory.mkdir()
    stage, eiger = build_rig(directory, frames_per_file=10)
    return stage, eiger, directory
