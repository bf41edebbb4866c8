"""Per-grain properties from a labelled (z, x, χ) volume, vectorised with bincount."""

from __future__ import annotations

import numpy as np


def grain_properties(
    labels: np.ndarray, n: int, net: np.ndarray, *, z_um: np.ndarray, x_um: np.ndarray,
    chi_deg: np.ndarray,
) -> dict[str, np.ndarray]:  # fmt: skip
    """Columns (each (n,)) for grains 1..n of one map.

    Intensity = sum of background-subtracted intensity over the grain's voxels (all q bins);
    positions are intensity-weighted (weights clipped at 0); azimuth is the weighted circular
    mean of χ in [0, 360); size counts (z, x, χ) voxels; ``n_pixels`` counts (z, x) pixels.
    """
    sel = labels > 0
    lab = labels[sel]
    zi, xi, ci = np.nonzero(sel)
    weight = np.clip(net[sel], 0.0, None).astype(np.float64) + 1e-12
    size = np.bincount(lab, minlength=n + 1)[1:]
    inten = np.bincount(lab, net[sel].astype(np.float64), minlength=n + 1)[1:]
    wsum = np.bincount(lab, weight, minlength=n + 1)[1:]

    def wmean(values: np.ndarray) -> np.ndarray:
        return np.bincount(lab, weight * values, minlength=n + 1)[1:] / wsum

    chi_rad = np.deg2rad(chi_deg[ci])
    azimuth = np.rad2deg(np.arctan2(wmean(np.sin(chi_rad)), wmean(np.cos(chi_rad)))) % 360.0
    pixel_key = np.unique(lab.astype(np.int64) * labels.shape[0] * labels.shape[1]
                          + zi * labels.shape[1] + xi)  # fmt: skip
    n_pixels = np.bincount(pixel_key // (labels.shape[0] * labels.shape[1]), minlength=n + 1)[1:]
    big = np.iinfo(np.int64).max
    z_lo, z_hi, x_lo, x_hi = (np.full(n + 1, big), np.full(n + 1, -1),
                              np.full(n + 1, big), np.full(n + 1, -1))  # fmt: skip
    np.minimum.at(z_lo, lab, zi)
    np.maximum.at(z_hi, lab, zi)
    np.minimum.at(x_lo, lab, xi)
    np.maximum.at(x_hi, lab, xi)
    return {
        "z_um": wmean(z_um[zi]),
        "x_um": wmean(x_um[xi]),
        "z_min_um": z_um[z_lo[1:]],
        "z_max_um": z_um[z_hi[1:]],
        "x_min_um": x_um[x_lo[1:]],
        "x_max_um": x_um[x_hi[1:]],
        "azimuth_deg": azimuth,
        "intensity": inten,
        "size_voxels": size,
        "n_pixels": n_pixels,
    }
