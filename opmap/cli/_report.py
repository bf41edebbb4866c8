"""``opmap report``: the paper-style figures (and a rehearsal's truth table) of an experiment.

Products come from a NeXus file (``--from-nexus``, as written by ``opmap analyze`` or the
analysis worker) or from the Tiled server of ``--settings`` (``processed/<EXPERIMENT>/``,
the newest version or ``--version vN``). The report goes to ``--out`` or to
``<EXPERIMENT>_report`` in the working directory (``.v2``, ``.v3`` … when taken). An
existing folder is never written into unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path
from typing import Any

from ._tiled_client import client_from_settings

__all__ = ["load_products", "register", "run"]

logger = logging.getLogger(__name__)
_VERSION = re.compile(r"v[1-9][0-9]*")


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``report`` sub-command to the ``opmap`` parser."""
    parser = subparsers.add_parser(
        "report",
        help="draw the paper-style figures of an experiment's products",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("experiment", metavar="EXPERIMENT", help="experiment id")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--from-nexus", type=Path, metavar="FILE.nxs", help="products file")
    source.add_argument(
        "--settings", type=Path, metavar="TOML", help="OpmapSettings of the server"
    )
    parser.add_argument(
        "--version", metavar="vN", help="product version in Tiled (default newest)"
    )
    parser.add_argument("--out", type=Path, metavar="DIR", help="report folder")
    parser.add_argument("--overwrite", action="store_true", help="write into an existing --out")
    parser.add_argument(
        "--formats", nargs="+", default=["png", "pdf"], metavar="EXT", help="png pdf svg"
    )
    parser.add_argument("--dpi", type=int, default=120, help="raster resolution (30-600)")
    parser.add_argument("--cell-area-cm2", type=float, help="cell area for Li thickness from Q")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Write the report; print the files and the truth table. Exit status 2 on bad input."""
    import httpx

    from opmap.analysis.nexus import next_free_path
    from opmap.callbacks.report import format_table, report_table, write_report

    try:
        if args.version is not None and args.settings is None:
            raise ValueError("--version selects a Tiled version; it needs --settings")
        out = args.out if args.out is not None else next_free_path(f"{args.experiment}_report")
        if out.exists() and not args.overwrite:
            raise ValueError(f"{out} exists; pass --overwrite or choose another --out")
        _check_options(args, out)
        products = load_products(args.experiment, args.from_nexus, args.settings, args.version)
        written = write_report(products, out, formats=args.formats, dpi=args.dpi,
                               cell_area_cm2=args.cell_area_cm2)  # fmt: skip
    except (ValueError, KeyError, FileNotFoundError, OSError, httpx.HTTPError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        logger.error("opmap report: %s", message)
        return 2
    for path in written:
        print(path)
    rows = report_table(products)
    if rows:
        print(format_table(rows), end="")
    return 0


def load_products(
    experiment: str, nexus: Path | None, settings: Path | None, version: str | None
) -> Any:
    """Products from a NeXus file or from the Tiled server the settings describe."""
    if nexus is not None:
        from opmap.analysis.nexus import read_products

        try:
            products = read_products(nexus)
        except (OSError, KeyError) as error:
            raise ValueError(
                f"--from-nexus {nexus} is not an opmap products file: {error}"
            ) from None
        stored = products.metadata.get("experiment_id")
        if stored is not None and stored != experiment:
            logger.warning("%s holds experiment %r, not %r", nexus, stored, experiment)
        return products
    if version is not None and not _VERSION.fullmatch(version):
        raise ValueError(f"--version {version!r} must be v1, v2, ...")
    processed = client_from_settings(settings)["processed"]
    from opmap.callbacks.tiled_products import read_tiled_products, versions

    if experiment not in processed:
        known = sorted(processed)
        listed = ", ".join(known[:10]) + (" ..." if len(known) > 10 else "")
        raise ValueError(
            f"no products of experiment {experiment!r} on the server; stored: {listed or 'none'}"
        )
    stored = versions(processed, experiment)
    if not stored:
        raise ValueError(f"experiment {experiment!r} has no complete product version yet")
    if version is not None and version not in stored:
        raise ValueError(
            f"--version {version} of {experiment!r} does not exist; stored versions: "
            f"{', '.join(stored)}"
        )
    return read_tiled_products(processed[experiment][version or stored[-1]])


def _check_options(args: argparse.Namespace, out: Path) -> None:
    """Refuse bad options before anything is read or written."""
    allowed = {"png", "pdf", "svg"}
    bad = [fmt for fmt in args.formats if fmt.lower() not in allowed]
    if bad:
        raise ValueError(f"--formats {' '.join(bad)}: allowed are png, pdf, svg")
    if not 30 <= args.dpi <= 600:
        raise ValueError(f"--dpi {args.dpi} must be in 30-600")
    if args.cell_area_cm2 is not None and not args.cell_area_cm2 > 0:
        raise ValueError(f"--cell-area-cm2 {args.cell_area_cm2} must be > 0")
    if not out.resolve().parent.is_dir():
        raise ValueError(f"--out {out}: directory {out.parent} does not exist")
    if args.from_nexus is not None and not args.from_nexus.is_file():
        raise ValueError(f"--from-nexus {args.from_nexus}: file not found")
