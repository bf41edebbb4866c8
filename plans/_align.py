"""`align_stack`: a z scan of intensity that finds the electrode stack and proposes the map."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
import numpy as np
from bluesky.protocols import Readable
from bluesky.utils import MsgGenerator

from ._geometry import MapGeometry
from ._records import PlanRecord
from ._stubs import StepAxis

ALIGN_STREAM = "stack_alignment"


@dataclass(frozen=True)
class StackAlignment:
    """Where the stack lies in z and the map that covers it.

    Parameters
    ----------
    z_bottom_um, z_top_um
        Lowest and highest scan points with intensity above the threshold (µm).
    geometry
        ``template`` with ``z_start_um = z_bottom_um`` and enough lines to reach ``z_top_um``.
    """

    z_bottom_um: float
    z_top_um: float
    geometry: MapGeometry


def find_stack(
    z_um: np.ndarray, intensity: np.ndarray, *, threshold_fraction: float = 0.5
) -> tuple[float, float]:
    """Extent in z of the points above ``min + threshold_fraction * (max - min)``.

    Parameters
    ----------
    z_um
        Scan positions (µm), shape ``(n,)``, n >= 3.
    intensity
        Signal at each position (counts), shape ``(n,)``.
    threshold_fraction
        In (0, 1).

    Returns
    -------
    tuple of float
        ``(z_bottom_um, z_top_um)``.

    Examples
    --------
    >>> find_stack(np.arange(6.0), np.array([0, 0, 5, 6, 0, 0.0]))
    (2.0, 3.0)
    """
    z = np.asarray(z_um, dtype=float)
    y = np.asarray(intensity, dtype=float)
    if z.ndim != 1 or z.shape != y.shape or z.size < 3:
        raise ValueError(f"z_um {z.shape} and intensity {y.shape} must be equal 1-D, n >= 3")
    if not 0 < threshold_fraction < 1:
        raise ValueError(f"threshold_fraction={threshold_fraction} must be in (0, 1)")
    if not np.ptp(y) > 0:
        raise ValueError("intensity is flat over the scan: no stack found")
    above = y >= y.min() + threshold_fraction * np.ptp(y)
    return float(z[above].min()), float(z[above].max())


def propose_map(z_bottom_um: float, z_top_um: float, template: MapGeometry) -> MapGeometry:
    """``template`` moved to start at ``z_bottom_um`` with lines up to ``z_top_um``."""
    count = math.floor((z_top_um - z_bottom_um) / template.z_step_um + 1e-9) + 1
    return template.model_copy(update={"z_start_um": z_bottom_um, "z_count": count})


def align_stack(
    monitor: Readable,
    stage_z: StepAxis,
    z_start_um: float,
    z_stop_um: float,
    num: int,
    *,
    intensity_field: str,
    template: MapGeometry | None = None,
    threshold_fraction: float = 0.5,
    md: dict[str, Any] | None = None,
) -> MsgGenerator[StackAlignment]:
    """Step z through the stack, read ``intensity_field``, and propose the map z range.

    Parameters
    ----------
    monitor
        Detector or beam monitor (triggered if Triggerable) giving ``intensity_field``.
    stage_z
        Step axis (µm).
    z_start_um, z_stop_um
        Scan range (µm), ``z_stop_um > z_start_um``.
    num
        Scan points, >= 3.
    intensity_field
        Data key of the scalar intensity, e.g. a diffracted-sum or transmission field.
    template
        Geometry to adapt (x range, exposure, z step); default `MapGeometry()`.
    threshold_fraction
        Edge threshold as a fraction of the intensity range, in (0, 1).
    md
        Extra start-document metadata.

    Returns
    -------
    StackAlignment
        Also emitted as one event in the ``stack_alignment`` stream.
    """
    _check_scan(z_start_um, z_stop_um, num, threshold_fraction)
    template = template or MapGeometry()
    plan_args = {
        "monitor": repr(monitor),
        "stage_z": repr(stage_z),
        "z_start_um": z_start_um,
        "z_stop_um": z_stop_um,
        "num": num,
        "intensity_field": intensity_field,
    }
    results: list[StackAlignment] = []  # run_decorator returns the run uid, not ours

    @bpp.stage_decorator([monitor])
    @bpp.run_decorator(md=_align_md(monitor, stage_z, num, plan_args, md))
    def inner() -> MsgGenerator[None]:
        z_points = np.linspace(z_start_um, z_stop_um, num)
        intensity = yield from _step_through(monitor, stage_z, z_points, intensity_field)
        bottom, top = find_stack(z_points, intensity, threshold_fraction=threshold_fraction)
        result = StackAlignment(bottom, top, propose_map(bottom, top, template))
        yield from _emit_alignment(result)
        results.append(result)

    yield from inner()
    return results[0]


def _check_scan(z_start_um: float, z_stop_um: float, num: int, threshold_fraction: float) -> None:
    if not z_stop_um > z_start_um:
        raise ValueError(f"z_stop_um={z_stop_um} must be greater than z_start_um={z_start_um}")
    if num < 3:
        raise ValueError(f"num={num} must be >= 3")
    if not 0 < threshold_fraction < 1:
        raise ValueError(f"threshold_fraction={threshold_fraction} must be in (0, 1)")


def _align_md(
    monitor: Readable,
    stage_z: StepAxis,
    num: int,
    plan_args: dict[str, Any],
    md: dict[str, Any] | None,
) -> dict[str, Any]:
    _md = {
        "plan_name": "align_stack",
        "plan_args": plan_args,
        "detectors": [monitor.name],
        "motors": [stage_z.name],
        "num_points": num,
        "hints": {"dimensions": [([stage_z.name], "primary")]},
    }
    _md.update(md or {})
    return _md


def _step_through(
    monitor: Readable, stage_z: StepAxis, z_points: np.ndarray, intensity_field: str
) -> MsgGenerator[np.ndarray]:
    """Move to each z (µm), trigger and read; the intensity at each point."""
    intensity = []
    for z in z_points:
        yield from bps.checkpoint()
        yield from bps.mv(stage_z, float(z))
        reading = yield from bps.trigger_and_read([monitor, stage_z])
        intensity.append(_field(reading, intensity_field))
    return np.asarray(intensity)


def _emit_alignment(result: StackAlignment) -> MsgGenerator[None]:
    """One event in the ``stack_alignment`` stream with the proposed z range."""
    record = PlanRecord("stack", {"z_bottom_um": "um", "z_top_um": "um", "z_count": ""})
    record.update(
        z_bottom_um=result.z_bottom_um, z_top_um=result.z_top_um, z_count=result.geometry.z_count
    )
    yield from bps.create(ALIGN_STREAM)
    yield from bps.read(record)
    yield from bps.save()


def _field(reading: dict[str, Any] | None, key: str) -> float:
    if reading is None:  # a simulator: no data
        return math.nan
    if key not in reading:
        raise ValueError(f"intensity_field={key!r} is not among {sorted(reading)}")
    return float(reading[key]["value"])
