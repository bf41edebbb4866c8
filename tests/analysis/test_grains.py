"""Li grain recipe: planted spots recovered exactly, χ wrap, linking counts, texture share."""

from __future__ import annotations

import numpy as np
import pytest

from opmap.analysis.grains import (
    azimuth_histogram,
    find_grains,
    find_grains_for_thresholds,
    find_grains_in_maps,
    grain_counts,
    lifetime_classes,
    link_grains,
    texture_share,
)

N_Z, N_X, N_CHI, N_Q = 8, 10, 360, 10
Z_UM = np.arange(N_Z) * 1.0 + 24.5
X_UM = np.arange(N_X) * 33.0
MAP_TIMES_S = np.arange(4) * 300.0  # the paper's ~5 min per map


def _background(rng, n_maps=None):
    shape = (N_Z, N_X, N_CHI, N_Q) if n_maps is None else (n_maps, N_Z, N_X, N_CHI, N_Q)
    # total-scattering background varying with q and pixel, Poisson noise
    level = 40.0 + 5.0 * np.arange(N_Q)
    return rng.poisson(level, shape).astype(np.float32)


def _plant(w, z, x, chi0, width_chi=3, height=2000.0):
    chis = np.arange(chi0, chi0 + width_chi) % N_CHI
    for zi in np.atleast_1d(z):
        w[zi, x, chis, 3:7] += height


def test_planted_spots_are_recovered_exactly():
    rng = np.random.default_rng(0)
    w = _background(rng)
    truth = [  # (z rows, x, chi start) -> a columnar grain spanning several rows
        ((1, 2, 3), 2, 40),
        ((4,), 7, 121),
        ((5, 6), 0, 300),
    ]
    for z, x, chi in truth:
        _plant(w, z, x, chi)
    g = find_grains(w, z_um=Z_UM, x_um=X_UM)
    assert len(g) == 3
    order = np.argsort(g.azimuth_deg)
    np.testing.assert_allclose(
        g.azimuth_deg[order], [41.0, 122.0, 301.0], atol=0.01
    )  # noise-weighted
    np.testing.assert_array_equal(g.size_voxels[order], [9, 3, 6])
    np.testing.assert_array_equal(g.n_pixels[order], [3, 1, 2])
    np.testing.assert_allclose(g.z_min_um[order], Z_UM[[1, 4, 5]])
    np.testing.assert_allclose(g.z_max_um[order], Z_UM[[3, 4, 6]])
    np.testing.assert_allclose(g.x_um[order], X_UM[[2, 7, 0]])
    # intensity: 4 q bins x height per voxel, background removed (tolerance: noise)
    np.testing.assert_allclose(g.intensity[order], [9 * 8000, 3 * 8000, 6 * 8000], rtol=0.02)


def test_spot_across_359_and_0_degrees_is_one_grain():
    rng = np.random.default_rng(1)
    w = _background(rng)
    _plant(w, (3, 4), 5, 358, width_chi=4)  # 358, 359, 0, 1
    g = find_grains(w, z_um=Z_UM, x_um=X_UM)
    assert len(g) == 1
    assert g.size_voxels[0] == 8
    assert g.azimuth_deg[0] == pytest.approx(359.5, abs=0.01)


def test_background_alone_gives_no_grain_and_threshold_scales_with_k():
    rng = np.random.default_rng(2)
    w = _background(rng)
    assert len(find_grains(w)) == 0
    _plant(w, 2, 2, 10, height=300.0)  # ~6x the window mean: below k=10, above k=4
    assert len(find_grains(w, k=10.0)) == 0
    assert len(find_grains(w, k=4.0)) == 1


def _sequence(rng):
    """Four maps with known identities.

    A: maps 0-3, stable, drifts 1° per map.  B: maps 0-1.  C: map 1 only (ephemeral).
    D: maps 2-3, appears where B was but 40° away in azimuth (a different grain).
    """
    w = _background(rng, n_maps=4)
    for m in range(4):
        _plant(w[m], (2, 3), 4, 60 + m)
    for m in (0, 1):
        _plant(w[m], 6, 8, 200)
    _plant(w[1], 0, 1, 90)
    for m in (2, 3):
        _plant(w[m], 6, 8, 240)
    return w


def test_linking_gives_exact_new_and_deceased_counts():
    w = _sequence(np.random.default_rng(3))
    table = link_grains(find_grains_in_maps(iter(w), z_um=Z_UM, x_um=X_UM), time_s=MAP_TIMES_S)
    counts = grain_counts(table, n_maps=4)
    assert counts.total.tolist() == [2, 3, 2, 2]
    assert counts.new.tolist() == [2, 1, 1, 0]
    assert counts.deceased.tolist() == [0, 0, 2, 0]
    life, cls = lifetime_classes(table, n_maps=4)
    # tracks numbered in order of first appearance: A, B (map 0), C (map 1), D (map 2)
    assert life.tolist() == [4, 2, 1, 2]
    assert cls.tolist() == [2, 1, 0, 1]


