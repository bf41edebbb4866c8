import numpy as np
import pytest

from opmap.twin import LAYERS, GeometryConfig
from opmap.twin.cell import CellGeometry


@pytest.fixture(params=["tophat", "gaussian"])
def geometry(request) -> CellGeometry:
    return CellGeometry(GeometryConfig(beam_profile_z=request.param))


@pytest.mark.parametrize("h_um", [0.0, 1.3, 6.8])
def test_ti_centre_moves_up_by_exactly_the_li_thickness(h_um):
    geometry = CellGeometry(GeometryConfig())
    # Ti sits on LiPON (top at 24 µm) plus Li; its centre is 0.25 µm above its bottom.
    assert geometry.ti_centre_um(h_um) == pytest.approx(24.0 + h_um + 0.25, abs=1e-12)
    bounds = geometry.layer_bounds_um(h_um)
    assert bounds[LAYERS.index("au"), 1] == pytest.approx(24 + h_um + 0.5 + 3 + 1)


def test_layer_weights_sum_to_one_inside_the_stack(geometry):
    h_um = 3.0
    top_um = geometry.layer_bounds_um(h_um)[-1, 1]
    z_um = np.linspace(-3.0 + 3.5, top_um - 3.5, 200)  # >= 3.5 µm from the stack's ends
    weights = geometry.layer_weight_array(z_um, h_um)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-9)
    assert (weights >= 0).all()


def test_beam_outside_the_stack_sees_nothing(geometry):
    assert geometry.layer_weights(60.0, 2.0) == {}
    assert geometry.layer_weights(-20.0, 2.0) == {}


def test_tophat_beam_on_an_interface_splits_half_half():
    geometry = CellGeometry(GeometryConfig(beam_profile_z="tophat"))
    weights = geometry.layer_weights(20.0, 2.0)
    assert weights == pytest.approx({"lco": 0.5, "lipon": 0.5})
    assert geometry.layer_weights(25.0, 2.0) == pytest.approx({"li": 1.0})


def test_gaussian_beam_on_an_interface_is_symmetric_and_spills_past_half_width():
    geometry = CellGeometry(GeometryConfig(beam_profile_z="gaussian"))
    weights = geometry.layer_weights(20.0, 2.0)
    assert weights["lco"] == pytest.approx(0.5, abs=1e-12)
    # Gaussian FWHM 1 µm: 0.6 µm from an interface, the tail beyond it is 1 - Φ(0.6/0.4247)
    spill = geometry.layer_weights(20.6, 2.0)["lco"]
    assert spill == pytest.approx(0.0788, abs=2e-3)


def test_zero_li_layer_has_no_weight_and_negative_thickness_is_refused():
    geometry = CellGeometry(GeometryConfig())
    assert "li" not in geometry.layer_weights(24.0, 0.0)
    with pytest.raises(ValueError, match="li_thickness_um"):
        geometry.layer_bounds_um(-0.1)
