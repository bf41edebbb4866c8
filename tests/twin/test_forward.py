"""The forward model against known truth: ring positions, spots, gaps, shadow, counts."""

from __future__ import annotations

import numpy as np
import pydantic
import pytest
from scipy.optimize import curve_fit
from scipy.signal import find_peaks

from opmap.analysis.geometry import eiger4m_integrator
from opmap.twin import BeamScene, FamilyTexture, LcoPhase, LiSpot
from opmap.twin.forward import (
    EIGER_GAP_VALUE_UINT32,
    DetectorMask,
    DiffractionConfig,
    DiffractionRenderer,
    LiReflection,
)

FAMILIES = (
    FamilyTexture("perp", (25.0, 160.0, 205.0, 345.0), (90.0,)),
    FamilyTexture("par", (90.0, 275.0), (210.0,)),
)


def _scene(**kwargs) -> BeamScene:
    base = {"time_s": 0.0, "z_um": 10.0, "x_start_um": 0.0, "x_stop_um": 33.0}
    base.setdefault("layer_weights", {"lco": 1.0})
    return BeamScene(**(base | kwargs))


@pytest.fixture(scope="module")
def ai4():
    return eiger4m_integrator(binning=4)


@pytest.fixture(scope="module")
def renderer(ai4):
    return DiffractionRenderer(ai4, DiffractionConfig(), FAMILIES)


#: Only the Li (110) reflection, so a spot's counts all lie at its own azimuth.
LI_110_ONLY = DiffractionConfig(
    li_reflections=(LiReflection(hkl=(1, 1, 0), peak_cps=2.0e5, q_fwhm_a_inv=0.008),)
)


@pytest.fixture(scope="module")
def li_renderer(ai4):
    return DiffractionRenderer(ai4, LI_110_ONLY, FAMILIES)


def _pseudo_voigt_line(q, amplitude, q0, fwhm, eta, offset, slope):
    u2 = ((q - q0) / fwhm) ** 2
    profile = eta / (1 + 4 * u2) + (1 - eta) * np.exp(-4 * np.log(2) * u2)
    return amplitude * profile + offset + slope * (q - 1.34)


def _fit_003(ai, frame, mask, family: FamilyTexture) -> float:
    """Fit the (003) peak of the sum of ±10° sectors around the family's azimuths (a
    pseudo-Voigt on a line: the twin draws pseudo-Voigt peaks)."""
    profiles = []
    for azimuth in family.azimuths_003_deg:
        centre = (azimuth + 180.0) % 360.0 - 180.0
        res = ai.integrate1d_ng(
            frame, 160, unit="q_A^-1", radial_range=(1.26, 1.42), mask=mask,
            azimuth_range=(centre - 10.0, centre + 10.0), method=("full", "csr", "cython"),
        )  # fmt: skip
        profiles.append(res.intensity)
    q, y = res.radial, np.sum(profiles, axis=0)
    start = (y.max() - y.min(), q[np.argmax(y)], 0.01, 0.5, y.min(), 0.0)
    params, _ = curve_fit(_pseudo_voigt_line, q, y, p0=start)
    return float(params[1])


@pytest.mark.parametrize("c_perp, c_par", [(14.13, 14.04), (14.32, 14.12), (13.95, 14.40)])
def test_fitted_003_gives_c_of_each_family(c_perp, c_par):
    """Noise-free frame on a 2x2-binned Eiger: q(003) = 6π/c within 5e-4 Å⁻¹ per family."""
    ai = eiger4m_integrator(binning=2)
    renderer = DiffractionRenderer(ai, DiffractionConfig(), FAMILIES)
    scene = _scene(
        lco_phases=(LcoPhase("perp", 0.5, c_perp, 2.8035), LcoPhase("par", 0.5, c_par, 2.803))
    )
    frame = renderer.expected_counts(scene, exposure_s=1.0)
    mask = DetectorMask().analysis_mask(ai)
    for family, c in zip(FAMILIES, (c_perp, c_par), strict=True):
        assert _fit_003(ai, frame, mask, family) == pytest.approx(6 * np.pi / c, abs=5e-4)


