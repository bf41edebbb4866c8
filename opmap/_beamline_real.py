"""The real beamline's devices (`opmap.beamline`, ``mode = "real"``): EPICS and SIMPLON.

One small factory per device, each taking its address from `RealConfig`, nothing connected
here. The same factories serve a facility's IOCs and DCU and ``opmap rehearse --control
network`` (`opmap._network_control`), which points them at ``opmap sim-beamline`` on
loopback. Nothing here imports the simulation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ophyd_async.core import PathProvider, StaticPathProvider, UUIDFilenameProvider
from ophyd_async.epics.core import epics_signal_rw

from opmap.analysis.geometry import load_integrator
from opmap.devices import BeamMonitor, MapStage, epics_potentiostat
from opmap.devices.simplon import SimplonEiger

if TYPE_CHECKING:
    from opmap.beamline import Beamline, BeamlineConfig, RealConfig

__all__ = ["detector_files", "real_beamline"]


def detector_files(config: BeamlineConfig) -> PathProvider:
    """Where the detector writes, as this machine sees it, with unique (UUID) names.

    SIMPLON: the filewriter writes in its own storage and names files with the pattern it is
    given; ``real.detector_dir`` is that storage as mounted here (the Tiled server must read
    it). Default: ``data_dir/detector``.
    """
    folder = config.real.detector_dir or config.data_dir / "detector"
    return StaticPathProvider(UUIDFilenameProvider(), folder)


def _eiger(real: RealConfig, files: PathProvider) -> Any:
    if real.detector == "fastcs":
        from ophyd_async.fastcs.eiger import EigerDetector

        try:
            return EigerDetector(real.fastcs_prefix, files, name="eiger")
        except NotImplementedError as err:  # ophyd-async without its PV Access extra
            raise RuntimeError(f"real.detector='fastcs' talks PV Access: {err}") from err
    return SimplonEiger(
        real.simplon_url,
        files,
        api_version=real.simplon_api_version,
        stream_v2=real.stream_v2,
        name="eiger",
    )


def real_beamline(config: BeamlineConfig, integrator: Any = None) -> Beamline:
    """The real devices of ``config.real`` (not connected).

    Parameters
    ----------
    config
        ``mode = "real"``; ``poni`` gives the detector geometry.
    integrator
        A pyFAI integrator to use instead of ``config.poni`` (a rehearsal's design geometry).
    """
    from opmap.beamline import Beamline

    real = config.real
    if integrator is None:
        integrator = load_integrator(config.poni)  # the config checked it is set
    stage = MapStage(
        real.stage_prefix,
        x_limits_um=config.x_limits_um,
        z_limits_um=config.z_limits_um,
        name="stage",
    )
    changer = real.sample_changer_pv
    if changer is not None:
        changer = epics_signal_rw(str, changer, name="sample_changer")
    potentiostat = epics_potentiostat(real.potentiostat_prefix, config.window, name="potentiostat")
    return Beamline(
        config=config,
        stage=stage,
        eiger=_eiger(real, detector_files(config)),
        potentiostat=potentiostat,
        beam=BeamMonitor(real.beam_current_pv, real.shutter_prefix, name="beam"),
        sample_changer=changer,
        integrator=integrator,
    )
