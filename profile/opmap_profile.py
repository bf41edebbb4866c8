"""The opmap beamline session: RunEngine, devices, writers, live analysis, suspenders.

Wiring only. Everything here is built from one TOML file (``profile/beamline.toml``) by
`build_session`, in this order:

1. the RunEngine (it owns the event loop the devices connect in), its metadata ``RE.md``
   persisted with bluesky's `PersistentDict` (so ``scan_id`` keeps counting across sessions)
   and a `ProgressBarManager` as waiting hook;
2. the devices, ``build_beamline`` inside ``init_devices()``, then connected by name;
3. the Tiled client (URL + API key file of the config, or injected) and its ``raw`` /
   ``processed`` containers;
4. subscriptions, writer first so later callbacks find the run in Tiled: the
   `ValidatedTiledWriter` (never guarded), the guarded live analysis and the guarded
   calibration callback;
5. the beam-current and shutter suspenders.

Nothing connects at import. The IPython startup file only calls `build_session` and copies
`Session.namespace` into the user namespace; a test does the same without IPython.

Examples
--------
::

    session = build_session("profile/beamline.toml")
    RE = session.RE
    RE(fly_map(session.beamline.eiger, session.beamline.stage.x, session.beamline.stage.z,
               MapGeometry(z_count=3, x_count=5, x_stop_um=165.0)))
"""

from __future__ import annotations

import asyncio
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.plans as bp
from bluesky import RunEngine
from bluesky.run_engine import call_in_bluesky_event_loop
from bluesky.suspenders import SuspenderBase
from bluesky.utils import PersistentDict, ProgressBarManager
from ophyd_async.core import Device, init_devices, wait_for_connection
from pydantic import BaseModel, ConfigDict, Field, model_validator

from opmap import plans
from opmap.analysis.geometry import analysis_geometry
from opmap.analysis.pipeline import AnalysisParameters, load_parameters
from opmap.beamline import Beamline, BeamlineConfig, build_beamline
from opmap.callbacks.calibration import CalibrationCallback
from opmap.callbacks.guard import GuardedCallback
from opmap.callbacks.live_analysis import LiveAnalysis
from opmap.callbacks.tiled_writer import ValidatedTiledWriter, ensure_layout
from opmap.devices.beam import ShutterState
from opmap.heap import release_free_heap
from opmap.settings import OpmapSettings

__all__ = [
    "PLANS",
    "LiveAnalysisConfig",
    "ProfileConfig",
    "RunEngineConfig",
    "Session",
    "SuspenderConfig",
    "TiledConfig",
    "banner",
    "build_session",
    "load_profile_config",
    "make_run_engine",
    "session_from_environment",
]

#: The plans a session exposes, by the name users type.
PLANS: dict[str, Any] = {
    "fly_map": plans.fly_map,
    "operando_experiment": plans.operando_experiment,
    "calibrate": plans.calibrate,
    "align_stack": plans.align_stack,
    "MapGeometry": plans.MapGeometry,
}


#: Longest wait (s) for a call into the RunEngine's event loop (connects, close).
_LOOP_TIMEOUT_S = 30.0


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TiledConfig(_Frozen):
    """Where runs are written: a Tiled server and its API key.

    Attributes
    ----------
    settings_file : Path or None
        An `OpmapSettings` TOML (the one ``opmap serve --settings`` uses); gives the URL, key
        file and backup folder. None: the settings of ``opmap serve --data-dir DATA_DIR``
        with the beamline's ``data_dir``.
    url : str or None
        ``http(s)://host:port`` overriding the settings' URL.
    api_key_file : Path or None
        File holding the API key, overriding the settings' key file.
    backup_dir : Path or None
        Where a run the server rejects is saved as JSON lines (default: the settings').
    """

    settings_file: Path | None = None
    url: str | None = Field(default=None, pattern=r"^https?://[^?#\s]+$")
    api_key_file: Path | None = None
    backup_dir: Path | None = None


class LiveAnalysisConfig(_Frozen):
    """Live analysis of map runs (products into ``processed``).

    Attributes
    ----------
    parameters : Path
        `AnalysisParameters` TOML (orientation families, x(c) tables, grain options).
    """

    parameters: Path = Path("analysis.toml")