def test_binned_pixel_holds_the_counts_of_its_pixels():
    """Area integration is physical: a 4x4-binned pixel of the (003) spot holds the sum of
    its 16 unbinned pixels, although the peak (FWHM ~0.011 Å⁻¹) is far narrower than a
    binned pixel (~0.027 Å⁻¹): within 8 % per bright pixel (the midpoint rule over parts
    about half a FWHM wide, on both detectors) and 1 % over the spot."""
    scene = _scene(lco_phases=(LcoPhase("par", 1.0, 14.04, 2.803),))
    empty = _scene(lco_phases=())
    frames = {}
    for binning in (1, 4):
        renderer = DiffractionRenderer(eiger4m_integrator(binning=binning), DiffractionConfig(),
                                       FAMILIES)  # fmt: skip
        frames[binning] = renderer.expected_counts(scene, exposure_s=1.0) - (
            renderer.expected_counts(empty, exposure_s=1.0)
        )
    binned = frames[4]
    fine = frames[1][: 4 * binned.shape[0], : 4 * binned.shape[1]]
    blocks = fine.reshape(binned.shape[0], 4, binned.shape[1], 4)
    summed = blocks.sum(axis=(1, 3))
    complete = (blocks > 0).all(axis=(1, 3)) | (blocks == 0).all(axis=(1, 3))
    bright = complete & (binned > 0.1 * binned.max()) & (summed > 0)
    assert bright.sum() > 20
    np.testing.assert_allclose(binned[bright], summed[bright], rtol=0.08)
    assert binned[bright].sum() == pytest.approx(summed[bright].sum(), rel=0.01)


def test_li_110_spots_are_found_at_the_scene_azimuths(ai4, renderer):
    azimuths = (12.0, 60.0, 130.0, 232.0, 301.0)
    spots = tuple(LiSpot(i, a, 0.2) for i, a in enumerate(azimuths))
    scene = _scene(layer_weights={"li": 1.0, "lipon": 0.2}, li_spots=spots)
    frame = renderer.render(scene, exposure_s=0.05, rng=np.random.default_rng(7))
    mask = DetectorMask().analysis_mask(ai4)
    res = ai4.integrate2d_ng(
        frame, 10, 360, unit="q_A^-1", radial_range=(2.53, 2.56), mask=mask,
        method=("bbox", "csr", "cython"),
    )  # fmt: skip
    profile = res.intensity.sum(axis=1)
    chi = np.mod(res.azimuthal, 360.0)
    order = np.argsort(chi)
    peaks, _ = find_peaks(profile[order], height=10 * np.median(profile))
    found = np.sort(chi[order][peaks])
    assert len(found) == len(azimuths)
    assert found == pytest.approx(np.sort(azimuths), abs=1.0)


def _spot_counts(renderer, azimuth_deg: float) -> float:
    scene = _scene(layer_weights={"li": 1.0}, li_spots=(LiSpot(0, azimuth_deg, 0.2),))
    frame = renderer.expected_counts(scene, exposure_s=1.0)
    empty = renderer.expected_counts(_scene(layer_weights={"li": 1.0}), exposure_s=1.0)
    return float((frame - empty).sum())


def test_spot_in_a_module_gap_is_absent(ai4, li_renderer):
    q = ai4.center_array(li_renderer.shape, unit="q_A^-1")
    chi = np.mod(ai4.center_array(li_renderer.shape, unit="chi_deg"), 360.0)
    gaps = DetectorMask().gaps(ai4)
    on_ring = np.abs(q - 2.545) < 0.015
    candidates = np.arange(0.0, 360.0, 0.25)
    hidden = [np.mean(gaps[on_ring & (np.abs(chi - a) < 2.0)]) for a in candidates]
    gap_azimuth = float(candidates[int(np.argmax(hidden))])
    assert max(hidden) == 1.0
    in_gap = _spot_counts(li_renderer, gap_azimuth)
    assert in_gap < 0.05 * _spot_counts(li_renderer, (gap_azimuth + 20.0) % 360.0)


def test_spot_in_the_shadow_is_attenuated_by_the_configured_factor(ai4):
    shaded = DiffractionRenderer(ai4, LI_110_ONLY, FAMILIES, mask=DetectorMask())
    clear = DiffractionRenderer(
        ai4, LI_110_ONLY, FAMILIES, mask=DetectorMask(shadow_transmission=1.0)
    )
    ratio = _spot_counts(shaded, 240.0) / _spot_counts(clear, 240.0)
    assert ratio == pytest.approx(0.5, rel=1e-3)
    assert _spot_counts(shaded, 60.0) == pytest.approx(_spot_counts(clear, 60.0), rel=1e-6)


def test_expected_counts_scale_with_exposure(renderer):
    scene = _scene(lco_phases=(LcoPhase("perp", 1.0, 14.1, 2.80),))
    short = renderer.expected_counts(scene, exposure_s=0.05)
    long = renderer.expected_counts(scene, exposure_s=0.2)
    np.testing.assert_allclose(long, 4 * short, rtol=1e-5)


