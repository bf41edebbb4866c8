"""Build the beamline's devices from one configuration file: simulated or real.

Code as configuration, in dodal's manner: one small factory per device, collaborators passed
in by parameter, nothing read from globals. ``profile/`` calls `build_beamline` with the
profile's TOML file; ``opmap rehearse`` calls it with a simulated configuration.

``mode = "real"`` builds the EPICS map stage, potentiostat and beam monitor and the Eiger
over SIMPLON (or ophyd-async's FastCS Eiger) at the addresses of `RealConfig`
(`opmap._beamline_real`); ``opmap rehearse --control network`` builds the same devices
pointing at ``opmap sim-beamline``.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ophyd_async.core import PathProvider, StaticPathProvider, UUIDFilenameProvider
from pydantic import BaseModel, ConfigDict, Field, model_validator

from opmap.devices import Potentiostat, SafetyWindow

__all__ = [
    "Beamline",
    "BeamlineConfig",
    "RealConfig",
    "SimConfig",
    "build_beamline",
    "load_beamline_config",
]


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
    clock_mode : {"event-driven", "accelerated", "real-time", "wall"}
        How experiment time advances (see `opmap.devices.sim.SimClock`). ``"wall"``: the
        time base of ``opmap sim-beamline`` (`opmap.devices.sim.SharedTime`) in process:
        motor moves, exposures and the beam monitor in wall time, the cell
        (electrochemistry, and the twin each frame sees) at ``speedup`` × wall time.
    speedup : float
        Experiment seconds per wall second in accelerated mode; cell seconds per wall
        second in wall mode.
    seed : int or None
        The one seed of the simulation: every random draw (detector noise, the twin's grain
        births, rotations and deaths, its family modulation) comes from generators seeded
        from it. None = the twin configuration's ``seed`` (0 by default); a value overrides
        it.
    """

    twin_config: Path | None = None
    binning: int = Field(4, ge=1, le=16)
    clock_mode: Literal["event-driven", "accelerated", "real-time", "wall"] = "event-driven"
    speedup: float = Field(1.0, gt=0)
    seed: int | None = Field(None, ge=0)


class RealConfig(_Frozen):
    """Where the real beamline's devices are: EPICS prefixes and the detector's address.

    Attributes
    ----------
    stage_prefix : str
        `MapStage`: motor records ``$(P)X`` and ``$(P)Z`` (µm).
    potentiostat_prefix : str
        The potentiostat IOC's ``$(P)`` (the PV table in docs/real-hardware.md).
    beam_current_pv : str
        Ring current (mA).
    shutter_prefix : str
        Shutter ``$(P)Pos-Sts`` / ``$(P)Cmd``.
    sample_changer_pv : str or None
        A string PV naming the sample in the beam (None: no changer).
    detector : {"simplon", "fastcs"}
        ``"simplon"``: `SimplonEiger` on the DCU's SIMPLON REST API; ``"fastcs"``:
        ophyd-async's ``ophyd_async.fastcs.eiger.EigerDetector`` (FastCS/Odin IOCs).
    simplon_url : str
        The DCU's base URL (``http://HOST[:PORT]``).
    simplon_api_version : str
        SIMPLON API version in the endpoints' paths.
    stream_v2 : bool
        Enable the DCU's stream v2 when the detector is prepared (docs/stream.md).
    fastcs_prefix : str
        PV prefix of the FastCS Eiger.
    detector_dir : Path or None
        The detector's file storage as mounted on this machine (readable by the Tiled
        server); None = ``data_dir/detector``.
    """

    stage_prefix: str = "BL:MAP:"
    potentiostat_prefix: str = "BL:EC:"
    beam_current_pv: str = "BL:SR:CURRENT"
    shutter_prefix: str = "BL:SHUTTER"
    sample_changer_pv: str | None = None
    detector: Literal["simplon", "fastcs"] = "simplon"
    simplon_url: str = Field("http://eiger-dcu", pattern=r"^https?://[^\s/]+(:\d+)?/?$")
    simplon_api_version: str = Field("1.8.0", pattern=r"^\d+\.\d+\.\d+$")
    stream_v2: bool = False
    fastcs_prefix: str = "BL:EIGER:"
    detector_dir: Path | None = None


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

    @model_validator(mode="after")
    def _real_needs_geometry(self) -> BeamlineConfig:
        if self.mode == "real" and self.poni is None:
            raise ValueError(
                "poni: mode='real' needs the detector geometry, a pyFAI PONI file "
                "(calibrate first: the `calibrate` plan, docs/plans.md)"
            )
        return self

    def resolved_from(self, folder: Path) -> BeamlineConfig:
        """This configuration with its relative paths taken from ``folder`` (a file's)."""
        updates: dict[str, Any] = {"data_dir": folder / self.data_dir}
        if self.poni is not None:
            updates["poni"] = folder / self.poni
        if self.sim.twin_config is not None:
            twin = folder / self.sim.twin_config
            updates["sim"] = self.sim.model_copy(update={"twin_config": twin})
        if self.real.detector_dir is not None:
            detector_dir = folder / self.real.detector_dir
            updates["real"] = self.real.model_copy(update={"detector_dir": detector_dir})
        return self.model_copy(update=updates)

    @property
    def window(self) -> SafetyWindow:
        """The potentiostat's hard safety window."""
        return SafetyWindow(**self.safety_window)


def load_beamline_config(path: str | Path) -> BeamlineConfig:
    """Read a `BeamlineConfig` from TOML; relative paths are taken from the file's folder."""
    path = Path(path)
    raw: dict[str, Any] = tomllib.loads(path.read_text())
    return BeamlineConfig.model_validate(raw).resolved_from(path.resolve().parent)


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
    #: The simulation's experiment clock: the cell's (the potentiostat's) in wall mode.
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
    from opmap import _beamline_real

    return _beamline_real.real_beamline(config)
