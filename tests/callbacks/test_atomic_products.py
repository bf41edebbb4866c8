"""Products are never half-written: writes fail half way on a real Tiled server, readers
see only complete maps, and the retry completes each map exactly once.

A real Tiled server runs in a subprocess (`start_server_subprocess`). Failures are injected
in the writer's HTTP transport: a request is sent, the server applies it, and the client
then gets ``httpx.ReadTimeout`` (the reply lost on a loaded machine) or, while the "server
is down", requests are refused before they are sent. Readers use a second, healthy client.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import tiled.client.utils

from opmap.analysis.products import LabelledArray, Products
from opmap.callbacks.live import ProductPublisher
from opmap.callbacks.sealing import is_sealed
from opmap.callbacks.tiled_products import (
    COMMIT_KEY,
    TiledProductWriter,
    TiledUnavailableError,
    read_latest,
    read_tiled_products,
    retry_transient,
)
from opmap.callbacks.tiled_writer import ensure_layout
from opmap.service import start_server_subprocess
from opmap.settings import OpmapSettings

N_Z, N_X = 4, 5
Z_UM = np.linspace(0.0, 3.0, N_Z)
X_UM = np.linspace(0.0, 200.0, N_X)
WRITES = ("PATCH", "PUT", "POST")
pytestmark = pytest.mark.timeout(1800)  # a subprocess server on a loaded 2-core machine


class FlakyTransport(httpx.BaseTransport):
    """Wraps a client's transport; fails write requests on demand.

    ``lose_replies_after(n)``: the next ``n`` writes go through, every later write reaches
    the server and is applied, but its reply is lost (``ReadTimeout``). ``refused``: the
    next ``refused`` requests are refused before they are sent (``ConnectError``: a server
    restarting).
    """

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.healthy_writes: int | None = None
        self.refused = 0
        self.applied = 0
        self.lose_reply_of: tuple[str, str] | None = None  # (method, URL path part): once

    def lose_replies_after(self, n_writes: int | None) -> None:
        self.healthy_writes = n_writes

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.refused > 0:
            self.refused -= 1
            raise httpx.ConnectError("connection refused (server restarting)", request=request)
        response = self.inner.handle_request(request)
        if self.lose_reply_of is not None:
            method, part = self.lose_reply_of
            if request.method == method and part in request.url.path:
                self.lose_reply_of = None
                return self._lost(request, response)
        if request.method in WRITES and self.healthy_writes is not None:
            if self.healthy_writes <= 0:
                return self._lost(request, response)
            self.healthy_writes -= 1
        return response

    def _lost(self, request: httpx.Request, response: httpx.Response) -> httpx.Response:
        response.read()  # the server applied it; the client never hears back
        response.close()
        self.applied += 1
        raise httpx.ReadTimeout("reply lost", request=request)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    settings = OpmapSettings(data_dir=tmp_path_factory.mktemp("atomic"))
    with start_server_subprocess(settings, startup_timeout_s=300.0) as handle:  # loaded CI
        yield handle


@pytest.fixture
def one_attempt(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiled's own per-request retries off, so the injected faults reach opmap's layer."""
    monkeypatch.setattr(tiled.client.utils, "TILED_RETRY_ATTEMPTS", 1)


def _flaky_processed(server) -> tuple:
    client = server.client()
    transport = FlakyTransport(client.context.http_client._transport)
    client.context.http_client._transport = transport
    return ensure_layout(client)["processed"], transport


def _reader(server):
    return ensure_layout(server.client())["processed"]


def _map(index: int) -> tuple[dict[str, LabelledArray], dict[str, LabelledArray]]:
    """Map ``index``: c(z, x) = 14.0 + 0.01 index + known gradients, and two per-map values."""
    z, x = np.meshgrid(Z_UM, X_UM, indexing="ij")
    c_perp = (14.0 + 0.01 * index + 1e-3 * z + 1e-5 * x).astype(np.float32)[None]
    arrays = {
        "c_perp": LabelledArray(c_perp, ("map", "z", "x"), "angstrom"),
        "front_width": LabelledArray(np.array([2.0 + index]), ("map",), "um"),
        "time_s": LabelledArray(np.array([600.0 * index]), ("map",), "s"),
    }
    coords = {
        "map": LabelledArray(np.array([index]), ("map",), ""),
        "z": LabelledArray(Z_UM, ("z",), "um"),
        "x": LabelledArray(X_UM, ("x",), "um"),
    }
    return arrays, coords


def _assert_complete_maps(products: Products, n_maps: int) -> None:
    """Exactly maps 0..n_maps-1, every array aligned with the ``map`` coordinate."""
    assert products.coords["map"].values.tolist() == list(range(n_maps))
    for index in range(n_maps):
        arrays, _ = _map(index)
        for name, expected in arrays.items():
            np.testing.assert_array_equal(
                products.arrays[name].values[index], expected.values[0], err_msg=name
            )
    assert {a.values.shape[0] for a in products.arrays.values()} == {n_maps}