class SuspenderConfig(_Frozen):
    """Beam-current and shutter suspenders.

    Attributes
    ----------
    min_current_ma : float
        Suspend below this ring current (mA, > 0).
    resume_current_ma : float or None
        Resume at or above this (mA, >= ``min_current_ma``); None: ``min_current_ma``.
    sleep_s : float
        Wait after the beam returns before resuming (s, >= 0).
    open_sim_shutter : bool
        In simulation, open the (closed at start) shutter so plans run at once.
    """

    min_current_ma: float = Field(default=100.0, gt=0.0, allow_inf_nan=False)
    resume_current_ma: float | None = Field(default=None, gt=0.0, allow_inf_nan=False)
    sleep_s: float = Field(default=0.0, ge=0.0, allow_inf_nan=False)
    open_sim_shutter: bool = True

    @model_validator(mode="after")
    def _resume_above_floor(self) -> SuspenderConfig:
        if self.resume_current_ma is not None and self.resume_current_ma < self.min_current_ma:
            raise ValueError(
                f"resume_current_ma={self.resume_current_ma} must be >= "
                f"min_current_ma={self.min_current_ma} mA"
            )
        return self


class RunEngineConfig(_Frozen):
    """The RunEngine's persistent metadata and progress display.

    Attributes
    ----------
    metadata_dir : Path or None
        Folder of ``RE.md``, a bluesky `PersistentDict`: ``scan_id`` and any metadata set
        with ``RE.md[...] = ...`` survive the session. None: ``DATA_DIR/runengine-md``.
        The IPython profile and the queue server's worker share it when they share the
        data directory (one of them at a time runs plans).
    progress_bars : bool
        Show a `ProgressBarManager` for moves and waits (a terminal session; the queue
        server's worker turns it off).
    """

    metadata_dir: Path | None = None
    progress_bars: bool = True


class ProfileConfig(_Frozen):
    """The profile file: ``[beamline]``, ``[run_engine]``, ``[tiled]``, ``[live_analysis]``,
    ``[suspenders]``."""

    beamline: BeamlineConfig = Field(default_factory=BeamlineConfig)
    run_engine: RunEngineConfig = Field(default_factory=RunEngineConfig)
    tiled: TiledConfig = Field(default_factory=TiledConfig)
    live_analysis: LiveAnalysisConfig = Field(default_factory=LiveAnalysisConfig)
    suspenders: SuspenderConfig = Field(default_factory=SuspenderConfig)

    def tiled_settings(self) -> OpmapSettings:
        """The `OpmapSettings` of the server runs are written to."""
        if self.tiled.settings_file is not None:
            return OpmapSettings.from_toml(self.tiled.settings_file)
        return OpmapSettings(data_dir=self.beamline.data_dir)


def load_profile_config(path: str | Path) -> ProfileConfig:
    """Read the profile TOML; relative paths are taken from the file's folder.

    Raises
    ------
    ValueError
        When the file is not TOML, or a field is unknown or out of range (named).
    """
    path = Path(path)
    try:
        raw: dict[str, Any] = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"profile config {path} is not valid TOML: {error}") from None
    config = ProfileConfig.model_validate(raw)
    return _resolve_paths(config, path.resolve().parent)


def _resolve_paths(config: ProfileConfig, folder: Path) -> ProfileConfig:
    beamline = config.beamline.resolved_from(folder)
    tiled = config.tiled.model_copy(
        update={
            name: folder / value
            for name in ("settings_file", "api_key_file", "backup_dir")
            if (value := getattr(config.tiled, name)) is not None
        }
    )
    live = config.live_analysis.model_copy(
        update={"parameters": folder / config.live_analysis.parameters}
    )
    md_dir = config.run_engine.metadata_dir
    run_engine = config.run_engine.model_copy(
        update={
            "metadata_dir": beamline.data_dir / "runengine-md"
            if md_dir is None
            else folder / md_dir
        }
    )
    update = {"beamline": beamline, "tiled": tiled, "live_analysis": live}
    return config.model_copy(update=update | {"run_engine": run_engine})


def make_run_engine(config: ProfileConfig, *, progress_bars: bool | None = None) -> RunEngine:
    """The session's RunEngine: ``RE.md`` persisted in ``run_engine.metadata_dir``.

    Parameters
    ----------
    config : ProfileConfig
        From `load_profile_config` (paths resolved).
    progress_bars : bool, optional
        Override ``run_engine.progress_bars``.
    """
    options = config.run_engine
    folder = options.metadata_dir or config.beamline.data_dir / "runengine-md"
    folder.mkdir(parents=True, exist_ok=True)
    RE = RunEngine(PersistentDict(str(folder)), call_returns_result=True)
    if options.progress_bars if progress_bars is None else progress_bars:
        RE.waiting_hook = ProgressBarManager()
    return RE


