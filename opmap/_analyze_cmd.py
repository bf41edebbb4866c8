"""``opmap analyze``: analyse the maps of a stored acquisition into a products file.

Frames are read lazily with dask (local threads, or ``--scheduler`` for a dask.distributed
cluster), reduced chunk by chunk with one compiled reduction, analysed map by map and written
atomically as NeXus.  An existing output is never replaced unless ``--overwrite``; the
default output ``<stem>_analysis.nxs`` next to the input gets a ``.v2``, ``.v3`` … suffix
when taken.

``opmap analyze --from-tiled EXPERIMENT_ID`` replays a stored experiment instead: its map
runs are read from the Tiled server of ``--settings`` (or of ``--data-dir``, served for the
length of the command), analysed with the parameters stored with the newest product version
(``--set KEY=VALUE`` overrides some) and written as a new version (``v2``, ``v3`` …); the
geometry is ``--poni`` or the calibration stored with the calibrant run.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["parse_overrides", "register", "run", "run_replay"]

logger = logging.getLogger(__name__)


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``analyze`` sub-command to the ``opmap`` parser."""
    parser = subparsers.add_parser(
        "analyze",
        help="analyse stored maps (c, a, x, phases, Li thickness, grains) into a NeXus file",
        description=__doc__,
    )
    parser.add_argument("frames", type=Path, nargs="?", metavar="MASTER_OR_H5", help="frames file")
    parser.add_argument(
        "--from-tiled", metavar="EXPERIMENT_ID", help="replay a stored experiment from Tiled"
    )
    server = parser.add_mutually_exclusive_group()
    server.add_argument("--settings", type=Path, metavar="TOML", help="OpmapSettings (server)")
    server.add_argument("--data-dir", type=Path, metavar="DIR", help="serve DIR for the replay")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
        help="override a stored analysis parameter (JSON value), e.g. --set grain_k=12",
    )  # fmt: skip
    parser.add_argument(
        "--sampling-chi-fwhm-deg", type=float, metavar="DEG",
        help="replay: (003) sampling correction with spots of this azimuthal FWHM",
    )  # fmt: skip
    parser.add_argument("--dataset", help="frames dataset in a non-Dectris HDF5 file")
    parser.add_argument("--poni", type=Path, help="pyFAI PONI file (replay: optional)")
    parser.add_argument(
        "--map-shape", type=int, nargs=2, metavar=("NZ", "NX"),
        help="frames per map: NZ rows (z steps) by NX frames per fly line",
    )  # fmt: skip
    parser.add_argument("--snake", action="store_true", help="odd rows were flown in -x")
    parser.add_argument("--maps", type=int, metavar="N", help="analyse only the first N maps")
    parser.add_argument("--families", type=Path, help="TOML of [[family]] orientation families")
    parser.add_argument(
        "--params", type=Path, help="TOML of further AnalysisParameters (families from --families)"
    )
    parser.add_argument("--z-start-um", type=float, default=0.0, help="height of row 0 (µm)")
    parser.add_argument("--z-step-um", type=float, default=1.0, help="row spacing (µm, > 0)")
    parser.add_argument("--out", type=Path, help="output .nxs (default next to the input)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--scheduler", metavar="ADDRESS", help="dask.distributed scheduler")
    parser.add_argument(
        "--chunk-frames", type=int, default=64, metavar="N", help="frames per dask block (64)"
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the analysis; print the output path. Exit status 2 on bad input."""
    if args.from_tiled is not None:
        return run_replay(args)
    import numpy as np

    from opmap.analysis.families import load_families
    from opmap.analysis.pipeline import analyze_files, default_output_path, load_parameters

    try:
        for flag, value in (
            ("MASTER_OR_H5", args.frames), ("--poni", args.poni),
            ("--map-shape", args.map_shape), ("--families", args.families),
        ):  # fmt: skip
            if value is None:
                raise ValueError(f"{flag} is required (unless --from-tiled)")
        for flag in ("settings", "data_dir", "sampling_chi_fwhm_deg"):
            if getattr(args, flag) is not None:
                raise ValueError(f"--{flag.replace('_', '-')} needs --from-tiled")
        if args.overrides:
            raise ValueError("--set needs --from-tiled (use --params for a file analysis)")
        if not args.z_step_um > 0:
            raise ValueError(f"--z-step-um must be > 0, got {args.z_step_um}")
        families = load_families(args.families)
        params = None
        if args.params is not None:
            params = load_parameters(args.params, families=families.model_dump())
        out = args.out if args.out is not None else default_output_path(args.frames)
        n_z = args.map_shape[0]
        z_um = args.z_start_um + args.z_step_um * np.arange(max(n_z, 1))
        analyze_files(
            args.frames, poni=args.poni, map_shape=tuple(args.map_shape), families=families,
            params=params, dataset=args.dataset, snake=args.snake, n_maps=args.maps,
            z_um=z_um if n_z >= 1 else None, out=out, overwrite=args.overwrite,
            scheduler=args.scheduler, chunk_frames=args.chunk_frames,
            on_map=lambda done, total: print(f"map {done}/{total}", file=sys.stderr),
        )  # fmt: skip
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        logger.error("%s", error)
        print(f"opmap analyze: error: {error}", file=sys.stderr)
        return 2
    print(f"products written to {out}")
    return 0


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


def run_replay(args: argparse.Namespace) -> int:
    """``--from-tiled``: replay a stored experiment into a new product version (exit 2 on
    bad input, nothing written then)."""
    import contextlib

    import httpx

    from opmap.replay import replay_experiment

    try:
        for flag, value in (
            ("MASTER_OR_H5", args.frames), ("--map-shape", args.map_shape),
            ("--out", args.out), ("--dataset", args.dataset), ("--maps", args.maps),
        ):  # fmt: skip
            if value is not None:
                raise ValueError(f"{flag} is for a file analysis, not with --from-tiled")
        if args.settings is None and args.data_dir is None:
            raise ValueError("--from-tiled needs --settings TOML or --data-dir DIR")
        overrides = parse_overrides(args.overrides)
        params = _replay_parameters(args)
        sampling: Any = "stored"
        if args.sampling_chi_fwhm_deg is not None:
            sampling = {"chi_fwhm_deg": args.sampling_chi_fwhm_deg}
        with contextlib.ExitStack() as stack:
            client = _client(args, stack)
            version, products = replay_experiment(
                client, args.from_tiled, params=params, overrides=overrides, poni=args.poni,
                sampling_options=sampling, scheduler=args.scheduler,
                chunk_frames=args.chunk_frames,
                on_map=lambda done, total: print(f"map {done}/{total}", file=sys.stderr),
            )  # fmt: skip
    except (ValueError, FileNotFoundError, RuntimeError, httpx.HTTPError) as error:
        logger.error("%s", error)
        print(f"opmap analyze: error: {error}", file=sys.stderr)
        return 2
    meta = products.metadata
    print(f"products written to processed/{args.from_tiled}/{version}")
    print(
        f"  {len(meta['raw_uids'])} maps, replay of {meta['replay_of']}, "
        f"overrides {meta['overrides'] or 'none'}, geometry: {meta['geometry_source']}"
    )
    return 0


def _replay_parameters(args: argparse.Namespace) -> Any:
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


def _client(args: argparse.Namespace, stack: Any) -> Any:
    """The Tiled client of ``--settings`` (a running server) or of ``--data-dir`` (served
    in a subprocess until the replay ends)."""
    from tiled.client import from_uri

    from opmap.settings import OpmapSettings

    if args.data_dir is not None:
        from opmap.service import start_server_subprocess

        if not (args.data_dir / "catalog.db").is_file():
            raise ValueError(f"--data-dir {args.data_dir} holds no opmap catalog (catalog.db)")
        server = stack.enter_context(
            start_server_subprocess(OpmapSettings(data_dir=args.data_dir))
        )
        return server.client()
    settings = OpmapSettings.from_toml(args.settings)
    key = settings.api_key or os.environ.get("TILED_API_KEY")
    if key is None and settings.api_key_file is not None and settings.api_key_file.exists():
        key = settings.api_key_file.read_text().strip()
    return from_uri(settings.url, api_key=key)
