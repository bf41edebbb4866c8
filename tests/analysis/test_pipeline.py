import numpy as np
import pytest
from pydantic import ValidationError

from opmap.analysis.families import FamilyConfig
from opmap.analysis.fitting import peak_present
from opmap.analysis.lattice import PixelFlag, li_fraction_from_c
from opmap.analysis.nexus import read_products, write_products
from opmap.analysis.pipeline import (
    AnalysisParameters,
    CalibrationTable,
    ExperimentAnalysis,
    MapLayout,
    analyze_map,
)
from opmap.analysis.reduction import ReducedFrames

FAMILIES = FamilyConfig.model_validate(
    {
        "family": [
            {"name": "perp", "azimuths_003_deg": [25, 160], "azimuths_110_deg": [90]},
            {"name": "par", "azimuths_003_deg": [90, 275]},
        ]
    }
)
Q003 = np.linspace(1.28, 1.38, 41)
Q110 = np.linspace(4.43, 4.52, 37)
Q_TI = 2 * np.pi / (2.951 * np.sqrt(3) / 2)  # Ti (100), the distance-correction reference
QREF = np.linspace(Q_TI - 0.03, Q_TI + 0.03, 24)
N_Z, N_X = 6, 4
Z_UM = np.arange(N_Z) * 1.0 + 20.0
X_UM = 33.0 * np.arange(N_X)


def gauss(q, centre, sigma=0.004):
    return np.exp(-0.5 * ((q[None, :] - np.asarray(centre)[:, None]) / sigma) ** 2)


def reduced_frames(layout, c_map, ti_z_um, spots=(), rich=None):
    """Synthetic reduction of one map: (003)/(110) peaks, a Ti band and Li spots."""
    n = layout.n_frames
    c = np.empty(n)
    c[layout.frame_index()] = c_map
    profile = 400 * gauss(Q003, 6 * np.pi / c) + 5.0
    if rich is not None:
        r = np.empty(n)
        r[layout.frame_index()] = rich
        profile = 5.0 + 400 * (
            r[:, None] * gauss(Q003, np.full(n, 6 * np.pi / 14.0))
            + (1 - r[:, None]) * gauss(Q003, np.full(n, 6 * np.pi / 14.13))
        )
    a110 = 300 * gauss(Q110, np.full(n, 4 * np.pi / 2.80)) + 3.0
    z_of_frame = np.empty(n)
    z_of_frame[layout.frame_index()] = np.repeat(layout.z_um, layout.n_x).reshape(N_Z, N_X)
    ti = 100 * np.exp(-0.5 * ((z_of_frame - ti_z_um) / 0.7) ** 2) + 1.0
    au = 60 * np.exp(-0.5 * ((z_of_frame - ti_z_um - 3.75) / 0.8) ** 2) + 2.0  # moves with Ti
    window = np.ones((n, 360, 10), np.float32)
    for i, j, chi in spots:
        window[layout.frame_index()[i, j], chi - 1 : chi + 2, :] = 200.0  # 3 chi bins
    ti_profile = (ti[:, None] - 1.0) * 4 * gauss(QREF, np.full(n, Q_TI), 0.006) + 2.0
    return ReducedFrames(
        profiles={
            "perp:003": profile,
            "par:003": profile,
            "perp:110": a110,
            "reference:ti_100": ti_profile,
            "sectors:distance_ti_100": ti_profile,  # the same peak off the pixel axes
        },
        profile_q={
            "perp:003": Q003,
            "par:003": Q003,
            "perp:110": Q110,
            "reference:ti_100": QREF,
            "sectors:distance_ti_100": QREF,
        },
        li_window=window,
        li_window_chi_deg=np.arange(360) + 0.5,
        li_window_q=np.linspace(2.531, 2.549, 10),
        bands={"ti_100": ti, "au_111": au, "lco_003": profile.mean(1)},
    )


@pytest.fixture
def layout():
    return MapLayout(n_z=N_Z, n_x=N_X, snake=True, z_um=Z_UM, x_um=X_UM)


