"""Accuracy of the map pipeline against the digital twin's ground truth (small maps).

Frames are rendered by the twin's forward model on a 2 × 2-binned Eiger 4M (150 µm pixels:
one q pixel ≈ 0.013 Å⁻¹ at (003), so the c changes are sub-pixel). With 4 × 4 binning a
(003) peak (FWHM 0.010 Å⁻¹) falls inside one 0.027 Å⁻¹ pixel and sectors where the ring runs
along pixel rows lose the sub-pixel position (see docs/analysis-pipeline.md).
"""

import numpy as np
import pytest

from opmap.analysis.geometry import DetectorGeometry, eiger4m_integrator
from opmap.analysis.lattice import PAPER_CALIBRATION, PixelFlag, li_fraction_from_c
from opmap.analysis.phases import TiFlag
from opmap.analysis.pipeline import (
    ExperimentAnalysis,
    MapLayout,
    analyze_map,
    sampling_correction,
)
from opmap.analysis.reduction import compile_reduction
from opmap.devices import SafetyWindow, paper_protocol
from opmap.rehearse import analysis_parameters_for_twin
from opmap.twin import CellTwin, TwinConfig
from opmap.twin.forward import DetectorMask, DiffractionConfig, DiffractionRenderer

X_UM = 700.0 + 33.0 * (np.arange(8) + 0.5)
# The cathode and, above the LiPON, the Ti (100) reference of the paper's distance correction
# (the twin's cell sits ~60 µm off the calibrated distance: ~0.009 Å in c uncorrected).
CATHODE_Z_UM = np.arange(0.5, 26.5, 1.5)
ANODE_Z_UM = np.arange(22.0, 38.0)  # Ti at 24.25 µm, Au at 28 µm, + plated Li
EXPOSURE_S = 0.05


class TwinSetup:
    def __init__(self, binning: int = 2) -> None:
        self.config = TwinConfig(seed=0)
        self.twin = CellTwin(self.config)
        self.twin.electrochemistry.start_protocol(paper_protocol(), SafetyWindow())
        ai = eiger4m_integrator(binning=binning)
        self.renderer = DiffractionRenderer(ai, DiffractionConfig(), self.twin.families)
        geometry = DetectorGeometry.from_integrator(ai, mask=DetectorMask().analysis_mask(ai))
        self.geometry = geometry
        # x_Li from the paper's calibration (never the twin's c(x) law).
        self.params = analysis_parameters_for_twin(self.config)
        self.reduction = compile_reduction(self.params.reduction_plan(), geometry)
        self.rng = np.random.default_rng(7)

    def render_map(self, layout: MapLayout, time_s: float, rng=None) -> np.ndarray:
        frames = np.empty((layout.n_frames, *self.renderer.shape), np.uint32)
        index = layout.frame_index()
        for i, z in enumerate(layout.z_um):
            for j, x in enumerate(layout.x_um):
                scene = self.twin.scene(z_um=float(z), x_start_um=x - 16.5, x_stop_um=x + 16.5,
                                        time_s=time_s)  # fmt: skip
                frames[index[i, j]] = self.renderer.render(
                    scene, exposure_s=EXPOSURE_S, rng=self.rng if rng is None else rng
                )
        return frames


@pytest.fixture(scope="module")
def setup():
    return TwinSetup()


@pytest.mark.xfail(
    strict=True,
    reason="known miss of issue 10: LCO par (003) at chi 90/275 deg lies along pixel rows; "
    "on 2 x 2 binned pixels its fitted c is biased by ~0.010 A (perp passes)",
)
@pytest.mark.parametrize("time_s", [300.0, 4500.0])
def test_c_per_pixel_within_0p003_angstrom_where_the_family_is_visible(setup, time_s):
    layout = MapLayout(n_z=CATHODE_Z_UM.size, n_x=8, z_um=CATHODE_Z_UM, x_um=X_UM)
    reduced = setup.reduction.reduce(setup.render_map(layout, time_s))
    result = analyze_map(reduced, layout, setup.params, map_index=0, time_s=time_s)
    truth = setup.twin.truth(z_um=layout.z_um, x_um=layout.x_um, time_s=time_s)
    for family in ("perp", "par"):
        visible = np.isfinite(truth.c_angstrom[family])
        recovered = result.c_angstrom[family][visible]
        assert np.isfinite(recovered).mean() > 0.95  # fits are trusted where LCO diffracts
        error = recovered - truth.c_angstrom[family][visible]
        assert np.sqrt(np.nanmean(error**2)) <= 0.004, family
    error = result.c_angstrom["perp"] - truth.c_angstrom["perp"]
    assert np.sqrt(np.nanmean(error**2)) <= 0.003
    # x: the paper's line applied to the true c (the twin's own x(c) law differs from the
    # paper's calibration, so its x is not the reference here); NaN + flag outside 14.03–14.43.
    x_of_true_c, _ = li_fraction_from_c(truth.c_angstrom["perp"])
    x_error = result.x_li["perp"] - x_of_true_c
    assert np.sqrt(np.nanmean(x_error**2)) <= 0.006  # slope 1.39/Å × 0.003 Å + noise
    outside = np.isfinite(result.c_angstrom["perp"]) & ~PAPER_CALIBRATION.covers(
        result.c_angstrom["perp"]
    )
    assert (result.flags["x_li_perp"][outside] == PixelFlag.OUT_OF_RANGE).all()
    assert np.isnan(result.x_li["perp"][outside]).all()


