"""Li thickness from the Ti displacement (the paper's Fig. 4b) under a Gaussian beam, the
parallax of an offset, tilted sample and a bending Ti layer, rendered by ray sums here."""

from __future__ import annotations

import numpy as np

from opmap.analysis.phases import li_thickness_from_ti, ti_position

ROWS_UM = np.arange(40.0)  # 1 µm rows
FINE_UM = np.arange(-5.0, 45.0, 0.005)
BEAM_SIGMA_UM = 1.0 / 2.3548  # Gaussian beam, 1 µm FWHM
TI_UM = 0.5
DEPTH_UM = 350.0  # path of the beam through the cell


def ti_rows(bottom_um: float, *, tilt_deg: float, bend_um: float) -> np.ndarray:
    """Ti (100) intensity per row: the 0.5 µm layer seen along a 350 µm path through a cell
    tilted by ``tilt_deg`` about x (its height changes along the beam: parallax), bent by
    ``bend_um`` across the 33 µm column, convolved with the Gaussian beam."""
    density = np.zeros_like(FINE_UM)
    smear_um = DEPTH_UM * np.tan(np.deg2rad(tilt_deg))
    for u in np.linspace(-0.5, 0.5, 101):  # along the beam
        for v in (-0.5, -0.25, 0.0, 0.25, 0.5):  # across the column
            low = bottom_um + u * smear_um + v * bend_um
            density += (FINE_UM - low >= 0) & (FINE_UM - low < TI_UM)
    beam = np.exp(-0.5 * ((ROWS_UM[:, None] - FINE_UM[None, :]) / BEAM_SIGMA_UM) ** 2)
    return beam @ (density / density.sum())


def test_ti_displacement_gives_the_plated_thickness_within_0p1_um():
    rng = np.random.default_rng(0)
    thickness_um = np.array([0.0, 0.8, 2.3, 4.1, 6.8])  # 0 … 1.4 mAh/cm²
    bend_um = np.array([0.0, 0.2, 0.5, 0.8, 1.0])  # the parylene bends as Li grows (Fig. S8)
    columns = []
    for tilt_deg, base_um in ((0.1, 20.3), (0.25, 21.7)):  # two columns, two parallaxes
        rows = [ti_rows(base_um + t, tilt_deg=tilt_deg, bend_um=b)
                for t, b in zip(thickness_um, bend_um, strict=True)]  # fmt: skip
        columns.append(np.stack(rows))
    profile = np.stack(columns, axis=-1)  # (n_maps, n_z, n_x)
    counts = rng.poisson(2000 * profile / profile.max() + 50).astype(float)
    ti_z = ti_position(counts, z_um=ROWS_UM)
    thickness = li_thickness_from_ti(ti_z)
    np.testing.assert_allclose(thickness, thickness_um[:, None].repeat(2, 1), atol=0.1)
    # the centroid is sub-row: without it (the row of the maximum) the error is up to 0.5 µm
    coarse = ROWS_UM[np.argmax(counts, axis=1)]
    assert np.abs(coarse - coarse[0] - thickness_um[:, None]).max() > 0.2
