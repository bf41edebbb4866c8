"""``opmap resume EXPERIMENT_ID``: go on with a rehearsal whose control process died.

The interrupted run is closed in Tiled with an abort stop and its reason, the simulated
cell is brought to the last stored electrochemistry sample, the interrupted map is taken
again and the schedule goes on: same experiment, next map index, same product version
(see `opmap.rehearse.resume_rehearsal` and docs/operations.md).

Exit status: 0 when the experiment ended with every run stored and analysed, 1 when a run
did not land or an analysis failed (the summary says which), 2 for an experiment that
cannot be resumed (unknown, finished, not a rehearsal) or a data dir another server holds;
nothing is changed then.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["register", "run"]


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``resume`` sub-command to the ``opmap`` parser."""
    parser = subparsers.add_parser(
        "resume",
        help="go on with a rehearsal whose control process died",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("experiment_id", metavar="EXPERIMENT_ID", help="the experiment to resume")
    parser.add_argument("--data-dir", type=Path, default=Path("opmap-data"))
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Resume ``args.experiment_id``; see the module docstring for exit statuses."""
    from opmap.rehearse import ResumeError, resume_rehearsal
    from opmap.service import DataDirInUseError
    from opmap.worker import check_path_component

    try:
        experiment_id = check_path_component(args.experiment_id, "EXPERIMENT_ID")
        if not args.data_dir.is_dir():
            raise ResumeError(f"--data-dir {args.data_dir} is not a directory")
        result = resume_rehearsal(experiment_id, args.data_dir)
    except (ResumeError, DataDirInUseError, ValueError) as error:
        print(f"opmap resume: {error}", file=sys.stderr)
        return 2
    failed = False
    if result.runs_not_landed:
        print(f"opmap resume: {len(result.runs_not_landed)} run(s) not fully stored in Tiled")
        failed = True
    if result.analysis_failures:
        print(f"opmap resume: {result.analysis_failures} analysis error(s); see the log")
        failed = True
    return 1 if failed else 0
