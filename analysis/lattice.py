"""LCO lattice parameters, Li concentration and the biphasic front.

c = 3·d(003) = 6π/q(003) and a = 2·d(110) = 4π/q(110) (hexagonal R-3m setting, q = 2π/d).
x in LixCoO2 follows the paper's calibration lines (`LiCalibration`, NaN outside their range);
`PixelFlag` codes say why a pixel is NaN. The front: `x_profile_front` (the paper's x(z)
method, default) or `biphasic_front` (two-phase fraction, opt-in).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from ._fit_front import FrontResult, biphasic_front, front_velocity
from ._front_profile import (
    FrontFlag,
    ProfileFrontResult,
    depth_profile,
    front_flag_legend,
    x_profile_front,
)
from ._li_calibration import (
    PAPER_CALIBRATION,
    PAPER_TRANSFER_X_ERR,
    LiCalibration,
    li_fraction_from_c,
)
from ._pixel_flags import PixelFlag, coverage, peak_flags, pixel_flag_legend
from .fitting import PeakFit, TwoPeakFit

__all__ = [
    "PAPER_CALIBRATION",
    "PAPER_TRANSFER_X_ERR",
    "BiphasicMaps",
    "FrontFlag",
    "FrontResult",
    "LatticeMaps",
    "LiCalibration",
    "PixelFlag",
    "ProfileFrontResult",
    "a_from_q110",
    "biphasic_front",
    "biphasic_maps",
    "c_from_q003",
    "coverage",
    "depth_profile",
    "frames_to_maps",
    "front_flag_legend",
    "front_velocity",
    "lattice_maps",
    "li_fraction_from_c",
    "peak_flags",
    "pixel_flag_legend",
    "x_profile_front",
]


def c_from_q003(
    q_per_angstrom: np.ndarray, q_err: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """c lattice parameter (Å) from the LCO (003) position: c = 6π/q, σc = 6π·σq/q².

    Parameters
    ----------
    q_per_angstrom : array of float
        (003) positions (Å⁻¹), any shape; NaN propagates.
    q_err : array of float, optional
        Standard uncertainties of q (Å⁻¹), same shape; NaN result when omitted.

    Returns
    -------
    c_angstrom, c_err_angstrom : arrays of float, shape of the input

    Examples
    --------
    >>> c, _ = c_from_q003(np.array([1.3464]))
    >>> print(np.round(c, 3))
    [14.]
    """
    return _from_q(q_per_angstrom, q_err, 6.0 * np.pi)


def a_from_q110(
    q_per_angstrom: np.ndarray, q_err: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """a lattice parameter (Å) from the LCO (110) position: a = 4π/q, σa = 4π·σq/q².

    Parameters
    ----------
    q_per_angstrom : array of float
        (110) positions (Å⁻¹), any shape.
    q_err : array of float, optional
        Standard uncertainties of q (Å⁻¹).

    Returns
    -------
    a_angstrom, a_err_angstrom : arrays of float, shape of the input

    Examples
    --------
    >>> a, a_err = a_from_q110(np.array([4.482]), np.array([1e-4]))
    >>> print(np.round(a, 4), np.round(a_err, 6))
    [2.8037] [6.3e-05]
    """
    return _from_q(q_per_angstrom, q_err, 4.0 * np.pi)


def _from_q(q, q_err, factor: float) -> tuple[np.ndarray, np.ndarray]:
    q = np.asarray(q, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = np.where(q > 0, factor / q, np.nan)
        if q_err is None:
            return value, np.full_like(value, np.nan)
        return value, factor * np.asarray(q_err, dtype=np.float64) / q**2


def frames_to_maps(values: np.ndarray, *, n_z: int, n_x: int, snake: bool = False) -> np.ndarray:
    """Reshape per-frame values into maps (n_maps, n_z, n_x, ...).

    Parameters
    ----------
    values : (n_maps·n_z·n_x, ...) array
        Frames in acquisition order: row-major by z line (x fastest).
    n_z, n_x : int
        Map shape (lines, frames per line).
    snake : bool, optional
        Odd lines were scanned in −x: they are reversed so column j is always the same x.

    Returns
    -------
    (n_maps, n_z, n_x, ...) array (a view unless ``snake``)

    Examples
    --------
    >>> frames_to_maps(np.arange(6), n_z=2, n_x=3, snake=True)[0].tolist()
    [[0, 1, 2], [5, 4, 3]]
    """
    values = np.asarray(values)
    if n_z < 1 or n_x < 1:
        raise ValueError(f"n_z and n_x must be >= 1, got n_z={n_z}, n_x={n_x}")
    if values.shape[0] % (n_z * n_x):
        raise ValueError(
            f"values has {values.shape[0]} frames, not a multiple of n_z·n_x = {n_z * n_x}"
        )
    maps = values.reshape((-1, n_z, n_x, *values.shape[1:]))
    if snake:
        maps = maps.copy()
        maps[:, 1::2] = maps[:, 1::2, ::-1]
    return maps


@dataclass(frozen=True)
class LatticeMaps:
    """Per-family lattice maps; NaN where the fit was not trusted.

    Each array is (n_maps, n_z, n_x) from `lattice_maps`, or (n_z, n_x) for the one map of
    an `opmap.analysis.pipeline.analyze_map`. ``a_*`` holds only families with (110) fits.
    ``flags`` (from `analyze_map`): uint8 `PixelFlag` maps keyed ``"c_<family>"``,
    ``"a_<family>"``, ``"x_li_<family>"``.
    """

    c_angstrom: Mapping[str, np.ndarray]
    c_err_angstrom: Mapping[str, np.ndarray]
    a_angstrom: Mapping[str, np.ndarray]
    a_err_angstrom: Mapping[str, np.ndarray]
    x_li: Mapping[str, np.ndarray]
    x_li_err: Mapping[str, np.ndarray]
    flags: Mapping[str, np.ndarray] = field(default_factory=dict)


def lattice_maps(
    fits_003: Mapping[str, PeakFit],
    fits_110: Mapping[str, PeakFit] | None = None,
    *,
    n_z: int,
    n_x: int,
    snake: bool = False,
    calibration: LiCalibration = PAPER_CALIBRATION,
) -> LatticeMaps:
    """c, a and x maps per orientation family from single-Gaussian fits of all frames.

    Parameters
    ----------
    fits_003, fits_110 : mapping family -> PeakFit
        Fits of the (003) and (110) profiles of every frame (n_maps·n_z·n_x profiles), e.g.
        keys ``"perp"`` and ``"par"``; ``fits_110`` optional (a maps then absent).
    n_z, n_x, snake
        Map layout, see `frames_to_maps`.
    calibration : LiCalibration, optional
        x(c) coefficients.

    Returns
    -------
    LatticeMaps

    Examples
    --------
    >>> q = np.linspace(1.30, 1.37, 36)
    >>> y = 50 * np.exp(-0.5 * ((q - 6 * np.pi / 14.2) / 0.004) ** 2) + 3
    >>> from opmap.analysis.fitting import fit_gaussian
    >>> maps = lattice_maps({"perp": fit_gaussian(np.tile(y, (4, 1)), q)}, n_z=2, n_x=2)
    >>> print(maps.c_angstrom["perp"].shape, np.round(maps.c_angstrom["perp"][0, 0, 0], 4))
    (1, 2, 2) 14.2
    """
    c: dict[str, np.ndarray] = {}
    c_err: dict[str, np.ndarray] = {}
    a: dict[str, np.ndarray] = {}
    a_err: dict[str, np.ndarray] = {}
    x: dict[str, np.ndarray] = {}
    x_err: dict[str, np.ndarray] = {}
    for family, fit in fits_003.items():
        c1, e1 = c_from_q003(fit.position_q, fit.position_q_err)
        x1, xe1 = li_fraction_from_c(c1, e1, calibration=calibration)
        for out, val in ((c, c1), (c_err, e1), (x, x1), (x_err, xe1)):
            out[family] = frames_to_maps(val, n_z=n_z, n_x=n_x, snake=snake)
    for family, fit in (fits_110 or {}).items():
        a1, ae1 = a_from_q110(fit.position_q, fit.position_q_err)
        a[family] = frames_to_maps(a1, n_z=n_z, n_x=n_x, snake=snake)
        a_err[family] = frames_to_maps(ae1, n_z=n_z, n_x=n_x, snake=snake)
    return LatticeMaps(c, c_err, a, a_err, x, x_err)


@dataclass(frozen=True)
class BiphasicMaps:
    """Two-phase (003) results per family, each (n_maps, n_z, n_x).

    ``rich_fraction`` is the Li-rich (small c, high q) area fraction; ``c_mean_angstrom`` the
    fraction-weighted mean c; ``x_li`` from c̄ by `li_fraction_from_c` (biphasic branch when
    c̄ is below the switch).
    """

    rich_fraction: Mapping[str, np.ndarray]
    rich_fraction_err: Mapping[str, np.ndarray]
    c_rich_angstrom: Mapping[str, np.ndarray]
    c_poor_angstrom: Mapping[str, np.ndarray]
    c_mean_angstrom: Mapping[str, np.ndarray]
    x_li: Mapping[str, np.ndarray]


def biphasic_maps(
    fits: Mapping[str, TwoPeakFit],
    *,
    n_z: int,
    n_x: int,
    snake: bool = False,
    calibration: LiCalibration = PAPER_CALIBRATION,
) -> BiphasicMaps:
    """Li-rich / Li-poor phase fractions, c of both phases and x from c̄, as maps.

    Parameters
    ----------
    fits : mapping family -> TwoPeakFit
        Two-Gaussian fits of the (003) profile of every frame.
    n_z, n_x, snake
        Map layout, see `frames_to_maps`.
    calibration : LiCalibration, optional
        x(c̄) coefficients.

    Returns
    -------
    BiphasicMaps

    Examples
    --------
    >>> q = np.linspace(1.30, 1.38, 41)
    >>> g = lambda c: np.exp(-0.5 * ((q - 6 * np.pi / c) / 0.003) ** 2)
    >>> from opmap.analysis.fitting import fit_two_gaussians
    >>> fit = fit_two_gaussians(40 * g(14.13) + 60 * g(14.0) + 2, q, positions_q=(1.334, 1.346))
    >>> maps = biphasic_maps({"perp": fit}, n_z=1, n_x=1)
    >>> print(np.round(maps.rich_fraction["perp"].ravel(), 3))
    [0.6]
    """
    out: dict[str, dict[str, np.ndarray]] = {k: {} for k in BiphasicMaps.__annotations__}
    for family, fit in fits.items():
        c_poor, _ = c_from_q003(fit.position_q[:, 0])
        c_rich, _ = c_from_q003(fit.position_q[:, 1])
        rich = fit.fraction[:, 1]
        c_mean = rich * c_rich + (1.0 - rich) * c_poor
        # x from c̄: the biphasic line wherever c̄ is below the switch (the paper's recipe).
        x, _ = li_fraction_from_c(c_mean, calibration=calibration)
        values = {
            "rich_fraction": rich,
            "rich_fraction_err": fit.fraction_err[:, 1],
            "c_rich_angstrom": c_rich,
            "c_poor_angstrom": c_poor,
            "c_mean_angstrom": c_mean,
            "x_li": x,
        }
        for key, val in values.items():
            out[key][family] = frames_to_maps(val, n_z=n_z, n_x=n_x, snake=snake)
    return BiphasicMaps(**out)