@dataclass
class Session:
    """One beamline session: what `build_session` wired together.

    Attributes
    ----------
    config : ProfileConfig
        The configuration it was built from.
    RE : RunEngine
        The one RunEngine of this process.
    beamline : Beamline
        The connected devices (and, in simulation, the twin and its clock).
    client : tiled client
        Root of the Tiled server; ``raw`` and ``processed`` are its two containers.
    writer : ValidatedTiledWriter
        Writes every run into ``raw`` (subscribed unguarded).
    live_analysis : GuardedCallback or None
        The guarded `LiveAnalysis` (``.callback``), None when disabled.
    calibration : GuardedCallback
        The guarded `CalibrationCallback` (``.callback``).
    suspenders : dict of str to SuspenderBase
        Installed suspenders by name (empty when disabled).
    subscriptions : dict of str to int
        RunEngine subscription tokens by callback name (for ``RE.unsubscribe``).
    """

    config: ProfileConfig
    RE: RunEngine
    beamline: Beamline
    client: Any
    raw: Any
    processed: Any
    writer: ValidatedTiledWriter
    live_analysis: GuardedCallback | None
    calibration: GuardedCallback
    suspenders: dict[str, SuspenderBase] = field(default_factory=dict)
    subscriptions: dict[str, int] = field(default_factory=dict)

    def namespace(self) -> dict[str, Any]:
        """The names a user gets: ``RE``, ``bp``, ``bps``, devices by name, plans, Tiled
        (``raw``, also as ``catalog``: ``catalog[-1]`` is the latest run; ``processed``)."""
        names: dict[str, Any] = {"session": self, "RE": self.RE, "bp": bp, "bps": bps}
        names.update(self.beamline.devices)
        names.update(PLANS)
        # catalog: databroker's name for the runs; catalog[-1] is the latest run
        names.update({"raw": self.raw, "catalog": self.raw, "processed": self.processed})
        if self.beamline.twin is not None:
            names.update({"twin": self.beamline.twin, "clock": self.beamline.clock})
        return names

    def close(self) -> None:
        """Remove suspenders and subscriptions, stop the beam monitor's background poll."""
        self.RE.clear_suspenders()
        for token in self.subscriptions.values():
            self.RE.unsubscribe(token)
        self.subscriptions.clear()
        close = getattr(self.beamline.beam, "close", None)
        if close is not None:
            # In this session's loop: a later RunEngine becomes bluesky's default loop.
            asyncio.run_coroutine_threadsafe(close(), self.RE.loop).result(_LOOP_TIMEOUT_S)


def build_session(
    config_path: str | Path,
    *,
    tiled_client: Any = None,
    live_analysis: bool = True,
    install_suspenders: bool = True,
    progress_bars: bool | None = None,
) -> Session:
    """Build the beamline session described by the profile file ``config_path``.

    Parameters
    ----------
    config_path : str or Path
        The profile TOML (see ``profile/beamline.toml``).
    tiled_client : tiled client, optional
        Root node of a writable Tiled server; default: connect to the configured URL with the
        configured API key file.
    live_analysis : bool
        Subscribe the guarded live analysis.
    install_suspenders : bool
        Install the beam-current and shutter suspenders.
    progress_bars : bool, optional
        Override the config's ``run_engine.progress_bars``.

    Returns
    -------
    Session

    Raises
    ------
    ValueError
        For a bad config field, or a Tiled server that cannot read the detector folder.
    FileNotFoundError
        When the API key file or the analysis parameters file is missing.
    """
    config = load_profile_config(config_path)
    settings = config.tiled_settings()
    _check_detector_dir(config, settings)
    params = load_parameters(config.live_analysis.parameters) if live_analysis else None
    RE = make_run_engine(config, progress_bars=progress_bars)  # first: devices use its loop
    with init_devices():
        beamline = build_beamline(config.beamline)
    _connect(beamline.devices)
    client = tiled_client if tiled_client is not None else _connect_tiled(config, settings)
    layout = ensure_layout(client)
    session = Session(
        config=config,
        RE=RE,
        beamline=beamline,
        client=client,
        raw=layout["raw"],
        processed=layout["processed"],
        writer=ValidatedTiledWriter(
            layout["raw"], backup_directory=config.tiled.backup_dir or settings.backup_dir
        ),
        live_analysis=None if params is None else _live(params, beamline, layout),
        calibration=_calibration(config, layout["raw"]),
    )
    _subscribe(session)
    if install_suspenders:
        _install_suspenders(session)
    return session


def _calibration(config: ProfileConfig, raw: Any) -> GuardedCallback:
    """Calibration runs write their refined PONI under the data dir's ``poni/``."""
    return GuardedCallback(
        CalibrationCallback(config.beamline.data_dir / "poni", run_node=lambda uid: raw[uid])
    )


