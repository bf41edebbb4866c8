"""``opmap analyze``: analyse the maps of a stored acquisition into a products file.

Frames are read lazily with dask (local threads, or ``--scheduler`` for a dask.distributed
cluster), reduced chunk by chunk with one compiled reduction, analysed map by map and written
atomically as NeXus.  An existing output is never replaced unless ``--overwrite``; the
default output ``<stem>_analysis.nxs`` next to the input gets a ``.v2``, ``.v3`` … suffix
when taken.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

__all__ = ["register", "run"]

logger = logging.getLogger(__name__)


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``analyze`` sub-command to the ``opmap`` parser."""
    parser = subparsers.add_parser(
        "analyze",
        help="analyse stored maps (c, a, x, phases, Li thickness, grains) into a NeXus file",
        description=__doc__,
    )
    parser.add_argument("frames", type=Path, metavar="MASTER_OR_H5", help="frames file")
    parser.add_argument("--dataset", help="frames dataset in a non-Dectris HDF5 file")
    parser.add_argument("--poni", type=Path, required=True, help="pyFAI PONI file")
    parser.add_argument(
        "--map-shape", type=int, nargs=2, required=True, metavar=("NZ", "NX"),
        help="frames per map: NZ rows (z steps) by NX frames per fly line",
    )  # fmt: skip
    parser.add_argument("--snake", action="store_true", help="odd rows were flown in -x")
    parser.add_argument("--maps", type=int, metavar="N", help="analyse only the first N maps")
    parser.add_argument(
        "--families", type=Path, required=True, help="TOML of [[family]] orientation families"
    )
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
    import numpy as np

    from opmap.analysis.families import load_families
    from opmap.analysis.pipeline import analyze_files, default_output_path, load_parameters

    try:
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
