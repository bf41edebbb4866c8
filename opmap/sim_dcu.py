"""A simulated Dectris detector control unit: the SIMPLON subset opmap uses, over HTTP.

``opmap sim-dcu`` serves ``/detector/api/1.8.0/{config,status,command}/...`` and
``/filewriter/api/1.8.0/{config,status}/...`` (values as ``{"value": ...}``) and renders
the digital twin's frames into real Dectris files in its data directory, through the
simulated Eiger of `opmap.devices.sim` (`SimEiger`, its forward model and `DectrisWriter`).
Each ``arm`` opens a series (``<name_pattern>_master.h5`` + ``_data_NNNNNN.h5`` of
``nimages_per_file`` frames; ``$id`` in the pattern is the series number); ``trigger`` in
``ints`` takes ``nimages`` frames and returns when they are written; after ``ntrigger``
triggers the series closes and the detector returns to ``idle``. In ``exts`` / ``exte``
a simulated trigger box fires the ``ntrigger`` triggers right after ``arm``.

Simplifications: the beam stays where the DCU's own simulated stage is (``x_um``,
``z_um``), time is the DCU's simulation clock, frames are always rendered with the twin's
geometry (the configured beam centre, distance and wavelength go to the master file only),
and ``PUT /opmap/api/1/fault`` puts the detector in ``error`` to rehearse failures.

With a stream endpoint (``--stream-port``) and ``stream/config/mode = enabled`` it also
pushes the Dectris stream v2 (`opmap._dcu_stream`): start / image / end CBOR messages, each
image the frame's compressed chunk as the data file stores it. ``PUT
/opmap/api/1/stream_drop {"value": N}`` drops the next N image messages (a test-only gap).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ophyd_async.core import StaticFilenameProvider, StaticPathProvider, TriggerInfo
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from opmap.beamline import BeamlineConfig, SimConfig
from opmap.devices import EigerMetadata
from opmap.devices.sim import (
    FrameRenderer,
    PositionSource,
    SceneSource,
    SimClock,
    SimEiger,
    metadata_from_integrator,
)

from ._dcu_stream import StreamPublisher

__all__ = ["API_VERSION", "DcuError", "DcuOptions", "DcuSources", "SimDcu", "build_app"]

API_VERSION = "1.8.0"
TRIGGER_MODES = ["ints", "exts", "exte"]


class DcuError(Exception):
    """A request the DCU refuses (HTTP 400 with the message)."""


@dataclass
class Param:
    """One SIMPLON parameter: value and the metadata a GET returns."""

    value: Any
    value_type: str
    access_mode: str = "rw"
    allowed_values: list[str] | None = None
    unit: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The GET body."""
        body = {"value": self.value, "value_type": self.value_type}
        body["access_mode"] = self.access_mode
        for key in ("allowed_values", "unit"):
            if getattr(self, key) is not None:
                body[key] = getattr(self, key)
        return body

    def put(self, name: str, value: Any) -> None:
        """Set the value after checking access, type and allowed values."""
        if self.access_mode == "r":
            raise DcuError(f"{name} is read-only")
        kinds = {"float": (int, float), "uint": (int,), "string": (str,), "bool": (bool,)}
        if not isinstance(value, kinds[self.value_type]) or (
            self.value_type != "bool" and isinstance(value, bool)
        ):
            raise DcuError(f"{name}={value!r} is not a {self.value_type}")
        if self.value_type == "uint" and value < 0:
            raise DcuError(f"{name}={value!r} must be >= 0")
        if self.allowed_values is not None and value not in self.allowed_values:
            raise DcuError(f"{name}={value!r} is not one of {self.allowed_values}")
        self.value = float(value) if self.value_type == "float" else value


@dataclass(frozen=True)
class DcuOptions:
    """What the DCU simulates: where files go, the twin's detector binning, the beam."""

    data_dir: Path
    binning: int = 4
    twin_config: Path | None = None
    seed: int = 0
    x_um: float = 0.0
    z_um: float = 0.0
    #: ZeroMQ endpoint the stream v2 PUSH socket binds (the Dectris port is 31001);
    #: None: no stream.
    stream_endpoint: str | None = None


