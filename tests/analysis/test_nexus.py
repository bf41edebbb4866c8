"""NeXus products: round trip with units and axes; earlier results are never damaged."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from opmap.analysis.nexus import next_free_path, read_products, write_products
from opmap.analysis.products import LabelledArray, Products


def _products(c_value: float = 14.1) -> Products:
    return Products(
        arrays={
            "c_perp": LabelledArray(np.full((2, 3, 4), c_value), ("map", "z", "x"), "angstrom"),
            "li_thickness": LabelledArray(np.array([0.0, 3.9]), ("map",), "um"),
        },
        coords={
            "map": LabelledArray(np.arange(2), ("map",), ""),
            "z": LabelledArray(np.arange(3.0), ("z",), "um"),
            "x": LabelledArray(np.arange(4) * 33.0, ("x",), "um"),
        },
        tables={"grains": {"grain_id": np.array([1, 2, 3]), "azimuth_deg": np.zeros(3)}},
        metadata={"raw_run_uids": ["a", "b"], "opmap_version": "0.1.0"},
    )


def test_round_trip_keeps_values_dims_units_coords_tables_and_metadata(tmp_path):
    written = write_products(tmp_path / "maps.nxs", _products())
    back = read_products(written)
    assert back.arrays["c_perp"].dims == ("map", "z", "x")
    assert back.arrays["c_perp"].units == "angstrom"
    np.testing.assert_array_equal(back.arrays["c_perp"].values, np.full((2, 3, 4), 14.1))
    np.testing.assert_array_equal(back.coords["x"].values, np.arange(4) * 33.0)
    assert back.coords["z"].units == "um"
    np.testing.assert_array_equal(back.tables["grains"]["grain_id"], [1, 2, 3])
    assert back.metadata["raw_run_uids"] == ["a", "b"]


def test_file_is_nexus_with_signal_and_axes(tmp_path):
    path = write_products(tmp_path / "maps.nxs", _products())
    with h5py.File(path) as f:
        assert f["entry"].attrs["NX_class"] == "NXentry"
        group = f["entry/c_perp"]
        assert group.attrs["NX_class"] == "NXdata"
        assert list(group.attrs["axes"]) == ["map", "z", "x"]
        assert group["data"].attrs["units"] == "angstrom"


def test_existing_result_is_not_overwritten_without_permission(tmp_path):
    path = write_products(tmp_path / "maps.nxs", _products(14.1))
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_products(path, _products(14.3))
    assert read_products(path).arrays["c_perp"].values[0, 0, 0] == 14.1
    assert next_free_path(path).name == "maps.v2.nxs"


def test_failed_write_leaves_earlier_result_intact_and_no_temporary(tmp_path):
    path = write_products(tmp_path / "maps.nxs", _products(14.1))
    broken = Products(metadata={"bad": object()}, tables={"t": {"col": np.array([object()])}})
    with pytest.raises(TypeError):
        write_products(path, broken, overwrite=True)
    assert read_products(path).arrays["c_perp"].values[0, 0, 0] == 14.1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["maps.nxs"]


def test_reading_a_foreign_file_names_what_is_missing(tmp_path):
    foreign = tmp_path / "other.h5"
    with h5py.File(foreign, "w") as f:
        f["data"] = np.zeros(3)
    with pytest.raises(ValueError, match="not an opmap products file"):
        read_products(foreign)


def test_mismatched_coordinate_length_is_rejected():
    with pytest.raises(ValueError, match="along 'x'"):
        Products(
            arrays={"c": LabelledArray(np.zeros((2, 3)), ("z", "x"), "angstrom")},
            coords={"x": LabelledArray(np.arange(4.0), ("x",), "um")},
        )
