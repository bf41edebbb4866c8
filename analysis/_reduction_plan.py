"""What the opmap products need from each detector frame: the reduction plan.

Default q windows (Å⁻¹, 18 keV) come from the reflection table of the LiCoO2 /
LiPON / Li / Ti / parylene / Au stack; every one is configurable.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .families import ChiSector, FamilyConfig, Reflection

__all__ = [
    "CakeBinning",
    "QBinning",
    "QWindow",
    "ReductionPlan",
    "SectorProfile",
    "between_spots_sectors",
    "default_bands",
    "off_pixel_axes_sectors",
]


class QWindow(BaseModel):
    """A q interval ``[q_min, q_max)`` in Å⁻¹."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    q_min_inv_angstrom: float = Field(gt=0, lt=20)
    q_max_inv_angstrom: float = Field(gt=0, lt=20)

    @model_validator(mode="after")
    def _ordered(self) -> QWindow:
        if not self.q_max_inv_angstrom > self.q_min_inv_angstrom:
            raise ValueError(
                f"q_max_inv_angstrom ({self.q_max_inv_angstrom}) must exceed "
                f"q_min_inv_angstrom ({self.q_min_inv_angstrom})"
            )
        return self


class QBinning(QWindow):
    """A q interval split into ``n_q`` equal bins (1D profile)."""

    n_q: int = Field(ge=1, le=10_000)

    @property
    def bin_width_inv_angstrom(self) -> float:
        """Width of one q bin, Å⁻¹."""
        return (self.q_max_inv_angstrom - self.q_min_inv_angstrom) / self.n_q


class CakeBinning(QBinning):
    """q × chi regrouping over the full azimuth, chi bins starting at 0° (opmap chi)."""

    n_chi: int = Field(default=360, ge=2, le=3600)

    @model_validator(mode="after")
    def _even_chi(self) -> CakeBinning:
        # pyFAI's chi starts at -180°; an even bin count maps its bins onto [0, 360) bins.
        if self.n_chi % 2:
            raise ValueError(f"n_chi must be even (bins aligned on 0° and 180°), got {self.n_chi}")
        return self


class SectorProfile(QBinning):
    """A q profile summed over its own azimuth sectors (opmap chi, degrees)."""

    sectors: tuple[ChiSector, ...] = Field(min_length=1)


def off_pixel_axes_sectors(margin_deg: float) -> tuple[ChiSector, ...]:
    """The four azimuth sectors more than ``margin_deg`` away from the pixel axes.

    Along a detector's pixel rows and columns (opmap chi 0, 90, 180 and 270° for a PONI
    without ``rot3``) a ring runs parallel to the pixel edges, so every pixel there sees
    the ring at the same radial phase and a peak narrower than a pixel cannot be located
    inside it. Away from the axes the ring crosses the grid obliquely and samples every
    phase.

    Parameters
    ----------
    margin_deg : float
        Half-width of the excluded wedge around each axis (degrees, 0 < margin < 45).

    Returns
    -------
    tuple of ChiSector
        ``[k·90 + margin, (k + 1)·90 − margin)`` for k = 0..3.

    Examples
    --------
    >>> [(s.start_chi_deg, s.width_deg) for s in off_pixel_axes_sectors(15.0)][:2]
    [(15.0, 60.0), (105.0, 60.0)]
    """
    if not 0.0 < margin_deg < 45.0:
        raise ValueError(f"margin_deg must lie in (0, 45) degrees, got {margin_deg!r}")
    width = 90.0 - 2.0 * margin_deg
    return tuple(ChiSector(start_chi_deg=90.0 * k + margin_deg, width_deg=width) for k in range(4))


def between_spots_sectors(
    families: FamilyConfig, reflection: Reflection, guard_deg: float
) -> tuple[ChiSector, ...]:
    """The azimuths of a ring where no family's spot lies: its powder part and background.

    Every family's sectors of ``reflection`` are widened by ``guard_deg`` on each side (to
    keep the spots' azimuthal tails out); what is left of the circle is returned, in
    pieces of at most 180°.

    Parameters
    ----------
    families : FamilyConfig
        The orientation families and their sectors.
    reflection : {"003", "110"}
        The ring.
    guard_deg : float
        Gap kept on each side of every sector (degrees, 0 ≤ guard < 90).

    Returns
    -------
    tuple of ChiSector
        In increasing start azimuth, from 0°.

    Raises
    ------
    ValueError
        ``guard_deg`` out of range, or no azimuth left between the widened sectors.

    Examples
    --------
    >>> config = FamilyConfig.model_validate({"family": [
    ...     {"name": "perp", "azimuths_003_deg": [25, 160, 205, 345]},
    ...     {"name": "par", "azimuths_003_deg": [90, 275]}]})
    >>> [(s.start_chi_deg, s.width_deg) for s in between_spots_sectors(config, "003", 5.0)]
    [(0.0, 10.0), (40.0, 35.0), (105.0, 40.0), (175.0, 15.0), (220.0, 40.0), (290.0, 40.0)]
    """
    if not 0.0 <= guard_deg < 90.0:
        raise ValueError(f"guard_deg must lie in [0, 90) degrees, got {guard_deg!r}")
    covered = sorted(
        ((s.start_chi_deg - guard_deg) % 360.0, s.width_deg + 2.0 * guard_deg)
        for family in families
        for s in family.sectors(reflection)
    )
    gaps = _circle_gaps(covered)
    if not gaps:
        raise ValueError(
            f"no azimuth of ({reflection}) lies between the families' sectors widened by "
            f"guard_deg = {guard_deg:g} degrees; reduce guard_deg or sector_half_width_deg"
        )
    pieces = []
    for start, width in gaps:
        n = int(np.ceil(width / 180.0))
        pieces += [(start + k * width / n, width / n) for k in range(n)]
    return tuple(
        ChiSector(start_chi_deg=round(start % 360.0, 9), width_deg=round(width, 9))
        for start, width in sorted(pieces, key=lambda p: p[0] % 360.0)
    )