def _check_detector_dir(config: ProfileConfig, settings: OpmapSettings) -> None:
    """The server must read frames where the detector writes them, or runs cannot be read."""
    if config.tiled.url is not None and config.tiled.settings_file is None:
        return  # a remote server given by URL only: its folders are not known here
    written = (config.beamline.data_dir / "detector").resolve()
    if settings.detector_dir is None or settings.detector_dir.resolve() != written:
        raise ValueError(
            f"tiled.settings_file: the server reads detector files from "
            f"{settings.detector_dir}, but beamline.data_dir makes the detector write them to "
            f"{written}; make the two folders the same"
        )


def _connect(devices: dict[str, Device]) -> None:
    async def connect_all() -> None:
        await wait_for_connection(**{name: device.connect() for name, device in devices.items()})

    call_in_bluesky_event_loop(connect_all(), timeout=_LOOP_TIMEOUT_S)


def _connect_tiled(config: ProfileConfig, settings: OpmapSettings) -> Any:
    from tiled.client import from_uri

    key_file = config.tiled.api_key_file or settings.api_key_file
    if settings.api_key is not None and config.tiled.api_key_file is None:
        key = settings.api_key
    elif key_file is None or not key_file.is_file():
        raise FileNotFoundError(
            f"tiled.api_key_file: no API key at {key_file} (start the server once with "
            "`opmap serve`, which writes it, or point api_key_file at the key)"
        )
    else:
        key = key_file.read_text().strip()
    return from_uri(config.tiled.url or settings.url, api_key=key)


def _live(
    params: AnalysisParameters, beamline: Beamline, layout: dict[str, Any]
) -> GuardedCallback:
    ai = beamline.integrator
    mask = _sim_analysis_mask(ai) if beamline.config.mode == "sim" else None
    geometry = analysis_geometry(ai, mask=mask)
    live = LiveAnalysis(
        params,
        geometry,
        processed=layout["processed"],
        tiled_runs=layout["raw"],
        on_map=[release_free_heap],  # a day-long session gives freed heap pages back
    )
    return GuardedCallback(live, name="live analysis")


def _sim_analysis_mask(ai: Any) -> Any:
    from opmap.twin.forward import DetectorMask

    return DetectorMask().analysis_mask(ai)


def _subscribe(session: Session) -> None:
    callbacks = {"tiled_writer": session.writer, "calibration": session.calibration}
    if session.live_analysis is not None:
        callbacks["live_analysis"] = session.live_analysis
    # Insertion order is dispatch order: the writer has stored a run before the others see it.
    for name, callback in callbacks.items():
        session.subscriptions[name] = session.RE.subscribe(callback)


def _install_suspenders(session: Session) -> None:
    beam = session.beamline.beam
    options = session.config.suspenders
    if session.beamline.config.mode == "sim" and options.open_sim_shutter:
        session.RE(bps.mv(beam.shutter, ShutterState.OPEN))
    session.suspenders = {
        "beam_current": plans.beam_current_suspender(
            beam.beam_current_ma,
            min_current_ma=options.min_current_ma,
            resume_current_ma=options.resume_current_ma,
            sleep_s=options.sleep_s,
        ),
        "shutter": plans.shutter_suspender(beam.shutter, sleep_s=options.sleep_s),
    }
    for suspender in session.suspenders.values():
        session.RE.install_suspender(suspender)


def session_from_environment(**options: Any) -> Session:
    """The session of ``$OPMAP_BEAMLINE_CONFIG``, else of ``beamline.toml`` beside this file.

    What both startup folders (``startup/`` for IPython, ``qserver/`` for the queue server's
    worker) build; ``options`` go to `build_session`.
    """
    default = Path(__file__).resolve().parent / "beamline.toml"
    return build_session(Path(os.environ.get("OPMAP_BEAMLINE_CONFIG") or default), **options)


def banner(session: Session, names: dict[str, Any]) -> str:
    """A short text saying what the session holds and how to start."""
    config = session.config.beamline
    devices = ", ".join(session.beamline.devices)
    plan_names = ", ".join(PLANS)
    suspenders = ", ".join(session.suspenders) or "none"
    live = "on" if session.live_analysis is not None else "off"
    return "\n".join(
        [
            f"opmap session ({config.mode} beamline), data in {config.data_dir}",
            f"  RunEngine: RE        devices: {devices}",
            f"  plans: {plan_names}, bp, bps",
            f"  Tiled: raw, processed at {session.raw.uri}",
            f"  live analysis: {live}    suspenders: {suspenders}",
            f"  all names: {', '.join(sorted(names))}",
        ]
    )
