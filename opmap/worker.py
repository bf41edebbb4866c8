"""The live analysis out of process (``opmap analysis-worker``), behind bluesky's 0MQ proxy.

The acquisition side publishes its documents with
``bluesky.callbacks.zmq.Publisher(PROXY_IN, serializer=opmap.callbacks.live.serialize)``;
``bluesky-0MQ-proxy IN OUT`` forwards them; this worker subscribes to ``HOST:OUT`` and runs
:class:`~opmap.callbacks.live_analysis.LiveAnalysis` (guarded) on them, so a slow analysis
never blocks the RunEngine. 0MQ drops messages for a subscriber that falls too far behind:
a map the worker could not follow is logged and left to ``opmap analyze``.

Restarts lose nothing and overwrite nothing:

- each worker process writes its own NeXus file per experiment: ``<experiment>.nxs`` if
  free, else the next free ``<experiment>.vN.nxs`` (`opmap.analysis.nexus.next_free_path`);
  an earlier process's file is never rewritten;
- with ``tiled_uri``, it catches up from Tiled: at start the maps of the latest experiment
  stored there, and at each new map of an experiment any earlier map it has not analysed
  (stored runs only, with their ``stop``; each map once per process; every run of a map
  index, so a failed map run and its resume are joined); a live resume of a map run it never
  saw (it restarted in between) gets the runs it resumes from Tiled first;
- ``experiment_id`` (and any other name taken from documents to build a path) must be a
  plain name (`check_path_component`): a run with ``../x`` or ``a/b`` is refused with an
  error in the log and nothing is written for it.

The 0MQ proxy (``opmap zmq-proxy``) binds to 127.0.0.1 unless told otherwise; see
``docs/operations.md`` for running it across hosts (SSH tunnel or CurveZMQ).

Settings (TOML)::

    parameters = "analysis.toml"   # AnalysisParameters (opmap.analysis.pipeline)
    poni = "eiger.poni"            # detector geometry
    binning = 1                    # Eiger binning of the frames (1-8)
    output_dir = "products"        # NeXus products per experiment (optional)
    tiled_uri = "http://127.0.0.1:8000"  # grow products in Tiled (optional)
    api_key_env = "OPMAP_API_KEY"  # environment variable holding the Tiled API key
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from opmap.heap import release_free_heap

__all__ = [
    "WorkerFeed",
    "WorkerSettings",
    "build_analysis",
    "check_path_component",
    "load_settings",
    "parse_zmq_address",
    "run_worker",
]

logger = logging.getLogger(__name__)

#: A name taken from documents that may become part of a file path.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_path_component(value: Any, what: str) -> str:
    """``value`` as a plain file-name component, or ValueError naming ``what``.

    Examples
    --------
    >>> check_path_component("2026-11-30_cell-3", "experiment_id")
    '2026-11-30_cell-3'
    >>> check_path_component("../../escape", "experiment_id")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: experiment_id '../../escape' cannot name a file: use 1-128 letters, ...
    """
    text = str(value)
    if not _PLAIN_NAME.fullmatch(text) or ".." in text:
        raise ValueError(
            f"{what} {text!r} cannot name a file: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (no path separator, no '..')"
        )
    return text


class WorkerSettings(BaseModel):
    """Settings of the analysis worker (paths relative to the settings file)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    parameters: Path
    poni: Path
    binning: int = Field(default=1, ge=1, le=8)
    output_dir: Path | None = None
    tiled_uri: str | None = None
    api_key_env: str = "OPMAP_API_KEY"
    prefix: str = ""
    #: The DCU's stream v2 (``tcp://HOST:31001``): frames are taken from it as they are
    #: taken, the files fill its gaps (`opmap.callbacks.stream_frames`). None: files only.
    detector_stream: str | None = Field(default=None, pattern=r"^tcp://[^:/\s]+:\d{1,5}$")


