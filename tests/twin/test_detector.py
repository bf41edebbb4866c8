"""The simulated Eiger X 4M geometry: shapes, gaps, q range, PONI files, mask, calibrants."""

from __future__ import annotations

import numpy as np
import pydantic
import pytest
from pyFAI.calibrant import get_calibrant
from pyFAI.detectors import detector_factory
from scipy.signal import find_peaks

from opmap.analysis.geometry import (
    check_integrator,
    eiger4m_gap_mask,
    eiger4m_integrator,
    load_integrator,
    save_poni,
)
from opmap.twin.forward import (
    EIGER_GAP_VALUE_UINT32,
    DetectorMask,
    render_calibrant,
    ring_visibility,
)


@pytest.fixture(scope="module")
def binned():
    return eiger4m_integrator(binning=4)


def test_binned_detector_is_541_by_517_pixels_of_300_um(binned):
    assert binned.detector.shape == (541, 517)
    assert binned.detector.pixel1 == pytest.approx(300e-6)
    assert binned.detector.pixel2 == pytest.approx(300e-6)


def test_full_detector_is_pyfai_eiger4m():
    ai = eiger4m_integrator(binning=1)
    assert ai.detector.shape == (2167, 2070)
    assert ai.detector.pixel1 == pytest.approx(75e-6)


def test_binned_pixel_is_a_gap_when_any_of_its_16_is():
    full = np.asarray(detector_factory("Eiger4M").mask, dtype=bool)
    binned = eiger4m_gap_mask(binning=4)
    rng = np.random.default_rng(3)
    rows = rng.integers(0, binned.shape[0], 400)
    cols = rng.integers(0, binned.shape[1], 400)
    # add blocks straddling the first vertical and horizontal gap edges
    rows = np.concatenate([rows, np.full(4, 270), [128, 129, 137, 138]])
    cols = np.concatenate([cols, [256, 257, 259, 260], np.full(4, 100)])
    for i, j in zip(rows, cols, strict=True):
        assert binned[i, j] == full[4 * i : 4 * i + 4, 4 * j : 4 * j + 4].any()
    assert 0 < binned.mean() < 0.2


def test_binned_and_full_share_the_geometry(binned):
    full = eiger4m_integrator(binning=1)
    q_full = full.center_array(full.detector.shape, unit="q_A^-1")
    q_binned = binned.center_array(binned.detector.shape, unit="q_A^-1")
    for i, j in [(10, 10), (100, 400), (268, 350), (500, 30)]:
        block = q_full[4 * i : 4 * i + 4, 4 * j : 4 * j + 4]
        assert q_binned[i, j] == pytest.approx(block.mean(), abs=2e-4)


def test_q_range_is_about_0_96_to_6_outside_the_beamstop(binned):
    shape = binned.detector.shape
    q = binned.center_array(shape, unit="q_A^-1")
    r_mm = binned.center_array(shape, unit="r_mm")
    visible = DetectorMask().transmission(binned) > 0
    assert q[visible].min() == pytest.approx(0.96, abs=0.02)
    edges = np.concatenate([q[0], q[-1], q[:, 0], q[:, -1]])
    assert edges.min() > 5.5 and 6.0 < np.median(edges) < 6.6
    assert r_mm[visible].min() == pytest.approx(10.5, abs=0.3)


def test_poni_round_trip_keeps_the_geometry(tmp_path, binned):
    path = save_poni(binned, tmp_path / "eiger.poni")
    ai = load_integrator(path, expected_shape=(541, 517))
    assert ai.dist == pytest.approx(binned.dist)
    assert ai.poni1 == pytest.approx(binned.poni1)
    assert ai.poni2 == pytest.approx(binned.poni2)
    assert ai.wavelength == pytest.approx(binned.wavelength)


def test_poni_is_never_overwritten(tmp_path, binned):
    path = save_poni(binned, tmp_path / "eiger.poni")
    with pytest.raises(FileExistsError, match="exists"):
        save_poni(binned, path)


def test_poni_of_another_shape_is_refused(tmp_path, binned):
    path = save_poni(binned, tmp_path / "eiger.poni")
    with pytest.raises(ValueError, match=r"shape \(541, 517\).*\(2167, 2070\)"):
        load_integrator(path, expected_shape=(2167, 2070))


