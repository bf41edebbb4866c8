"""Stubs shared by the map plans. Stubs never open runs.

Line bookkeeping (why a re-taken line is never doubled)
-------------------------------------------------------
Each line starts with a checkpoint. If the RunEngine pauses or a suspender trips
mid-line, bluesky replays the line from that checkpoint on resume: z move, prepare, kickoff,
complete. The detector has already written (part of) the interrupted line to its file, and a
stream-asset detector announces *every* frame written since its last collect, so the frames
of the aborted attempt appear in the ``primary`` stream too. They are not silently dropped
(the data stays honest); they are *marked* instead: after each completed line the plan emits
one event in the ``lines`` stream with ``line_first_frame`` and ``line_n_frames``, read from
the detector after the line completed, so they always name the frames of the successful
attempt (the last ``x_count`` written). A ``primary`` frame that lies in no
``[line_first_frame, line_first_frame + line_n_frames)`` range belongs to an aborted attempt.
``line_x_um`` gives the commanded x centre of each valid frame (acquisition order),
``line_x_measured_um`` where the frame really was: the fly axis's readback, recorded during
the line and interpolated at each frame's mid-exposure (`opmap.plans._readback`; NaN when
the axis reported nothing), ``line_z_um`` the commanded height and ``stage_z`` its readback.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import bluesky.plan_stubs as bps
import numpy as np
from bluesky.protocols import (
    Collectable,
    Flyable,
    Movable,
    Preparable,
    Readable,
    Stageable,
    WritesStreamAssets,
)
from bluesky.utils import MsgGenerator
from ophyd_async.core import TriggerInfo

from ._geometry import LineTrajectory
from ._readback import ReadbackRecorder, detector_start_s, frame_positions_um
from ._records import FrameIndex, PlanRecord

#: Stream of detector frames (stream_resource / stream_datum).
FRAMES_STREAM = "primary"
#: One event per completed line: which frames are valid and where they were taken.
LINES_STREAM = "lines"
#: Units of the ``lines`` record fields.
LINE_UNITS = {
    "index": "",
    "z_um": "um",
    "x_um": "um",
    "x_measured_um": "um",
    "first_frame": "",
    "n_frames": "",
}


@runtime_checkable
class FlyDetector(Preparable, Flyable, Collectable, WritesStreamAssets, Stageable, Protocol):
    """A detector that is prepared with a `TriggerInfo`, flown, and writes stream assets."""


@runtime_checkable
class FlyAxis(Preparable, Flyable, Protocol):
    """An axis prepared with a `FlyMotorInfo`, then kicked off and completed."""


@runtime_checkable
class StepAxis(Movable, Readable, Protocol):
    """An axis moved with ``set`` and read back."""


class LineBook:
    """The plan-side readables of one map run: frame counter, x readback, line record."""

    def __init__(self, detector: FlyDetector, stage_x: FlyAxis) -> None:
        self.frames = FrameIndex(detector)
        self.readback = ReadbackRecorder(stage_x)
        self.record = PlanRecord("line", LINE_UNITS)
        #: Start of the line's first exposure on the readback's clock (s).
        self.detector_start_s = float("nan")


#: Longest wait (s, wall time) for the detector's frame counter to move during a line. A
#: writer may flush a whole line at once (the simulated Eiger renders a line, then writes
#: it): on a loaded 2-core machine that took more than ophyd-async's default 10 s and
#: aborted a rehearsal. A detector silent for this long is stalled.
FRAME_TIMEOUT_S = 120.0


def prepare_line(
    detector: FlyDetector, stage_x: FlyAxis, line: LineTrajectory, exposure_s: float
) -> MsgGenerator[None]:
    """Move the fly axis to the run-up start and arm the detector for one line."""
    trigger = TriggerInfo(
        number_of_events=len(line.frame_x_um),
        livetime=exposure_s,
        exposure_timeout=exposure_s + FRAME_TIMEOUT_S,
    )
    yield from bps.prepare(stage_x, line.fly_motor_info(), group="prepare_line")
    yield from bps.prepare(detector, trigger, group="prepare_line")
    yield from bps.wait(group="prepare_line")


def fly_line_stub(
    detector: FlyDetector,
    stage_x: FlyAxis,
    stage_z: StepAxis,
    line: LineTrajectory,
    exposure_s: float,
    book: LineBook,
) -> MsgGenerator[None]:
    """Fly one line as a unit that a pause or suspender re-takes whole.

    Parameters
    ----------
    detector, stage_x, stage_z
        Frame detector, fly axis (µm), step axis (µm).
    line
        The trajectory (from `fly_line`).
    exposure_s
        Live time per frame (s).
    book
        The run's `LineBook`; its record is emitted in the ``lines`` stream.
    """
    yield from bps.checkpoint()
    yield from bps.mv(stage_z, line.z_um)
    yield from prepare_line(detector, stage_x, line, exposure_s)
    yield from bps.kickoff(book.readback, wait=True)
    # The axis returns from kickoff once at speed: the first frame starts on the segment.
    yield from bps.kickoff(stage_x, wait=True)
    yield from bps.kickoff(detector, wait=True)
    # internal trigger: the series started as the kickoff returned, or within the bounds
    # the detector gives (a SIMPLON Eiger: from its trigger request to its acquiring state)
    book.detector_start_s = detector_start_s(
        detector, book.readback.clock(), exposure_s, wall_clock=book.readback.stamped
    )
    yield from bps.complete(stage_x, group="fly_line")
    yield from bps.complete(detector, group="fly_line")
    yield from bps.wait(group="fly_line")
    yield from bps.complete(book.readback, wait=True)
    yield from bps.collect(detector, name=FRAMES_STREAM)
    yield from record_line(stage_z, line, book, exposure_s)


def record_line(
    stage_z: StepAxis, line: LineTrajectory, book: LineBook, exposure_s: float
) -> MsgGenerator[None]:
    """Emit the ``lines`` event of a completed line (see the module notes).

    The measured x of frame ``k`` is the readback at ``detector_start_s + (k + 1/2) *
    exposure_s`` (``detector_start_s``: when the detector's kickoff returned, or the start
    it bounds, NaN when too loosely: `opmap.plans._readback.detector_start_s`): the frame
    period is the exposure (the detector's dead time, ~100 ns for an Eiger, is neglected).
    """
    n_frames = len(line.frame_x_um)
    frames_written = yield from bps.rd(book.frames, default_value=n_frames)
    measured = frame_positions_um(
        book.readback.samples, book.detector_start_s, n_frames, exposure_s, exposure_s
    )
    book.record.update(
        index=line.line_index,
        z_um=line.z_um,
        x_um=np.asarray(line.frame_x_um),
        x_measured_um=measured,
        first_frame=int(frames_written) - n_frames,
        n_frames=n_frames,
    )
    yield from bps.create(LINES_STREAM)
    yield from bps.read(book.record)
    yield from bps.read(stage_z)
    yield from bps.save()