def load_settings(path: Path) -> WorkerSettings:
    """Read and validate the worker settings; relative paths are relative to ``path``."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{path} is not valid TOML: {error}") from error
    for key in ("parameters", "poni", "output_dir"):
        if key in data and not Path(data[key]).is_absolute():
            data[key] = str(Path(path).parent / data[key])
    return WorkerSettings.model_validate(data)


def parse_zmq_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` of the 0MQ proxy's output side as ``(host, port)``; ValueError if not."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"--zmq {text!r} must be HOST:PORT with PORT in 1-65535")
    return host, int(port)


class WorkerFeed:
    """The documents' way into the live analysis: refuse unsafe names, catch up from Tiled.

    Parameters
    ----------
    analysis : callable
        ``analysis(name, doc)``: the (guarded) live analysis.
    runs : tiled.client.container.Container, optional
        The catalog of raw runs to catch up from; None: no catch-up.
    """

    def __init__(self, analysis: Any, runs: Any = None) -> None:
        from opmap.callbacks.spool import DocumentRuns

        self.analysis = analysis
        self.runs = runs
        #: Map indices analysed (live or replayed) per experiment by this process.
        self.seen: dict[str, set[int]] = {}
        #: Runs refused for an unsafe name: uid -> the error.
        self.refused: dict[str, str] = {}
        self._owners = DocumentRuns()

    def __call__(self, name: str, doc: dict[str, Any]) -> None:
        """Pass one live document on (after a catch-up at a new map's ``start``)."""
        try:
            run_uid = self._owners.run_of(name, doc)
        except KeyError:  # a run that began before this process subscribed
            run_uid = None
        if name == "start" and not self._accept(doc):
            return
        if run_uid in self.refused:
            return
        if name == "start" and doc.get("map_index") is not None:
            experiment_id, index = str(doc.get("experiment_id")), int(doc["map_index"])
            self.catch_up(experiment_id, before_index=index)
            seen = self.seen.setdefault(experiment_id, set())
            if doc.get("resumes") and index not in seen:
                # a resume of a map run this process never saw (it restarted since): the
                # runs it resumes come from Tiled first, so the map is joined, not lost
                self._replay_map(experiment_id, index, but=str(doc["uid"]))
            seen.add(index)
        self.analysis(name, doc)

    def _accept(self, start: dict[str, Any]) -> bool:
        try:
            check_path_component(start.get("experiment_id", "experiment"), "experiment_id")
        except ValueError as error:
            logger.error("run %s refused, nothing written for it: %s", start.get("uid"), error)
            self.refused[str(start.get("uid"))] = str(error)
            return False
        return True

    def catch_up(self, experiment_id: str, before_index: int | None = None) -> list[int]:
        """Replay the stored map runs of an experiment not analysed yet, in map order.

        Every run of a map index is replayed, in start order: a map whose run failed and
        was resumed (``resumes``) is stored as several runs of one index.

        Returns
        -------
        list of int
            The map indices replayed (maps with a run without ``stop`` are skipped and
            logged).
        """
        if self.runs is None:
            return []
        seen = self.seen.setdefault(experiment_id, set())
        replayed = []
        try:
            for index, runs in self._stored_maps(experiment_id).items():
                if index in seen or (before_index is not None and index >= before_index):
                    continue
                if not all(run.metadata.get("stop") for run in runs):
                    logger.warning("map %s of %s has no stop: not caught up", index, experiment_id)
                    continue
                logger.info("catching up map %d of %s from Tiled", index, experiment_id)
                self._replay(runs)
                seen.add(index)
                replayed.append(index)
        except Exception:  # Tiled down or a bad run: the live analysis goes on
            logger.exception("catching up %s from Tiled failed after %s", experiment_id, replayed)
        return replayed

    def _replay_map(self, experiment_id: str, index: int, *, but: str) -> None:
        """Replay the stored runs of map ``index`` except run ``but`` (the live one)."""
        try:
            runs = self._stored_maps(experiment_id).get(index, [])
            earlier = [run for run in runs if run.metadata["start"]["uid"] != but]
            logger.info(
                "map %d of %s: replaying the %d run(s) it resumes from Tiled",
                index, experiment_id, len(earlier),
            )  # fmt: skip
            self._replay(earlier)
        except Exception:  # Tiled down: the resume alone is then not a map (logged there)
            logger.exception("map %d of %s: its runs could not be read", index, experiment_id)

    def _replay(self, runs: list[Any]) -> None:
        for run in runs:
            for name, doc in run.documents():
                self.analysis(name, doc)

    def _stored_maps(self, experiment_id: str) -> dict[int, list[Any]]:
        """The experiment's stored map runs: map index -> its runs in start order."""
        from tiled.queries import Key

        found = self.runs.search(Key("start.experiment_id") == experiment_id)
        maps: dict[int, list[Any]] = {}
        for run in found.values():
            start = run.metadata["start"]
            if start.get("map_index") is not None:
                maps.setdefault(int(start["map_index"]), []).append(run)
        for runs in maps.values():
            runs.sort(key=lambda run: float(run.metadata["start"].get("time", 0.0)))
        return dict(sorted(maps.items()))

    def catch_up_latest(self) -> list[int]:
        """At start: catch up the experiment of the most recent stored run (if any)."""
        if self.runs is None or len(self.runs) == 0:
            return []
        start = self.runs.values().last().metadata["start"]
        experiment_id = start.get("experiment_id")
        if experiment_id is None or not self._accept(start):
            return []
        return self.catch_up(str(experiment_id))


def build_analysis(settings: WorkerSettings, on_map: list) -> Any:
    """The `LiveAnalysis` the settings describe."""
    from opmap.analysis.geometry import analysis_geometry
    from opmap.analysis.pipeline import load_parameters
    from opmap.callbacks.live_analysis import LiveAnalysis

    params = load_parameters(settings.parameters)
    geometry = analysis_geometry(settings.poni, binning=settings.binning)
    layout = _tiled_layout(settings)
    processed = None if layout is None else layout["processed"]
    stream = None
    if settings.detector_stream is not None:
        from opmap.callbacks.stream_frames import StreamFrameSource

        stream = StreamFrameSource(settings.detector_stream).start()
    return LiveAnalysis(params, geometry, processed=processed, on_map=on_map, frame_stream=stream)


def _tiled_layout(settings: WorkerSettings) -> dict[str, Any] | None:
    """The ``raw`` and ``processed`` containers of ``settings.tiled_uri`` (None without)."""
    if not settings.tiled_uri:
        return None
    from tiled.client import from_uri

    from opmap.callbacks.tiled_writer import ensure_layout

    client = from_uri(settings.tiled_uri, api_key=os.environ.get(settings.api_key_env))
    return ensure_layout(client)


def run_worker(address: tuple[str, int], settings: WorkerSettings, max_maps: int | None) -> int:
    """Run the worker on ``address`` until interrupted (or ``max_maps`` maps are analysed)."""
    from bluesky.callbacks.zmq import RemoteDispatcher

    from opmap.analysis.nexus import next_free_path, write_products
    from opmap.callbacks.guard import GuardedCallback
    from opmap.callbacks.live import deserialize

    if max_maps is not None and max_maps < 1:
        raise ValueError(f"--max-maps {max_maps} must be >= 1")
    dispatcher = RemoteDispatcher(
        address, prefix=settings.prefix.encode(), deserializer=deserialize
    )
    done = {"maps": 0}
    paths: dict[str, Path] = {}  # this process's own file per experiment

    def save(products: Any, result: Any) -> None:
        name = check_path_component(products.metadata.get("experiment_id"), "experiment_id")
        if settings.output_dir is not None:
            settings.output_dir.mkdir(parents=True, exist_ok=True)
            if name not in paths:  # never an earlier process's file
                paths[name] = next_free_path(settings.output_dir / f"{name}.nxs")
            write_products(paths[name], products, overwrite=True)
        done["maps"] += 1
        logger.info("map %d analysed (%s)", result.map_index, name)
        if max_maps is not None and done["maps"] >= max_maps:
            dispatcher.stop()

    # after each map, the heap pages freed by its frames go back to the system (docs: Soak)
    live = build_analysis(settings, [save, release_free_heap])
    layout = _tiled_layout(settings)
    feed = WorkerFeed(GuardedCallback(live), None if layout is None else layout["raw"])
    replayed = feed.catch_up_latest()
    if replayed:
        logger.info("caught up maps %s from Tiled", replayed)
    dispatcher.subscribe(feed)
    logger.info("analysis worker listening on %s:%d", *address)
    try:
        dispatcher.start()
    except KeyboardInterrupt:
        logger.info("analysis worker interrupted")
    except asyncio.CancelledError:  # dispatcher.stop() after --max-maps
        logger.info("analysis worker stopped after %d map(s)", done["maps"])
    finally:
        if live.frame_stream is not None:
            live.frame_stream.close()
    return 0