def test_a_map_failing_half_way_is_invisible_and_its_retry_lands_once(server, one_attempt):
    processed, transport = _flaky_processed(server)
    writer = TiledProductWriter(processed, "half-written")
    for index in range(2):
        arrays, coords = _map(index)
        writer.append_map(arrays, coords=coords)
    writer.append_rows("grains", {"grain_id": np.array([1, 2, 3])})

    arrays, coords = _map(2)
    transport.lose_replies_after(2)  # two arrays of map 2 land, the third's reply is lost
    with pytest.raises(httpx.ReadTimeout):
        writer.append_map(arrays, coords=coords)
    stored = _reader(server)["half-written"]["v1"]
    grown = sorted(
        n for n in ("c_perp", "front_width", "time_s", "map") if stored[n].shape[0] == 3
    )
    assert len(grown) == 3, f"the failure left map 2 in {grown} only: half-written on the server"
    _assert_complete_maps(read_latest(_reader(server), "half-written"), 2)

    with pytest.raises(httpx.ReadTimeout):  # an append whose rows land but whose reply is lost
        writer.append_rows("grains", {"grain_id": np.array([4, 5])})
    assert read_latest(_reader(server), "half-written").tables["grains"]["grain_id"].tolist() == [
        1,
        2,
        3,
    ]

    transport.lose_replies_after(None)
    assert writer.append_map(arrays, coords=coords, at=2) == 3  # the retry: map 2 again
    writer.append_rows("grains", {"grain_id": np.array([4, 5])}, at=3)
    reread = read_latest(_reader(server), "half-written")
    _assert_complete_maps(reread, 3)
    assert stored["c_perp"].shape == (3, N_Z, N_X), "map 2 written exactly once"
    assert reread.tables["grains"]["grain_id"].tolist() == [1, 2, 3, 4, 5], "rows not doubled"
    assert transport.applied == 2


def test_a_whole_table_whose_reply_was_lost_is_not_written_twice(server, one_attempt):
    processed, transport = _flaky_processed(server)
    writer = TiledProductWriter(processed, "table-retry")
    grains = {"grain_id": np.array([1, 2, 3]), "azimuth_deg": np.array([0.5, np.nan, 60.0])}
    transport.lose_reply_of = ("PUT", "/table/full/")  # the table lands, its reply is lost
    with pytest.raises(httpx.ReadTimeout):
        writer.write_products(Products(tables={"grains": grains}))
    assert transport.applied == 1

    writer.write_products(Products(tables={"grains": grains}))  # the retry: stored already
    stored = read_latest(_reader(server), "table-retry").tables["grains"]
    assert stored["grain_id"].tolist() == [1, 2, 3]
    np.testing.assert_array_equal(stored["azimuth_deg"], grains["azimuth_deg"])

    other = TiledProductWriter(processed, "table-other")
    transport.lose_reply_of = ("PUT", "/table/full/")
    with pytest.raises(httpx.ReadTimeout):
        other.write_products(Products(tables={"grains": grains}))
    changed = {"grain_id": np.array([1, 2, 4]), "azimuth_deg": grains["azimuth_deg"]}
    with pytest.raises(tiled.client.utils.ClientError, match="may only append"):
        other.write_products(Products(tables={"grains": changed}))  # not what is stored


def test_the_first_map_failing_after_creating_nodes_is_taken_over_on_retry(server, one_attempt):
    processed, transport = _flaky_processed(server)
    writer = TiledProductWriter(processed, "first-map")
    arrays, coords = _map(0)
    transport.lose_replies_after(6)  # version coord, z, x (POST + PUT each); c_perp's POST
    with pytest.raises(httpx.ReadTimeout):
        writer.append_map(arrays, coords=coords)
    assert "c_perp" in _reader(server)["first-map"]["v1"]  # created, never committed
    assert read_tiled_products(_reader(server)["first-map"]["v1"]).arrays == {}

    transport.lose_replies_after(None)
    writer.append_map(arrays, coords=coords)
    _assert_complete_maps(read_latest(_reader(server), "first-map"), 1)


