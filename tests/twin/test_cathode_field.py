"""The cathode's Li field: lever rule, conservation, and the configurable biphasic front."""

import numpy as np
import pytest

from opmap.devices import ProtocolStep, SafetyWindow, StepTable, Technique
from opmap.twin.electrochem import (
    CathodeField,
    CellElectrochemistry,
    ElectrochemConfig,
    split_phases,
)


def test_lever_rule_recombines_to_the_mean_composition():
    x = np.linspace(0.4, 1.0, 601)
    rich, x_rich, x_poor = split_phases(x, x_poor_eq=0.75, x_rich_eq=0.94)
    np.testing.assert_allclose(rich * x_rich + (1 - rich) * x_poor, x, atol=1e-12)
    assert np.all(rich[x <= 0.75] == 0) and np.all(rich[x >= 0.94] == 1)
    assert np.all((x_rich >= 0.94) & (x_poor <= 0.75))


def field() -> CathodeField:
    return CathodeField(
        thickness_um=20.0,
        n_cells=40,
        x_initial=0.6,
        x_poor_eq=0.75,
        x_rich_eq=0.94,
        diffusivity_um2_per_s=(2.0, 0.5, 0.005, 1e-3),
        lithiation_gap_diffusivity_um2_per_s=0.02,
        lithiation_slowdown_dx=0.3,
    )


def test_li_leaving_through_the_top_is_conserved():
    f = field()
    total0 = f.x_li.sum() * f.dz_um
    for _ in range(100):
        f.step(2.0, 1e-3)  # 1e-3 (x·µm)/s out of the top face
    assert f.x_li.sum() * f.dz_um == pytest.approx(total0 - 0.2, rel=1e-10)
    assert f.x_top < f.x_li[0]  # delithiated from the electrolyte side


def test_a_closed_field_relaxes_to_uniform_at_constant_content():
    f = field()
    f.x_li = np.where(f.z_um > 15, 0.7, 0.55)
    total0 = f.x_li.sum()
    for _ in range(2000):
        f.step(2.0, 0.0)
    assert f.x_li.sum() == pytest.approx(total0, rel=1e-12)
    assert np.ptp(f.x_li) < 1e-3


def front_track(config: ElectrochemConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Times (s), f = 0.5 positions and 10-90 % widths (µm) of the charge front."""
    model = CellElectrochemistry(config)
    step = ProtocolStep(Technique.CONSTANT_VOLTAGE, 3600, setpoint=4.3, label="charge")
    model.start_protocol(StepTable((step,)), SafetyWindow())
    times, z50, widths = [], [], []
    for t in np.arange(60.0, 3600.0, 30.0):
        model.advance_to(float(t))
        p = model.profile()
        f_down, z_down = p.rich_fraction[::-1], p.z_um[::-1]  # top to bottom: f increasing
        if not (f_down[0] < 0.1 and f_down[-1] > 0.9):
            continue
        z_mid = np.interp(0.5, f_down, z_down)
        if 4.0 < z_mid < 16.0:
            times.append(t)
            z50.append(z_mid)
            widths.append(np.interp(0.1, f_down, z_down) - np.interp(0.9, f_down, z_down))
    return np.array(times), np.array(z50), np.array(widths)


@pytest.mark.parametrize(("speed_nm_s", "width_um"), [(10.0, 6.0), (15.0, 4.0)])
def test_front_enters_from_the_top_at_the_configured_speed_and_width(speed_nm_s, width_um):
    config = ElectrochemConfig(front_speed_nm_per_s=speed_nm_s, interface_width_um=width_um)
    times, z50, widths = front_track(config)
    assert len(times) > 10
    assert np.all(np.diff(z50) < 0)  # moves down, from the electrolyte side
    slope_um_s = np.polyfit(times, z50, 1)[0]
    assert -slope_um_s * 1e3 == pytest.approx(speed_nm_s, rel=0.10)
    assert np.median(widths) == pytest.approx(width_um, rel=0.10)
    assert np.all(abs(widths / width_um - 1) < 0.15)
