"""Live figures: one PNG per map with the expected panels (not pixel-exact)."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest

from opmap.analysis.products import LabelledArray, Products
from opmap.callbacks.plots import PANELS, LiveFigures

matplotlib.use("Agg")


class _Result:
    def __init__(self, map_index):
        self.map_index = map_index


def _products(n_maps: int) -> Products:
    zx = ("map", "z", "x")
    rng = np.random.default_rng(0)
    return Products(
        arrays={
            "time_s": LabelledArray(np.arange(n_maps) * 300.0, ("map",), "s"),
            "c_perp": LabelledArray(14 + rng.random((n_maps, 3, 4)) * 0.3, zx, "angstrom"),
            "c_par": LabelledArray(14 + rng.random((n_maps, 3, 4)) * 0.1, zx, "angstrom"),
            "phase_lco_003": LabelledArray(rng.random((n_maps, 3, 4)), zx, ""),
            "phase_ti_100": LabelledArray(rng.random((n_maps, 3, 4)), zx, ""),
            "grains_total": LabelledArray(np.arange(n_maps) + 5, ("map",), ""),
            "echem_potential_v": LabelledArray(np.linspace(3.9, 4.2, n_maps), ("map",), "V"),
            "li_thickness_mean": LabelledArray(np.linspace(0, 2, n_maps), ("map",), "um"),
        },
        coords={
            "z": LabelledArray(np.arange(3.0), ("z",), "um"),
            "x": LabelledArray(np.arange(4.0) * 33, ("x",), "um"),
        },
        tables={"grains": {"map_index": np.array([0, 1]), "azimuth_deg": np.array([0.0, 60])}},
        metadata={"experiment_id": "figs"},
    )


def test_one_png_per_map_with_c_maps_and_every_panel(tmp_path):
    import matplotlib.pyplot as plt

    figures = LiveFigures(tmp_path / "figures", show=False)
    for n in (1, 2):
        figures(_products(n), _Result(n - 1))
    assert [p.name for p in figures.written] == ["figs_map0000.png", "figs_map0001.png"]
    assert all(p.stat().st_size > 1000 for p in figures.written)
    image = plt.imread(figures.written[-1])
    assert image.ndim == 3 and image.shape[0] > 100
    titles = [ax.get_title() for ax in figures._figure.axes if ax.get_visible() and ax.get_title()]
    assert titles == ["c map perp", "c map par", *PANELS]


def test_headless_without_directory_is_an_error():
    with pytest.raises(ValueError, match="figures_dir is required"):
        LiveFigures(None, show=False)


def test_live_c_maps_keep_the_sample_aspect_with_readable_ticks(tmp_path):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from .test_report import _colliding_tick_labels

    figures = LiveFigures(tmp_path, show=False)
    figures(_products(2), _Result(1))
    figure = figures._figure
    assert _colliding_tick_labels(figure) == []
    FigureCanvasAgg(figure).draw()
    c_map = next(ax for ax in figure.axes if ax.get_title() == "c map perp")
    box = c_map.get_position().transformed(figure.transFigure)
    # x: 4 columns 33 µm apart (edges -16.5..115.5 = 132 µm); z: 3 rows (3 µm) stretched ×20
    assert box.width / box.height == pytest.approx(132.0 / (3.0 * 20.0), rel=0.02)
    assert c_map.get_ylabel() == "z (µm, z ×20)"
