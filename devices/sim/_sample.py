"""Simulated sample changer: the battery cell or a calibrant powder in the beam.

The real beamline moves a calibrant (CeO2 or corundum) into the beam for the detector
geometry; in simulation the changer tells `SampleSwitchRenderer` which pattern the Eiger
records: the twin's cell, or the calibrant rendered through pyFAI's calibrant rings.
"""

from __future__ import annotations

import numpy as np
from ophyd_async.core import AsyncStatus, StandardReadable, StrictEnum, soft_signal_rw
from pyFAI.integrator.azimuthal import AzimuthalIntegrator

from opmap.twin import BeamScene
from opmap.twin.forward import DetectorMask, render_calibrant

from ._eiger import FrameRenderer


class SamplePosition(StrictEnum):
    """What sits in the beam."""

    CELL = "cell"
    CE_O2 = "CeO2"
    AL2O3 = "alpha_Al2O3"


class SimSampleChanger(StandardReadable):
    """A `Movable` that puts the cell or a calibrant in the beam (instantly, in simulation)."""

    def __init__(self, name: str = "") -> None:
        with self.add_children_as_readables():
            self.position = soft_signal_rw(SamplePosition, SamplePosition.CELL)
        self.current = SamplePosition.CELL
        super().__init__(name=name)

    @AsyncStatus.wrap
    async def set(self, value: SamplePosition | str) -> None:
        """Put ``value`` (a `SamplePosition` or its string) in the beam."""
        position = SamplePosition(value)
        await self.position.set(position)
        self.current = position


class SampleSwitchRenderer:
    """A `FrameRenderer` that renders the cell or, when a calibrant is in, its rings.

    Parameters
    ----------
    changer
        The sample changer consulted at every frame.
    cell
        The forward model of the cell.
    ai, mask
        Detector geometry and mask for the calibrant pattern.
    calibrant_counts_per_s
        Peak count rate of the strongest calibrant ring (counts/s per pixel).
    """

    def __init__(
        self,
        changer: SimSampleChanger,
        cell: FrameRenderer,
        ai: AzimuthalIntegrator,
        mask: DetectorMask,
        *,
        calibrant_counts_per_s: float = 400_000.0,
    ) -> None:
        if not calibrant_counts_per_s > 0:
            raise ValueError(f"calibrant_counts_per_s={calibrant_counts_per_s} must be > 0")
        self.changer = changer
        self.cell = cell
        self.ai = ai
        self.mask = mask
        self.calibrant_counts_per_s = calibrant_counts_per_s

    def render(
        self, scene: BeamScene, *, exposure_s: float, rng: np.random.Generator
    ) -> np.ndarray:
        """Counts of one frame (uint32, detector shape) for whatever is in the beam."""
        if self.changer.current == SamplePosition.CELL:
            return self.cell.render(scene, exposure_s=exposure_s, rng=rng)
        return render_calibrant(
            self.ai,
            self.changer.current.value,
            peak_counts=self.calibrant_counts_per_s * exposure_s,
            mask=self.mask,
            rng=rng,
        )