@pytest.fixture
def params():
    return AnalysisParameters(families=FAMILIES)


def test_layout_snake_frame_index_and_validation():
    assert MapLayout(n_z=3, n_x=2, snake=True).frame_index().tolist() == [[0, 1], [3, 2], [4, 5]]
    assert MapLayout(n_z=2, n_x=2).frame_index().tolist() == [[0, 1], [2, 3]]
    with pytest.raises(ValueError, match="n_x must be an integer in"):
        MapLayout(n_z=2, n_x=0)
    with pytest.raises(ValueError, match=r"z_um must have shape \(2,\)"):
        MapLayout(n_z=2, n_x=2, z_um=np.arange(3.0))
    with pytest.raises(ValueError, match="strictly increasing"):
        MapLayout(n_z=2, n_x=2, x_um=np.array([1.0, 1.0]))


def test_parameters_reject_bad_fields_by_name():
    with pytest.raises(ValidationError, match="grain_kk"):
        AnalysisParameters(families=FAMILIES, grain_kk=3)
    with pytest.raises(ValidationError, match="unknown families"):
        AnalysisParameters(families=FAMILIES, calibration={"tilted": CalibrationTable(
            c_angstrom=(14.0, 14.3), x_li=(1.0, 0.5))})  # fmt: skip
    with pytest.raises(ValidationError, match="sectors overlap"):
        AnalysisParameters.model_validate({"families": {"family": [
            {"name": "a", "azimuths_003_deg": [90]},
            {"name": "b", "azimuths_003_deg": [100]}]}})  # fmt: skip
    with pytest.raises(ValidationError, match="rich_c_angstrom"):
        AnalysisParameters(families=FAMILIES, rich_c_angstrom=14.2, poor_c_angstrom=14.1)


def test_parameters_round_trip_through_json():
    params = AnalysisParameters(families=FAMILIES, grain_k=8.0, front_family="par")
    again = AnalysisParameters.model_validate_json(params.model_dump_json())
    assert again == params and again.front_family_name == "par"


def test_analyze_map_recovers_c_a_ti_and_grains(layout, params):
    rng = np.random.default_rng(3)
    c_map = 14.0 + 0.3 * rng.random((N_Z, N_X))
    reduced = reduced_frames(layout, c_map, ti_z_um=22.3, spots=[(2, 1, 40), (4, 3, 200)])
    result = analyze_map(reduced, layout, params, map_index=0, time_s=150.0)
    np.testing.assert_allclose(result.c_angstrom["perp"], c_map, atol=1e-4)
    np.testing.assert_allclose(result.c_angstrom["par"], c_map, atol=1e-4)
    np.testing.assert_allclose(result.a_angstrom["perp"], 2.80, atol=1e-5)
    assert "par" not in result.a_angstrom  # par has no (110) sectors
    np.testing.assert_allclose(result.ti_z_um, 22.3, atol=0.1)
    assert len(result.grains) == 2
    assert sorted(np.round(result.grains.azimuth_deg).tolist()) == [40.0, 200.0]
    assert sorted(result.grains.x_um.tolist()) == [X_UM[1], X_UM[3]]
    x_expected, _ = li_fraction_from_c(c_map)  # the paper's lines: NaN below 14.03 Å
    np.testing.assert_allclose(result.x_li["perp"], x_expected, atol=2e-4)
    assert "par" not in result.x_li  # the paper calibrates LCO⊥ only
    outside = (c_map < 14.03) | (c_map > 14.43)
    assert outside.any() and (~outside).any()
    flags = result.flags["x_li_perp"]
    assert (flags[outside] == PixelFlag.OUT_OF_RANGE).all()
    assert (flags[~outside] == PixelFlag.OK).all()
    assert (result.flags["c_perp"] == PixelFlag.OK).all()


