"""``opmap analyze``: analyse the maps of a stored acquisition into a products file.

Frames are read lazily with dask (local threads, or ``--scheduler`` for a dask.distributed
cluster), reduced chunk by chunk with one compiled reduction, analysed map by map and written
atomically as NeXus.  An existing output is never replaced unless ``--overwrite``; the
default output ``<stem>_analysis.nxs`` next to the input gets a ``.v2``, ``.v3`` … suffix
when taken.

A stored experiment in Tiled is analysed again with ``opmap replay EXPERIMENT_ID``;
``opmap analyze --from-tiled EXPERIMENT_ID ...`` is its deprecated alias (one release).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._replay import add_compute_arguments

__all__ = ["forward_deprecated", "register", "run"]

logger = logging.getLogger(__name__)

#: The deprecated option of ``opmap analyze`` that ``opmap replay`` replaces.
FROM_TILED = "--from-tiled"


def _positive_um(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0 µm, got {text}")
    return value


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``analyze`` sub-command to the ``opmap`` parser."""
    parser = subparsers.add_parser(
        "analyze",
        help="analyse stored maps (c, a, x, phases, Li thickness, grains) into a NeXus file",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_argument_group("frames")
    source.add_argument("frames", type=Path, metavar="MASTER_OR_H5", help="frames file")
    source.add_argument("--dataset", help="frames dataset in a non-Dectris HDF5 file")
    layout = parser.add_argument_group("map layout")
    layout.add_argument(
        "--map-shape",
        type=int,
        nargs=2,
        required=True,
        metavar=("NZ", "NX"),
        help="frames per map: NZ rows (z steps) by NX frames per fly line",
    )
    layout.add_argument("--snake", action="store_true", help="odd rows were flown in -x")
    layout.add_argument("--maps", type=int, metavar="N", help="analyse only the first N maps")
    layout.add_argument("--z-start-um", type=float, default=0.0, help="height of row 0 (µm)")
    layout.add_argument(
        "--z-step-um", type=_positive_um, default=1.0, help="row spacing (µm, > 0)"
    )
    analysis = parser.add_argument_group("analysis")
    analysis.add_argument("--poni", type=Path, required=True, help="pyFAI PONI file")
    analysis.add_argument(
        "--families", type=Path, required=True, help="TOML of [[family]] orientation families"
    )
    analysis.add_argument(
        "--params", type=Path, help="TOML of further AnalysisParameters (families from --families)"
    )
    output = parser.add_argument_group("output")
    output.add_argument("--out", type=Path, help="output .nxs (default next to the input)")
    output.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    add_compute_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the analysis; print the output path. Exit status 2 on bad input."""
    try:
        out = _analyze(args)
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        logger.error("%s", error)
        print(f"opmap analyze: error: {error}", file=sys.stderr)
        return 2
    print(f"products written to {out}")
    return 0


def _analyze(args: argparse.Namespace) -> Path:
    """Analyse the file as ``args`` say; return the output path."""
    import numpy as np

    from opmap.analysis.families import load_families
    from opmap.analysis.pipeline import analyze_files, default_output_path, load_parameters

    out = args.out if args.out is not None else default_output_path(args.frames)
    families = load_families(args.families)
    params = None
    if args.params is not None:
        params = load_parameters(args.params, families=families.model_dump())
    n_z = args.map_shape[0]
    z_um = args.z_start_um + args.z_step_um * np.arange(max(n_z, 1))
    analyze_files(
        args.frames,
        poni=args.poni,
        map_shape=tuple(args.map_shape),
        families=families,
        params=params,
        dataset=args.dataset,
        snake=args.snake,
        n_maps=args.maps,
        z_um=z_um if n_z >= 1 else None,
        out=out,
        overwrite=args.overwrite,
        scheduler=args.scheduler,
        chunk_frames=args.chunk_frames,
        on_map=lambda done, total: print(f"map {done}/{total}", file=sys.stderr),
    )
    return out


def forward_deprecated(argv: Sequence[str]) -> list[str]:
    """Rewrite ``analyze --from-tiled EXPERIMENT_ID ...`` as ``replay EXPERIMENT_ID ...``.

    The deprecated alias prints a warning on stderr; any other command line is returned
    unchanged. Options of the file analysis then are errors of ``opmap replay``.

    Examples
    --------
    >>> forward_deprecated(["-v", "analyze", "--settings", "s.toml", "--from-tiled=cell-3"])
    ['-v', 'replay', 'cell-3', '--settings', 's.toml']
    """
    argv = list(argv)
    command = next((i for i, word in enumerate(argv) if not word.startswith("-")), None)
    if command is None or argv[command] != "analyze":
        return argv
    rest = argv[command + 1 :]
    for i, word in enumerate(rest):
        if word.startswith(f"{FROM_TILED}="):
            experiment, used = word.partition("=")[2], 1
        elif word == FROM_TILED and i + 1 < len(rest):
            experiment, used = rest[i + 1], 2
        else:
            continue
        print(
            f"opmap analyze {FROM_TILED} is deprecated and will be removed in the next release;"
            f" use: opmap replay {experiment} ...",
            file=sys.stderr,
        )
        return [*argv[:command], "replay", experiment, *rest[:i], *rest[i + used :]]
    return argv
