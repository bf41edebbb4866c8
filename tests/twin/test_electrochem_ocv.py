"""OCV of LixCoO2 and the Butler–Volmer/ohmic polarisation."""

import math

import numpy as np
import pytest
from pydantic import ValidationError

from opmap.twin.electrochem import ElectrochemConfig, OcvCurve
from opmap.twin.electrochem.kinetics import (
    exchange_current_for,
    overpotential_v,
    solve_current_a_per_cm2,
    tafel_scale_v,
)


def test_ocv_is_strictly_decreasing_in_x_over_the_table():
    ocv = OcvCurve()
    x = np.linspace(ocv.x_min, ocv.x_max, 5000)
    assert np.all(np.diff(ocv.values(x)) < 0)
    scalar = np.array([ocv(v) for v in x[::50]])
    np.testing.assert_allclose(scalar, ocv.values(x[::50]), atol=1e-12)


def test_ocv_has_the_two_phase_plateau_and_reaches_4p2_v_near_half_lithiation():
    ocv = OcvCurve()
    plateau = ocv.values(np.linspace(0.76, 0.93, 50))
    assert np.all((plateau > 3.90) & (plateau < 3.95))
    assert plateau.max() - plateau.min() < 0.02
    assert ocv(0.5) == pytest.approx(4.2, abs=0.05)


def test_non_monotonic_ocv_table_is_rejected_naming_the_field():
    with pytest.raises(ValidationError, match="ocv_v must be strictly decreasing"):
        ElectrochemConfig(ocv_x=(0.4, 0.7, 1.0), ocv_v=(4.2, 4.3, 3.9))


def test_config_rejects_unknown_field_and_inverted_gap():
    with pytest.raises(ValidationError, match="area_mm2"):
        ElectrochemConfig(area_mm2=1.0)
    with pytest.raises(ValidationError, match=r"x_poor_eq=0\.95 must be below x_rich_eq"):
        ElectrochemConfig(x_poor_eq=0.95)


@pytest.mark.parametrize("driving_v", [-0.9, -0.1, -1e-4, 1e-4, 0.05, 0.37])
def test_current_solver_inverts_the_polarisation(driving_v):
    kw = {"exchange_a_per_cm2": 3e-6, "scale_v": tafel_scale_v(298.15), "resistance_ohm_cm2": 50}
    i = solve_current_a_per_cm2(driving_v, **kw)
    assert math.copysign(1.0, i) == math.copysign(1.0, driving_v)
    assert overpotential_v(i, **kw) == pytest.approx(driving_v, rel=1e-9)


def test_tafel_regime_gives_one_e_fold_of_current_per_2rt_over_f():
    scale = tafel_scale_v(298.15)
    assert scale == pytest.approx(0.05139, abs=1e-4)
    kw = {"exchange_a_per_cm2": 1e-9, "scale_v": scale, "resistance_ohm_cm2": 0.0}
    i1 = solve_current_a_per_cm2(0.5, **kw)
    i2 = solve_current_a_per_cm2(0.5 + scale, **kw)
    assert i2 / i1 == pytest.approx(math.e, rel=1e-6)


def test_exchange_current_reproduces_the_requested_current_and_rejects_too_much_ohmic_drop():
    scale = tafel_scale_v(298.15)
    i0 = exchange_current_for(1.2e-3, driving_v=0.37, scale_v=scale, resistance_ohm_cm2=50)
    kw = {"exchange_a_per_cm2": i0, "scale_v": scale, "resistance_ohm_cm2": 50}
    assert solve_current_a_per_cm2(0.37, **kw) == pytest.approx(1.2e-3, rel=1e-9)
    with pytest.raises(ValueError, match="ohmic_resistance_ohm_cm2=400"):
        exchange_current_for(1.2e-3, driving_v=0.37, scale_v=scale, resistance_ohm_cm2=400)
