"""Tests for opmap.analysis.reduction: agreement with pyFAI, physics, bad input."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from opmap.analysis.families import FamilyConfig
from opmap.analysis.geometry import (
    DetectorGeometry,
    MaskConfig,
    ShadowSector,
    build_mask,
    eiger4m_detector,
)
from opmap.analysis.reduction import CakeBinning, ReductionPlan, compile_reduction

POL = 0.99
FAMILIES = FamilyConfig.model_validate(
    {
        "family": [
            {"name": "perp", "azimuths_003_deg": [25, 160, 205, 345], "azimuths_110_deg": [90]},
            {"name": "par", "azimuths_003_deg": [90, 275], "azimuths_110_deg": [210]},
        ]
    }
)


@pytest.fixture(scope="module")
def geometry() -> DetectorGeometry:
    return DetectorGeometry(
        eiger4m_detector(binning=4), distance_m=0.1, poni1_m=0.081, poni2_m=0.0775, rot1_rad=0.01
    )


def ring_frames(geometry: DetectorGeometry, n: int, seed: int = 0) -> np.ndarray:
    """Gaussian rings at LCO (003), Li (110), Ti (100), LCO (110) + background, Poisson."""
    q, chi = geometry.q_array(), geometry.chi_deg_array()
    rate = 20.0 + 5.0 * np.exp(-(((q - 1.0) / 0.08) ** 2))
    for q0, height in ((1.33, 400.0), (2.459, 300.0), (2.54, 200.0), (4.48, 150.0)):
        rate = rate + height * np.exp(-0.5 * ((q - q0) / 0.006) ** 2)
    rate = rate * (1 + 0.5 * np.cos(np.deg2rad(chi)))  # azimuthal texture
    rng = np.random.default_rng(seed)
    return rng.poisson(rate, size=(n, *rate.shape)).astype(np.float32)


@pytest.fixture(scope="module", params=["full", "bbox"])
def compiled(request, geometry):
    plan = ReductionPlan(
        families=FAMILIES,
        splitting=request.param,
        polarization_factor=POL,
        cake=CakeBinning(q_min_inv_angstrom=1.0, q_max_inv_angstrom=5.0, n_q=200, n_chi=360),
    )
    return compile_reduction(plan, geometry)


@pytest.fixture(scope="module")
def frames(geometry) -> np.ndarray:
    return ring_frames(geometry, 3)


def method(compiled) -> tuple[str, str, str]:
    return (compiled.plan.splitting, "csr", "cython")


def pooled_reference(compiled, frame, key: str) -> np.ndarray:
    """pyFAI integrate1d_ng over each sector, pooled as Σ signal / Σ normalisation."""
    ai = compiled.geometry.integrator
    name, reflection = key.split(":")
    family = next(f for f in FAMILIES.family if f.name == name)
    binning = compiled.plan.profile_003 if reflection == "003" else compiled.plan.profile_110
    signal = norm = 0.0
    for sector in family.sectors(reflection):
        for chi_range in sector.to_pyfai_ranges_deg():
            result = ai.integrate1d_ng(
                frame,
                binning.n_q,
                radial_range=(binning.q_min_inv_angstrom, binning.q_max_inv_angstrom),
                azimuth_range=chi_range,
                unit="q_A^-1",
                method=method(compiled),
                polarization_factor=POL,
            )
            signal = signal + result.sum_signal
            norm = norm + result.sum_normalization
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(signal / norm), np.asarray(norm)


def assert_agree(ours: np.ndarray, reference: np.ndarray, area: np.ndarray) -> None:
    """Equal within 1e-3 on bins with signal; NaN exactly where bins hold no pixel area."""
    signal = (area > 1e-6) & (reference > 0)
    assert signal.sum() > 0.8 * reference.size
    np.testing.assert_allclose(ours[signal], reference[signal], rtol=1e-3)
    assert np.array_equal(np.isnan(ours), area <= 1e-6)


@pytest.mark.parametrize("key", ["perp:003", "par:003", "perp:110", "par:110"])
def test_family_profiles_match_pyfai_pooled_sectors(compiled, frames, key) -> None:
    out = compiled.reduce(frames[:1])
    assert_agree(out.profiles[key][0], *pooled_reference(compiled, frames[0], key))


def padded_cake_reference(compiled, frame, q_range, n_q: int, pad: int):
    """pyFAI integrate2d_ng over ``q_range`` padded by ``pad`` whole bins on each side, the
    padding dropped, chi shifted to start at 0°: every pixel split by its true area.

    pyFAI clamps pixels crossing the ends of its radial range onto them (a pixel with a
    sliver inside then counts whole, a degenerate one gets garbage weights, issue 14), so
    the reduction pads the range; any padding wider than a pixel gives the same bins.
    """
    width = (q_range[1] - q_range[0]) / n_q
    reference = compiled.geometry.integrator.integrate2d_ng(
        frame,
        n_q + 2 * pad,
        360,
        radial_range=(q_range[0] - pad * width, q_range[1] + pad * width),
        azimuth_range=(-180, 180),
        unit="q_A^-1",
        method=method(compiled),
        polarization_factor=POL,
    )
    kept = slice(pad, pad + n_q)
    # pyFAI chi bins start at -180°, ours at 0°: shift by half a turn
    expected = np.roll(reference.intensity[:, kept], -180, axis=0)
    area = np.roll(reference.sum_normalization[:, kept], -180, axis=0)
    return reference, expected, area


def test_li_window_matches_pyfai_integrate2d_with_chi_from_zero(compiled, frames) -> None:
    out = compiled.reduce(frames[:1])
    # 40 bins of 0.002 Å⁻¹: wider than a 300 µm binned pixel (up to ~0.04 Å⁻¹)
    reference, expected, area = padded_cake_reference(
        compiled, frames[0], (2.53, 2.55), 10, pad=40
    )
    assert out.li_window.shape == (1, 360, 10)
    # bins the detector gaps leave empty are NaN (pyFAI writes 0 there)
    assert_agree(out.li_window[0], expected, area)
    np.testing.assert_allclose(out.li_window_chi_deg[[0, 359]], [0.5, 359.5])
    np.testing.assert_allclose(np.mod(reference.azimuthal[180:182], 360), [0.5, 1.5], atol=1e-4)
    np.testing.assert_allclose(out.li_window_q, reference.radial[40:50], atol=1e-6)


def test_cake_matches_pyfai_integrate2d(compiled, frames) -> None:
    out = compiled.reduce(frames[:1])
    _, expected, area = padded_cake_reference(compiled, frames[0], (1.0, 5.0), 200, pad=10)
    assert_agree(out.cake[0], expected, area)


@pytest.mark.parametrize("band", ["lco_003", "ti_100", "au_111", "li_110", "parylene"])
def test_bands_match_pyfai_full_ring_mean(compiled, frames, band) -> None:
    window = compiled.plan.bands[band]
    reference = compiled.geometry.integrator.integrate1d_ng(
        frames[1],
        1,
        radial_range=(window.q_min_inv_angstrom, window.q_max_inv_angstrom),
        unit="q_A^-1",
        method=method(compiled),
        polarization_factor=POL,
    )
    out = compiled.reduce(frames[1:2])
    np.testing.assert_allclose(out.bands[band][0], reference.intensity[0], rtol=1e-3)


def test_profile_peak_sits_at_the_ring_q(geometry) -> None:
    q = geometry.q_array()
    for q0 in (1.315, 1.3464):
        # 300 µm binned pixels span ~0.027 Å⁻¹ here: a ring wider than that is well sampled
        frame = (1000 * np.exp(-0.5 * ((q - q0) / 0.012) ** 2)).astype(np.float32)
        out = compile_reduction(ReductionPlan(families=FAMILIES), geometry).reduce(frame)
        profile, centres = out.profiles["perp:003"][0], out.profile_q["perp:003"]
        centroid = float((profile * centres).sum() / profile.sum())
        # a 300 µm pixel spans ~0.027 Å⁻¹: the sectors sample the ring at discrete pixel
        # q values, so a tenth of a pixel is the honest tolerance on this binned detector
        assert centroid == pytest.approx(q0, abs=0.0025)


def test_texture_spots_land_in_their_own_family_profile(geometry) -> None:
    q, chi = geometry.q_array(), geometry.chi_deg_array()
    dchi = (chi - 90 + 180) % 360 - 180  # par (003) spot at 90°
    frame = 5 + 500 * np.exp(-0.5 * ((q - 1.33) / 0.012) ** 2) * (np.abs(dchi) < 5)
    out = compile_reduction(ReductionPlan(families=FAMILIES), geometry).reduce(
        frame.astype(np.float32)
    )
    par, perp = out.profiles["par:003"][0], out.profiles["perp:003"][0]
    assert np.nanmax(par) > 50
    assert np.nanmax(perp) < 6  # background only, ~5 after solid angle/polarisation


def test_li_spot_appears_at_its_azimuth_bin(geometry) -> None:
    q, chi = geometry.q_array(), geometry.chi_deg_array()
    # the binned Eiger's module gaps run through the beam centre at chi ~0/180 and ~90/270
    for spot_chi in (37.2, 121.7, 300.4):
        dchi = (chi - spot_chi + 180) % 360 - 180
        spot = np.exp(-0.5 * ((q - 2.54) / 0.015) ** 2 - 0.5 * (dchi / 1.5) ** 2)
        out = compile_reduction(ReductionPlan(families=FAMILIES), geometry).reduce(
            (1 + 1000 * spot).astype(np.float32)
        )
        per_chi = np.nansum(out.li_window[0], axis=1)
        assert int(np.argmax(per_chi)) == int(spot_chi)


def test_batch_threads_and_dask_give_the_same_numbers(geometry, frames) -> None:
    reduction = compile_reduction(ReductionPlan(families=FAMILIES), geometry)
    single = np.concatenate([reduction.reduce_packed(f) for f in frames])
    threaded = reduction.reduce_packed(frames, threads=2, batch_size=1)
    lazy = reduction.to_dask(da.from_array(frames, chunks=(2, 541, 517)))
    np.testing.assert_array_equal(single, threaded)
    np.testing.assert_allclose(np.asarray(lazy.compute()), single, rtol=1e-6)
    from_dask = reduction.reduce(da.from_array(frames, chunks=(1, 541, 517)))
    np.testing.assert_allclose(from_dask.bands["ti_100"], reduction.reduce(frames).bands["ti_100"])


def test_eiger_marker_pixel_is_dropped_like_a_masked_pixel(geometry, frames) -> None:
    reduction = compile_reduction(ReductionPlan(families=FAMILIES), geometry)
    counts = frames[:2].astype(np.uint32)
    pixel = int(reduction.pixel_index[len(reduction.pixel_index) // 2])
    counts.reshape(2, -1)[1, pixel] = 2**32 - 1
    out = reduction.reduce_packed(counts)
    extra = np.zeros(geometry.shape, bool)
    extra.flat[pixel] = True
    masked = compile_reduction(ReductionPlan(families=FAMILIES), geometry.with_mask(extra))
    expected = masked.reduce_packed(counts[1])[0]
    np.testing.assert_allclose(out[1], expected, rtol=1e-5)
    # the frame without a marker is untouched by the exact path
    np.testing.assert_allclose(out[0], reduction.reduce_packed(counts[0])[0])


def test_wrong_frame_shape_names_the_expected_shape(geometry) -> None:
    reduction = compile_reduction(ReductionPlan(families=FAMILIES), geometry)
    with pytest.raises(ValueError, match=r"\(n, 541, 517\)"):
        reduction.reduce(np.zeros((2, 517, 541), np.float32))


@pytest.mark.parametrize(("value", "message"), [(np.nan, "NaN"), (-3.0, "negative")])
def test_nan_or_negative_counts_are_errors_naming_the_frame(geometry, value, message) -> None:
    reduction = compile_reduction(ReductionPlan(families=FAMILIES), geometry)
    frames = np.ones((3, 541, 517), np.float32)
    frames[2].flat[reduction.pixel_index[0]] = value
    with pytest.raises(ValueError, match=rf"{message}.*frame 2"):
        reduction.reduce(frames)


def test_all_masked_sector_is_an_error_naming_it(geometry) -> None:
    # a little wider than the sector: split pixels on its edges would still reach it
    shadow = MaskConfig(shadow_sectors=(ShadowSector(start_chi_deg=195, end_chi_deg=225),))
    shadowed = geometry.with_mask(build_mask(geometry, shadow))
    with pytest.raises(ValueError, match=r"sector par:110 chi \[200, 220\)"):
        compile_reduction(ReductionPlan(families=FAMILIES), shadowed)
    plan = ReductionPlan(families=FAMILIES, allow_empty_sectors=True)
    out = compile_reduction(plan, shadowed).reduce(np.ones((1, 541, 517), np.float32))
    assert np.isnan(out.profiles["par:110"]).all()
    assert np.isfinite(out.profiles["perp:110"]).any()


def test_reduction_reads_only_a_small_fraction_of_pixels(geometry) -> None:
    reduction = compile_reduction(ReductionPlan(families=FAMILIES), geometry)
    # (003)/(110) sectors, a thin Li annulus, five narrow bands and the Ti (100) reference
    # profile of the distance correction (24 bins)
    assert 0.005 < reduction.pixel_fraction < 0.15
    assert reduction.n_outputs == 40 * 2 + 36 * 2 + 3600 + 5 + 24
