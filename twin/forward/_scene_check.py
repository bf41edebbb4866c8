"""Validation of a `BeamScene` against what a `DiffractionRenderer` precomputed."""

from __future__ import annotations

import math
from collections.abc import Sequence

from .._scene import LAYERS, BeamScene
from ._config import DiffractionConfig


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if not (math.isfinite(value) and low <= value <= high):
        raise ValueError(f"{name}={value} is outside the renderer's range [{low}, {high}]")


def check_scene(scene: BeamScene, config: DiffractionConfig, families: Sequence[str]) -> None:
    """Raise ValueError naming the first field of ``scene`` the renderer cannot draw."""
    for layer, weight in scene.layer_weights.items():
        if layer not in LAYERS:
            raise ValueError(f"layer_weights[{layer!r}]: unknown layer, allowed {LAYERS}")
        _check_range(f"layer_weights[{layer!r}]", weight, 0.0, 1.0 + 1e-9)
    for i, phase in enumerate(scene.lco_phases):
        if phase.family not in families:
            raise ValueError(f"lco_phases[{i}].family={phase.family!r} not in {tuple(families)}")
        _check_range(f"lco_phases[{i}].weight", phase.weight, 0.0, 1.0 + 1e-9)
        _check_range(f"lco_phases[{i}].c_angstrom", phase.c_angstrom, *config.lco_c_range_angstrom)
        _check_range(f"lco_phases[{i}].a_angstrom", phase.a_angstrom, *config.lco_a_range_angstrom)
    tol = config.ti_lattice_tolerance
    ti_a, ti_c = config.ti_a_angstrom, config.ti_c_angstrom
    _check_range("ti_a_angstrom", scene.ti_a_angstrom, ti_a * (1 - tol), ti_a * (1 + tol))
    _check_range("ti_c_angstrom", scene.ti_c_angstrom, ti_c * (1 - tol), ti_c * (1 + tol))
    _check_range("li_a_angstrom", scene.li_a_angstrom, *config.li_a_range_angstrom)
    offset = config.max_sample_offset_um
    _check_range("sample_offset_um", scene.sample_offset_um, -offset, offset)
    for i, spot in enumerate(scene.li_spots):
        _check_range(f"li_spots[{i}].weight", spot.weight, 0.0, math.inf)
        _check_range(f"li_spots[{i}].azimuth_deg", spot.azimuth_deg, -360.0, 720.0)
        _check_range(f"li_spots[{i}].chi_fwhm_deg", spot.chi_fwhm_deg, 0.01, 90.0)
