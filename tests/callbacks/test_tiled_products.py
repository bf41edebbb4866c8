"""Products in Tiled: round trip, live growth, appendable tables, versions never overwritten.

A real Tiled app built from the generated server config (SQLite catalog, file storage,
DuckDB tables), read back through the real client; nothing of Tiled is mocked.
"""

from collections.abc import Iterator

import numpy as np
import pytest
import xarray
from tiled.client import Context, from_context

import opmap
from opmap.analysis.products import LabelledArray, Products
from opmap.callbacks.tiled_products import (
    TiledProductWriter,
    next_version,
    read_latest,
    read_tiled_products,
    versions,
)
from opmap.callbacks.tiled_writer import ensure_layout
from opmap.service import build_in_process_app
from opmap.settings import OpmapSettings

N_Z, N_X = 5, 7
Z_UM = np.linspace(0.0, 24.0, N_Z)
X_UM = np.linspace(0.0, 2000.0, N_X)
TIME_S = np.array([0.0, 1800.0, 3600.0])
RUN_UIDS = ["8f1c7a52-run-a", "0b9e33d1-run-b"]
PARAMETERS = {"c_window_angstrom": [14.0, 14.6], "grain_threshold_k": 5.0}


@pytest.fixture(scope="module")
def processed(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    settings = OpmapSettings(data_dir=tmp_path_factory.mktemp("opmap-data"))
    with Context.from_app(build_in_process_app(settings)) as context:
        yield ensure_layout(from_context(context))["processed"]


def _c_maps(n_maps: int) -> np.ndarray:
    """c(map, z, x) in Å: 14.05 Å at the bottom rising with z and time (a known field)."""
    m, z, x = np.meshgrid(np.arange(n_maps), Z_UM, X_UM, indexing="ij")
    return (14.05 + 0.01 * z / 20.0 + 0.1 * m + 1e-5 * x).astype(np.float32)


def _one_shot_products() -> Products:
    return Products(
        arrays={
            "c_perp": LabelledArray(
                _c_maps(3), ("map", "z", "x"), "angstrom", "c lattice parameter"
            ),
            "li_thickness": LabelledArray(np.array([0.0, 0.4, 0.9]), ("map",), "um"),
        },
        coords={
            "z": LabelledArray(Z_UM, ("z",), "um", "height above the cathode bottom"),
            "x": LabelledArray(X_UM, ("x",), "um"),
        },
        tables={
            "grains": {"grain_id": np.array([1, 2, 3]), "chi_deg": np.array([10.0, 70.0, 130.0])}
        },
        metadata={"cell": "LCO/LiPON/Li", "maps_per_hour": 2},
    )


def _assert_same_labelled(got: LabelledArray, expected: LabelledArray) -> None:
    assert got.dims == expected.dims
    assert got.units == expected.units
    assert got.long_name == expected.long_name
    assert got.values.dtype == expected.values.dtype
    np.testing.assert_array_equal(got.values, expected.values)


def test_products_round_trip_with_dims_units_and_provenance(processed) -> None:
    written = _one_shot_products()
    writer = TiledProductWriter(processed, "round-trip", raw_uids=RUN_UIDS, parameters=PARAMETERS)
    writer.write_products(written)

    read = read_tiled_products(processed["round-trip"]["v1"])

    assert sorted(read.arrays) == ["c_perp", "li_thickness"]
    for name, array in written.arrays.items():
        _assert_same_labelled(read.arrays[name], array)
    for name, coord in written.coords.items():
        _assert_same_labelled(read.coords[name], coord)
    np.testing.assert_array_equal(read.tables["grains"]["grain_id"], [1, 2, 3])
    np.testing.assert_array_equal(read.tables["grains"]["chi_deg"], [10.0, 70.0, 130.0])
    assert read.metadata["raw_uids"] == RUN_UIDS
    assert read.metadata["analysis_parameters"] == PARAMETERS
    assert read.metadata["opmap_version"] == opmap.__version__
    assert (read.metadata["experiment_id"], read.metadata["version"]) == ("round-trip", "v1")
    assert read.metadata["cell"] == "LCO/LiPON/Li" and read.metadata["maps_per_hour"] == 2
    assert processed["round-trip"]["v1"]["c_perp"].structure().dims == ("map", "z", "x")


def test_live_growth_over_three_maps_equals_the_one_shot_write(processed) -> None:
    one_shot = TiledProductWriter(processed, "growth")
    one_shot.write_products(
        Products(
            arrays={"c_perp": _one_shot_products().arrays["c_perp"]},
            coords={
                **_one_shot_products().coords,
                "map": LabelledArray(TIME_S, ("map",), "s", "time_s"),
            },
        )
    )
    live = TiledProductWriter(processed, "growth")
    assert (one_shot.version, live.version) == ("v1", "v2")
    c_maps = _c_maps(3)
    for index in range(3):
        stored = live.append_map(
            {
                "c_perp": LabelledArray(
                    c_maps[index : index + 1], ("map", "z", "x"), "angstrom", "c lattice parameter"
                )
            },
            coords={
                **_one_shot_products().coords,
                "map": LabelledArray(TIME_S[index : index + 1], ("map",), "s", "time_s"),
            },
        )
        assert stored == index + 1 == live.n_maps
        assert processed["growth"]["v2"]["c_perp"].shape == (index + 1, N_Z, N_X)

    expected = read_tiled_products(processed["growth"]["v1"])
    got = read_tiled_products(processed["growth"]["v2"])
    _assert_same_labelled(got.arrays["c_perp"], expected.arrays["c_perp"])
    assert sorted(got.coords) == sorted(expected.coords) == ["map", "x", "z"]
    for name in expected.coords:
        _assert_same_labelled(got.coords[name], expected.coords[name])


def test_appended_grain_rows_accumulate_in_order_with_their_dtypes(processed) -> None:
    writer = TiledProductWriter(processed, "grain-rows")
    batches = [
        {
            "map": np.full(n, m),
            "grain_id": np.arange(n) + 10 * m,
            "chi_deg": np.linspace(0, 300, n),
        }
        for m, n in enumerate([3, 0, 5, 1])
    ]
    appended = [writer.append_rows("grains", batch) for batch in batches]
    assert appended == [3, 0, 5, 1]

    table = processed["grain-rows"]["v1-tables"]["grains"].read()
    for column in ("map", "grain_id", "chi_deg"):
        expected = np.concatenate([batch[column] for batch in batches])
        np.testing.assert_array_equal(table[column].to_numpy(), expected)
    assert table["grain_id"].dtype == np.int64 and table["chi_deg"].dtype == np.float64
    assert read_latest(processed, "grain-rows").tables["grains"]["grain_id"].tolist() == [
        0,
        1,
        2,
        20,
        21,
        22,
        23,
        24,
        30,
    ]


def test_second_analysis_gets_v2_and_leaves_v1_untouched(processed) -> None:
    first = TiledProductWriter(processed, "replay", raw_uids=RUN_UIDS[:1])
    first.write_products(_one_shot_products())
    first.append_rows("counts", {"map": np.array([0, 1]), "total": np.array([4, 9])})
    assert next_version(processed, "replay") == "v2"

    second = TiledProductWriter(processed, "replay", raw_uids=RUN_UIDS, parameters={"k": 6.0})
    replayed = _one_shot_products()
    doubled = LabelledArray(2 * _c_maps(3), ("map", "z", "x"), "angstrom", "c lattice parameter")
    second.write_products(Products(arrays={"c_perp": doubled}, coords=replayed.coords))
    second.append_rows("counts", {"map": np.array([0, 1, 2]), "total": np.array([5, 8, 11])})

    assert second.version == "v2" and versions(processed, "replay") == ["v1", "v2"]
    v1 = read_tiled_products(processed["replay"]["v1"])
    np.testing.assert_array_equal(v1.arrays["c_perp"].values, _c_maps(3))
    assert v1.tables["counts"]["total"].tolist() == [4, 9], "same-schema SQL table kept apart"
    assert v1.metadata["raw_uids"] == RUN_UIDS[:1] and v1.metadata["analysis_parameters"] == {}
    latest = read_latest(processed, "replay")
    np.testing.assert_array_equal(latest.arrays["c_perp"].values, 2 * _c_maps(3))
    assert latest.tables["counts"]["total"].tolist() == [5, 8, 11]
    assert latest.metadata["version"] == "v2"


def test_existing_products_are_never_overwritten(processed) -> None:
    writer = TiledProductWriter(processed, "no-overwrite")
    writer.write_products(_one_shot_products())
    with pytest.raises(ValueError, match=r"\['c_perp'\] already stored in no-overwrite/v1"):
        writer.write_products(
            Products(arrays={"c_perp": LabelledArray(np.zeros((1, 2, 2)), ("map", "z", "x"), "")})
        )
    with pytest.raises(ValueError, match="'version'"):
        writer.write_products(Products(metadata={"version": "v7"}))
    np.testing.assert_array_equal(processed["no-overwrite"]["v1"]["c_perp"].read(), _c_maps(3))


def test_bad_live_input_is_refused_before_writing(processed) -> None:
    with pytest.raises(ValueError, match="experiment_id must be 1-128 characters"):
        TiledProductWriter(processed, "../escape")
    writer = TiledProductWriter(processed, "bad-live")
    c0 = LabelledArray(_c_maps(1), ("map", "z", "x"), "angstrom")
    writer.append_map({"c_perp": c0})
    with pytest.raises(ValueError, match="leading dim 'map'"):
        writer.append_map({"c_perp": LabelledArray(_c_maps(1)[0], ("z", "x"), "angstrom")})
    with pytest.raises(ValueError, match=r"does not match the stored"):
        writer.append_map(
            {"c_perp": LabelledArray(_c_maps(1)[:, :2], ("map", "z", "x"), "angstrom")}
        )
    with pytest.raises(ValueError, match="every map must carry the same arrays"):
        writer.append_map(
            {"c_perp": c0, "a": LabelledArray(_c_maps(1), ("map", "z", "x"), "angstrom")}
        )
    writer.append_rows("grains", {"grain_id": np.array([1, 2])})
    with pytest.raises(ValueError, match=r"schema \{grain_id: double\}"):
        writer.append_rows("grains", {"grain_id": np.array([1.5])})
    with pytest.raises(ValueError, match="1-D of equal length"):
        writer.append_rows("grains", {"grain_id": np.array([1, 2]), "chi_deg": np.array([0.0])})
    assert processed["bad-live"]["v1"]["c_perp"].shape == (1, N_Z, N_X)
    assert processed["bad-live"]["v1-tables"]["grains"].read()["grain_id"].tolist() == [1, 2]


class _StaleListing:
    """``processed`` as seen by a writer that listed the versions before ``hidden`` existed.

    Until its first attempt to create a version, ``hidden`` is missing from the listing of
    every experiment; the 409 of that attempt makes the writer list again, up to date.
    """

    def __init__(self, processed, hidden: str) -> None:
        self._processed = processed
        self._hidden: str | None = hidden

    def __contains__(self, key: str) -> bool:
        return key in self._processed

    def __getitem__(self, key: str):
        return _StaleExperiment(self, self._processed[key])


class _StaleExperiment:
    def __init__(self, listing: _StaleListing, node) -> None:
        self._listing = listing
        self._node = node

    def __iter__(self):
        return (key for key in self._node if key != self._listing._hidden)

    def create_container(self, key: str, **kwargs):
        self._listing._hidden = None
        return self._node.create_container(key, **kwargs)


def test_version_taken_by_a_concurrent_writer_is_skipped_via_409(processed) -> None:
    first = TiledProductWriter(processed, "race", raw_uids=["first"])
    second = TiledProductWriter(_StaleListing(processed, "v1"), "race", raw_uids=["second"])
    assert (first.version, second.version) == ("v1", "v2")
    assert processed["race"]["v1"].metadata["raw_uids"] == ["first"], "v1 untouched by the 409"


def _square_products(n: int) -> Products:
    """n maps of n × n: every dimension has the same length, the case tiled's
    DatasetClient would fetch as one wide table if the version had no scalar child."""
    m, z, x = np.meshgrid(np.arange(n), np.arange(n), np.arange(n), indexing="ij")
    c = (14.0 + 0.1 * m + 0.01 * z + 0.001 * x).astype(np.float32)
    return Products(
        arrays={
            "c_perp": LabelledArray(c, ("map", "z", "x"), "angstrom", "c lattice parameter"),
            "time_s": LabelledArray(900.0 * np.arange(n), ("map",), "s", "experiment time"),
            "li_thickness": LabelledArray(0.5 * np.arange(n), ("map",), "um", "Li thickness"),
        },
        coords={
            "map": LabelledArray(np.arange(n), ("map",), ""),
            "z": LabelledArray(2.0 * np.arange(n), ("z",), "um", "height"),
            "x": LabelledArray(33.0 * np.arange(n), ("x",), "um", "position along the cell"),
        },
    )


def _assert_dataset_matches(dataset, products: Products, version: int) -> None:
    assert isinstance(dataset, xarray.Dataset)
    assert dict(dataset.sizes) == {"map": 3, "z": 3, "x": 3}
    assert set(dataset.data_vars) == {"c_perp", "li_thickness"}
    assert set(dataset.coords) == {"map", "z", "x", "time_s", "version"}
    assert dataset["c_perp"].dims == ("map", "z", "x")
    assert dataset["time_s"].dims == ("map",) and int(dataset["version"]) == version
    for name, labelled in {**products.arrays, **products.coords}.items():
        np.testing.assert_array_equal(dataset[name].values, labelled.values)
        assert dataset[name].attrs.get("units", "") == labelled.units
    assert dataset["c_perp"].attrs == {"units": "angstrom", "long_name": "c lattice parameter"}
    assert dataset.attrs["experiment_id"] == "as-xarray"


def test_plain_tiled_read_of_a_version_is_an_xarray_dataset(processed) -> None:
    products = _square_products(3)
    TiledProductWriter(processed, "as-xarray").write_products(products)
    live = TiledProductWriter(processed, "as-xarray")
    for index in range(3):  # grown map by map, as the live analysis does
        one_map = {
            name: LabelledArray(a.values[index : index + 1], a.dims, a.units, a.long_name)
            for name, a in products.arrays.items()
        }
        coords = dict(products.coords)
        coords["map"] = LabelledArray(np.array([index]), ("map",), "")
        live.append_map(one_map, coords=coords)

    for number, version in enumerate(["v1", "v2"], start=1):
        dataset = processed["as-xarray"][version].read()
        _assert_dataset_matches(dataset, products, number)
        assert dataset.sel(z=4.0, x=66.0)["c_perp"].values.tolist() == pytest.approx(
            [14.022, 14.122, 14.222]
        )
    both = xarray.concat([processed["as-xarray"][v].read() for v in ("v1", "v2")], "version")
    assert both["c_perp"].dims == ("version", "map", "z", "x")
    round_trip = read_tiled_products(processed["as-xarray"]["v2"])
    assert sorted(round_trip.arrays) == sorted(products.arrays)
    assert sorted(round_trip.coords) == sorted(products.coords)
