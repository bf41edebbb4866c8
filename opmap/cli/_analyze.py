"""``opmap analyze``: analyse the maps of a stored acquisition into a products file.

Frames are read lazily with dask (local threads, or ``--scheduler`` for a dask.distributed
cluster), reduced chunk by chunk with one compiled reduction, analysed map by map and written
atomically as NeXus.  An existing output is never replaced unless ``--overwrite``; the
default output ``<stem>_analysis.nxs`` next to the input gets a ``.v2``, ``.v3`` … suffix
when taken. Several frames files are read one after the other: a Dectris Eiger writes one
master per series (per arm), so a fly map armed once per line is given as all its masters,
``opmap analyze map_*_master.h5 ...``. No input is ever written over (not even with
``--overwrite``), and ``--out`` must be in an existing directory.

``--mask FILE`` excludes detector pixels (non-zero = excluded; NumPy .npy, EDF, TIFF or
HDF5, the detector's shape): the remedy for NaN or infinite counts in some pixels.
``--map-times-s`` gives the mid-map times (s) of data not written by opmap (a comma list
or a text file, one per analysed map); otherwise the file's per-frame times are used, else
the map index.

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
    source.add_argument(
        "frames",
        type=Path,
        nargs="+",
        metavar="MASTER_OR_H5",
        help="frames file(s), read one after the other (a Dectris Eiger armed once per fly "
        "line writes one master per line: give them all, in order)",
    )
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
    analysis.add_argument(
        "--mask", metavar="FILE", help="pixels to exclude (non-zero): .npy, EDF, TIFF, HDF5"
    )
    layout.add_argument(
        "--map-times-s", metavar="LIST_OR_FILE", help="mid-map times (s): 0,600,... or a file"
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
    except (ValueError, FileNotFoundError, FileExistsError, IsADirectoryError) as error:
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

    out = args.out if args.out is not None else default_output_path(args.frames[0])
    geometry, times_s = _checked_inputs(args, out)
    families = load_families(args.families)
    params = None
    if args.params is not None:
        params = load_parameters(args.params, families=families.model_dump())
    n_z = args.map_shape[0]
    z_um = args.z_start_um + args.z_step_um * np.arange(max(n_z, 1))
    analyze_files(
        args.frames,
        poni=geometry,
        map_shape=tuple(args.map_shape),
        families=families,
        params=params,
        dataset=args.dataset,
        snake=args.snake,
        n_maps=args.maps,
        z_um=z_um if n_z >= 1 else None,
        times_s=times_s,
        out=out,
        overwrite=args.overwrite,
        scheduler=args.scheduler,
        chunk_frames=args.chunk_frames,
        on_map=lambda done, total: print(f"map {done}/{total}", file=sys.stderr),
    )
    return out


def _checked_inputs(args: argparse.Namespace, out: Path) -> tuple[Any, Any]:
    """Check every input and ``out`` before anything is computed; geometry and map times.

    Returns the PONI geometry (with the ``--mask`` pixels excluded) and the map times
    (None without ``--map-times-s``).
    """
    from opmap.analysis.frames import open_frame_series
    from opmap.analysis.geometry import load_poni
    from opmap.analysis.pipeline import check_output_path, load_map_times_s, load_mask_file

    source = open_frame_series(args.frames, dataset=args.dataset)
    inputs = [*args.frames, *(piece.path for piece in source.pieces), args.poni, args.families]
    inputs += [path for path in (args.params, args.mask, args.map_times_s) if path is not None]
    check_output_path(out, [str(path).partition("::")[0] for path in inputs])
    for name in ("poni", "families", "params"):
        path = getattr(args, name)
        if path is not None and not Path(path).is_file():
            raise ValueError(f"--{name} {path}: file not found")
    geometry = load_poni(args.poni)
    if args.mask is not None:
        mask = load_mask_file(args.mask, geometry.shape)
        if geometry.mask is not None:
            mask = mask | geometry.mask
        geometry = geometry.with_mask(mask)
    times_s = None
    if args.map_times_s is not None:
        times_s = load_map_times_s(args.map_times_s)
        _check_time_count(times_s, source.n_frames, args.map_shape, args.maps)
    return geometry, times_s


def _check_time_count(times_s: Any, n_frames: int, map_shape: Sequence[int], maps: Any) -> None:
    n_per_map = int(map_shape[0]) * int(map_shape[1])
    if n_per_map < 1 or n_frames % n_per_map:
        return  # the layout error of analyze_files names --map-shape
    n_maps = n_frames // n_per_map if maps is None else maps
    if len(times_s) != n_maps:
        raise ValueError(
            f"--map-times-s holds {len(times_s)} times but {n_maps} maps are analysed "
            f"({n_frames} frames of {n_per_map} per map"
            f"{'' if maps is None else f', --maps {maps}'}); give one time per map"
        )


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
