"""Report figures and the recovered-versus-truth table on a small synthetic experiment."""

from __future__ import annotations

import itertools
import logging

import numpy as np
import pytest

from opmap.analysis.lattice import front_velocity
from opmap.analysis.products import LabelledArray, Products
from opmap.callbacks.report import COLUMNS, front_pairs, grain_pairs, report_table, write_report

from ._report_products import TIME_S, TRUTH_FRONT_UM, synthetic_products, without

FIGURES = ("fig2_charge", "fig3_discharge", "fig4_anode", "fig_truth")


def _rows(products: Products) -> dict[str, dict]:
    return {row["figure"]: row for row in report_table(products)}


def test_every_figure_is_a_valid_png_and_pdf_plus_truth_tables(tmp_path):
    written = write_report(synthetic_products(), tmp_path / "report", dpi=40)
    names = [p.name for p in written]
    expected = [f"{f}.{ext}" for f in FIGURES for ext in ("png", "pdf")]
    assert names == [*expected, "truth_table.csv", "truth_table.md", "report.html"]
    for path in written:
        head = path.read_bytes()[:8]
        if path.suffix == ".png":
            assert head == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5_000
        elif path.suffix == ".html":
            continue
        elif path.suffix == ".pdf":
            assert head.startswith(b"%PDF-")
    csv_lines = (tmp_path / "report" / "truth_table.csv").read_text().splitlines()
    assert csv_lines[0] == ",".join(COLUMNS)
    assert len(csv_lines) == 1 + len(report_table(synthetic_products()))
    markdown = (tmp_path / "report" / "truth_table.md").read_text()
    assert (
        "| c per pixel RMS perp | 14.02 | 14.01 | 0.002 | 0.003 | angstrom | 1 | 0 | yes |"
        in markdown
    )


def test_table_rows_have_the_errors_of_the_known_offsets():
    rows = _rows(synthetic_products())
    assert all(tuple(row) == COLUMNS for row in rows.values())
    # c = truth + 0.002 Å everywhere: RMS and worst map-mean error are both 0.002 Å.
    assert rows["c per pixel RMS perp"]["error"] == pytest.approx(0.002, abs=1e-12)
    assert rows["c per pixel RMS perp"]["pass"] is True
    assert rows["c map mean perp"]["error"] == pytest.approx(0.002, abs=1e-12)
    assert rows["c map mean perp"]["pass"] is False
    assert rows["c map mean perp"]["recovered"] == pytest.approx(14.017)
    assert rows["c map mean perp"]["truth"] == pytest.approx(14.015)
    # a from the twin's MapTruth name truth_perp_a_angstrom: 2.8003 vs 2.8.
    assert rows["a map mean perp"]["error"] == pytest.approx(0.0003, abs=1e-12)
    assert rows["a map mean perp"]["pass"] is True
    # x_Li: a ±0.03 checkerboard around the truth has RMS 0.03 > 0.02.
    assert rows["x_Li per pixel RMS perp"]["error"] == pytest.approx(0.03)
    assert rows["x_Li per pixel RMS perp"]["pass"] is False
    # Front: map 3 has no recovered position; worst of |18 − 18.5|, 0, 0.
    assert rows["front position"]["error"] == pytest.approx(0.5)
    truth_speed = np.polyfit(TIME_S[:3], TRUTH_FRONT_UM[:3], 1)[0] * 1e3
    assert rows["front speed"]["truth"] == pytest.approx(truth_speed)
    assert rows["front speed"]["recovered"] == -10.0
    assert rows["front speed"]["error"] == pytest.approx(abs(-10.0 - truth_speed) / -truth_speed)
    # Grains: worst map 40 vs 50; new 47 vs 45 and deceased 17 vs 19 after map 0.
    assert rows["grains per map"]["error"] == pytest.approx(0.2)
    assert rows["new grains"]["error"] == pytest.approx(2 / 45)
    assert rows["deceased grains"]["error"] == pytest.approx(2 / 19)
    assert rows["new grains"]["pass"] and rows["deceased grains"]["pass"]
    # Li thickness: worst map |2.0 − 2.4| (truth per column, averaged over x).
    assert rows["Li thickness"]["error"] == pytest.approx(0.4)
    assert rows["Li thickness"]["pass"] is False
    # No truth for c_par, a_par: no row is made up for them.
    assert not any("par" in name for name in rows)


