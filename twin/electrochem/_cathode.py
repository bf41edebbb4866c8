"""The cathode's Li field x(z, t): finite volumes, concentration-dependent diffusion, lever rule.

Phase-separation treatment (a regularised lever rule, see docs/twin-electrochemistry.md):
LixCoO2 has a miscibility gap between a Li-poor metallic phase (x <= ``x_poor_eq``) and a
Li-rich insulating phase (x >= ``x_rich_eq``). A cell whose mean x lies inside the gap is a
mixture of the two at their boundary compositions, with the Li-rich volume fraction given by
the lever rule ``f = (x - x_poor_eq) / (x_rich_eq - x_poor_eq)``. Transport is Fickian in the
mean x with a diffusivity that depends on the local phase: fast in the Li-poor solid solution,
slow across the two-phase mixture (``diffusivity_gap``, which sets the width of a moving phase
boundary) and very slow in the Li-rich insulator.

Boundary conditions: no flux at the Pt current collector (z = 0); at the electrolyte side
(z = thickness) the Li flux equals the electrochemical current.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import solve_banded


@dataclass(frozen=True)
class LiProfile:
    """The cathode's Li field at one time; every array has shape ``(n_cells,)``.

    Parameters
    ----------
    z_um
        Cell centres (µm): 0 = bottom of the cathode (Pt side), thickness = top (electrolyte).
    x_li
        Mean Li fraction x in LixCoO2 per cell.
    rich_fraction
        Volume fraction of the Li-rich (insulating) phase, in [0, 1] (0 in solid solution).
    x_rich
        x of the Li-rich phase: ``max(x_li, x_rich_eq)`` (the gap boundary where absent).
    x_poor
        x of the Li-poor / solid-solution phase: ``min(x_li, x_poor_eq)`` (the gap boundary
        where absent). Everywhere ``x_li == f * x_rich + (1 - f) * x_poor``.
    """

    z_um: np.ndarray
    x_li: np.ndarray
    rich_fraction: np.ndarray
    x_rich: np.ndarray
    x_poor: np.ndarray


def split_phases(
    x_li: np.ndarray, *, x_poor_eq: float, x_rich_eq: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lever-rule split of a mean Li fraction into (rich fraction, x_rich, x_poor).

    Parameters
    ----------
    x_li
        Mean Li fractions, any shape.
    x_poor_eq, x_rich_eq
        Boundaries of the miscibility gap, ``x_poor_eq < x_rich_eq``.

    Returns
    -------
    rich_fraction, x_rich, x_poor
        Arrays of the shape of ``x_li``.

    Examples
    --------
    >>> f, xr, xp = split_phases(np.array([0.6, 0.85, 0.98]), x_poor_eq=0.75, x_rich_eq=0.95)
    >>> f.round(2).tolist(), xr.tolist(), xp.tolist()
    ([0.0, 0.5, 1.0], [0.95, 0.95, 0.98], [0.6, 0.75, 0.75])
    """
    x = np.asarray(x_li, dtype=float)
    rich = np.clip((x - x_poor_eq) / (x_rich_eq - x_poor_eq), 0.0, 1.0)
    return rich, np.maximum(x, x_rich_eq), np.minimum(x, x_poor_eq)