def _detector_config(metadata: EigerMetadata, shape: tuple[int, int]) -> dict[str, Param]:
    def ro(value: Any, kind: str, unit: str | None = None) -> Param:
        return Param(value, kind, "r", unit=unit)

    return {
        "count_time": Param(0.05, "float", unit="s"),
        "frame_time": Param(0.0500001, "float", unit="s"),
        "nimages": Param(1, "uint"),
        "ntrigger": Param(1, "uint"),
        "trigger_mode": Param("ints", "string", allowed_values=TRIGGER_MODES),
        "compression": Param("bslz4", "string", allowed_values=["bslz4", "lz4"]),
        "beam_center_x": Param(metadata.beam_center_x_px, "float", unit="pixel"),
        "beam_center_y": Param(metadata.beam_center_y_px, "float", unit="pixel"),
        "detector_distance": Param(metadata.detector_distance_m, "float", unit="m"),
        "wavelength": Param(metadata.wavelength_angstrom, "float", unit="A"),
        "detector_readout_time": ro(1e-7, "float", "s"),
        "x_pixels_in_detector": ro(shape[1], "uint"),
        "y_pixels_in_detector": ro(shape[0], "uint"),
        "x_pixel_size": ro(metadata.x_pixel_size_m, "float", "m"),
        "y_pixel_size": ro(metadata.y_pixel_size_m, "float", "m"),
        "bit_depth_image": ro(32, "uint"),
        "description": ro(metadata.description, "string"),
    }


def _stream_tables() -> dict[tuple[str, str], dict[str, Param]]:
    # stream v2 only: ``format`` is ``cbor`` (a DCU's default is the legacy v1 ``legacy``)
    return {
        ("stream", "config"): {
            "mode": Param("disabled", "string", allowed_values=["enabled", "disabled"]),
            "format": Param("cbor", "string", allowed_values=["cbor"]),
            "header_detail": Param("basic", "string", allowed_values=["all", "basic", "none"]),
        },
        ("stream", "status"): {
            "state": Param("ready", "string", "r"),
            "dropped": Param(0, "uint", "r"),
        },
    }


def _filewriter_config() -> dict[str, Param]:
    return {
        "mode": Param("enabled", "string", allowed_values=["enabled", "disabled"]),
        "name_pattern": Param("series_$id", "string"),
        "nimages_per_file": Param(1000, "uint"),
        "image_nr_start": Param(1, "uint"),
        "compression_enabled": Param(True, "bool"),
    }


@dataclass(frozen=True)
class DcuSources:
    """What the DCU's frames are made of.

    Attributes
    ----------
    clock
        The clock a series runs on (exposures wait on it; frame times are read from it).
    scene
        What lies in the beam at a time of ``clock`` (`opmap.twin.CellTwin.scene`, or an
        adapter that maps ``clock`` time to the cell's time).
    renderer
        The forward model (scene to counts).
    x_axis, z_axis
        Stage positions (µm) at a time of ``clock``.
    integrator
        The simulated detector geometry (shape and the configuration values).
    """

    clock: SimClock
    scene: SceneSource
    renderer: FrameRenderer
    x_axis: PositionSource
    z_axis: PositionSource
    integrator: Any


