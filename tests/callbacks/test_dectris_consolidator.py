"""TiledWriter + the Dectris-links consolidator: series of per-file links become one array.

Documents as ``SimplonEiger`` emits them (one stream resource per series, per-file links of
``frames_per_file`` frames, the last file shorter) go through `ValidatedTiledWriter` into
an in-process Tiled app whose readable storage holds the files; the array node reads the
frames back from the data files, in order, across files and series.
"""

from __future__ import annotations

import itertools
import logging

import numpy as np
import pytest
from event_model import compose_run
from tiled.client import Context, from_context

from opmap.callbacks.dectris_consolidator import (
    DectrisLinksConsolidator,
    data_file_uri,
)
from opmap.callbacks.tiled_writer import ValidatedTiledWriter, ensure_layout
from opmap.service import build_in_process_app
from opmap.settings import OpmapSettings

from .._dectris_links import links_resource, write_links_master

pytestmark = pytest.mark.filterwarnings(
    "ignore:Using `httpx` with `starlette.testclient` is deprecated"
)
SHAPE = (6, 5)
DATA_KEYS = {
    "det": {
        "source": "test",
        "shape": list(SHAPE),
        "dtype": "array",
        "dtype_numpy": "<u4",
        "external": "STREAM:",
    }
}


@pytest.fixture
def tiled(tmp_path):
    settings = OpmapSettings(data_dir=tmp_path / "opmap-data")
    settings.detector_dir.mkdir(parents=True)
    with Context.from_app(build_in_process_app(settings)) as context:
        yield ensure_layout(from_context(context))["raw"], settings.detector_dir


def _documents(
    masters: list,
    per_file: int,
    counts: list[int],
    datum_split: int | None = None,
    data_keys: dict | None = None,
):
    run = compose_run()
    yield "start", run.start_doc
    descriptor = run.compose_descriptor(name="primary", data_keys=data_keys or DATA_KEYS)
    yield "descriptor", descriptor.descriptor_doc
    seq = 1
    for series, (master, n) in enumerate(zip(masters, counts, strict=True)):
        resource = links_resource(master, per_file, uid=f"{run.start_doc['uid']}/{series}")
        bundle = run.compose_stream_resource(
            mimetype=resource["mimetype"],
            uri=resource["uri"],
            data_key="det",
            parameters=resource["parameters"],
        )
        yield "stream_resource", bundle.stream_resource_doc
        cuts = [0, n] if datum_split is None else [0, datum_split, n]
        for lo, hi in itertools.pairwise(cuts):
            datum = bundle.compose_stream_datum(
                indices={"start": lo, "stop": hi}, seq_nums={"start": seq, "stop": seq + hi - lo}
            )
            datum["descriptor"] = descriptor.descriptor_doc["uid"]
            yield "stream_datum", datum
            seq += hi - lo
    yield "stop", run.compose_stop()


@pytest.mark.parametrize("datum_split", [None, 5], ids=["one-datum-per-series", "two-datums"])
def test_series_of_linked_files_read_back_as_one_array(tiled, datum_split):
    runs, folder = tiled
    stacks = [np.random.default_rng(k).integers(0, 9999, (n, *SHAPE), np.uint32) for k, n in
              enumerate((10, 7))]  # fmt: skip
    masters = [write_links_master(folder, f"map_{k + 1:04d}", s, 4) for k, s in enumerate(stacks)]
    writer = ValidatedTiledWriter(runs, raise_on_invalid=True)
    docs = list(_documents(masters, 4, [10, 7], datum_split))
    for name, doc in docs:
        writer(name, doc)
    node = runs[docs[0][1]["uid"]]["primary"]["det"]
    assert node.shape == (17, *SHAPE)
    np.testing.assert_array_equal(node.read(), np.concatenate(stacks))
    np.testing.assert_array_equal(node[8:12], np.concatenate(stacks)[8:12])
    assert "notes" not in runs[docs[0][1]["uid"]].metadata  # validation had nothing to fix
    (source,) = node.data_sources()
    assert source.mimetype == "application/x-hdf5"
    assert [a.data_uri.rsplit("/", 1)[1] for a in source.assets] == [
        "map_0001_data_000001.h5", "map_0001_data_000002.h5", "map_0001_data_000003.h5",
        "map_0002_data_000001.h5", "map_0002_data_000002.h5",
    ]  # fmt: skip


def test_ophyd_async_frame_key_is_registered_with_its_1_then_fixed_to_the_files(tiled, caplog):
    # ophyd-async declares [1, H, W]: Tiled registers (N, 1, H, W), and the validation after
    # stop stores the files' (N, H, W), logging the fix.
    runs, folder = tiled
    stack = np.random.default_rng(3).integers(0, 9999, (9, *SHAPE), np.uint32)
    master = write_links_master(folder, "ophyd_0001", stack, 4)
    keys = {"det": {**DATA_KEYS["det"], "shape": [1, *SHAPE]}}
    docs = list(_documents([master], 4, [9], data_keys=keys))
    writer = ValidatedTiledWriter(runs, raise_on_invalid=True)
    with caplog.at_level(logging.INFO, logger="opmap.callbacks.tiled_writer"):
        for name, doc in docs:
            writer(name, doc)
    assert f"(9, 1, {SHAPE[0]}, {SHAPE[1]}) -> (9, {SHAPE[0]}, {SHAPE[1]})" in caplog.text
    node = runs[docs[0][1]["uid"]]["primary"]["det"]
    assert node.shape == (9, *SHAPE)
    np.testing.assert_array_equal(node.read(), stack)


def test_a_missing_data_file_fails_validation_naming_it(tiled):
    runs, folder = tiled
    master = write_links_master(folder, "lost_0001", np.ones((6, *SHAPE), np.uint32), 4)
    (folder / "lost_0001_data_000002.h5").unlink()
    writer = ValidatedTiledWriter(runs, raise_on_invalid=True)
    docs = list(_documents([master], 4, [6]))
    with pytest.raises(RuntimeError, match=r"No such file .*lost_0001_data_000002\.h5"):
        for name, doc in docs:
            writer(name, doc)


def test_data_file_names_follow_the_master():
    assert data_file_uri("file://localhost/d/x_0003_master.h5", 12) == (
        "file://localhost/d/x_0003_data_000012.h5"
    )
    with pytest.raises(ValueError, match="must name a Dectris master"):
        data_file_uri("file://localhost/d/x.h5", 1)


def test_rows_that_skip_ahead_in_a_series_are_refused(tmp_path):
    resource = links_resource(tmp_path / "s_master.h5", 4)
    descriptor = {"data_keys": DATA_KEYS}
    consolidator = DectrisLinksConsolidator(resource, descriptor)
    consolidator.consume_stream_datum(
        {"uid": "a", "indices": {"start": 0, "stop": 3}, "seq_nums": {"start": 1, "stop": 4}}
    )
    with pytest.raises(ValueError, match=r"must continue the series .* at row 3"):
        consolidator.consume_stream_datum(
            {"uid": "b", "indices": {"start": 4, "stop": 5}, "seq_nums": {"start": 5, "stop": 6}}
        )
