"""Tests for opmap.analysis.geometry: PONI round trip, masks, shape checks."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError
from pyFAI.detectors import Detector

from opmap.analysis.geometry import (
    BeamstopConfig,
    DetectorGeometry,
    MaskConfig,
    ShadowSector,
    analysis_geometry,
    build_mask,
    check_integrator,
    eiger4m_detector,
    eiger4m_gap_mask,
    eiger4m_integrator,
    load_integrator,
    load_poni,
    save_poni,
)

WAVELENGTH_A = 0.6888


@pytest.fixture(scope="module")
def geometry() -> DetectorGeometry:
    return DetectorGeometry(
        eiger4m_detector(binning=4),
        distance_m=0.1,
        poni1_m=0.081,
        poni2_m=0.0775,
        rot1_rad=0.01,
        rot2_rad=-0.02,
        wavelength_angstrom=WAVELENGTH_A,
    )


def test_binned_gap_mask_marks_a_block_when_any_native_gap_pixel_is_inside() -> None:
    native = eiger4m_gap_mask()
    binned = eiger4m_gap_mask(binning=4)
    assert native.shape == (2167, 2070)
    assert binned.shape == (541, 517)
    i, j = 200, 300
    assert binned[i, j] == native[4 * i : 4 * i + 4, 4 * j : 4 * j + 4].any()
    # gaps cover ~5.6 % natively; binning can only grow the fraction
    assert 0.05 < native.mean() < binned.mean() < 0.12


def test_poni_round_trip_keeps_every_parameter(tmp_path, geometry) -> None:
    path = save_poni(geometry, tmp_path / "g.poni")
    back = load_poni(path, detector=eiger4m_detector(binning=4))
    for name in ("distance_m", "poni1_m", "poni2_m", "rot1_rad", "rot2_rad", "rot3_rad"):
        assert getattr(back, name) == pytest.approx(getattr(geometry, name), abs=1e-12)
    assert back.wavelength_angstrom == pytest.approx(WAVELENGTH_A, rel=1e-9)
    np.testing.assert_allclose(back.q_array(), geometry.q_array(), rtol=1e-9)


def test_save_poni_never_overwrites_by_default(tmp_path, geometry) -> None:
    path = save_poni(geometry, tmp_path / "g.poni")
    before = path.read_text()
    with pytest.raises(FileExistsError):
        save_poni(geometry, path)
    assert path.read_text() == before


def test_unparsable_poni_is_a_value_error_naming_the_file(tmp_path) -> None:
    bad = tmp_path / "bad.poni"
    bad.write_text("Distance: not-a-number\nPoni1: [1, 2\n")
    with pytest.raises(ValueError, match=r"bad\.poni"):
        load_poni(bad)


def test_poni_for_another_detector_shape_is_rejected(tmp_path, geometry) -> None:
    path = save_poni(geometry, tmp_path / "g.poni")
    with pytest.raises(ValueError, match=r"expected_shape is \(2167, 2070\)"):
        load_poni(path, detector=eiger4m_detector(binning=4), expected_shape=(2167, 2070))


def test_frames_of_wrong_shape_are_rejected_with_the_expected_shape(geometry) -> None:
    geometry.check_frames((3, 541, 517))
    with pytest.raises(ValueError, match=r"frames must have shape \(n, 541, 517\)"):
        geometry.check_frames((3, 540, 517))


@pytest.mark.parametrize(
    ("name", "value"),
    [("distance_m", -0.1), ("wavelength_angstrom", 0.0), ("poni1_m", float("nan"))],
)
def test_invalid_geometry_parameters_name_the_parameter(name, value) -> None:
    kwargs = {"distance_m": 0.1, "poni1_m": 0.08, "poni2_m": 0.078, name: value}
    with pytest.raises(ValueError, match=name):
        DetectorGeometry(eiger4m_detector(binning=4), **kwargs)


def test_chi_convention_is_pyfai_chi_modulo_360(geometry) -> None:
    chi = geometry.chi_deg_array()
    pyfai_chi = np.asarray(geometry.integrator.center_array(geometry.shape, unit="chi_deg"))
    assert chi.min() >= 0 and chi.max() < 360
    np.testing.assert_allclose(np.cos(np.deg2rad(chi)), np.cos(np.deg2rad(pyfai_chi)), atol=1e-9)
    np.testing.assert_allclose(np.sin(np.deg2rad(chi)), np.sin(np.deg2rad(pyfai_chi)), atol=1e-9)


def test_mask_config_builds_beamstop_shadow_and_q_cut(geometry) -> None:
    config = MaskConfig(
        beamstop=BeamstopConfig(radius_mm=3.0, arm_width_mm=1.0, arm_chi_deg=90.0),
        shadow_sectors=(ShadowSector(start_chi_deg=340, end_chi_deg=20, q_min_inv_angstrom=2.0),),
        max_q_inv_angstrom=6.0,
    )
    mask = build_mask(geometry, config)
    q, chi = geometry.q_array(), geometry.chi_deg_array()
    r_mm = np.asarray(geometry.integrator.center_array(geometry.shape, unit="r_mm"))
    assert mask[r_mm < 3.0].all()
    in_shadow = ((chi >= 340) | (chi < 20)) & (q >= 2.0)
    assert mask[in_shadow].all()
    assert mask[q > 6.0].all()
    # a pixel far from every rule stays valid
    free = (r_mm > 5) & (chi > 200) & (chi < 260) & (q < 5.5)
    assert not mask[free].any()
    # the arm runs along chi = 90 beyond the disc
    arm = (r_mm > 5) & (r_mm < 20) & (np.abs(chi - 90) < 0.5)
    assert mask[arm].all()
    masked = geometry.with_mask(mask)
    assert masked.effective_mask.sum() == (mask | eiger4m_gap_mask(binning=4)).sum()


def test_mask_config_rejects_unknown_fields_by_name() -> None:
    with pytest.raises(ValidationError, match="beamstop_radius"):
        MaskConfig.model_validate({"beamstop_radius": 2.0})
    with pytest.raises(ValidationError, match="empty"):
        ShadowSector(start_chi_deg=10, end_chi_deg=10)


def test_integrator_poni_round_trip_keeps_detector_and_geometry(tmp_path) -> None:
    ai = eiger4m_integrator(binning=4, distance_m=0.12, poni1_m=0.08, poni2_m=0.079)
    back = load_integrator(save_poni(ai, tmp_path / "ai.poni"), expected_shape=(541, 517))
    assert back.detector.shape == (541, 517)
    assert back.detector.pixel1 == pytest.approx(300e-6)
    for name in ("dist", "poni1", "poni2", "wavelength"):
        assert getattr(back, name) == pytest.approx(getattr(ai, name), rel=1e-12)


def test_integrator_of_another_shape_is_refused_naming_both_shapes(tmp_path) -> None:
    path = save_poni(eiger4m_integrator(binning=4), tmp_path / "ai.poni")
    with pytest.raises(ValueError, match=r"shape \(541, 517\).*\(2167, 2070\)"):
        load_integrator(path, expected_shape=(2167, 2070))


def test_binned_shape_with_the_native_pixel_is_refused() -> None:
    wrong = eiger4m_integrator(binning=4)
    wrong.detector.pixel1 = 75e-6
    with pytest.raises(ValueError, match="pixel1"):
        check_integrator(wrong, (541, 517))


def test_missing_poni_is_file_not_found(tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        load_integrator(tmp_path / "none.poni")


@pytest.mark.parametrize("binning", [0, 17, 2.0])
def test_binning_outside_1_to_16_is_refused(binning) -> None:
    with pytest.raises(ValueError, match="binning"):
        eiger4m_integrator(binning=binning)


def test_binned_and_full_integrators_share_q_at_the_same_point() -> None:
    full, binned = eiger4m_integrator(binning=1), eiger4m_integrator(binning=4)
    q_full = full.center_array(full.detector.shape, unit="q_A^-1")
    q_binned = binned.center_array(binned.detector.shape, unit="q_A^-1")
    for i, j in [(10, 10), (268, 350), (500, 30)]:
        block = q_full[4 * i : 4 * i + 4, 4 * j : 4 * j + 4]
        assert q_binned[i, j] == pytest.approx(block.mean(), abs=2e-4)


def test_analysis_geometry_uses_the_binned_eiger_and_its_gaps_for_a_full_poni(tmp_path) -> None:
    path = save_poni(eiger4m_integrator(binning=1), tmp_path / "full.poni")
    beamstop = np.zeros((541, 517), bool)
    beamstop[0, 0] = True
    geo = analysis_geometry(path, binning=4, mask=beamstop, expected_shape=(541, 517))
    assert geo.shape == (541, 517)
    assert geo.distance_m == pytest.approx(0.1)
    expected = eiger4m_gap_mask(binning=4) | beamstop
    np.testing.assert_array_equal(geo.effective_mask, expected)


def test_analysis_geometry_keeps_the_poni_detector_without_binning(tmp_path) -> None:
    path = save_poni(eiger4m_integrator(binning=2), tmp_path / "b2.poni")
    geo = analysis_geometry(path)
    assert geo.shape == (1083, 1035)
    assert geo.mask is None
    with pytest.raises(ValueError, match=r"expected_shape is \(541, 517\)"):
        analysis_geometry(path, expected_shape=(541, 517))


def test_analysis_geometry_refuses_binning_for_another_detector(tmp_path) -> None:
    other = DetectorGeometry(
        Detector(pixel1=1e-4, pixel2=1e-4, max_shape=(100, 120)),
        distance_m=0.1, poni1_m=0.005, poni2_m=0.006,
    )  # fmt: skip
    path = save_poni(other, tmp_path / "other.poni")
    with pytest.raises(ValueError, match=r"not an Eiger X 4M"):
        analysis_geometry(path, binning=4)


def test_analysis_geometry_refuses_a_mask_of_another_shape() -> None:
    with pytest.raises(ValueError, match=r"mask must have shape \(541, 517\)"):
        analysis_geometry(eiger4m_integrator(binning=4), mask=np.zeros((10, 10), bool))
