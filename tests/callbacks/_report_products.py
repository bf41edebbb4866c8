"""A small synthetic experiment (4 maps of 5 × 3 pixels) with known truth for report tests."""

from __future__ import annotations

import numpy as np

from opmap.analysis.products import LabelledArray, Products

N_MAPS, N_Z, N_X = 4, 5, 3
ZX = ("map", "z", "x")
TIME_S = np.array([0.0, 300.0, 600.0, 900.0])
FRONT_UM = np.array([18.0, 15.0, 12.0, np.nan])
TRUTH_FRONT_UM = np.array([18.5, 15.0, 12.0, 9.0])


def _field(per_map: np.ndarray) -> np.ndarray:
    return np.broadcast_to(per_map[:, None, None], (N_MAPS, N_Z, N_X)).copy()


def synthetic_products(*, truth: bool = True) -> Products:
    """Products of a charge (maps 0–1) then discharge (maps 2–3), with ``truth_*`` arrays."""
    c_truth = _field(14.0 + 0.01 * np.arange(N_MAPS))
    checker = np.where((np.indices((N_MAPS, N_Z, N_X)).sum(0) % 2) == 0, 0.03, -0.03)
    c_par = _field(np.full(N_MAPS, 14.05))
    c_par[:, 0, 0] = np.nan  # a pixel the fit lost
    rng = np.random.default_rng(1)
    arrays = {
        "time_s": LabelledArray(TIME_S, ("map",), "s"),
        "c_perp": LabelledArray(c_truth + 0.002, ZX, "angstrom"),
        "c_err_perp": LabelledArray(np.full((N_MAPS, N_Z, N_X), 1e-4), ZX, "angstrom"),
        "c_par": LabelledArray(c_par, ZX, "angstrom"),
        "a_perp": LabelledArray(_field(np.full(N_MAPS, 2.8003)), ZX, "angstrom"),
        "a_par": LabelledArray(_field(np.full(N_MAPS, 2.803)), ZX, "angstrom"),
        "x_li_perp": LabelledArray(_field(np.full(N_MAPS, 0.8)) + checker, ZX, ""),
        "rich_fraction": LabelledArray(rng.random((N_MAPS, N_Z, N_X)), ZX, ""),
        "front_position": LabelledArray(FRONT_UM, ("map",), "um"),
        "li_thickness_mean": LabelledArray(np.array([0.0, 1.0, 2.0, 3.0]), ("map",), "um"),
        "grains_total": LabelledArray(np.array([10, 20, 30, 40]), ("map",), ""),
        "grains_new": LabelledArray(np.array([10, 12, 15, 20]), ("map",), ""),
        "grains_deceased": LabelledArray(np.array([0, 2, 5, 10]), ("map",), ""),
        "echem_current_a": LabelledArray(np.array([2e-6, 1e-6, -2e-6, -2e-6]), ("map",), "A"),
        "echem_potential_v": LabelledArray(np.array([4.3, 4.3, 3.8, 3.5]), ("map",), "V"),
    }
    for band in ("lco_003", "li_110", "ti_100", "au_111", "parylene"):
        arrays[f"phase_{band}"] = LabelledArray(rng.random((N_MAPS, N_Z, N_X)), ZX, "")
    if truth:
        arrays |= {
            "truth_c_perp": LabelledArray(c_truth, ZX, "angstrom"),
            "truth_perp_a_angstrom": LabelledArray(_field(np.full(N_MAPS, 2.8)), ZX, "angstrom"),
            "truth_x_li": LabelledArray(_field(np.full(N_MAPS, 0.8)), ZX, ""),
            "truth_front_position": LabelledArray(TRUTH_FRONT_UM, ("map",), "um"),
            "truth_grains_total": LabelledArray(np.array([10, 22, 30, 50]), ("map",), ""),
            "truth_grains_new": LabelledArray(np.array([10, 10, 15, 20]), ("map",), ""),
            "truth_grains_deceased": LabelledArray(np.array([0, 4, 5, 10]), ("map",), ""),
            "truth_li_thickness_um": LabelledArray(
                np.repeat(np.array([0.0, 1.1, 2.4, 3.0])[:, None], N_X, axis=1), ("map", "x"), "um"
            ),
        }
    t = np.arange(0.0, 1201.0, 10.0)
    current = np.where(t < 450, 2e-6, -2e-6)
    return Products(
        arrays=arrays,
        coords={
            "map": LabelledArray(np.arange(N_MAPS), ("map",), ""),
            "z": LabelledArray(np.arange(N_Z) * 5.0, ("z",), "um"),
            "x": LabelledArray(np.arange(N_X) * 33.0, ("x",), "um"),
        },
        tables={
            "grains": {
                "map_index": np.array([0, 1, 1, 2, 3]),
                "azimuth_deg": np.array([0.0, 60.0, 120.0, 30.0, 90.0]),
            },
            "grain_tracks": {"track_id": np.arange(4), "grain_class": np.array([0, 0, 1, 2])},
            "electrochemistry": {
                "time_s": t,
                "potential_v": np.where(t < 450, 4.3, 3.8),
                "current_a": current,
                "charge_c": np.cumsum(current) * 10.0,
            },
        },
        metadata={
            "experiment_id": "cell-7",
            "front": {"speed_nm_per_s": -10.0, "speed_err_nm_per_s": 0.1},
            "grains": {"class_names": ["ephemeral", "unstable", "stable"]},
        },
    )


def without(products: Products, *, arrays=(), tables=()) -> Products:
    """A copy of ``products`` without the named arrays and tables."""
    return Products(
        arrays={k: v for k, v in products.arrays.items() if k not in arrays},
        coords=products.coords,
        tables={k: v for k, v in products.tables.items() if k not in tables},
        metadata=products.metadata,
    )
