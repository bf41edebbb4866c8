"""Build the beamline's devices from one configuration file: simulated or real.

Code as configuration, in dodal's manner: one small factory per device, collaborators passed
in by parameter, nothing read from globals. ``profile/`` calls `build_beamline` with the
profile's TOML file; ``opmap rehearse`` calls it with a simulated configuration.

The real map stage and beam monitor have EPICS classes; real Eiger and potentiostat
backends are not written yet, so ``mode = "real"`` raises `BackendUnavailableError` saying
so, before anything connects.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ophyd_async.core import PathProvider, StaticPathProvider, UUIDFilenameProvider
from pydantic import BaseModel, ConfigDict, Field

from opmap.devices import Potentiostat, SafetyWindow

__all__ = [
    "BackendUnavailableError",
    "Beamline",
    "BeamlineConfig",
    "RealConfig",
    "SimConfig",
    "build_beamline",
    "load_beamline_config",
]


class BackendUnavailableError(RuntimeError):
    """A device backend that opmap does not provide yet was requested."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SimConfig(_Frozen):
    """The simulated beamline: the twin, the detector binning and the clock.

    Attributes
    ----------
    twin_config : Path or None
        A TOML/YAML `TwinConfig` file; None = the paper's values.
    binning : int
        Eiger 4M readout binning: 4 (541 × 517, fast rehearsal) or 1 (full 2167 × 2070).
    clock_mode : {"event-driven", "accelerated", "real-time"}
        How experiment time advances (see `opmap.devices.sim.SimClock`).
    speedup : float
        Experiment seconds per wall second in accelerated mode.
    seed : int or None
        The one seed of the simulation: every random draw (detector noise, the twin's grain
        births, rotations and deaths, its family modulation) comes from generators seeded
        from it. None = the twin configuration's ``seed`` (0 by default); a value overrides
        it.
    """

    twin_config: Path | None = None
    binning: int = Field(4, ge=1, le=16)
    clock_mode: Literal["event-driven", "accelerated", "real-time"] = "event-driven"
    speedup: float = Field(1.0, gt=0)
    seed: int | None = Field(None, ge=0)


class RealConfig(_Frozen):
    """EPICS prefixes of the real beamline."""

    stage_prefix: str = "BL:MAP:"
    beam_current_pv: str = "BL:SR:CURRENT"
    shutter_prefix: str = "BL:SHUTTER"


class BeamlineConfig(_Frozen):
    """Everything `build_beamline` needs.

    Attributes
    ----------
    mode : {"sim", "real"}
        Simulated devices on the twin, or EPICS devices.
    data_dir : Path
        Where detector files go (absolute, or relative to the config file).
    poni : Path or None
        Detector geometry; None in simulation = the twin's detector geometry.
    x_limits_um, z_limits_um : (float, float)
        Stage soft limits (µm).
    safety_window : dict
        `SafetyWindow` fields (potential V, |current| A).
    """

    mode: Literal["sim", "real"] = "sim"
    data_dir: Path = Path("opmap-data")
    poni: Path | None = None
    x_limits_um: tuple[float, float] = (-200.0, 2200.0)
    z_limits_um: tuple[float, float] = (-20.0, 60.0)
    safety_window: dict[str, float] = Field(default_factory=dict)
    sim: SimConfig = Field(default_factory=SimConfig)
    real: RealConfig = Field(default_factory=RealConfig)

    @property
    def window(self) -> SafetyWindow:
        """The potentiostat's hard safety window."""
        return SafetyWindow(**self.safety_window)


def load_beamline_config(path: str | Path) -> BeamlineConfig:
    """Read a `BeamlineConfig` from TOML; relative paths are taken from the file's folder."""
    path = Path(path)
    raw: dict[str, Any] = tomllib.loads(path.read_text())
    config = BeamlineConfig.model_validate(raw)
    folder = path.resolve().parent
    updates: dict[str, Any] = {"data_dir": folder / config.data_dir}
    if config.poni is not None:
        updates["poni"] = folder / config.poni
    if config.sim.twin_config is not None:
        updates["sim"] = config.sim.model_copy(
            update={"twin_config": folder / config.sim.twin_config}
        )
    return config.model_copy(update=updates)


@dataclass
class Beamline:
    """The devices of one session, and (in simulation) the twin and clock behind them."""

    config: BeamlineConfig
    stage: Any
    eiger: Any
    potentiostat: Potentiostat | None
    beam: Any
    sample_changer: Any
    integrator: Any
    twin: Any = None
    clock: Any = None
    #: The simulation's seed (None for real hardware).
    seed: int | None = None

    @property
    def devices(self) -> dict[str, Any]:
        """The bluesky devices by name, for a session namespace."""
        found = {
            "stage": self.stage,
            "eiger": self.eiger,
            "potentiostat": self.potentiostat,
            "beam": self.beam,
            "sample_changer": self.sample_changer,
        }
        return {name: device for name, device in found.items() if device is not None}


def detector_path_provider(data_dir: Path) -> PathProvider:
    """Detector files under ``data_dir/detector`` with unique (UUID) names: never overwritten."""
    folder = (data_dir / "detector").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return StaticPathProvider(UUIDFilenameProvider(), folder)


def build_beamline(config: BeamlineConfig) -> Beamline:
    """Create (not connect) the beamline's devices from ``config``.

    Call inside ``init_devices()`` after the RunEngine exists, so the devices connect in the
    RunEngine's event loop.
    """
    if config.mode == "sim":
        from opmap import _beamline_sim

        return _beamline_sim.build(config, detector_path_provider(config.data_dir))
    return _build_real(config)


def _build_real(config: BeamlineConfig) -> Beamline:
    raise BackendUnavailableError(
        "mode='real': opmap has EPICS classes for the map stage (opmap.devices.MapStage) and "
        "the beam monitor (opmap.devices.BeamMonitor), but no Eiger or potentiostat backend "
        "yet; use mode='sim' to rehearse"
    )
