"""Tests for opmap.analysis.calibration: convergence from a good start, rejection of a bad one."""

from __future__ import annotations

import numpy as np
import pytest
from pyFAI.calibrant import get_calibrant

from opmap.analysis.calibration import CalibrationRejectedError, calibrate_geometry, check_rings
from opmap.analysis.geometry import DetectorGeometry, eiger4m_detector

TRUE_DISTANCE_M = 0.1


@pytest.fixture(scope="module")
def truth() -> DetectorGeometry:
    return DetectorGeometry(
        eiger4m_detector(binning=4),
        distance_m=TRUE_DISTANCE_M,
        poni1_m=0.081,
        poni2_m=0.0775,
        rot1_rad=0.005,
        rot2_rad=-0.004,
    )


@pytest.fixture(scope="module")
def ceo2_image(truth) -> np.ndarray:
    ceo2 = get_calibrant("CeO2")
    ceo2.wavelength = truth.wavelength_angstrom * 1e-10
    return ceo2.fake_calibration_image(truth.integrator, Imax=1000, Imin=10, resolution=0.05)


def start(distance_m: float) -> DetectorGeometry:
    return DetectorGeometry(
        eiger4m_detector(binning=4), distance_m=distance_m, poni1_m=0.0812, poni2_m=0.0772
    )


def test_true_geometry_puts_a_peak_on_every_resolvable_ring(truth, ceo2_image) -> None:
    check = check_rings(ceo2_image, truth)
    assert check.rings_checked >= 10
    assert check.rings_matched == check.rings_checked
    assert check.peaks_explained == check.peaks_found


def test_good_start_converges_to_the_true_distance_and_reports_quality(ceo2_image) -> None:
    result = calibrate_geometry(ceo2_image, start(TRUE_DISTANCE_M + 0.0015))
    assert result.accepted and result.reason == ""
    assert result.geometry.distance_m == pytest.approx(TRUE_DISTANCE_M, abs=1e-4)
    assert result.geometry.poni1_m == pytest.approx(0.081, abs=3e-4)
    assert result.residual_2theta_deg < 0.05
    assert result.rings_used[:4] == (0, 1, 2, 3)
    assert result.n_control_points > 500
    assert result.ring_check.ring_fraction == 1.0


def test_poor_start_is_rejected_not_silently_accepted(ceo2_image) -> None:
    with pytest.raises(CalibrationRejectedError, match="misplaces the calibrant rings") as info:
        calibrate_geometry(ceo2_image, start(TRUE_DISTANCE_M + 0.008))
    result = info.value.result
    assert not result.accepted
    # the converged geometry is wrong although its residual alone would look tolerable
    assert abs(result.geometry.distance_m - TRUE_DISTANCE_M) > 1e-3
    assert result.residual_2theta_deg < 1.0
    assert result.ring_check.ring_fraction < 0.5


def test_non_strict_mode_returns_the_rejected_result(ceo2_image) -> None:
    result = calibrate_geometry(ceo2_image, start(TRUE_DISTANCE_M + 0.008), strict=False, passes=2)
    assert not result.accepted and "misplaces" in result.reason


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"passes": 0}, "passes"), ({"min_match_fraction": 0.2}, "min_match_fraction")],
)
def test_bad_options_are_named(ceo2_image, kwargs, name) -> None:
    with pytest.raises(ValueError, match=name):
        calibrate_geometry(ceo2_image, start(TRUE_DISTANCE_M), **kwargs)


def test_image_of_wrong_shape_and_unknown_calibrant_are_errors(ceo2_image) -> None:
    with pytest.raises(ValueError, match="image must have shape"):
        calibrate_geometry(ceo2_image[:-1], start(TRUE_DISTANCE_M))
    with pytest.raises(ValueError, match="calibrant"):
        calibrate_geometry(ceo2_image, start(TRUE_DISTANCE_M), calibrant="unobtainium")