@dataclass
class SimDcu:
    """State machine and file writer of the simulated DCU.

    `SimDcu.create` builds a standalone DCU with its own twin and simulated stage;
    `SimDcu.on` one that renders given sources (``opmap sim-beamline``: the IOC's motors).
    """

    options: DcuOptions
    sources: DcuSources
    #: The standalone DCU's own simulated stage (moved to ``x_um``, ``z_um`` at start).
    stage: Any = None
    tables: dict[tuple[str, str], dict[str, Param]] = field(default_factory=dict)
    series_id: int = 0
    triggers_left: int = 0
    eiger: SimEiger | None = None
    task: asyncio.Task | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    stream: StreamPublisher | None = None

    @classmethod
    def create(cls, options: DcuOptions) -> SimDcu:
        """Build the twin, its renderer and the DCU's stage (takes seconds)."""
        from opmap import _beamline_sim

        sim = SimConfig(binning=options.binning, twin_config=options.twin_config)
        config = BeamlineConfig(mode="sim", data_dir=options.data_dir, sim=sim)
        unused = StaticPathProvider(StaticFilenameProvider("unused"), options.data_dir)
        bl = _beamline_sim.build(config, unused)
        renderer = bl.eiger.acquisition.renderer
        sources = DcuSources(bl.clock, bl.twin, renderer, bl.stage.x, bl.stage.z, bl.integrator)
        return cls.on(options, sources, stage=bl.stage)

    @classmethod
    def on(cls, options: DcuOptions, sources: DcuSources, *, stage: Any = None) -> SimDcu:
        """A DCU rendering ``sources``; ``stage`` (if any) is moved to the options' beam."""
        dcu = cls(options, sources, stage)
        shape = tuple(sources.integrator.detector.shape)
        dcu.tables = {
            ("detector", "config"): _detector_config(
                metadata_from_integrator(sources.integrator), shape
            ),
            ("detector", "status"): {
                "state": Param("na", "string", "r"),
                "error": Param([], "string[]", "r"),
            },
            ("filewriter", "config"): _filewriter_config(),
            ("filewriter", "status"): {
                "state": Param("ready", "string", "r"),
                "error": Param([], "string[]", "r"),
                "files": Param([], "string[]", "r"),
            },
            **_stream_tables(),
        }
        if options.stream_endpoint is not None:
            dcu.stream = StreamPublisher(options.stream_endpoint)
        return dcu

    async def start(self) -> None:
        """Connect the DCU's own stage (if any) and move the beam to ``(x_um, z_um)``."""
        stage = self.stage
        if stage is None:
            return
        await stage.connect()
        await asyncio.gather(stage.x.set(self.options.x_um), stage.z.set(self.options.z_um))

    async def close(self) -> None:
        """Stop any series, close its files and the stream socket."""
        await self._disarm()
        if self.stream is not None:
            self.stream.close()

    def value(self, subsystem: str, section: str, name: str) -> Any:
        """Current value of one parameter."""
        return self.tables[(subsystem, section)][name].value

    def set_state(self, subsystem: str, state: str) -> None:
        """Set ``<subsystem>/status/state``."""
        self.tables[(subsystem, "status")]["state"].value = state

    def fault(self, message: str) -> None:
        """Put the detector in ``error`` with ``message`` in ``status/error``."""
        self.set_state("detector", "error")
        self.tables[("detector", "status")]["error"].value = [message]

    async def command(self, name: str) -> dict[str, int]:
        """Run one detector command; return its ``sequence id`` reply."""
        handlers = {
            "initialize": self._initialize,
            "arm": self._arm,
            "trigger": self._trigger,
            "disarm": self._disarm,
            "abort": self._abort,
            "cancel": self._cancel,
        }
        if name not in handlers:
            raise KeyError(name)
        await handlers[name]()
        return {"sequence id": self.series_id}

    def _require(self, command: str, *states: str) -> None:
        state = self.value("detector", "status", "state")
        if state not in states:
            raise DcuError(f"{command} needs detector state in {list(states)}, not {state!r}")

    async def _initialize(self) -> None:
        await self._abort()
        self.tables[("detector", "status")]["error"].value = []
        self.set_state("detector", "idle")

    async def _arm(self) -> None:
        self._require("arm", "idle")
        self.series_id += 1
        if self.value("filewriter", "config", "mode") == "enabled":
            await self._open_series()
        if self.stream is not None and self.value("stream", "config", "mode") == "enabled":
            await self.stream.start(self.series_id, self._start_fields())
        self.triggers_left = int(self.value("detector", "config", "ntrigger"))
        self.set_state("detector", "ready")
        if self.value("detector", "config", "trigger_mode") != "ints":
            self.task = asyncio.ensure_future(self._trigger_box())

    async def _trigger(self) -> None:
        if self.value("detector", "config", "trigger_mode") != "ints":
            return  # as a real DCU: hardware triggers drive exts / exte
        self._require("trigger", "ready")
        # a task that disarm / abort cancel: a real DCU ends the exposure under way, where
        # the simulated detector would otherwise wait for frames that never come and fault
        self.task = asyncio.ensure_future(self._take_one_trigger())
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    async def _trigger_box(self) -> None:
        # The simulated external trigger source: ntrigger triggers, back to back.
        with contextlib.suppress(asyncio.CancelledError, Exception):
            while self.triggers_left > 0 and self.value("detector", "status", "state") == "ready":
                await self._take_one_trigger()

    async def _take_one_trigger(self) -> None:
        async with self.lock:
            self.set_state("detector", "acquire")
            try:
                await self._acquire(int(self.value("detector", "config", "nimages")))
                await self._stream_new_frames()
            except Exception as err:
                self.fault(f"series {self.series_id}: {err!r}")
                raise
            self.triggers_left -= 1
            if self.triggers_left > 0:
                self.set_state("detector", "ready")
            else:
                await self._close_series()
                self.set_state("detector", "idle")

    async def _acquire(self, nimages: int) -> None:
        # One trigger = one prepare/kickoff/complete of the simulated Eiger; the series'
        # writer stays open between triggers (same stage, same data provider).
        if self.eiger is None:
            await self.sources.clock.sleep(nimages * self._frame_time_s())
            return
        await self.eiger.prepare(self._trigger_info(nimages))
        await self.eiger.kickoff()
        await self.eiger.complete()

    def _trigger_info(self, nimages: int) -> TriggerInfo:
        count_s = float(self.value("detector", "config", "count_time"))
        deadtime_s = self._frame_time_s() - count_s
        return TriggerInfo(number_of_events=nimages, livetime=count_s, deadtime=deadtime_s)

    async def _disarm(self) -> None:
        await self._cancel_task()
        await self._close_series()
        if self.value("detector", "status", "state") != "error":
            self.set_state("detector", "idle")

    async def _abort(self) -> None:
        await self._disarm()

    async def _cancel(self) -> None:
        await self._cancel_task()
        if self.value("detector", "status", "state") == "acquire":
            self.set_state("detector", "ready")

    async def _cancel_task(self) -> None:
        task, self.task = self.task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _frame_time_s(self) -> float:
        count_s = float(self.value("detector", "config", "count_time"))
        return max(float(self.value("detector", "config", "frame_time")), count_s)

    async def _open_series(self) -> None:
        pattern = str(self.value("filewriter", "config", "name_pattern"))
        path = self.options.data_dir / pattern.replace("$id", str(self.series_id))
        path.parent.mkdir(parents=True, exist_ok=True)
        eiger = self._make_eiger(
            StaticPathProvider(StaticFilenameProvider(path.name), path.parent)
        )
        await eiger.connect()
        await eiger.stage()
        try:  # the first prepare writes the master (refused if it exists)
            await eiger.prepare(
                self._trigger_info(int(self.value("detector", "config", "nimages")))
            )
        except Exception:
            await eiger.unstage()
            raise
        self.eiger = eiger
        self.set_state("filewriter", "acquire")
        self.tables[("filewriter", "status")]["files"].value = [f"{path.name}_master.h5"]

    def _make_eiger(self, provider: StaticPathProvider) -> SimEiger:
        src, cfg = self.sources, self.tables[("detector", "config")]
        metadata = EigerMetadata(
            x_pixel_size_m=cfg["x_pixel_size"].value,
            y_pixel_size_m=cfg["y_pixel_size"].value,
            detector_distance_m=cfg["detector_distance"].value,
            beam_center_x_px=cfg["beam_center_x"].value,
            beam_center_y_px=cfg["beam_center_y"].value,
            wavelength_angstrom=cfg["wavelength"].value,
            description=cfg["description"].value,
        )
        shape = (int(cfg["y_pixels_in_detector"].value), int(cfg["x_pixels_in_detector"].value))
        per_file = int(self.value("filewriter", "config", "nimages_per_file")) or 1000
        return SimEiger(
            provider,
            src.clock,
            src.scene,
            src.renderer,
            src.x_axis,
            src.z_axis,
            shape,
            metadata,
            frames_per_file=per_file,
            seed=self.options.seed + self.series_id,
            name="dcu",
        )

    def _start_fields(self) -> dict[str, Any]:
        cfg = self.tables[("detector", "config")]
        return {
            "channels": ["threshold_1"],
            "number_of_images": int(cfg["nimages"].value) * int(cfg["ntrigger"].value),
            "image_size_x": int(cfg["x_pixels_in_detector"].value),
            "image_size_y": int(cfg["y_pixels_in_detector"].value),
            "image_dtype": "uint32",
            "count_time": float(cfg["count_time"].value),
            "frame_time": self._frame_time_s(),
            "beam_center_x": float(cfg["beam_center_x"].value),
            "beam_center_y": float(cfg["beam_center_y"].value),
            "incident_wavelength": float(cfg["wavelength"].value),
            "pixel_size_x": float(cfg["x_pixel_size"].value),
            "pixel_size_y": float(cfg["y_pixel_size"].value),
            "detector_description": str(cfg["description"].value),
            "user_data": None,
        }

    async def _stream_new_frames(self) -> None:
        # The frames just written, as the chunks the data files hold (compressed once).
        if self.stream is None or self.stream.series is None or self.eiger is None:
            return
        writer = self.eiger.acquisition.writer
        if writer is None:
            return
        first = self.stream.images_sent
        chunks = [writer.stored_chunk(k) for k in range(first, writer.frames_written)]
        await self.stream.images(chunks, writer.frame_shape)

    async def _close_series(self) -> None:
        if self.stream is not None:
            await self.stream.end()
            self.tables[("stream", "status")]["dropped"].value = self.stream.dropped
        eiger, self.eiger = self.eiger, None
        if eiger is not None:
            await eiger.unstage()  # trims the last data file, writes exact links
        if self.value("filewriter", "status", "state") == "acquire":
            self.set_state("filewriter", "ready")


