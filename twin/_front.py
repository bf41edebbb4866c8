"""The phase boundary of the cathode's Li field: where the Li-rich share crosses one half."""

from __future__ import annotations

import math

import numpy as np


def phase_boundary_um(z_um: np.ndarray, rich_fraction: np.ndarray) -> float:
    """z (µm) where the Li-rich volume fraction crosses 0.5, NaN if it never does.

    Linear interpolation between the cell centres ``z_um`` (increasing) on either side of
    the crossing; with several crossings, the one nearest the electrolyte (largest z).

    Examples
    --------
    >>> phase_boundary_um(np.array([0.5, 1.5, 2.5, 3.5]), np.array([1.0, 1.0, 0.0, 0.0]))
    2.0
    >>> math.isnan(phase_boundary_um(np.arange(3.0), np.zeros(3)))
    True
    """
    z = np.asarray(z_um, float)
    f = np.asarray(rich_fraction, float) - 0.5
    crossing = np.flatnonzero(np.sign(f[:-1]) != np.sign(f[1:]))
    if crossing.size == 0:
        return math.nan
    i = int(crossing[-1])
    return float(z[i] + (z[i + 1] - z[i]) * f[i] / (f[i] - f[i + 1]))
