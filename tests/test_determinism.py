"""Same seed, same experiment: two rehearsals of one seed are the same experiment.

Two short rehearsals with seed 1 (the options of the suite's shared rehearsal, whose seed is
0) must give the same documents, except uids and wall-clock times, the same detector frames
and the same products, bit for bit; the shared rehearsal, another seed, must give other
products.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import h5py
import hdf5plugin  # noqa: F401  (registers the bitshuffle filter of the Eiger files)
import numpy as np
import pytest

from opmap.rehearse import RehearsalOptions, RehearsalResult, rehearse

SEED = 1
#: The suite's shared rehearsal (tests/conftest.py), with another seed.
OPTIONS = {"map_shape": (8, 5), "time_scale": 0.02, "map_interval_s": None, "max_maps": 2}
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
#: Wall-clock values: never compared.
_WALL_KEYS = frozenset({"time", "timestamps", "created_utc"})


class _Normaliser:
    """Replace uuids by their order of appearance, the data directory by a token, and drop
    wall-clock values, so two experiments compare equal when they are the same one."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = str(data_dir)
        self.names: dict[str, str] = {}

    def __call__(self, value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: self(v) for k, v in value.items() if k not in _WALL_KEYS}
        if isinstance(value, list | tuple):
            return [self(v) for v in value]
        if isinstance(value, np.ndarray):
            return self(value.tolist())
        if isinstance(value, np.generic):
            return self(value.item())
        if isinstance(value, float) and value != value:  # NaN (a truth-table row of no value)
            return "nan"
        if isinstance(value, str):
            text = value.replace(self.data_dir, "<data_dir>")
            return _UUID.sub(self._name, text)
        return value

    def _name(self, match: re.Match) -> str:
        return self.names.setdefault(match.group(0), f"<uuid {len(self.names)}>")


def _rehearse(data_dir: Path) -> tuple[RehearsalResult, list[tuple[str, dict]]]:
    documents: list[tuple[str, dict]] = []
    result = rehearse(
        RehearsalOptions(data_dir=data_dir, seed=SEED, **OPTIONS),
        callbacks=[lambda name, doc: documents.append((name, copy.deepcopy(doc)))],
    )
    return result, documents


@pytest.fixture(scope="module")
def twice(tmp_path_factory):
    """The same short rehearsal twice, with the same seed, and the documents of each."""
    return [_rehearse(tmp_path_factory.mktemp(f"determinism-{k}")) for k in "ab"]


def _equal(a: Any, b: Any) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    return bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))


def _product_arrays(result: RehearsalResult) -> dict[str, Any]:
    products = result.products
    assert products is not None, "the rehearsal read no products back"
    out = {f"array {k}": v.values for k, v in products.arrays.items()}
    out.update({f"coord {k}": v.values for k, v in products.coords.items()})
    for table, columns in products.tables.items():
        out.update({f"table {table}.{c}": v for c, v in columns.items()})
    return out


def test_same_seed_gives_the_same_documents_except_uids_and_wall_times(twice):
    (result_a, docs_a), (result_b, docs_b) = twice
    assert [name for name, _ in docs_a] == [name for name, _ in docs_b]
    normal_a, normal_b = _Normaliser(result_a.data_dir), _Normaliser(result_b.data_dir)
    for (name, doc_a), (_, doc_b) in zip(docs_a, docs_b, strict=True):
        assert normal_a(doc_a) == normal_b(doc_b), f"{name} documents differ"
    starts = [doc for name, doc in docs_a if name == "start"]
    assert len(starts) == 4  # calibration, two maps, the electrochemistry tail
    assert all(doc["seed"] == SEED for doc in starts)


def test_same_seed_gives_the_same_frames_bit_for_bit(twice):
    (_, docs_a), (_, docs_b) = twice
    paths = [
        [
            urlparse(doc["uri"]).path
            for name, doc in docs
            if name == "stream_resource" and doc["data_key"] == "eiger"
        ]
        for docs in (docs_a, docs_b)
    ]
    assert len(paths[0]) == len(paths[1]) == 3  # the CeO2 frame and two maps
    for path_a, path_b in zip(*paths, strict=True):
        with h5py.File(path_a) as file_a, h5py.File(path_b) as file_b:
            for dataset in ("/entry/data/data", "/entry/opmap/x_um", "/entry/opmap/time_s"):
                assert _equal(file_a[dataset][()], file_b[dataset][()]), dataset


def test_same_seed_gives_the_same_products_bit_for_bit(twice):
    (result_a, _), (result_b, _) = twice
    arrays_a, arrays_b = _product_arrays(result_a), _product_arrays(result_b)
    assert sorted(arrays_a) == sorted(arrays_b)
    differing = [k for k in arrays_a if not _equal(arrays_a[k], arrays_b[k])]
    assert not differing
    assert any("truth_" in k for k in arrays_a)  # the twin's ground truth is compared too
    meta_a = _Normaliser(result_a.data_dir)(result_a.products.metadata)
    meta_b = _Normaliser(result_b.data_dir)(result_b.products.metadata)
    assert meta_a == meta_b
    assert result_a.products.metadata["seed"] == SEED
    assert _Normaliser(Path("/"))(result_a.truth_table) == _Normaliser(Path("/"))(
        result_b.truth_table
    )


def test_another_seed_gives_other_products(twice, rehearsal):
    (result_a, _), _ = twice
    assert rehearsal.products is not None and rehearsal.products.metadata["seed"] == 0
    arrays_a, arrays_other = _product_arrays(result_a), _product_arrays(rehearsal)
    shared = sorted(set(arrays_a) & set(arrays_other))
    differing = [k for k in shared if not _equal(arrays_a[k], arrays_other[k])]
    assert "array c_perp" in differing  # other detector noise, other fitted lattice