def _json(body: Any, status_code: int = 200) -> Response:
    return JSONResponse(body, status_code=status_code)


def build_app(options: DcuOptions, make_dcu: Callable[[], SimDcu] | None = None) -> Starlette:
    """The SIMPLON HTTP application of a `SimDcu` built at start-up.

    Parameters
    ----------
    options
        The standalone DCU's options (used when ``make_dcu`` is None).
    make_dcu
        Builds the DCU at start-up instead of ``SimDcu.create(options)``.
    """
    holder: dict[str, SimDcu] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        dcu = SimDcu.create(options) if make_dcu is None else make_dcu()
        await dcu.start()
        holder["dcu"] = dcu
        yield
        await dcu.close()

    async def parameter(request: Request) -> Response:
        dcu, p = holder["dcu"], request.path_params
        table = dcu.tables.get((p["subsystem"], p["section"]))
        if table is None or p["param"] not in table:
            return Response(f'unknown path: "{p["param"]}"', status_code=404)
        if request.method == "GET":
            return _json(table[p["param"]].as_json())
        try:
            table[p["param"]].put(p["param"], (await request.json())["value"])
        except (DcuError, KeyError, ValueError) as err:
            return Response(f"{p['param']}: {err}", status_code=400)
        return _json([p["param"]])

    async def command(request: Request) -> Response:
        try:
            return _json(await holder["dcu"].command(request.path_params["name"]))
        except KeyError:
            return Response("unknown command", status_code=404)
        except (DcuError, FileExistsError) as err:
            return Response(str(err), status_code=400)

    async def fault(request: Request) -> Response:
        holder["dcu"].fault(str((await request.json())["value"]))
        return _json([])

    async def stream_drop(request: Request) -> Response:
        # test-only fault: the next N image messages are not sent
        stream, value = holder["dcu"].stream, (await request.json())["value"]
        if stream is None or isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return Response(f"stream_drop: {value!r} needs a stream and an int >= 0", 400)
        stream.drop_images = value
        return _json([])

    async def version(request: Request) -> Response:
        return _json({"value": API_VERSION, "value_type": "string"})

    base = f"/{{subsystem:str}}/api/{API_VERSION}/{{section:str}}/{{param:path}}"
    routes = [
        Route(f"/detector/api/{API_VERSION}/command/{{name:str}}", command, methods=["PUT"]),
        Route("/detector/api/version/", version, methods=["GET"]),
        Route("/opmap/api/1/fault", fault, methods=["PUT"]),
        Route("/opmap/api/1/stream_drop", stream_drop, methods=["PUT"]),
        Route(base, parameter, methods=["GET", "PUT"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