def _circle_gaps(covered: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The uncovered arcs ``(start, width)`` of the circle [0, 360) given covered arcs
    ``(start, width)`` (starts in [0, 360), any overlap), split at 0°."""
    intervals = []  # each arc, and its copy one turn back (an arc crossing 360°)
    for start, width in covered:
        intervals += [(start, start + width), (start - 360.0, start + width - 360.0)]
    gaps, position = [], 0.0
    for lo, hi in sorted(intervals):
        if hi <= position:
            continue
        if lo > position:
            gaps.append((position, min(lo, 360.0) - position))
        position = max(position, hi)
        if position >= 360.0:
            break
    if position < 360.0:
        gaps.append((position, 360.0 - position))
    return [(start, width) for start, width in gaps if width > 1e-9]


def default_bands() -> dict[str, QWindow]:
    """Ring bands for phase-intensity maps (Å⁻¹).

    Au (111) at 2.669 and Ti (002) at 2.683 Å⁻¹ nearly coincide; the Au band
    stops at 2.676 to keep most of Ti (002) out.
    """

    def window(lo: float, hi: float) -> QWindow:
        return QWindow(q_min_inv_angstrom=lo, q_max_inv_angstrom=hi)

    return {
        "lco_003": window(1.28, 1.38),
        "ti_100": window(2.44, 2.48),
        "au_111": window(2.655, 2.676),
        "li_110": window(2.53, 2.55),
        "parylene": window(0.9, 1.1),
    }


class ReductionPlan(BaseModel):
    """Everything the products need from a frame; compiled once per geometry and mask.

    Parameters
    ----------
    families : FamilyConfig
        Orientation families; each gets ``"<name>:003"`` and ``"<name>:110"``
        sector profiles (the latter only if it lists (110) azimuths).
    profile_003, profile_110 : QBinning
        q ranges and bins of the (003) and (110) sector profiles.
    li_window : CakeBinning
        Li (110) window, 360 chi × 10 q over 2.53–2.55 Å⁻¹ by default.
    bands : dict[str, QWindow]
        Full-ring mean intensity per band (phase maps).
    reference_profiles : dict[str, QBinning]
        Full-ring q profiles ``"reference:<name>"`` of the reference reflections of the
        distance correction (`opmap.analysis.distance`); default Ti (100).
    sector_profiles : dict[str, SectorProfile]
        q profiles ``"sectors:<name>"`` summed over their own azimuth sectors (the distance
        correction's reference peaks away from the pixel axes); none by default.
    cake : CakeBinning or None
        Optional full cake for display (costly: many more pixels).
    polarization_factor : float or None
        pyFAI polarisation factor (-1..1), None for no correction.
    splitting : {"full", "bbox"}
        pyFAI pixel splitting of the sparse engines.
    allow_empty_sectors : bool
        If False (default) a sector with no unmasked pixel is an error.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    families: FamilyConfig
    profile_003: QBinning = QBinning(q_min_inv_angstrom=1.28, q_max_inv_angstrom=1.38, n_q=40)
    profile_110: QBinning = QBinning(q_min_inv_angstrom=4.43, q_max_inv_angstrom=4.52, n_q=36)
    li_window: CakeBinning = CakeBinning(
        q_min_inv_angstrom=2.53, q_max_inv_angstrom=2.55, n_q=10, n_chi=360
    )
    bands: dict[str, QWindow] = Field(default_factory=default_bands)
    reference_profiles: dict[str, QBinning] = Field(
        default_factory=lambda: {
            "ti_100": QBinning(q_min_inv_angstrom=2.4286, q_max_inv_angstrom=2.4886, n_q=24)
        }
    )
    sector_profiles: dict[str, SectorProfile] = Field(default_factory=dict)
    cake: CakeBinning | None = None
    polarization_factor: float | None = Field(default=0.99, ge=-1, le=1)
    splitting: Literal["full", "bbox"] = "full"
    allow_empty_sectors: bool = False

    @model_validator(mode="after")
    def _band_names(self) -> ReductionPlan:
        for name in self.bands:
            if not name or ":" in name or name in ("li_window", "cake"):
                raise ValueError(
                    f"bands: name {name!r} is reserved or contains ':' (used by profile keys)"
                )
        return self
