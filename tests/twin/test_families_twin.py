import numpy as np
import pytest

from opmap.twin import FamiliesConfig
from opmap.twin.cell import FamilyPopulation, lattice_angstrom, orientation_family


def test_paper_lattice_parameters_per_family():
    config = FamiliesConfig()
    x_li = np.array([1.0, 0.75, 0.5])
    c_perp, a_perp = lattice_angstrom(config.perp, x_li)
    c_par, a_par = lattice_angstrom(config.par, x_li)
    np.testing.assert_allclose(c_perp, [14.00, 14.13, 14.32])
    np.testing.assert_allclose(c_par, [14.00, 14.04, 14.12])
    np.testing.assert_allclose(a_perp[0] - a_perp[2], 0.005, atol=1e-12)
    np.testing.assert_allclose(a_par[0] - a_par[2], 0.005, atol=1e-12)
    assert a_perp[0] == 2.8035 and a_par[0] == 2.803


def test_orientation_family_carries_the_paper_azimuths():
    config = FamiliesConfig()
    perp, par = orientation_family(config.perp), orientation_family(config.par)
    assert perp.azimuths_003_deg == (25.0, 160.0, 205.0, 345.0)
    assert par.azimuths_003_deg == (90.0, 275.0)
    assert (perp.azimuths_110_deg, par.azimuths_110_deg) == ((90.0,), (210.0,))


def test_population_is_one_to_one_overall_with_more_perp_at_the_bottom():
    population = FamilyPopulation(FamiliesConfig(), lco_thickness_um=20.0, seed=3)
    z_um = np.linspace(0.0, 20.0, 201)
    x_um = np.linspace(0.0, 2000.0, 401)
    f = population.fractions(z_um[:, None], x_um[None, :])
    assert f["perp"].mean() == pytest.approx(0.5, abs=0.02)
    np.testing.assert_allclose(f["perp"] + f["par"], 1.0)
    assert f["perp"][0].mean() > f["perp"][-1].mean() + 0.15
    assert (f["perp"] >= 0).all() and (f["perp"] <= 1).all()


def test_lateral_modulation_is_mild_and_fixed_by_the_seed():
    config = FamiliesConfig()
    x_um = np.linspace(0.0, 2000.0, 501)
    a = FamilyPopulation(config, lco_thickness_um=20.0, seed=1).lateral(x_um)
    b = FamilyPopulation(config, lco_thickness_um=20.0, seed=1).lateral(x_um)
    c = FamilyPopulation(config, lco_thickness_um=20.0, seed=2).lateral(x_um)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert np.abs(a).max() <= config.lateral_amplitude
    assert a.std() > 0.1 * config.lateral_amplitude


def test_population_out_of_range_is_refused_naming_the_field():
    with pytest.raises(ValueError, match="lateral_amplitude"):
        FamiliesConfig(perp_fraction_bottom=0.98, lateral_amplitude=0.05)
