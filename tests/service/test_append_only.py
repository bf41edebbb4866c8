"""Append-only writes against a real server process: the writer key grows, never overwrites.

The beamline writer key creates an unsealed run and product version, then tries every
kind of write over HTTP: appending (an array grown along axis 0 at its extent, rows
appended to a table partition, new metadata keys, lists and commit records that grow) is
accepted; overwriting (a stored block, the whole array, a stored partition, an existing
metadata key, a data source shrunk) is 403 with the node named, and the data are unchanged
afterwards. Arrays of a product version may also be rewritten from their committed
extent on (what readers do not use yet), never below it. The admin key may still
overwrite.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pyarrow
import pytest

from opmap.analysis.products import LabelledArray
from opmap.callbacks.tiled_products import TiledProductWriter
from opmap.service import ServerHandle, start_server_subprocess
from opmap.settings import OpmapSettings

pytestmark = pytest.mark.timeout(300)

RUN = "raw/open-run"
ARRAY = f"{RUN}/primary/x"
TABLE = f"{RUN}/primary/internal"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    settings = OpmapSettings(data_dir=tmp_path_factory.mktemp("append-only"))
    with start_server_subprocess(settings, startup_timeout_s=300) as handle:
        writer = _client(handle, handle.api_key)
        run = writer.create_container("raw").create_container(
            "open-run", metadata={"start": {"uid": "open-run"}, "notes": ["first"]}
        )
        primary = run.create_container("primary")
        # the first PUT of a node created without data is not an overwrite
        primary.write_array(np.arange(8, dtype=np.int64).reshape(4, 2), key="x")
        schema = pyarrow.schema([("seq_num", pyarrow.int64())])
        table = primary.create_appendable_table(schema, key="internal")
        table.append_partition(0, pyarrow.table({"seq_num": [1, 2]}))
        yield handle


def _client(server: ServerHandle, key: str) -> Any:
    from tiled.client import from_uri

    return from_uri(server.url, api_key=key)


def _send(server: ServerHandle, key: str, method: str, path: str, **kw: Any) -> httpx.Response:
    headers = {"Authorization": f"Apikey {key}", **kw.pop("headers", {})}
    return httpx.request(method, f"{server.url}/api/v1/{path}", headers=headers, **kw)


def _octets(array: np.ndarray) -> dict[str, Any]:
    return {
        "content": np.ascontiguousarray(array).tobytes(),
        "headers": {"Content-Type": "application/octet-stream"},
    }


def _stored(server: ServerHandle) -> np.ndarray:
    return _client(server, server.admin_key)[ARRAY].read()


def _refused(response: httpx.Response, node: str, why: str) -> None:
    assert response.status_code == 403, response.text
    detail = response.json()["detail"]
    assert node in detail and why in detail, detail


def test_the_writer_key_grows_an_array_at_its_extent(server: ServerHandle) -> None:
    before = _stored(server)
    rows = np.array([[100, 101]], dtype=np.int64)
    params = {"offset": f"{before.shape[0]},0", "shape": "1,2", "extend": "true"}
    grown = _send(
        server, server.api_key, "PATCH", f"array/full/{ARRAY}", params=params, **_octets(rows)
    )
    assert grown.status_code == 200, grown.text
    np.testing.assert_array_equal(_stored(server), np.concatenate([before, rows]))


@pytest.mark.parametrize(
    ("method", "params", "why"),
    [
        ("PATCH", {"offset": "1,0", "shape": "1,2", "extend": "true"}, "stored extent is"),
        ("PATCH", {"offset": "0,0", "shape": "1,2"}, "data already stored in [0:1, 0:2]"),
        ("PUT", {}, "data already stored in"),
    ],
    ids=["extend-inside", "patch-inside", "put-full"],
)
def test_overwriting_stored_array_data_is_refused_and_changes_nothing(
    server: ServerHandle, method: str, params: dict[str, str], why: str
) -> None:
    before = _stored(server)
    shape = tuple(int(n) for n in params.get("shape", ",".join(map(str, before.shape))).split(","))
    body = _octets(np.full(shape, -1, dtype=np.int64))
    response = _send(server, server.api_key, method, f"array/full/{ARRAY}", params=params, **body)
    _refused(response, ARRAY, why)
    np.testing.assert_array_equal(_stored(server), before)


def test_overwriting_a_stored_block_is_refused(server: ServerHandle) -> None:
    before = _stored(server)
    chunks = _client(server, server.admin_key)[ARRAY].chunks
    block = np.full((chunks[0][0], chunks[1][0]), -1, dtype=np.int64)
    response = _send(
        server,
        server.api_key,
        "PUT",
        f"array/block/{ARRAY}",
        params={"block": "0,0"},
        **_octets(block),
    )
    _refused(response, ARRAY, "data already stored in [0:")
    outside = _send(
        server,
        server.api_key,
        "PUT",
        f"array/block/{ARRAY}",
        params={"block": "9,0"},
        **_octets(block),
    )
    assert outside.status_code == 400 and "block (9, 0) is not a block of" in outside.text
    np.testing.assert_array_equal(_stored(server), before)


def test_rows_are_appended_to_a_partition_but_a_stored_partition_is_not_replaced(
    server: ServerHandle,
) -> None:
    writer = _client(server, server.api_key)
    writer[TABLE].append_partition(0, pyarrow.table({"seq_num": [3]}))
    assert writer[TABLE].read()["seq_num"].tolist() == [1, 2, 3]
    sink = pyarrow.BufferOutputStream()
    with pyarrow.ipc.new_stream(sink, pyarrow.schema([("seq_num", pyarrow.int64())])) as out:
        out.write_table(pyarrow.table({"seq_num": [9]}))
    arrow = {"Content-Type": "application/vnd.apache.arrow.stream"}
    body = sink.getvalue().to_pybytes()
    put = _send(
        server,
        server.api_key,
        "PUT",
        f"table/partition/{TABLE}",
        params={"partition": 0},
        content=body,
        headers=arrow,
    )
    _refused(put, TABLE, "partition 0 already holds 3 rows")
    whole = _send(
        server, server.api_key, "PUT", f"table/full/{TABLE}", content=body, headers=arrow
    )
    _refused(whole, TABLE, "the table already holds 3 rows")
    assert writer[TABLE].read()["seq_num"].tolist() == [1, 2, 3]


def test_a_table_written_whole_is_not_written_again(server: ServerHandle) -> None:
    primary = _client(server, server.api_key)[f"{RUN}/primary"]
    primary.write_table({"grain_id": np.array([1, 2, 3])}, key="grains")  # PUT after POST
    path = f"{RUN}/primary/grains"
    sink = pyarrow.BufferOutputStream()
    with pyarrow.ipc.new_stream(sink, pyarrow.schema([("grain_id", pyarrow.int64())])) as out:
        out.write_table(pyarrow.table({"grain_id": [9, 9, 9]}))
    arrow = {"Content-Type": "application/vnd.apache.arrow.stream"}
    again = _send(
        server,
        server.api_key,
        "PUT",
        f"table/full/{path}",
        content=sink.getvalue().to_pybytes(),
        headers=arrow,
    )
    _refused(again, path, "the table is already stored")
    assert primary["grains"].read()["grain_id"].tolist() == [1, 2, 3]


def _patch_metadata(server: ServerHandle, key: str, path: str, metadata: dict) -> httpx.Response:
    body = {"metadata": metadata, "specs": None, "content-type": "application/merge-patch+json"}
    return _send(server, key, "PATCH", f"metadata/{path}", json=body)


def test_the_writer_key_adds_metadata_but_never_changes_a_stored_key(
    server: ServerHandle,
) -> None:
    added = _patch_metadata(server, server.api_key, RUN, {"stop": {"exit_status": "success"}})
    assert added.status_code == 200, added.text
    grown = _patch_metadata(server, server.api_key, RUN, {"notes": ["first", "second"]})
    assert grown.status_code == 200, grown.text
    changed = _patch_metadata(server, server.api_key, RUN, {"start": {"uid": "forged"}})
    _refused(changed, RUN, "metadata key 'start' would be changed")
    rewritten = _patch_metadata(server, server.api_key, RUN, {"notes": ["other"]})
    _refused(rewritten, RUN, "metadata key 'notes' would be changed")
    replaced = _send(server, server.api_key, "PUT", f"metadata/{RUN}", json={"metadata": {}})
    _refused(replaced, RUN, "would be removed")
    stored = _client(server, server.admin_key)[RUN].metadata
    assert stored["start"] == {"uid": "open-run"}
    assert stored["notes"] == ["first", "second"] and stored["stop"]["exit_status"] == "success"


def _processed(server: ServerHandle) -> Any:
    """The ``processed`` container, as the writer key sees it (created on first use)."""
    writer = _client(server, server.api_key)
    if "processed" not in writer:
        writer.create_container("processed")
    return writer["processed"]


def test_a_product_commit_record_may_only_count_more(server: ServerHandle) -> None:
    empty = {"maps": 0, "rows": {}, "names": [], "grown": []}
    experiment = _processed(server).create_container("exp")
    version = experiment.create_container("v1", metadata={"committed": empty})
    path = "processed/exp/v1"

    def commit(maps: int, rows: int, names: list[str]) -> httpx.Response:
        record = {"maps": maps, "rows": {"grains": rows}, "names": names, "grown": []}
        return _patch_metadata(server, server.api_key, path, {"committed": record})

    assert commit(1, 3, ["c_perp"]).status_code == 200
    assert commit(2, 5, ["c_perp", "a_grains"]).status_code == 200
    _refused(commit(1, 5, ["c_perp", "a_grains"]), path, "'committed' would be changed")
    _refused(commit(2, 4, ["c_perp", "a_grains"]), path, "'committed' would be changed")
    _refused(commit(3, 6, ["c_perp"]), path, "'committed' would be changed")
    assert version.refresh().metadata["committed"]["maps"] == 2
    # a record added later would let the key rewrite the node's arrays (committed_extent)
    experiment.create_container("v2")
    added = _patch_metadata(server, server.api_key, "processed/exp/v2", {"committed": empty})
    _refused(added, "processed/exp/v2", "'committed' is set when a product version is created")
    assert "committed" not in experiment["v2"].metadata


def _c_map(index: int) -> dict[str, LabelledArray]:
    """Map ``index`` of a small product: c(z, x) = 14 + index everywhere."""
    return {"c_perp": LabelledArray(np.full((1, 3, 4), 14.0 + index), ("map", "z", "x"), "A")}


def _patch_c(server: ServerHandle, path: str, at: int, value: float, **params: str) -> Any:
    body = _octets(np.full((1, 3, 4), value))
    params = {"offset": f"{at},0,0", "shape": "1,3,4", **params}
    return _send(server, server.api_key, "PATCH", f"array/full/{path}", params=params, **body)


def test_maps_beyond_the_committed_ones_may_be_rewritten_but_not_those_below(
    server: ServerHandle,
) -> None:
    """A product writer that died (or timed out) after growing map 2 without committing
    it writes map 2 again at its offset (``opmap resume``, a retry): allowed. The two
    committed maps stay refused, whatever the request, and are unchanged."""
    writer = TiledProductWriter(_processed(server), "resumed")
    for index in range(3):
        writer.append_map(_c_map(index), commit=index < 2)  # map 2 written, not committed
    path = f"processed/resumed/{writer.version}/c_perp"
    admin = _client(server, server.admin_key)
    assert admin[path].shape == (3, 3, 4) and writer.committed.maps == 2

    assert _patch_c(server, path, 2, -2.0, extend="true").status_code == 200
    assert _patch_c(server, path, 2, 22.0).status_code == 200  # without extend
    assert _patch_c(server, path, 3, 23.0, extend="true").status_code == 200  # appends
    _refused(
        _patch_c(server, path, 5, 25.0, extend="true"), path, "the stored extent is 4 and"
    )  # no gap beyond the stored maps
    _refused(
        _patch_c(server, path, 1, -1.0, extend="true"),
        path,
        "the stored extent is 4 and the first 2 are committed",
    )
    _refused(_patch_c(server, path, 0, -1.0), path, "data already stored in [0:1")
    whole = _send(
        server, server.api_key, "PUT", f"array/full/{path}", **_octets(np.zeros((4, 3, 4)))
    )
    _refused(whole, path, "data already stored in [0:4")
    stored = admin[path].read()
    np.testing.assert_array_equal(stored[:, 0, 0], [14.0, 15.0, 22.0, 23.0])

    writer.commit()  # the writer's 3 maps are committed now: map 2 is refused from then on
    _refused(_patch_c(server, path, 2, -2.0, extend="true"), path, "first 3 are committed")
    np.testing.assert_array_equal(admin[path].read()[:, 0, 0], [14.0, 15.0, 22.0, 23.0])


def test_an_uncommitted_product_array_may_be_written_again_whole(server: ServerHandle) -> None:
    """A node the product writer created and wrote, but never committed (the reply was
    lost), is taken over by its retry with a whole ``PUT``; once named in the commit
    record it is stored for good."""
    writer = TiledProductWriter(_processed(server), "taken-over")
    writer.append_map(_c_map(0))
    version = writer.container
    version.write_array(np.arange(4.0), key="extra", dims=["x"])  # not committed
    path = f"processed/taken-over/{writer.version}/extra"
    again = _send(server, server.api_key, "PUT", f"array/full/{path}", **_octets(np.ones(4)))
    assert again.status_code == 200, again.text
    np.testing.assert_array_equal(_client(server, server.admin_key)[path].read(), np.ones(4))
    record = {**version.metadata["committed"]}
    record["names"] = [*record["names"], "extra"]
    committed = _patch_metadata(
        server, server.api_key, path.rsplit("/", 1)[0], {"committed": record}
    )
    assert committed.status_code == 200, committed.text
    refused = _send(server, server.api_key, "PUT", f"array/full/{path}", **_octets(np.zeros(4)))
    _refused(refused, path, "data already stored in [0:4]")
    np.testing.assert_array_equal(_client(server, server.admin_key)[path].read(), np.ones(4))


def _put_data_source(server: ServerHandle, node: str, source: dict, **params: str) -> Any:
    return _send(
        server,
        server.api_key,
        "PUT",
        f"data_source/{node}",
        params=params,
        json={"data_source": source},
    )


def test_a_data_source_is_never_shrunk_nor_repointed(server: ServerHandle) -> None:
    node = f"{RUN}/primary/x"
    info = _send(
        server, server.api_key, "GET", f"metadata/{node}", params={"include_data_sources": True}
    ).json()
    (source,) = info["data"]["attributes"]["data_sources"]
    before = tuple(source["structure"]["shape"])
    patch = {"patch_shape": "1,2", "patch_offset": "0,0"}
    # a re-send of the first row over the same files (completing a run from the spool)
    shorter = {**source, "structure": {**source["structure"], "shape": [1, 2]}}
    assert _put_data_source(server, node, shorter, **patch).status_code == 200
    assert _client(server, server.admin_key)[node].shape == before  # not written
    elsewhere = [{**asset, "data_uri": asset["data_uri"] + "-other"} for asset in source["assets"]]
    moved = {**shorter, "assets": elsewhere}
    _refused(_put_data_source(server, node, moved, **patch), node, "the extent would shrink")
    dropped = {**source, "assets": elsewhere}
    _refused(_put_data_source(server, node, dropped, **patch), node, "would be dropped")
    retyped = {**source, "structure": {**source["structure"], "data_type": _float64(source)}}
    _refused(_put_data_source(server, node, retyped, **patch), node, "data type would change")
    _refused(_put_data_source(server, node, source), node, "replacing a data source")
    np.testing.assert_array_equal(_stored(server).shape, before)


def _float64(source: dict) -> dict:
    return {**source["structure"]["data_type"], "kind": "f", "itemsize": 8}


def test_the_admin_key_may_still_overwrite(server: ServerHandle) -> None:
    before = _stored(server)
    fresh = np.full(before.shape, 7, dtype=np.int64)
    put = _send(server, server.admin_key, "PUT", f"array/full/{ARRAY}", **_octets(fresh))
    assert put.status_code == 200, put.text
    np.testing.assert_array_equal(_stored(server), fresh)
    changed = _patch_metadata(server, server.admin_key, RUN, {"start": {"uid": "repaired"}})
    assert changed.status_code == 200, changed.text
    assert _client(server, server.admin_key)[RUN].metadata["start"] == {"uid": "repaired"}
    log = server.log_file.read_text()
    assert f"('admin') - \"PUT /api/v1/array/full/{ARRAY}" in log


def test_the_request_scope_names_each_write_and_nothing_else() -> None:
    import asyncio

    from opmap.service._append import current_write
    from opmap.service._request import RequestScope, current_request

    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append((current_request(), current_write()))

    async def serve(method: str, path: str, *, append_only: bool = True) -> None:
        scope = {"type": "http", "method": method, "path": path, "query_string": b"x=1"}
        await RequestScope(app, append_only=append_only)(scope, None, None)

    async def main() -> None:
        await serve("PATCH", "/api/v1/array/full/raw/run/x")
        await serve("GET", "/api/v1/array/full/raw/run/x")
        await serve("PUT", "/api/v1/array/full/raw/run/x", append_only=False)
        await RequestScope(app)({"type": "websocket", "path": "/api/v1/stream"}, None, None)

    asyncio.run(main())
    (patch, write), (get, no_write), (put, unchecked), (socket, _) = seen
    assert (write.method, write.route, write.path, write.query) == (
        "PATCH",
        "array/full",
        "raw/run/x",
        {"x": "1"},
    )
    assert not patch.is_read and get.is_read and no_write is None
    assert put.method == "PUT" and unchecked is None  # serve --no-append-only
    assert socket is None and current_request() is None  # nothing outside a request
