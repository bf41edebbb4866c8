"""``opmap replay EXPERIMENT_ID``: analyse a stored experiment again, as a new product version.

The experiment's map runs are read from the Tiled server of ``--settings`` (or of
``--data-dir``, served for the length of the command), analysed with the parameters stored
with the newest product version (``--set KEY=VALUE`` overrides some; ``--families`` /
``--params`` replace them) and written as a new version (``v2``, ``v3`` …); the geometry is
``--poni`` or the calibration stored with the calibrant run. See docs/replay.md.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_compute_arguments", "parse_overrides", "register", "run"]

logger = logging.getLogger(__name__)


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``replay`` sub-command to the ``opmap`` parser."""
    parser = subparsers.add_parser(
        "replay",
        help="analyse a stored experiment again from Tiled into a new product version",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(func=run)
    _source_arguments(parser)
    _analysis_arguments(parser)
    add_compute_arguments(parser)
    return parser


def _source_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiment_id", metavar="EXPERIMENT_ID", help="the stored experiment")
    group = parser.add_argument_group("Tiled server (one of)")
    server = group.add_mutually_exclusive_group(required=True)
    server.add_argument("--settings", type=Path, metavar="TOML", help="OpmapSettings (server)")
    server.add_argument("--data-dir", type=Path, metavar="DIR", help="serve DIR for the replay")


def _analysis_arguments(parser: argparse.ArgumentParser) -> None:
    analysis = parser.add_argument_group("analysis (default: as stored with the newest version)")
    analysis.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="overrides",
        help="override a stored analysis parameter (JSON value), e.g. --set grain_k=12",
    )
    analysis.add_argument(
        "--families", type=Path, metavar="TOML", help="TOML of [[family]] (new parameters)"
    )
    analysis.add_argument(
        "--params", type=Path, metavar="TOML", help="TOML of further AnalysisParameters"
    )
    analysis.add_argument(
        "--poni", type=Path, metavar="FILE", help="pyFAI PONI file (default: calibrant run)"
    )
    analysis.add_argument(
        "--sampling-chi-fwhm-deg",
        type=float,
        metavar="DEG",
        help="(003) sampling correction with spots of this azimuthal FWHM",
    )


def add_compute_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of where and how frames are reduced (``opmap analyze`` and ``replay``)."""
    group = parser.add_argument_group("computing")
    group.add_argument("--scheduler", metavar="ADDRESS", help="dask.distributed scheduler")
    group.add_argument(
        "--chunk-frames",
        type=_chunk_frames,
        default=64,
        metavar="N",
        help="frames per dask block (1-100000, 64)",
    )


def _chunk_frames(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 100_000:
        raise argparse.ArgumentTypeError(f"must be a whole number in 1-100000, got {text!r}")
    return value


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["grain_k=12", "ti_method=gaussian"]`` → ``{"grain_k": 12, "ti_method": "gaussian"}``.

    Values are JSON (numbers, ``true``, ``null``, lists); anything else is a string.

    Examples
    --------
    >>> parse_overrides(["grain_k=12", "ti_method=gaussian", "phase_percentiles=[1, 99]"])
    {'grain_k': 12, 'ti_method': 'gaussian', 'phase_percentiles': [1, 99]}
    """
    import json

    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {item!r} must be KEY=VALUE")
        try:
            out[key.strip()] = json.loads(text)
        except json.JSONDecodeError:
            out[key.strip()] = text
    return out


def run(args: argparse.Namespace) -> int:
    """Replay the experiment; print the new version. Exit status 2 on bad input (nothing
    is written then)."""
    import httpx

    from opmap.replay import replay_experiment

    def on_map(done: int, total: int) -> None:
        print(f"map {done}/{total}", file=sys.stderr)

    try:
        options = _replay_options(args)
        with contextlib.ExitStack() as stack:
            client = _client(args, stack)
            version, products = replay_experiment(
                client, args.experiment_id, options, on_map=on_map
            )
    except (ValueError, FileNotFoundError, RuntimeError, httpx.HTTPError) as error:
        logger.error("%s", error)
        print(f"opmap replay: error: {error}", file=sys.stderr)
        return 2
    meta = products.metadata
    print(f"products written to processed/{args.experiment_id}/{version}")
    print(
        f"  {len(meta['raw_uids'])} maps, replay of {meta['replay_of']}, "
        f"overrides {meta['overrides'] or 'none'}, geometry: {meta['geometry_source']}"
    )
    for skipped in meta.get("skipped_maps") or []:
        print(f"  map {skipped['map_index']} left out: {skipped['reason']}")
    return 0


def _replay_options(args: argparse.Namespace) -> Any:
    """The `ReplayOptions` the command line gives."""
    from opmap.replay import STORED, ReplayOptions

    sampling: Any = STORED
    if args.sampling_chi_fwhm_deg is not None:
        sampling = {"chi_fwhm_deg": args.sampling_chi_fwhm_deg}
    return ReplayOptions(
        params=_parameters(args),
        overrides=parse_overrides(args.overrides),
        poni=args.poni,
        sampling_options=sampling,
        scheduler=args.scheduler,
        chunk_frames=args.chunk_frames,
    )


def _parameters(args: argparse.Namespace) -> Any:
    from opmap.analysis.families import load_families
    from opmap.analysis.pipeline import AnalysisParameters, load_parameters

    if args.families is None:
        if args.params is not None:
            raise ValueError("--params needs --families")
        return None  # the parameters stored with the newest version
    families = load_families(args.families)
    if args.params is None:
        return AnalysisParameters(families=families)
    return load_parameters(args.params, families=families.model_dump())


def _client(args: argparse.Namespace, stack: contextlib.ExitStack) -> Any:
    """The Tiled client of ``--settings`` (a running server) or of ``--data-dir`` (served
    in a subprocess until the replay ends)."""
    from opmap.settings import OpmapSettings

    if args.data_dir is not None:
        from opmap.service import start_server_subprocess

        if not (args.data_dir / "catalog.db").is_file():
            raise ValueError(f"--data-dir {args.data_dir} holds no opmap catalog (catalog.db)")
        server = stack.enter_context(
            start_server_subprocess(OpmapSettings(data_dir=args.data_dir))
        )
        return server.client()
    from ._tiled_client import client_from_settings

    return client_from_settings(args.settings)
