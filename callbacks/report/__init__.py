"""Paper-style report of an experiment's products: figures and, for rehearsals, a table.

`write_report` draws, with matplotlib (no pyplot state, Agg rendering):

- ``fig2_charge``: electrochemistry with the maps marked, c maps per family at up to four
  charge maps, map-mean c and a per family, biphasic front height with its fitted speed;
- ``fig3_discharge``: map-mean c from the first discharge map on, the potential, and the
  Li-rich fraction in the top 5 µm of the cathode;
- ``fig4_anode``: Li thickness from Ti beside the electrochemistry, phase maps (Li, Ti, Au,
  parylene), Li grain azimuths, grain counts (total / new / deceased), lifetime classes;
- ``fig_truth`` and ``truth_table.csv`` / ``truth_table.md`` when the products carry the
  twin's ground truth (``truth_*``): recovered versus truth against the analysis targets
  (`report_table`).

``report.html`` shows every figure (SVG or PNG inline, every format linked) and the table
on one page per experiment.

A panel whose products are missing is skipped with a logged reason; a figure with no
drawable panel is not written. Nothing is ever filled in for a missing product.
"""

from ._data import Electrochemistry, electrochemistry
from ._table import (
    COLUMNS,
    MIN_COVERAGE,
    MIN_FRONT_MAPS,
    TARGETS,
    format_table,
    report_table,
    write_table_csv,
    write_table_markdown,
)
from ._truth import Pair, front_pairs, grain_pairs, has_truth
from ._write import FORMATS, HTML_NAME, write_report

__all__ = [
    "COLUMNS",
    "FORMATS",
    "HTML_NAME",
    "MIN_COVERAGE",
    "MIN_FRONT_MAPS",
    "TARGETS",
    "Electrochemistry",
    "Pair",
    "electrochemistry",
    "format_table",
    "front_pairs",
    "grain_pairs",
    "has_truth",
    "report_table",
    "write_report",
    "write_table_csv",
    "write_table_markdown",
]