def test_rendered_counts_scale_with_exposure(renderer):
    scene = _scene(lco_phases=(LcoPhase("perp", 1.0, 14.1, 2.80),))
    rng = np.random.default_rng(11)
    gaps = DetectorMask().gaps(renderer_ai := eiger4m_integrator(binning=4))
    assert renderer_ai.detector.shape == renderer.shape
    totals = [
        renderer.render(scene, exposure_s=t, rng=rng)[~gaps].sum(dtype=np.float64)
        for t in (0.05, 0.1)
    ]
    expected = renderer.expected_counts(scene, exposure_s=0.05)[~gaps].sum(dtype=np.float64)
    assert totals[0] == pytest.approx(expected, abs=5 * np.sqrt(expected))
    assert totals[1] == pytest.approx(2 * expected, abs=5 * np.sqrt(2 * expected))


def test_module_gaps_carry_the_eiger_marker(renderer):
    frame = renderer.render(_scene(), exposure_s=0.05, rng=np.random.default_rng(0))
    gaps = DetectorMask().gaps(eiger4m_integrator(binning=4))
    assert frame.dtype == np.uint32 and frame.shape == (541, 517)
    assert np.all(frame[gaps] == EIGER_GAP_VALUE_UINT32)
    assert frame[~gaps].max() < 1_000_000


def test_same_seed_gives_the_same_frame(renderer):
    scene = _scene(li_spots=(LiSpot(3, 45.0, 0.5),), layer_weights={"li": 0.5, "lco": 0.5})
    a = renderer.render(scene, exposure_s=0.05, rng=np.random.default_rng(42))
    b = renderer.render(scene, exposure_s=0.05, rng=np.random.default_rng(42))
    c = renderer.render(scene, exposure_s=0.05, rng=np.random.default_rng(43))
    np.testing.assert_array_equal(a, b)
    assert np.any(a != c)


def test_ti_100_texture_is_strong_at_90_and_weak_at_30(ai4, renderer):
    frame = renderer.expected_counts(_scene(layer_weights={"ti": 0.5}), exposure_s=1.0)
    empty = renderer.expected_counts(_scene(layer_weights={}), exposure_s=1.0)
    q = ai4.center_array(renderer.shape, unit="q_A^-1")
    chi = np.mod(ai4.center_array(renderer.shape, unit="chi_deg"), 360.0)
    ring = np.abs(q - 2.4586) < 0.02
    signal = (frame - empty) / ai4.solidAngleArray(renderer.shape)

    def at(azimuth):
        return signal[ring & (np.abs(chi - azimuth) < 1.5)].mean()

    assert at(90.0) / at(30.0) == pytest.approx((1 + 0.03) / (0.2 + 0.03), rel=0.1)
    assert at(0.0) < 0.05 * at(90.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lco_phases": (LcoPhase("perp", 1.0, 15.0, 2.80),)}, r"lco_phases\[0\].c_angstrom"),
        ({"lco_phases": (LcoPhase("other", 1.0, 14.0, 2.80),)}, r"lco_phases\[0\].family"),
        ({"layer_weights": {"copper": 1.0}}, "copper"),
        ({"li_a_angstrom": 3.7}, "li_a_angstrom"),
    ],
)
def test_scene_outside_the_precomputed_range_is_refused(renderer, kwargs, match):
    with pytest.raises(ValueError, match=match):
        renderer.expected_counts(_scene(**kwargs), exposure_s=0.05)


@pytest.mark.parametrize("exposure_s", [0.0, -1.0, float("nan")])
def test_non_positive_exposure_is_refused(renderer, exposure_s):
    with pytest.raises(ValueError, match="exposure_s"):
        renderer.render(_scene(), exposure_s=exposure_s, rng=np.random.default_rng(0))


def test_config_names_an_unknown_field():
    with pytest.raises(pydantic.ValidationError, match="lco_c_range"):
        DiffractionConfig(lco_c_range=(13.0, 15.0))


def _sector_profile(ai, frame, azimuth_deg, q_range):
    centre = (azimuth_deg + 180.0) % 360.0 - 180.0
    res = ai.integrate1d_ng(
        frame, 200, unit="q_A^-1", radial_range=q_range, method=("full", "csr", "cython"),
        azimuth_range=(centre - 10.0, centre + 10.0), mask=DetectorMask().analysis_mask(ai),
    )  # fmt: skip
    return res.radial, res.intensity