def test_publisher_rides_out_an_outage_and_claims_only_complete_raw_runs(
    server, one_attempt, caplog
):
    processed, transport = _flaky_processed(server)
    incomplete = {"run-1": "stream 'primary' holds 0 of 20 events"}
    publisher = ProductPublisher(
        processed, "outage", {"k": 1.0}, raw_check=incomplete.get, retry_total_s=30.0
    )
    products = Products()
    for index in range(3):
        products = _products_of(index + 1)
        transport.refused = 3 if index == 1 else 0  # map 1 meets a restarting server
        ec = {"time_s": np.array([10.0 * index, 10.0 * index + 5.0])}
        publisher.publish_map(products, f"run-{index}", {}, ec)
    retries = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retries) == 3 and all("outage: products of map(s) 1-1" in m for m in retries)

    # run-1's raw run is incomplete: only map 0 is claimed, maps 1-2 wait behind it
    claimed = read_latest(_reader(server), "outage")
    _assert_complete_maps(claimed, 1)
    assert claimed.metadata["raw_uids"] == ["run-0"]
    assert claimed.tables["electrochemistry"]["time_s"].tolist() == [0.0, 5.0]
    with pytest.raises(RuntimeError, match="not claimed"):
        publisher.finish(products)
    version = publisher.writer.version
    assert not is_sealed(processed["outage"][version].metadata)  # open for a later finish

    incomplete.clear()  # e.g. the spooled documents re-sent: the raw run is complete now
    publisher.finish(products)
    assert is_sealed(processed["outage"][version].metadata)  # final now
    claimed = read_latest(_reader(server), "outage")
    _assert_complete_maps(claimed, 3)
    assert claimed.metadata["raw_uids"] == ["run-0", "run-1", "run-2"]
    assert claimed.tables["electrochemistry"]["time_s"].tolist() == [0, 5, 10, 15, 20, 25]
    assert COMMIT_KEY not in claimed.metadata


def _products_of(n_maps: int) -> Products:
    """An experiment's products after ``n_maps`` maps (what `ExperimentAnalysis` gives)."""
    maps = [_map(index) for index in range(n_maps)]
    arrays = {
        name: LabelledArray(
            np.concatenate([a[name].values for a, _ in maps]), like.dims, like.units
        )
        for name, like in maps[0][0].items()
    }
    coords = {**maps[0][1], "map": LabelledArray(np.arange(n_maps), ("map",), "")}
    return Products(arrays=arrays, coords=coords)


def test_retry_gives_up_after_its_time_with_a_clear_error() -> None:
    waits: list[float] = []
    calls = {"n": 0}

    def always_down() -> None:
        calls["n"] += 1
        raise httpx.ConnectError("connection refused")

    def wait(seconds: float) -> None:
        waits.append(seconds)
        time.sleep(seconds)

    with pytest.raises(
        TiledUnavailableError, match=r"cell: map 7: still failing after \d+ attempts"
    ):
        retry_transient(
            always_down,
            what="cell: map 7",
            total_s=0.3,
            first_wait_s=0.05,
            max_wait_s=0.1,
            sleep=wait,
        )
    assert waits[:3] == [0.05, 0.1, 0.1] and calls["n"] == len(waits) + 1
    assert sum(waits) <= 0.3 + 1e-9

    def refused() -> None:
        raise ValueError("bad shape")

    with pytest.raises(ValueError, match="bad shape"):  # not transient: raised at once
        retry_transient(refused, what="x", sleep=wait)
    assert calls["n"] == len(waits) + 1


def test_a_reopened_version_goes_on_after_the_writer_died_half_way(server, one_attempt):
    """``opmap resume``: a new process reopens the version a killed writer left half-written
    (map 2 partly written, rows appended but not committed) and grows it from the
    committed maps on: nothing doubled, nothing refused, the same version."""
    processed, transport = _flaky_processed(server)
    dead = TiledProductWriter(processed, "reopened")
    for index in range(2):
        arrays, coords = _map(index)
        dead.append_map(arrays, coords=coords)
    dead.append_rows("grains", {"grain_id": np.array([1, 2, 3])})
    transport.lose_replies_after(2)  # map 2: two arrays land, then the process "dies"
    arrays, coords = _map(2)
    with pytest.raises(httpx.ReadTimeout):
        dead.append_map(arrays, coords=coords)
    with pytest.raises(httpx.ReadTimeout):
        dead.append_rows("grains", {"grain_id": np.array([4, 5])})  # stored, uncommitted

    writer = TiledProductWriter.reopen(_reader(server), "reopened", "v1")
    assert (writer.version, writer.n_maps, writer.committed.maps) == ("v1", 2, 2)
    for index in (2, 3):
        arrays, coords = _map(index)
        writer.append_map(arrays, coords=coords, commit=False)
    writer.append_rows("grains", {"grain_id": np.array([4, 5, 6])}, at=3, commit=False)
    writer.commit()
    reread = read_latest(_reader(server), "reopened")
    _assert_complete_maps(reread, 4)
    assert reread.tables["grains"]["grain_id"].tolist() == [1, 2, 3, 4, 5, 6]
    assert [k for k in _reader(server)["reopened"] if not k.endswith("-tables")] == ["v1"]


def test_reopening_needs_a_stored_version_with_a_commit_record(server):
    with pytest.raises(KeyError):
        TiledProductWriter.reopen(_reader(server), "never-written", "v1")
