"""MapGeometry validation and the fly-line trajectory."""

from __future__ import annotations

import numpy as np
import pydantic
import pytest

from opmap.plans import MapGeometry, fly_line


def test_default_geometry_is_the_papers_map():
    g = MapGeometry()
    assert (g.z_count, g.x_count) == (49, 49)
    assert g.x_pixel_um == pytest.approx(33.0)
    assert g.x_velocity_um_per_s == pytest.approx(660.0)  # 33 µm per 0.05 s frame
    assert g.line_time_s == pytest.approx(2.45)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("z_step_um", 0.0),
        ("z_count", 0),
        ("x_count", 0),
        ("exposure_s", -0.05),
        ("exposure_s", float("nan")),
        ("x_stop_um", -1.0),
        ("unknown_field", 1),
    ],
)
def test_bad_geometry_names_the_field(field, value):
    with pytest.raises(pydantic.ValidationError, match=field):
        MapGeometry(**{field: value})


def test_trajectory_run_up_and_frame_centres():
    g = MapGeometry(
        x_start_um=100.0, x_stop_um=200.0, x_count=4, exposure_s=0.1, z_count=2, snake=True
    )
    forward = fly_line(g, 0, acceleration_time_s=0.2)
    # v = 25 µm / 0.1 s = 250 µm/s; run-up = v t / 2 = 25 µm
    assert forward.velocity_um_per_s == pytest.approx(250.0)
    assert forward.run_up_start_um == pytest.approx(75.0)
    np.testing.assert_allclose(forward.frame_x_um, [112.5, 137.5, 162.5, 187.5])
    info = forward.fly_motor_info()
    assert info.time_for_move == pytest.approx(0.4)
    assert info.ramp_up_start_pos(0.2) == pytest.approx(forward.run_up_start_um)
    back = fly_line(g, 1, acceleration_time_s=0.2)
    assert (back.x_from_um, back.x_to_um, back.run_up_start_um) == (200.0, 100.0, 225.0)
    np.testing.assert_allclose(back.frame_x_um, forward.frame_x_um[::-1])
    assert back.z_um == pytest.approx(1.0)


def test_fly_line_rejects_bad_index_and_acceleration():
    with pytest.raises(ValueError, match=r"line_index=49 must be in \[0, 48\]"):
        fly_line(MapGeometry(), 49)
    with pytest.raises(ValueError, match="acceleration_time_s"):
        fly_line(MapGeometry(), 0, acceleration_time_s=-1.0)