def test_pseudo_voigt_ring_has_the_configured_width_and_lorentz_share():
    """Integrated (003) profile on the unbinned Eiger: a pseudo-Voigt whose FWHM is the
    sample width and the instrument resolution (0.2° in 2θ, converted at the ring's angle)
    in quadrature, broadened only by the pixel's and the integration's q boxes."""
    ai = eiger4m_integrator(binning=1)
    config = DiffractionConfig(
        instrument_fwhm_2theta_deg=0.2,
        lorentz_fraction=0.4,
        background_flat_cps=0.0,
        background_q_cps=0.0,
        halos=(),
    )
    renderer = DiffractionRenderer(ai, config, FAMILIES)
    q0 = 6 * np.pi / 14.04
    k = 4 * np.pi / 0.6888
    instrument = 0.5 * k * np.cos(np.arcsin(q0 / k)) * np.radians(0.2)
    expected = np.hypot(0.010, instrument)
    assert renderer.total_fwhm_a_inv(q0, 0.010) == pytest.approx(expected, rel=1e-9)
    frame = renderer.expected_counts(
        _scene(lco_phases=(LcoPhase("par", 1.0, 14.04, 2.803),)), exposure_s=1.0
    )
    q, y = _sector_profile(ai, frame, 90.0, (1.25, 1.43))
    start = (y.max(), q0, 0.02, 0.5, 0.0, 0.0)
    params, _ = curve_fit(_pseudo_voigt_line, q, y, p0=start)
    assert params[1] == pytest.approx(q0, abs=1e-4)
    # two q boxes of a pixel's radial extent (rendering, then "full" splitting) add
    # 8 ln2 w² / 12 each to FWHM² (~3 % here)
    qa = ai.array_from_unit(unit="q_A^-1", typ="corner")[..., 0]
    chi = np.mod(ai.center_array(ai.detector.shape, unit="chi_deg"), 360.0)
    q_centre = ai.center_array(ai.detector.shape, unit="q_A^-1")
    near = (np.abs(chi - 90.0) < 10) & (np.abs(q_centre - q0) < 0.01)
    w = np.median(qa.max(axis=-1)[near] - qa.min(axis=-1)[near])
    broadened = np.sqrt(expected**2 + 2 * 8 * np.log(2) * w**2 / 12)
    assert abs(params[2]) == pytest.approx(broadened, rel=0.02)
    assert params[3] == pytest.approx(0.4, abs=0.06)


@pytest.fixture(scope="module")
def full_renderer():
    ai = eiger4m_integrator(binning=1)
    return ai, DiffractionRenderer(ai, DiffractionConfig(), FAMILIES)


_TI_101 = 2 * np.pi * np.sqrt(4 / (3 * 2.951**2) + 1 / 4.684**2)
#: (layer weights, phases, true q, azimuth): LCO⊥ (003) at 25°, Ti (101) at 61.4°, Au (111)
_REFERENCE_RINGS = (
    ({"lco": 1.0}, (LcoPhase("perp", 1.0, 14.13, 2.8025),), 6 * np.pi / 14.13, 25.0),
    ({"ti": 1.0}, (), _TI_101, 61.4),
    ({"au": 1.0}, (), 2 * np.pi * np.sqrt(3) / 4.078, 45.0),
)


@pytest.mark.parametrize("offset_um", [100.0, -150.0])
@pytest.mark.parametrize("ring", range(len(_REFERENCE_RINGS)), ids=["lco003", "ti101", "au111"])
def test_sample_offset_moves_rings_by_the_parallax_geometry_predicts(
    full_renderer, offset_um, ring
):
    """A sample 100 µm nearer the detector than the calibrated position draws a ring at
    radius (D - Δ) tan 2θ: read with the calibrated geometry, (003) falls by ~0.0013 Å⁻¹
    (c rises by ~0.014 Å); the Ti and Au reference rings move the same way."""
    ai, renderer = full_renderer
    weights, phases, q_true, azimuth = _REFERENCE_RINGS[ring]
    k = 4 * np.pi / 0.6888
    two_theta = 2 * np.arcsin(q_true / k)
    apparent = np.arctan((ai.dist - offset_um * 1e-6) * np.tan(two_theta) / ai.dist)
    predicted = k * np.sin(apparent / 2) - q_true
    fits = []
    for offset in (0.0, offset_um):
        scene = _scene(layer_weights=weights, lco_phases=phases, sample_offset_um=offset)
        frame = renderer.expected_counts(scene, exposure_s=1.0)
        q, y = _sector_profile(ai, frame, azimuth, (q_true - 0.05, q_true + 0.05))
        p0 = (y.max() - y.min(), q[np.argmax(y)], 0.015, 0.3, y.min(), 0.0)
        fits.append(curve_fit(_pseudo_voigt_line, q, y, p0=p0)[0][1])
    assert abs(predicted) > 1e-3
    assert fits[0] == pytest.approx(q_true, abs=2e-4)
    assert fits[1] - fits[0] == pytest.approx(predicted, abs=1e-4)


def test_scene_offset_beyond_the_renderer_range_is_refused(renderer):
    with pytest.raises(ValueError, match="sample_offset_um"):
        renderer.expected_counts(_scene(sample_offset_um=5000.0), exposure_s=1.0)