def test_products_without_truth_give_no_table_and_no_truth_figure(tmp_path):
    products = synthetic_products(truth=False)
    assert report_table(products) == []
    names = {p.name for p in write_report(products, tmp_path, formats=("png",), dpi=40)}
    assert names == {"fig2_charge.png", "fig3_discharge.png", "fig4_anode.png", "report.html"}


def test_missing_products_skip_panels_with_a_logged_reason(tmp_path, caplog):
    products = without(
        synthetic_products(truth=False),
        arrays=("echem_current_a", "echem_potential_v", "front_position", "grains_total",
                "grains_new", "grains_deceased"),
        tables=("electrochemistry", "grain_tracks"),
    )  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="opmap.callbacks.report"):
        names = {p.name for p in write_report(products, tmp_path, formats=("png",), dpi=40)}
    # Without a current record no map is known to be a discharge map: no Fig. 3.
    assert names == {"fig2_charge.png", "fig4_anode.png", "report.html"}
    messages = "\n".join(caplog.messages)
    for panel in ("electrochemistry", "biphasic front", "Li grain counts",
                  "Li grain lifetime classes", "discharge"):  # fmt: skip
        assert f"panel {panel!r} skipped" in messages


def test_empty_products_write_nothing_and_log_every_figure(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        assert write_report(Products(), tmp_path / "empty") == []
    assert sum("figure skipped" in m for m in caplog.messages) == 3


def test_truth_grain_table_gives_counts_of_visible_grains():
    products = synthetic_products(truth=False)
    table = {
        "map_index": np.array([0, 0, 1, 1, 1, 2, 3, 3]),
        "grain_id": np.array([1, 2, 2, 3, 4, 5, 5, 1]),
        "grain_visible": np.array([1, 1, 1, 1, 0, 1, 1, 1], bool),
    }
    products = Products(products.arrays, products.coords,
                        {**products.tables, "truth_grains": table}, products.metadata)  # fmt: skip
    pairs = grain_pairs(products)
    np.testing.assert_array_equal(pairs["total"].truth, [2, 2, 1, 2])
    np.testing.assert_array_equal(pairs["new"].truth, [2, 1, 1, 1])
    np.testing.assert_array_equal(pairs["deceased"].truth, [0, 1, 2, 0])


def test_front_truth_comes_from_the_twin_never_from_the_analysis():
    """A Li-rich fraction alone gives no front truth (no biphasic_front on the truth); the
    twin's boundary and kinematic speed do, over the maps the analysis used."""
    base = synthetic_products(truth=False)
    z = base.coords["z"].values
    rich = np.repeat(np.where(z[None, :] < 12.0, 1.0, 0.0)[:, :, None], 3, axis=2)
    rich = np.repeat(rich, len(TIME_S), axis=0)
    arrays = {**base.arrays, "truth_rich_fraction": LabelledArray(rich, ("map", "z", "x"), "")}
    assert front_pairs(Products(arrays, base.coords, base.tables, base.metadata)) is None
    arrays["truth_front_position"] = LabelledArray(TRUTH_FRONT_UM, ("map",), "um")
    arrays["truth_front_speed"] = LabelledArray(
        np.array([-9.0, -11.0, -12.0, -40.0]), ("map",), "nm/s"
    )
    position, speed = front_pairs(Products(arrays, base.coords, base.tables, base.metadata))
    np.testing.assert_allclose(position.truth[:3], TRUTH_FRONT_UM[:3])
    assert np.isnan(position.truth[3])  # no recovered position in map 3 to compare with
    assert speed.truth[0] == pytest.approx(np.mean([-9.0, -11.0, -12.0]))  # maps used
    assert speed.n_maps == 3
    assert position.coverage == pytest.approx(3 / 4)


def test_the_true_speed_is_the_boundary_average_over_the_scan_times_of_the_maps_used():
    """With the front's scan times, the recovered speed is fitted against ``front_time`` and
    the true speed is the twin's as-scanned displacement over the time the maps used span
    (a decelerating front: its kinematic speeds at the maps average faster)."""
    base = synthetic_products(truth=False)
    arrays = dict(base.arrays)
    front_time = TIME_S - 20.0  # the rows at the front were scanned before mid-map
    arrays["front_time"] = LabelledArray(front_time, ("map",), "s")
    arrays["truth_front_time"] = LabelledArray(front_time, ("map",), "s")
    arrays["truth_front_position"] = LabelledArray(TRUTH_FRONT_UM, ("map",), "um")
    arrays["truth_front_speed"] = LabelledArray(
        np.array([-30.0, -11.0, -12.0, -40.0]), ("map",), "nm/s"
    )
    metadata = {k: v for k, v in base.metadata.items() if k != "front"}  # fitted here
    position, speed = front_pairs(Products(arrays, base.coords, base.tables, metadata))
    used = np.isfinite(position.recovered)
    first, last = np.flatnonzero(used)[[0, -1]]
    average = (
        1e3
        * (TRUTH_FRONT_UM[last] - TRUTH_FRONT_UM[first])
        / (front_time[last] - front_time[first])
    )
    assert speed.truth[0] == pytest.approx(average)
    recovered = base.arrays["front_position"].values
    fitted, _ = front_velocity(front_time, np.where(used, recovered, np.nan))
    assert speed.recovered[0] == pytest.approx(fitted)


def test_a_figure_passes_only_with_enough_coverage():
    """c = truth + 0.002 Å passes its RMS target, until a third of a map's pixels are lost."""
    products = synthetic_products()
    c = products.arrays["c_perp"]
    values = c.values.copy()
    values[1, : values.shape[1] // 3] = np.nan
    arrays = {**products.arrays, "c_perp": LabelledArray(values, c.dims, c.units)}
    rows = _rows(Products(arrays, products.coords, products.tables, products.metadata))
    row = rows["c per pixel RMS perp"]
    assert row["error"] == pytest.approx(0.002, abs=1e-12)
    assert row["coverage"] < 0.95 and row["pass"] is False
    assert rows["front speed"]["pass"] is False  # 3 maps < MIN_FRONT_MAPS


def test_a_quantity_with_truth_and_nothing_recovered_is_a_failing_row_of_coverage_0():
    """Maps whose z range holds no Ti have no Li thickness: the row stays, coverage 0."""
    products = synthetic_products()
    assert _rows(products)["Li thickness"]["coverage"] == 1.0
    mean = products.arrays["li_thickness_mean"]
    nothing = LabelledArray(np.full_like(mean.values, np.nan), mean.dims, mean.units)
    arrays = {**products.arrays, "li_thickness_mean": nothing}
    row = _rows(Products(arrays, products.coords, products.tables, products.metadata))[
        "Li thickness"
    ]
    assert row["coverage"] == 0.0 and row["pass"] is False
    assert np.isnan(row["recovered"]) and np.isnan(row["error"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"formats": ("png", "gif")}, "formats"),
        ({"formats": ()}, "formats"),
        ({"dpi": 10}, "dpi 10 must be in 30–600"),
        ({"cell_area_cm2": 0.0}, "cell_area_cm2 0.0 must be > 0"),
        ({"cathode_top_um": -1.0}, "cathode_top_um -1.0 must be > 0"),
    ],
)
def test_bad_options_are_refused_before_anything_is_written(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        write_report(synthetic_products(), tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_electrochemical_thickness_needs_the_area(tmp_path):
    from opmap.callbacks.report import electrochemistry

    products = synthetic_products(truth=False)
    assert electrochemistry(products).li_thickness_um is None
    ec = electrochemistry(products, cell_area_cm2=0.007)
    # 1 mAh/cm² = 3.6 C/cm² → 3.6 / F · 13.0 cm³/mol = 4.85 µm.
    charge_mah_per_cm2 = ec.capacity * 1e-3 / 0.007
    np.testing.assert_allclose(ec.li_thickness_um, charge_mah_per_cm2 * 4.8497, rtol=1e-4)


def _wide_sample() -> Products:
    """The synthetic experiment on a thin, wide sample: 5 rows 1 µm apart, 3 columns 600 µm
    apart (drawn with z stretched ×100: 1800 µm / (5 µm × 100) = 3.6, under 4:1)."""
    base = synthetic_products()
    coords = {
        **base.coords,
        "z": LabelledArray(np.arange(5.0), ("z",), "um"),
        "x": LabelledArray(np.arange(3.0) * 600.0, ("x",), "um"),
    }
    return Products(base.arrays, coords, base.tables, base.metadata)


def test_report_maps_keep_the_sample_aspect_and_ticks_never_collide(monkeypatch, tmp_path):
    from matplotlib.figure import Figure

    figures: list[Figure] = []
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: figures.append(self))
    write_report(_wide_sample(), tmp_path, formats=("png",), dpi=40)
    collisions = [_colliding_tick_labels(figure) for figure in figures]
    assert collisions == [[]] * len(figures)
    maps = [ax for figure in figures[:3] for ax in figure.axes if ax.images]
    assert len(maps) == 8  # c maps of two families at two charge maps, four phase maps
    for ax in maps:
        # the drawn box, in pixels (axes of a sub-figure are placed relative to it)
        box = ax.get_position().transformed(ax.figure.transSubfigure)
        # 1800 µm of x (pixel edges -300..1500) against 5 µm of z drawn ×100
        assert box.width / box.height == pytest.approx(1800.0 / (5.0 * 100.0), rel=0.02)
        if ax.get_subplotspec().is_first_col():  # inner maps of a grid share its z label
            assert ax.get_ylabel() == "z (µm, z ×100)" and ax.yaxis.label.get_visible()


def _colliding_tick_labels(figure) -> list[tuple[str, str]]:
    """Pairs of neighbouring tick labels whose rendered boxes overlap, on every axis."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    renderer = canvas.get_renderer()
    found = []
    for ax in (ax for ax in figure.axes if ax.get_visible()):
        for axis, (low, high) in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
            low, high = sorted((low, high))
            shown = [
                tick.label1
                for tick in axis.get_major_ticks()
                if tick.label1.get_visible() and low <= tick.get_loc() <= high
            ]
            boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in shown if t.get_text()]
            for (a, box_a), (b, box_b) in itertools.pairwise(boxes):
                if box_a.overlaps(box_b):
                    found.append((a, b))
    return found


def test_html_report_shows_every_figure_and_the_table(tmp_path):
    written = write_report(synthetic_products(), tmp_path, formats=("png", "svg"), dpi=40)
    page = tmp_path / "report.html"
    assert written[-1] == page
    text = page.read_text()
    for figure in FIGURES:
        assert f'<img src="{figure}.svg"' in text
        assert f'href="{figure}.png"' in text and f'href="{figure}.svg"' in text
    assert text.count("<tr>") == 1 + len(report_table(synthetic_products()))


def _with_x_range(products: Products, c_range, x_li: np.ndarray) -> Products:
    arrays = {**products.arrays, "x_li_perp": LabelledArray(x_li, ("map", "z", "x"), "")}
    metadata = {**products.metadata, "x_li_c_range_angstrom": {"perp": list(c_range)}}
    return Products(arrays, products.coords, products.tables, metadata)


def test_x_li_coverage_counts_only_pixels_whose_true_c_is_calibrated():
    """True c is 14.00, 14.01, 14.02, 14.03 Å in maps 0–3 (15 pixels each). With a
    calibrated range 14.015–14.5 Å, maps 0 and 1 lie outside it (the paper's method must
    give NaN there): 30 of 60 pixels excluded. x is NaN on those maps and on 3 of map 2's 15
    pixels, so the worst in-range map covers 12/15 = 0.8 and the figure fails on coverage;
    counted over every cathode pixel, maps 0 and 1 (no x at all) would read 0."""
    products = synthetic_products()
    x_li = products.arrays["x_li_perp"].values.copy()
    x_li[:2] = np.nan
    x_li[2, 0, :] = np.nan
    row = _rows(_with_x_range(products, (14.015, 14.5), x_li))["x_Li per pixel RMS perp"]
    assert row["excluded"] == pytest.approx(0.5)
    assert row["coverage"] == pytest.approx(0.8)
    assert row["error"] == pytest.approx(0.03)  # RMS over the pixels known on both sides
    assert row["pass"] is False
    x_li[2, 0, :] = 0.8  # every in-range pixel has x: full coverage, half the pixels excluded
    row = _rows(_with_x_range(products, (14.015, 14.5), x_li))["x_Li per pixel RMS perp"]
    assert (row["coverage"], row["excluded"]) == (1.0, 0.5)
    # Products without the calibrated range: every pixel with a finite truth counts.
    plain = Products({**products.arrays, "x_li_perp": LabelledArray(x_li, ("map", "z", "x"), "")},
                     products.coords, products.tables, products.metadata)  # fmt: skip
    row = _rows(plain)["x_Li per pixel RMS perp"]
    assert (row["coverage"], row["excluded"]) == (0.0, 0.0)
    assert all(r["excluded"] == 0.0 for r in report_table(plain) if "x_Li" not in r["figure"])


def test_the_true_speed_is_taken_over_the_maps_of_the_analysis_speed_fit_only():
    """A series with a charge front in maps 0–1 and a discharge front in map 2: the
    analysis fits its speed over maps 0–1 (``front_used``), so the truth's speed is the
    twin's over those maps, not averaged with the discharge map's."""
    base = synthetic_products(truth=False)
    arrays = dict(base.arrays)
    arrays["front_used"] = LabelledArray(np.array([1, 1, 0, 0], np.uint8), ("map",), "")
    arrays["truth_front_position"] = LabelledArray(TRUTH_FRONT_UM, ("map",), "um")
    arrays["truth_front_speed"] = LabelledArray(
        np.array([-9.0, -11.0, -2.0, np.nan]), ("map",), "nm/s"
    )
    position, speed = front_pairs(Products(arrays, base.coords, base.tables, base.metadata))
    assert speed.truth[0] == pytest.approx(-10.0)
    assert speed.n_maps == 2
    assert np.isfinite(position.truth[:3]).all()  # every map's front is still scored


def test_x_li_row_counts_pixels_whose_error_exceeds_twice_the_stated_uncertainty():
    """x is the truth ± 0.03 (checkerboard). A stated x_li_err of 0.02 puts every error at
    1.5 σ (none beyond 2); 0.01 puts them at 3 σ (all beyond). Map 3 with σ = 0.01 on 9 of
    its 15 pixels is the worst map: 9/15 beyond."""
    products = synthetic_products()
    sigma = np.full(products.arrays["x_li_perp"].values.shape, 0.02)
    sigma[3, :3, :] = 0.01
    arrays = {**products.arrays, "x_li_err_perp": LabelledArray(sigma, ("map", "z", "x"), "")}
    rows = _rows(Products(arrays, products.coords, products.tables, products.metadata))
    row = rows["x_Li beyond 2 x_li_err perp"]
    assert row["error"] == pytest.approx(9 / 15)
    assert row["target"] == 0.05 and row["pass"] is False
    assert row["truth"] == 0.0 and row["coverage"] == 1.0
    sigma[3] = 0.02
    rows = _rows(Products(arrays, products.coords, products.tables, products.metadata))
    assert rows["x_Li beyond 2 x_li_err perp"]["error"] == 0.0
    assert rows["x_Li beyond 2 x_li_err perp"]["pass"] is True
    # without the stated uncertainty there is no row (nothing to grade)
    assert "x_Li beyond 2 x_li_err perp" not in _rows(products)