def test_calibration_table_gives_x_from_c(layout):
    table = CalibrationTable(c_angstrom=(14.0, 14.13, 14.32), x_li=(1.0, 0.75, 0.5))
    params = AnalysisParameters(families=FAMILIES, calibration={"perp": table})
    c_map = np.full((N_Z, N_X), 14.225)
    result = analyze_map(reduced_frames(layout, c_map, 22.0), layout, params, map_index=0,
                         time_s=0.0)  # fmt: skip
    np.testing.assert_allclose(result.x_li["perp"], 0.625, atol=1e-3)


def test_rich_fraction_from_two_phases(layout, params):
    params = params.model_copy(update={"front_method": "rich_fraction"})
    rich = np.linspace(0.1, 0.9, N_Z)[:, None].repeat(N_X, 1)
    reduced = reduced_frames(layout, np.full((N_Z, N_X), 14.0), 22.0, rich=rich)
    result = analyze_map(reduced, layout, params, map_index=0, time_s=0.0)
    np.testing.assert_allclose(result.rich_fraction, rich, atol=0.02)


def test_analyze_map_rejects_a_frame_count_mismatch(layout, params):
    reduced = reduced_frames(layout, np.full((N_Z, N_X), 14.0), 22.0)
    other = MapLayout(n_z=N_Z + 1, n_x=N_X)
    with pytest.raises(ValueError, match="needs n_z·n_x = 7·4 = 28"):
        analyze_map(reduced, other, params, map_index=0, time_s=0.0)


def experiment_with_three_maps(layout, params):
    experiment = ExperimentAnalysis(layout, params, metadata={"run_uid": "abc"})
    # Ti rises by the plated Li; one grain persists, one appears in the last map.
    for index, (ti_z, spots) in enumerate(
        [(22.2, [(2, 1, 40)]), (22.7, [(2, 1, 40)]), (23.0, [(2, 1, 40), (5, 0, 300)])]
    ):
        reduced = reduced_frames(layout, np.full((N_Z, N_X), 14.1), ti_z, spots=spots)
        result = analyze_map(reduced, layout, params, map_index=index, time_s=300.0 * index)
        experiment.add_map(result, electrochem={"potential_v": 3.9 + 0.1 * index})
    return experiment


def test_experiment_products_thickness_grains_and_series(layout, params):
    # The default: the Ti band's own displacement (the paper's method).
    products = experiment_with_three_maps(layout, params).products()
    thickness = products.arrays["li_thickness_mean"].values
    np.testing.assert_allclose(thickness, [0.0, 0.5, 0.8], atol=0.05)
    assert products.arrays["li_thickness"].dims == ("map", "x")
    assert products.arrays["c_perp"].dims == ("map", "z", "x")
    assert products.arrays["c_perp"].units == "angstrom"
    assert products.arrays["grains_total"].values.tolist() == [1, 1, 2]
    assert products.arrays["grains_new"].values.tolist() == [1, 0, 1]
    assert products.arrays["grains_deceased"].values.tolist() == [0, 0, 0]
    assert products.tables["grain_tracks"]["lifetime_maps"].tolist() == [3, 1]
    assert products.arrays["echem_potential_v"].units == "V"
    np.testing.assert_allclose(products.arrays["echem_potential_v"].values, [3.9, 4.0, 4.1])
    assert products.metadata["run_uid"] == "abc"
    assert products.metadata["analysis_parameters"]["grain_k"] == params.grain_k


def test_products_survive_the_nexus_file(layout, params, tmp_path):
    products = experiment_with_three_maps(layout, params).products()
    path = write_products(tmp_path / "cell.nxs", products)
    back = read_products(path)
    np.testing.assert_array_equal(back.arrays["ti_z"].values, products.arrays["ti_z"].values)
    assert back.metadata["layout"]["n_z"] == N_Z


def test_maps_must_come_in_time_order(layout, params):
    experiment = experiment_with_three_maps(layout, params)
    reduced = reduced_frames(layout, np.full((N_Z, N_X), 14.1), 22.0)
    early = analyze_map(reduced, layout, params, map_index=3, time_s=10.0)
    with pytest.raises(ValueError, match="time order"):
        experiment.add_map(early)
    with pytest.raises(ValueError, match="no map added"):
        ExperimentAnalysis(layout, params).products()


