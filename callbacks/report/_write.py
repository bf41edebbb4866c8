"""`write_report`: the figures of a report (and the truth table of a rehearsal) as files."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from opmap.analysis.products import Products

from ._anode import anode_panels
from ._cathode import charge_panels, discharge_panels
from ._html import HTML_NAME, write_html
from ._layout import Panel, assemble
from ._table import report_table, write_table_csv, write_table_markdown
from ._truth import has_truth
from ._truthfig import truth_panels

__all__ = ["FORMATS", "HTML_NAME", "write_report"]

logger = logging.getLogger(__name__)

#: File formats a report can be written in.
FORMATS = ("png", "pdf", "svg")


def write_report(
    products: Products,
    out_dir: Path,
    *,
    formats: Sequence[str] = ("png", "pdf"),
    dpi: int = 120,
    cell_area_cm2: float | None = None,
    cathode_top_um: float = 20.0,
) -> list[Path]:
    """Write the report's figures (and the truth table of a rehearsal) into ``out_dir``.

    Parameters
    ----------
    products : Products
        An experiment's products (`ExperimentAnalysis.products`, `read_tiled_products`, Tiled).
    out_dir : Path
        Folder for the files (created). Files of the same names in it are replaced; the
        ``opmap report`` command refuses an existing folder unless ``--overwrite``.
    formats : sequence of str, optional
        Any of `FORMATS`; one file per figure and format.
    dpi : int, optional
        Resolution of raster formats, 30–600 dots per inch.
    cell_area_cm2 : float, optional
        Electrochemical cell area (cm², > 0): with a ``charge_c`` record it gives the
        electrochemical Li thickness beside the one from Ti. Default: the products'
        ``metadata["cell_area_cm2"]`` if any.
    cathode_top_um : float, optional
        Height of the cathode/electrolyte interface (µm, > 0); Fig. 3 averages the Li-rich
        fraction over the 5 µm below it.

    Returns
    -------
    list of Path
        Every file written, figures first (``fig2_charge.png``, ...), then the tables,
        then ``report.html`` (every figure on one page, with the table), when any
        figure was drawn.

    Raises
    ------
    ValueError
        Unknown format, empty ``formats``, ``dpi`` outside 30–600, non-positive area or
        cathode top.
    """
    formats = tuple(formats)
    _validate(formats, dpi, cell_area_cm2, cathode_top_um)
    area = cell_area_cm2 if cell_area_cm2 is not None else products.metadata.get("cell_area_cm2")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name, panels in _figures(products, area, cathode_top_um):
        figure = assemble(name, panels, columns=3 if name == "fig_truth" else 2)
        for extension in formats if figure is not None else ():
            path = out_dir / f"{name}.{extension}"
            figure.savefig(path, dpi=dpi)
            written.append(path)
    figures = list(written)
    rows = report_table(products) if has_truth(products) else []
    if rows:
        written.append(write_table_csv(rows, out_dir / "truth_table.csv"))
        written.append(write_table_markdown(rows, out_dir / "truth_table.md"))
    if figures:
        title = str(products.metadata.get("experiment_id", out_dir.name))
        written.append(write_html(out_dir, title, figures, rows))
    logger.info("report: %d files in %s", len(written), out_dir)
    return written


def _figures(
    products: Products, cell_area_cm2: float | None, cathode_top_um: float
) -> list[tuple[str, list[Panel]]]:
    """Every figure's name and panels; the truth figure only with ground truth."""
    figures = [
        ("fig2_charge", charge_panels(products, cell_area_cm2=cell_area_cm2)),
        ("fig3_discharge", discharge_panels(products, cathode_top_um=cathode_top_um)),
        ("fig4_anode", anode_panels(products, cell_area_cm2=cell_area_cm2)),
    ]
    if has_truth(products):
        figures.append(("fig_truth", truth_panels(products)))
    return figures


def _validate(
    formats: tuple[str, ...], dpi: int, cell_area_cm2: float | None, cathode_top_um: float
) -> None:
    unknown = [f for f in formats if f not in FORMATS]
    if not formats or unknown:
        raise ValueError(f"formats {formats} must be a non-empty selection of {FORMATS}")
    if not 30 <= dpi <= 600:
        raise ValueError(f"dpi {dpi} must be in 30–600")
    if cell_area_cm2 is not None and not cell_area_cm2 > 0:
        raise ValueError(f"cell_area_cm2 {cell_area_cm2} must be > 0 cm²")
    if not cathode_top_um > 0:
        raise ValueError(f"cathode_top_um {cathode_top_um} must be > 0 µm")