class CathodeField:
    """Mean Li fraction on a uniform 1-D finite-volume grid, advanced implicitly in time.

    Parameters
    ----------
    thickness_um
        Cathode thickness (µm).
    n_cells
        Number of finite volumes.
    x_initial
        Uniform initial Li fraction.
    x_poor_eq, x_rich_eq
        Miscibility-gap boundaries.
    diffusivity_um2_per_s
        Chemical diffusivities (µm²/s) for Li leaving towards the electrolyte
        (delithiation): Li-poor solid solution, two-phase mixture at its Li-poor edge (rich
        fraction 0), at its Li-rich edge (rich fraction 1), Li-rich phase. Inside the gap
        ln D is linear in the rich fraction (a geometric mixture).
    lithiation_gap_diffusivity_um2_per_s
        Diffusivity (µm²/s) across the two-phase mixture where Li moves into the bulk (away
        from the electrolyte): the insulating Li-rich phase forms shells around Li-poor
        cores that Li must cross (core-shell), so this is small.
    """

    def __init__(
        self,
        *,
        thickness_um: float,
        n_cells: int,
        x_initial: float,
        x_poor_eq: float,
        x_rich_eq: float,
        diffusivity_um2_per_s: tuple[float, float, float, float],
        lithiation_gap_diffusivity_um2_per_s: float,
        lithiation_slowdown_dx: float,
    ) -> None:
        self.dz_um = thickness_um / n_cells
        self.z_um = (np.arange(n_cells) + 0.5) * self.dz_um
        self.x_li = np.full(n_cells, float(x_initial))
        self.x_poor_eq = x_poor_eq
        self.x_rich_eq = x_rich_eq
        # ln D versus x: constant in each single phase, linear across the gap, with narrow
        # ramps (0.002 in x) outside the gap boundaries so the coefficients stay continuous.
        h = 0.002
        self._d_x = np.array([x_poor_eq - h, x_poor_eq, x_rich_eq, x_rich_eq + h])
        self._log_d = np.log(diffusivity_um2_per_s)
        d_poor, _, _, d_rich = diffusivity_um2_per_s
        d_lith = lithiation_gap_diffusivity_um2_per_s
        self._d_x_lith = np.array(
            [x_poor_eq - lithiation_slowdown_dx, x_poor_eq, x_rich_eq, x_rich_eq + h]
        )
        self._log_d_lith = np.log([d_poor, d_lith, d_lith, d_rich])
        self._ab = np.zeros((3, n_cells))

    @property
    def x_top(self) -> float:
        """Li fraction of the top cell, at the electrolyte interface."""
        return float(self.x_li[-1])

    def diffusivity(self, x_li: np.ndarray, *, lithiating: bool = False) -> np.ndarray:
        """Chemical diffusivity D(x) (µm²/s) for Li fractions ``x_li``.

        ``lithiating`` selects the two-phase value for Li moving away from the electrolyte.
        """
        if lithiating:
            return np.exp(np.interp(x_li, self._d_x_lith, self._log_d_lith))
        return np.exp(np.interp(x_li, self._d_x, self._log_d))

    def step(self, dt_s: float, top_flux_per_s: float) -> None:
        """Advance by ``dt_s`` with Li leaving through the top face at ``top_flux_per_s``.

        ``top_flux_per_s`` is the outward flux in (Li fraction x µm)/s: positive on charge.
        Backward Euler in time, diffusivities lagged at the start of the step (the front
        moves ~0.01 µm per step, far less than a cell): unconditionally stable, one
        tridiagonal solve per step.
        """
        x = self.x_li
        d_out = self.diffusivity(x)
        d_in = self.diffusivity(x, lithiating=True)
        # Per face (arithmetic mean of its two cells): Li moves down into the bulk where the
        # upper cell is richer, and then crosses the mixture with the lithiation value.
        inward = x[1:] > x[:-1]
        d_face = np.where(inward, d_in[1:] + d_in[:-1], d_out[1:] + d_out[:-1])
        r = 0.5 * d_face * dt_s / self.dz_um**2
        ab = self._ab
        ab[0, 1:] = -r
        ab[2, :-1] = -r
        ab[1, :] = 1.0
        ab[1, 1:] += r
        ab[1, :-1] += r
        rhs = x.copy()
        rhs[-1] -= top_flux_per_s * dt_s / self.dz_um
        self.x_li = solve_banded((1, 1), ab, rhs, overwrite_ab=False, check_finite=False)

    def profile(self) -> LiProfile:
        """The current field as a `LiProfile` (copies, safe to keep)."""
        rich, x_rich, x_poor = split_phases(
            self.x_li, x_poor_eq=self.x_poor_eq, x_rich_eq=self.x_rich_eq
        )
        return LiProfile(self.z_um.copy(), self.x_li.copy(), rich, x_rich, x_poor)