def test_front_speed_from_moving_rich_fraction():
    from scipy.special import erfc

    z = np.arange(0.0, 20.0)
    layout = MapLayout(n_z=20, n_x=2, z_um=z, x_um=np.array([0.0, 33.0]))
    # opt-in two-phase front; a cathode-only synthetic map without Ti peaks: no distance correction
    params = AnalysisParameters(
        families=FAMILIES,
        front_method="rich_fraction",
        distance_correction="off",
        ti_background="band",
    )
    experiment = ExperimentAnalysis(layout, params)
    for index, t in enumerate([0.0, 200.0, 400.0, 600.0]):
        front_um = 16.0 - 0.01 * t  # 10 nm/s downwards
        rich = 0.5 * erfc((z - front_um) / (np.sqrt(2) * 2.0))[:, None].repeat(2, 1)
        reduced = reduced_frames_z(layout, rich)
        experiment.add_map(analyze_map(reduced, layout, params, map_index=index, time_s=t))
    products = experiment.products()
    np.testing.assert_allclose(
        products.arrays["front_position"].values, [16.0, 14.0, 12.0, 10.0], atol=0.3
    )
    assert products.metadata["front"]["speed_nm_per_s"] == pytest.approx(-10.0, rel=0.05)
    assert products.metadata["front"]["method_description"].startswith("opt-in")


def reduced_frames_z(layout, rich):
    n = layout.n_frames
    r = np.empty(n)
    r[layout.frame_index()] = rich
    profile = 5.0 + 400 * (
        r[:, None] * gauss(Q003, np.full(n, 6 * np.pi / 14.0))
        + (1 - r[:, None]) * gauss(Q003, np.full(n, 6 * np.pi / 14.13))
    )
    return ReducedFrames(
        profiles={"perp:003": profile, "par:003": profile},
        profile_q={"perp:003": Q003, "par:003": Q003},
        li_window=np.ones((n, 360, 10), np.float32),
        li_window_chi_deg=np.arange(360) + 0.5,
        li_window_q=np.linspace(2.531, 2.549, 10),
        bands={"ti_100": np.linspace(1, 2, n), "au_111": np.linspace(2, 1, n)},
    )


def test_empty_li_window_bins_do_not_hide_grains(layout, params):
    reduced = reduced_frames(layout, np.full((N_Z, N_X), 14.0), 22.0, spots=[(1, 2, 120)])
    reduced.li_window[:, ::7, 3] = np.nan  # bins without pixels on a binned detector
    result = analyze_map(reduced, layout, params, map_index=0, time_s=0.0)
    assert len(result.grains) == 1
    assert float(result.grains.azimuth_deg[0]) == pytest.approx(120.5, abs=0.05)  # bin centre


def test_rich_fraction_of_pure_phases_is_one_or_zero(layout, params):
    params = params.model_copy(update={"front_method": "rich_fraction"})
    # Li-poor (14.13 Å) everywhere but the first line, Li-rich (14.0 Å) there: the other
    # peak has no area, so the fraction comes out 0 or 1, not NaN or a split single peak.
    c_map = np.full((N_Z, N_X), 14.13)
    c_map[0] = 14.0
    result = analyze_map(reduced_frames(layout, c_map, 22.0), layout, params, map_index=0,
                         time_s=0.0)  # fmt: skip
    expected = np.where(c_map < 14.05, 1.0, 0.0)
    np.testing.assert_allclose(result.rich_fraction, expected, atol=0.02)


def test_noise_peaks_outside_the_layer_are_not_reported_as_lattice_values():
    # 80 pixels in the cathode with the family's peak (area ~100), 20 outside where a noise
    # fluctuation passed the SNR test (area ~3) and two pixels without any fit
    area = np.concatenate([np.full(80, 100.0), np.full(20, 3.0), [np.nan, np.nan]])
    present = peak_present(area, min_relative_area=0.1)
    assert present[:80].all() and not present[80:].any()
    assert not peak_present(np.full(4, np.nan), min_relative_area=0.1).any()
