"""Tests for opmap.analysis.geometry: PONI round trip, masks, shape checks."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from opmap.analysis.geometry import (
    BeamstopConfig,
    DetectorGeometry,
    MaskConfig,
    ShadowSector,
    build_mask,
    eiger4m_detector,
    eiger4m_gap_mask,
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
