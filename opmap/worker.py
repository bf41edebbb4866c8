"""The live analysis out of process (``opmap analysis-worker``), behind bluesky's 0MQ proxy.

The acquisition side publishes its documents with
``bluesky.callbacks.zmq.Publisher(PROXY_IN, serializer=opmap.callbacks.live.serialize)``;
``bluesky-0MQ-proxy IN OUT`` forwards them; this worker subscribes to ``HOST:OUT`` and runs
:class:`~opmap.callbacks.live_analysis.LiveAnalysis` (guarded) on them, so a slow analysis
never blocks the RunEngine. 0MQ drops messages for a subscriber that falls too far behind:
a map the worker could not follow is logged and left to ``opmap analyze``.

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
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["WorkerSettings", "build_analysis", "load_settings", "parse_zmq_address", "run_worker"]

logger = logging.getLogger(__name__)


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


def build_analysis(settings: WorkerSettings, on_map: list) -> Any:
    """The `LiveAnalysis` the settings describe."""
    from opmap.analysis.geometry import analysis_geometry
    from opmap.analysis.pipeline import load_parameters
    from opmap.callbacks.live_analysis import LiveAnalysis

    params = load_parameters(settings.parameters)
    geometry = analysis_geometry(settings.poni, binning=settings.binning)
    processed = None
    if settings.tiled_uri:
        from tiled.client import from_uri

        from opmap.callbacks.tiled_writer import ensure_layout

        client = from_uri(settings.tiled_uri, api_key=os.environ.get(settings.api_key_env))
        processed = ensure_layout(client)["processed"]
    return LiveAnalysis(params, geometry, processed=processed, on_map=on_map)


def run_worker(address: tuple[str, int], settings: WorkerSettings, max_maps: int | None) -> int:
    """Run the worker on ``address`` until interrupted (or ``max_maps`` maps are analysed)."""
    from bluesky.callbacks.zmq import RemoteDispatcher

    from opmap.analysis.nexus import write_products
    from opmap.callbacks.guard import GuardedCallback
    from opmap.callbacks.live import deserialize

    if max_maps is not None and max_maps < 1:
        raise ValueError(f"--max-maps {max_maps} must be >= 1")
    dispatcher = RemoteDispatcher(
        address, prefix=settings.prefix.encode(), deserializer=deserialize
    )
    done = {"maps": 0}

    def save(products: Any, result: Any) -> None:
        name = products.metadata.get("experiment_id", "experiment")
        if settings.output_dir is not None:
            settings.output_dir.mkdir(parents=True, exist_ok=True)
            write_products(settings.output_dir / f"{name}.nxs", products, overwrite=True)
        done["maps"] += 1
        logger.info("map %d analysed (%s)", result.map_index, name)
        if max_maps is not None and done["maps"] >= max_maps:
            dispatcher.stop()

    live = build_analysis(settings, [save])
    dispatcher.subscribe(GuardedCallback(live))
    logger.info("analysis worker listening on %s:%d", *address)
    try:
        dispatcher.start()
    except KeyboardInterrupt:
        logger.info("analysis worker interrupted")
    except asyncio.CancelledError:  # dispatcher.stop() after --max-maps
        logger.info("analysis worker stopped after %d map(s)", done["maps"])
    return 0
