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


def _described() -> Products:
    base = _products()
    arrays = {
        "li_thickness": base.arrays["li_thickness"],
        "c_perp": LabelledArray(
            base.arrays["c_perp"].values, ("map", "z", "x"), "angstrom", "c lattice parameter"
        ),
    }
    coords = {**base.coords, "z": LabelledArray(np.arange(3.0), ("z",), "um", "height")}
    return Products(arrays=arrays, coords=coords, tables=base.tables, metadata=base.metadata)


def test_default_chain_leads_viewers_to_the_c_map_with_labelled_axes(tmp_path):
    path = write_products(tmp_path / "maps.nxs", _described())
    with h5py.File(path) as f:
        assert f.attrs["default"] == "entry"
        assert f["entry"].attrs["default"] == "c_perp"  # not the first written (li_thickness)
        group = f["entry/c_perp"]
        assert group.attrs["signal"] == "data"
        assert list(group.attrs["axes"]) == ["map", "z", "x"]
        indices = [int(group.attrs[f"{axis}_indices"]) for axis in ("map", "z", "x")]
        assert indices == [0, 1, 2]
        assert group["data"].attrs["long_name"] == "c lattice parameter (angstrom)"
        assert group["z"].attrs["long_name"] == "height (um)"
        assert group["x"].attrs["long_name"] == "x (um)"
        assert group["map"].attrs["long_name"] == "map"
        assert "x_indices" not in f["entry/li_thickness"].attrs


def test_silx_finds_the_default_plot_with_its_signal_and_axes(tmp_path):
    nxdata = pytest.importorskip("silx.io.nxdata")
    path = write_products(tmp_path / "maps.nxs", _described())
    with h5py.File(path) as f:
        found = nxdata.get_default(f)
        assert found is not None and found.is_valid
        assert found.group.name == "/entry/c_perp"
        assert found.signal_name == "c lattice parameter (angstrom)"
        assert found.axes_dataset_names == ["map", "z", "x"]
        assert found.axes_names == ["map", "height (um)", "x (um)"]
        np.testing.assert_array_equal(found.axes[2], np.arange(4) * 33.0)


def test_labels_read_back_as_the_bare_long_names(tmp_path):
    back = read_products(write_products(tmp_path / "maps.nxs", _described()))
    assert back.arrays["c_perp"].long_name == "c lattice parameter"
    assert back.arrays["li_thickness"].long_name == ""
    assert (back.coords["z"].long_name, back.coords["x"].long_name) == ("height", "")