def test_linking_tolerance_in_azimuth_breaks_identity():
    w = _sequence(np.random.default_rng(4))
    table = find_grains_in_maps(w, z_um=Z_UM, x_um=X_UM)
    strict = grain_counts(
        link_grains(table, time_s=MAP_TIMES_S, tol_chi_deg=0.5, rotation_deg_per_min=0.0),
        n_maps=4,
    )
    assert strict.new.tolist() == [2, 2, 2, 1]  # A's 1° drift now breaks its track
    with pytest.raises(ValueError, match="tol_chi_deg"):
        link_grains(table, tol_chi_deg=0)
    with pytest.raises(ValueError, match="link_grains first"):
        grain_counts(table, n_maps=4)


def test_azimuth_histogram_and_texture_share():
    rng = np.random.default_rng(5)
    w = _background(rng)
    for i, chi in enumerate([0, 58, 119, 178, 31, 250]):  # 4 Burgers, 1 at 30°, 1 neither
        _plant(w, i, 1 + i, (chi - 1) % 360)
    table = find_grains_in_maps(w[None], z_um=Z_UM, x_um=X_UM)
    a, b = texture_share(table, n_maps=1)
    assert a[0] == pytest.approx(4 / 6) and b[0] == pytest.approx(1 / 6)
    hist, edges = azimuth_histogram(table, n_maps=1, bin_width_deg=10)
    assert hist.sum() == 6 and edges[-1] == 360
    assert hist[0, 5] == 1 and hist[0, 25] == 1  # 58° and 250°
    with pytest.raises(ValueError, match="bin_width_deg"):
        azimuth_histogram(table, n_maps=1, bin_width_deg=7)


def test_bad_window_shape_raises():
    with pytest.raises(ValueError, match="window must be"):
        find_grains(np.zeros((3, 360, 10)))
    with pytest.raises(ValueError, match="z_um must have shape"):
        find_grains(np.zeros((2, 2, 360, 10)), z_um=np.zeros(3))


def test_column_split_separates_neighbouring_grains_and_keeps_a_straddling_one():
    w = np.ones((N_Z, N_X, N_CHI, N_Q), dtype=np.float32)
    # Two grains in neighbouring columns whose spots share the 122° bin (120–122°, 122–124°).
    w[2:5, 3, 120:123, :] = 60.0
    w[2:5, 4, 122:125, :] = 60.0
    # One grain straddling the boundary of columns 7 and 8: the same χ in both.
    w[2:5, 7:9, 200:203, :] = 60.0
    # An isolated noise voxel.
    w[6, 1, 300, 4] = 60.0
    plain = find_grains(w, z_um=Z_UM, x_um=X_UM)
    assert len(plain) == 3  # the touching pair is one component, plus the noise voxel
    split = find_grains(w, z_um=Z_UM, x_um=X_UM, split_chi_tol_deg=1.0, min_voxels=2)
    assert len(split) == 3
    order = np.argsort(split.azimuth_deg)
    np.testing.assert_allclose(split.azimuth_deg[order], [121.0, 123.0, 201.0], atol=1e-6)
    np.testing.assert_allclose(split.x_um[order], [X_UM[3], X_UM[4], 0.5 * (X_UM[7] + X_UM[8])])
    assert split.size_voxels[order].tolist() == [9, 9, 18]
    with pytest.raises(ValueError, match="min_voxels"):
        find_grains(w, min_voxels=0)


def _low_count_window(rng):
    """Li window of a detector with few counts per bin (the unbinned Eiger, ~0.15 counts per
    pixel under the Li ring) and its Poisson variance factors. With pixel splitting most
    bins average ~7 pixels (v ~ 0.15), but a bin that a pixel only grazes has a small pixel
    area and a large v: one photon there is a large intensity. Intensity = equivalent
    Poisson counts × v, background 0.15 everywhere."""
    variance = np.full((N_CHI, N_Q), 0.15)
    grazed = rng.random((N_CHI, N_Q)) < 0.05
    variance[grazed] = rng.uniform(2.0, 5.0, grazed.sum())
    counts = rng.poisson(0.15 / variance, (N_Z, N_X, N_CHI, N_Q))
    return (counts * variance).astype(np.float32), variance


def test_the_poisson_floor_keeps_single_photons_out_and_real_spots_in():
    """One photon in a grazed bin passes k × the mean; the floor (0.5 expected false voxels
    per map) removes that noise and keeps spots of 20 × the background."""
    rng = np.random.default_rng(3)
    w, variance = _low_count_window(rng)
    for z, x, chi in [((1, 2), 2, 40), ((4,), 7, 121), ((6,), 0, 300)]:
        _plant(w, z, x, chi, height=3.0)
    plain = find_grains_for_thresholds(w, (10.0,), z_um=Z_UM, x_um=X_UM)[10.0]
    floored = find_grains_for_thresholds(
        w, (10.0,), z_um=Z_UM, x_um=X_UM, variance=variance, false_spots_per_map=0.5
    )[10.0]
    assert len(plain) > 20  # single photons in grazed bins
    assert len(floored) == 3
    np.testing.assert_allclose(np.sort(floored.azimuth_deg), [41.0, 122.0, 301.0], atol=0.3)


def test_the_poisson_floor_is_checked():
    w = np.ones((2, 3, 360, 10), np.float32)
    with pytest.raises(ValueError, match="variance must have the window's"):
        find_grains_for_thresholds(w, (10.0,), variance=np.ones(10), false_spots_per_map=0.5)
    with pytest.raises(ValueError, match="false_spots_per_map must be in"):
        find_grains_for_thresholds(
            w, (10.0,), variance=np.ones((360, 10)), false_spots_per_map=0.0
        )
