"""`calibrate`: one calibrant frame, in its own run, with what the geometry refinement needs.

The plan puts the calibrant in the beam, records one frame and puts the sample back (also
on failure). Its start document names the ``calibrant`` and the ``start_poni`` to refine
from; `opmap.callbacks.calibration.CalibrationCallback` turns the run into a PONI and stores
the PONI and its quality figures with the run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.plans as bp
import bluesky.preprocessors as bpp
from bluesky.protocols import Movable, Readable
from bluesky.utils import MsgGenerator

#: Calibrants the analysis knows how to refine on (pyFAI names).
CALIBRANTS = ("CeO2", "alpha_Al2O3")


def calibrate(
    detector: Readable,
    sample_changer: Movable,
    start_poni: str | os.PathLike[str],
    *,
    calibrant: str = "CeO2",
    sample_position: str = "cell",
    md: dict[str, Any] | None = None,
) -> MsgGenerator[str]:
    """Record one calibrant frame for the detector geometry refinement.

    Parameters
    ----------
    detector
        The area detector (triggered once).
    sample_changer
        Moves ``calibrant`` into the beam, then ``sample_position`` back.
    start_poni
        PONI file to refine from (a previous calibration or the design geometry); must exist.
    calibrant
        pyFAI calibrant name, one of `CALIBRANTS`.
    sample_position
        What the changer puts back after the frame.
    md
        Extra start-document metadata.

    Returns
    -------
    str
        The run uid.
    """
    if calibrant not in CALIBRANTS:
        raise ValueError(f"calibrant={calibrant!r} must be one of {CALIBRANTS}")
    poni = Path(start_poni)
    if not poni.is_file():
        raise ValueError(f"start_poni={str(poni)!r} is not a file")
    _md = {
        "plan_name": "calibrate",
        "plan_args": {"detector": repr(detector), "calibrant": calibrant},
        "calibrant": calibrant,
        "start_poni": str(poni.resolve()),
    }
    _md.update(md or {})

    def acquire() -> MsgGenerator[str]:
        yield from bps.mv(sample_changer, calibrant)
        return (yield from bp.count([detector], num=1, md=_md))

    def put_sample_back() -> MsgGenerator[None]:
        yield from bps.mv(sample_changer, sample_position)

    return (yield from bpp.finalize_wrapper(acquire(), put_sample_back()))