def test_poni_with_wrong_pixel_size_is_refused(binned):
    wrong = eiger4m_integrator(binning=4)
    wrong.detector.pixel1 = 75e-6
    with pytest.raises(ValueError, match="pixel1"):
        check_integrator(wrong, (541, 517))


def test_garbage_poni_does_not_parse(tmp_path):
    path = tmp_path / "bad.poni"
    path.write_text("Distance: not-a-number\nPoni1: [\n")
    with pytest.raises(ValueError, match="does not parse"):
        load_integrator(path)


@pytest.mark.parametrize("binning", [0, 17])
def test_binning_outside_1_to_16_is_refused(binning):
    with pytest.raises(ValueError, match="binning"):
        eiger4m_integrator(binning=binning)


def test_mask_config_names_unknown_field():
    with pytest.raises(pydantic.ValidationError, match="beamstop_radius"):
        DetectorMask(beamstop_radius=3.0)


def test_mask_sector_must_be_ordered():
    with pytest.raises(pydantic.ValidationError, match="shadow_chi_min_deg"):
        DetectorMask(shadow_chi_min_deg=300.0, shadow_chi_max_deg=200.0)


def test_transmission_is_zero_behind_beamstop_and_attenuated_in_shadow(binned):
    mask = DetectorMask(shadow_transmission=0.4)
    shape = binned.detector.shape
    t = mask.transmission(binned)
    r_mm = binned.center_array(shape, unit="r_mm")
    chi = np.mod(binned.center_array(shape, unit="chi_deg"), 360.0)
    outside = r_mm > 11.0
    assert np.all(t[r_mm < 10.5] == 0.0)
    assert np.all(t[outside & (chi > 201) & (chi < 359)] == pytest.approx(0.4))
    assert np.all(t[outside & (chi > 1) & (chi < 199)] == 1.0)


@pytest.mark.parametrize("name", ["CeO2", "alpha_Al2O3"])
def test_calibrant_rings_sit_at_the_calibrant_q(binned, name):
    frame = render_calibrant(binned, name, peak_counts=1e4, background_counts=0.0)
    gaps = eiger4m_gap_mask(binning=4)
    assert np.all(frame[gaps] == EIGER_GAP_VALUE_UINT32)
    assert frame[~gaps].max() < EIGER_GAP_VALUE_UINT32
    mask = DetectorMask().analysis_mask(binned)
    res = binned.integrate1d_ng(frame, 1500, unit="q_A^-1", mask=mask, radial_range=(1.0, 4.0))
    calibrant = get_calibrant(name)
    calibrant.wavelength = binned.wavelength
    q_rings = np.array([2 * np.pi / d for d in calibrant.get_dSpacing()])
    peaks, _ = find_peaks(res.intensity, prominence=0.1 * res.intensity.max())
    assert len(peaks) >= 3
    for q_peak in res.radial[peaks]:
        assert np.abs(q_rings - q_peak).min() < 0.01


def test_unknown_calibrant_is_refused(binned):
    with pytest.raises(ValueError, match="name='LaB6'"):
        render_calibrant(binned, "LaB6")


def test_a_li_spot_on_a_narrow_module_gap_is_recorded_by_its_flanks():
    """On the 4 × 4-binned Eiger a horizontal module gap hides ~1° of the Li (110) ring (the
    1° bin at 58°): a 1°-FWHM spot centred there still puts ~15 % of its flux on active
    pixels, and the detector records it. A spot in the middle of the 5° dead sector near
    180° puts almost none there and is not recorded."""
    ai = eiger4m_integrator(binning=4)
    visible = ring_visibility(ai, DetectorMask(), q_inv_angstrom=2.545, spot_fwhm_deg=1.0)
    centre_only = ring_visibility(
        ai, DetectorMask(), q_inv_angstrom=2.545, spot_fwhm_deg=1.0, min_recorded_fraction=0.5
    )
    assert visible(45.5) and centre_only(45.5)  # on a module
    assert visible(58.5) and not centre_only(58.5)  # on a narrow gap: flanks recorded
    assert not visible(178.5) and not visible(0.5)  # deep in dead sectors
    with pytest.raises(ValueError, match="min_recorded_fraction"):
        ring_visibility(ai, DetectorMask(), q_inv_angstrom=2.545, min_recorded_fraction=0.0)