@pytest.fixture(scope="module")
def unbinned():
    return TwinSetup(binning=1)


def test_c_and_a_meet_the_targets_on_the_unbinned_eiger(unbinned):
    """Issue 10's lattice targets on the real detector's 75 µm pixels (a q pixel ≈ 0.0067 Å⁻¹,
    below the peak FWHM), both families, with the twin's sample offset removed by the paper's
    distance correction (Ti (100) rows are in the map): c per pixel RMS ≤ 0.003 Å, map-mean
    c ≤ 0.002 Å, map-mean a ≤ 0.0005 Å, with ≥ 95 % coverage where the family diffracts.
    4500 s: solid solution, one phase per pixel; the Ti reference sits ~5.8 µm higher on the
    plated Li (rows up to 32 µm), and the distance scale's linear-in-x fit uses 8 columns."""
    time_s = 4500.0
    z_um = np.arange(0.5, 32.0, 1.5)
    layout = MapLayout(n_z=z_um.size, n_x=8, z_um=z_um, x_um=X_UM)
    reduced = unbinned.reduction.reduce(unbinned.render_map(layout, time_s))
    result = analyze_map(reduced, layout, unbinned.params, map_index=0, time_s=time_s)
    truth = unbinned.twin.truth(z_um=layout.z_um, x_um=layout.x_um, time_s=time_s)
    for family in ("perp", "par"):
        visible = np.isfinite(truth.c_angstrom[family])
        assert np.isfinite(result.c_angstrom[family][visible]).mean() >= 0.95, family
        c_error = (result.c_angstrom[family] - truth.c_angstrom[family])[visible]
        a_error = (result.a_angstrom[family] - truth.a_angstrom[family])[visible]
        assert np.sqrt(np.nanmean(c_error**2)) <= 0.003, family
        assert abs(np.nanmean(c_error)) <= 0.002, family
        assert abs(np.nanmean(a_error)) <= 0.0005, family


@pytest.fixture(scope="module")
def anode_setup():
    # Its own twin: the shared one has already run to later times in the cathode tests and
    # never steps its electrochemistry back.
    return TwinSetup()


@pytest.fixture(scope="module")
def anode_maps(anode_setup):
    """Three maps of the anode stack: before plating, early and late in the charge."""
    setup = anode_setup
    layout = MapLayout(n_z=ANODE_Z_UM.size, n_x=3, z_um=ANODE_Z_UM, x_um=X_UM[:3])
    reduced, truths = [], []
    rng = np.random.default_rng(11)  # its own noise: results do not depend on test order
    for time_s in (60.0, 3000.0, 6500.0):
        reduced.append(setup.reduction.reduce(setup.render_map(layout, time_s, rng)))
        truths.append(setup.twin.truth(z_um=layout.z_um, x_um=layout.x_um, time_s=time_s))
    return layout, reduced, truths


@pytest.mark.parametrize(
    ("method", "band", "tolerance_um"),
    [("stack", "ti_100", 0.15), ("ti", "au_111", 0.3), ("ti", "ti_100", 0.15)],
)
def test_li_thickness_from_the_displacement_of_the_stack(
    anode_setup, anode_maps, method, band, tolerance_um
):
    # A 1 µm top-hat beam stepped by 1 µm sees the 0.5 µm Ti layer whole in one row over a
    # 0.5 µm range of positions: its centroid is quantised by ±0.25 µm. The 1 µm Au layer
    # above moves by the same thickness and its row profile keeps the sub-row position; the
    # default "stack" method matches that profile between maps instead of taking a centroid.
    # The Ti (100) on its own q peak (the default): within 0.09 µm; on its band's mean
    # (ti_background "band"), 0.28-0.31 µm too thick, the LiPON halo under the pristine Ti.
    layout, reduced_maps, truths = anode_maps
    # Au (111) has no q profile in the default reduction: its band mean, background included
    background = "q_line" if band == "ti_100" else "band"
    params = anode_setup.params.model_copy(
        update={"ti_band": band, "li_thickness_method": method, "ti_background": background}
    )
    experiment = ExperimentAnalysis(layout, params)
    for index, (reduced, truth) in enumerate(zip(reduced_maps, truths, strict=True)):
        result = analyze_map(reduced, layout, params, map_index=index, time_s=truth.time_s)
        experiment.add_map(result)
    products = experiment.products()
    thickness = products.arrays["li_thickness"].values
    expected = np.array([t.li_thickness_um - truths[0].li_thickness_um for t in truths])
    assert expected[-1].mean() > 3.0  # several µm plated: the test can fail
    np.testing.assert_allclose(thickness, expected, atol=tolerance_um)
    # the Ti (or Au) stands far above the map's noise: every column keeps its position
    assert (products.arrays["ti_flag"].values == 0).all()
    assert (products.arrays["coverage_ti_z"].values == 1.0).all()


