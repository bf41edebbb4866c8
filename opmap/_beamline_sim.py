"""The simulated beamline: one twin, one clock, and the sim devices that share them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ophyd_async.core import PathProvider

from opmap.analysis.geometry import eiger4m_integrator, load_integrator
from opmap.beamline import Beamline, BeamlineConfig
from opmap.devices.sim import (
    CellTimeScene,
    ClockMode,
    SampleSwitchRenderer,
    SharedTime,
    SimBeamMonitor,
    SimClock,
    SimEiger,
    SimMapStage,
    SimPotentiostat,
    SimSampleChanger,
    metadata_from_integrator,
)
from opmap.twin import CellTwin, TwinConfig
from opmap.twin.forward import (
    DetectorMask,
    DiffractionConfig,
    DiffractionRenderer,
    ring_visibility,
)

#: Li (110) ring position used to decide which grain azimuths the detector records (Å⁻¹).
LI_110_Q_INV_ANGSTROM = 2.545

#: ``"wall"`` is not here: it is two clocks (`SharedTime`), see `_Clocks`.
_CLOCK_MODES = {
    "event-driven": ClockMode.EVENT_DRIVEN,
    "accelerated": ClockMode.ACCELERATED,
    "real-time": ClockMode.REAL_TIME,
}


def twin_config(config: BeamlineConfig) -> TwinConfig:
    """The twin's configuration: the file named in ``config.sim``, or the paper's values.

    ``config.sim.seed``, when set, replaces the file's seed: one seed for the whole simulation.
    """
    path = config.sim.twin_config
    twin = TwinConfig() if path is None else TwinConfig.from_file(path)
    if config.sim.seed is not None:
        twin = twin.model_copy(update={"seed": config.sim.seed})
    return twin


def integrator(config: BeamlineConfig):
    """The simulated detector geometry: the configured PONI, or the twin's default."""
    shape_binning = config.sim.binning
    if config.poni is None:
        return eiger4m_integrator(binning=shape_binning)
    expected = eiger4m_integrator(binning=shape_binning).detector.shape
    return load_integrator(config.poni, expected_shape=expected)


@dataclass(frozen=True)
class TwinParts:
    """The twin and what renders it: shared by the in-process beamline and sim-beamline."""

    twin: CellTwin
    integrator: Any
    changer: SimSampleChanger
    cell: DiffractionRenderer
    renderer: SampleSwitchRenderer


def build_twin(config: BeamlineConfig) -> TwinParts:
    """The twin of ``config.sim``, its forward model and the sample changer it consults."""
    ai = integrator(config)
    mask = DetectorMask()
    cell_config = twin_config(config)  # its seed is the simulation's
    twin = CellTwin(
        cell_config,
        visible=ring_visibility(ai, mask, q_inv_angstrom=LI_110_Q_INV_ANGSTROM,
                                spot_fwhm_deg=cell_config.lithium.spot_fwhm_deg),
    )  # fmt: skip
    changer = SimSampleChanger(name="sample_changer")
    cell = DiffractionRenderer(ai, DiffractionConfig(), twin.families, mask=mask)
    renderer = SampleSwitchRenderer(changer, cell, ai, mask)
    return TwinParts(twin, ai, changer, cell, renderer)


@dataclass(frozen=True)
class _Clocks:
    """The devices' clock (stage, detector, beam) and the cell's (potentiostat, twin)."""

    devices: SimClock
    cell: SimClock
    shared: SharedTime | None = None  # wall mode: the device clock is wall, the cell faster

    @classmethod
    def of(cls, sim: Any) -> _Clocks:
        """One clock for everything, or in ``"wall"`` mode `SharedTime`'s two."""
        if sim.clock_mode == "wall":
            shared = SharedTime(sim.speedup)
            return cls(shared.wall, shared.cell, shared)
        clock = SimClock(
            _CLOCK_MODES[sim.clock_mode],
            speedup=sim.speedup if sim.clock_mode == "accelerated" else 1.0,
        )
        return cls(clock, clock)

    def scene_source(self, twin: CellTwin) -> Any:
        """What the detector sees at a time of the device clock."""
        return twin if self.shared is None else CellTimeScene(twin, self.shared)


def build(config: BeamlineConfig, path_provider: PathProvider) -> Beamline:
    """Create the simulated devices (not connected) around one twin and its clock(s)."""
    clocks = _Clocks.of(config.sim)
    clock = clocks.devices
    parts = build_twin(config)
    ai, twin, changer, cell, renderer = (
        parts.integrator, parts.twin, parts.changer, parts.cell, parts.renderer
    )  # fmt: skip
    stage = SimMapStage(
        clock, x_limits_um=config.x_limits_um, z_limits_um=config.z_limits_um, name="stage"
    )
    eiger = SimEiger(
        path_provider,
        clock,
        clocks.scene_source(twin),
        renderer,
        stage.x,
        stage.z,
        cell.shape,
        metadata_from_integrator(ai),
        seed=twin.config.seed,
        name="eiger",
    )
    potentiostat = SimPotentiostat(
        twin.electrochemistry, clocks.cell, config.window, name="potentiostat"
    )
    beam = SimBeamMonitor(clock, name="beam")
    return Beamline(
        config=config,
        stage=stage,
        eiger=eiger,
        potentiostat=potentiostat,
        beam=beam,
        sample_changer=changer,
        integrator=ai,
        twin=twin,
        clock=clocks.cell,
        seed=twin.config.seed,
    )