def test_a_map_whose_z_range_holds_no_ti_reports_no_ti_height_nor_li_thickness():
    """The soak's map: 8 rows of 1 µm from 3 µm below the cathode base, 5 columns, far
    below the Ti (~24 µm). Its Ti (100) peak intensity is frame-to-frame noise; the centroid
    of that noise once gave a Li thickness scattered by ±3 µm where the twin plates 6.6 µm.
    Now ti_z and the Li thickness are NaN, flagged ABSENT (codes in metadata ti_flags)."""
    setup = TwinSetup()  # its own twin: its electrochemistry only runs forward
    z_um = -3.0 + np.arange(8.0)
    layout = MapLayout(n_z=8, n_x=5, z_um=z_um, x_um=200.0 + 33.0 * (np.arange(5) + 0.5))
    rng = np.random.default_rng(21)
    maps = [(setup.reduction.reduce(setup.render_map(layout, t, rng)), t)
            for t in (60.0, 3000.0, 6500.0)]  # fmt: skip
    assert setup.twin.truth(z_um=z_um, x_um=layout.x_um, time_s=6500.0).ti_centre_um.min() > 20

    def products(min_significance, max_fwhm_um=3.0):
        params = setup.params.model_copy(update={"ti_min_significance": min_significance,
                                                 "layer_max_fwhm_um": max_fwhm_um})  # fmt: skip
        experiment = ExperimentAnalysis(layout, params)
        for index, (reduced, time_s) in enumerate(maps):
            experiment.add_map(analyze_map(reduced, layout, params, map_index=index,
                                           time_s=time_s))  # fmt: skip
        return experiment.products()

    found = products(5.0)
    flags = found.arrays["ti_flag"].values
    assert (flags == TiFlag.ABSENT).sum() >= 14  # of 15 columns (seeded: 15)
    assert np.isnan(found.arrays["li_thickness"].values).all()
    assert np.isnan(found.arrays["li_thickness_mean"].values).all()
    # nor a cross-check from the Au stack above the Ti, which the map does not reach either
    assert np.isnan(found.arrays["li_thickness_au"].values).all()
    assert (found.arrays["coverage_ti_z"].values <= 0.2).all()
    assert found.metadata["ti_flags"]["2"].startswith("ABSENT")
    # without the tests the same frames give a Ti height in most columns: they can fail
    blind = products(0.0, None).arrays
    assert np.isfinite(blind["ti_z"].values).sum() >= 8
    assert np.isfinite(blind["li_thickness"].values[1:]).any()
    assert np.isfinite(blind["li_thickness_au"].values[1:]).any()


@pytest.mark.xfail(
    strict=True,
    reason="known miss of issue 10: the opt-in sampling correction models the old renderer's "
    "rings; on the pseudo-Voigt, pixel-integrated twin it no longer removes the par bias",
)
def test_sampling_correction_removes_the_binned_detector_bias_of_the_par_sector(setup):
    # Noise-free frames (expected counts) of the twin's forward model: any error left is
    # the analysis's. The LCO∥ (003) spots at 90/275° lie along pixel rows, where the 2 × 2
    # binned pixels all see the ring at one sub-pixel phase.
    from opmap.analysis.fitting import fit_gaussian

    sampling = sampling_correction(setup.reduction, setup.geometry, setup.params, chi_fwhm_deg=6.0)
    raw, corrected = [], []
    for time_s, z_um in ((120.0, 10.0), (1500.0, 15.0), (3000.0, 10.0)):
        scene = setup.twin.scene(z_um=z_um, x_start_um=983.5, x_stop_um=1016.5, time_s=time_s)
        expected = setup.renderer.expected_counts(scene, exposure_s=50.0)
        reduced = setup.reduction.reduce(expected[None].astype(np.float32))
        truth = setup.twin.truth(z_um=np.array([z_um]), x_um=np.array([1000.0]), time_s=time_s)
        key = "par:003"
        fit = fit_gaussian(reduced.profiles[key], reduced.profile_q[key])
        c_true = truth.c_angstrom["par"][0, 0]
        raw.append(6 * np.pi / fit.position_q[0] - c_true)
        q = sampling.correct(key, fit.position_q, fit.sigma_q)
        corrected.append(6 * np.pi / q[0] - c_true)
    assert max(np.abs(raw)) > 0.003  # the bias is there: the test can fail
    assert max(np.abs(corrected)) < 0.0015
    assert np.mean(np.abs(corrected)) < 0.5 * np.mean(np.abs(raw))
