"""The served app's path cache and dependency memo: the same answers, fewer statements.

The app is the served configuration (roles, proposals, sealing) built in this process, so
the statements Tiled sends to ``catalog.db`` can be counted and every kind of change
(new node, metadata, tags, growth, deletion, another process's commit) checked to be seen
at the very next request.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from tiled.client import Context, from_context

from opmap.service import (
    LookupCache,
    create_key,
    install_lookup_cache,
    memoise_dependants,
)
from opmap.settings import OpmapSettings

from ._served_app import admin_key, api_get, served_app, statements_sent

pytestmark = [
    pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient` is deprecated"),
    pytest.mark.timeout(120),
]

ARRAY = "processed/run/c"


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> OpmapSettings:
    return OpmapSettings(data_dir=tmp_path_factory.mktemp("lookupcache"))


@pytest.fixture(scope="module")
def context(settings: OpmapSettings) -> Iterator[Context]:
    with served_app(settings, ARRAY, "pA") as context:
        yield context


@pytest.fixture
def catalog_statements() -> Iterator[list[str]]:
    """The statements Tiled sends to ``catalog.db`` while the test runs."""
    with statements_sent("catalog.db") as found:
        yield found


def _get(context: Context, key: str, path: str, kind: str = "metadata") -> tuple[int, dict]:
    return api_get(context, key, f"{kind}/{path}")


def test_a_path_and_its_data_source_are_looked_up_once_until_the_catalog_changes(
    settings: OpmapSettings, context: Context, catalog_statements: list[str]
) -> None:
    key = admin_key(settings)
    assert _get(context, key, ARRAY, "array/full") == (200, list(np.arange(6.0)))
    catalog_statements.clear()
    reads = [_get(context, key, ARRAY, "array/full") for _ in range(3)]
    assert reads == [(200, list(np.arange(6.0)))] * 3
    assert catalog_statements == []  # no walk, no data-source query
    from_context(context)["processed"].create_container("other")  # any commit
    catalog_statements.clear()  # (the write's own lookups never use the cache)
    assert _get(context, key, ARRAY, "array/full")[0] == 200
    walk = [s for s in catalog_statements if 'nodes."key" = ?' in s]
    assert len(walk) == 3  # processed, run, c: looked up again
    assert any("asset" in s for s in catalog_statements)  # and the data source


def test_metadata_and_growth_are_seen_at_the_next_request(
    settings: OpmapSettings, context: Context
) -> None:
    key, admin = admin_key(settings), from_context(context)
    admin["processed/run"].write_array(np.zeros((2, 3)), key="grows")
    path = "processed/run/grows"
    assert _get(context, key, path)[1]["data"]["attributes"]["structure"]["shape"] == [2, 3]
    admin[path].patch(np.ones((1, 3)), offset=(2,), extend=True)
    assert _get(context, key, path)[1]["data"]["attributes"]["structure"]["shape"] == [3, 3]
    admin[path].update_metadata({"note": "fresh"})
    assert _get(context, key, path)[1]["data"]["attributes"]["metadata"]["note"] == "fresh"
    assert (
        _get(context, key, path, "array/full")[1]
        == np.vstack([np.zeros((2, 3)), np.ones((1, 3))]).tolist()
    )


def test_a_deleted_node_is_gone_at_the_next_request(
    settings: OpmapSettings, context: Context
) -> None:
    key, admin = admin_key(settings), from_context(context)
    admin["processed/run"].write_array(np.arange(3), key="doomed")
    path = "processed/run/doomed"
    assert [_get(context, key, path)[0] for _ in range(2)] == [200, 200]
    admin["processed/run"].delete_contents(["doomed"], external_only=False)
    assert _get(context, key, path)[0] == 404


def test_a_commit_from_another_process_is_seen_at_the_next_request(
    settings: OpmapSettings, context: Context
) -> None:
    key = admin_key(settings)
    assert _get(context, key, ARRAY)[1]["data"]["attributes"]["metadata"] == {}
    with sqlite3.connect(settings.data_dir / "catalog.db") as other:  # not the server's
        other.execute(
            "UPDATE nodes SET metadata = ? WHERE key = 'c'", (json.dumps({"by": "other"}),)
        )
    assert _get(context, key, ARRAY)[1]["data"]["attributes"]["metadata"] == {"by": "other"}


def test_a_cached_path_is_still_hidden_from_other_proposals(
    settings: OpmapSettings, context: Context
) -> None:
    admin = from_context(context)
    admin["processed"].create_container("runB", access_tags=["pB"]).write_array(
        np.arange(2), key="c"
    )
    path_b = "processed/runB/c"
    assert _get(context, admin_key(settings), path_b)[0] == 200  # cached by an unrestricted key
    reader_a = create_key(settings, "ann", "reader", proposals=["pA"])
    reader_b = create_key(settings, "bob", "reader", proposals=["pB"])
    assert [_get(context, reader_a, path_b)[0] for _ in range(2)] == [404, 404]
    assert [_get(context, reader_b, path_b)[0] for _ in range(2)] == [200, 200]
    assert _get(context, reader_a, ARRAY)[0] == 200


def test_a_reader_walk_is_cached_per_proposal_and_sees_a_retag_at_once(
    settings: OpmapSettings, context: Context, catalog_statements: list[str]
) -> None:
    admin = from_context(context)
    admin["processed"].create_container("runC", access_tags=["pC"]).write_array(
        np.arange(3), key="c"
    )
    path_c = "processed/runC/c"
    reader_c = create_key(settings, "cid", "reader", proposals=["pC"])
    reader_d = create_key(settings, "dan", "reader", proposals=["pD"])
    assert _get(context, reader_c, path_c, "array/full") == (200, [0, 1, 2])
    assert _get(context, reader_d, path_c)[0] == 404
    catalog_statements.clear()
    assert _get(context, reader_c, path_c, "array/full") == (200, [0, 1, 2])
    assert catalog_statements == []  # walk, proposal filter and tag checks from the cache
    assert _get(context, reader_d, path_c)[0] == 404  # not cached for pC's reader's sake
    headers = {"Authorization": f"Apikey {admin_key(settings)}"}
    retag = {"metadata": {}, "access_tags": ["pC", "pD"]}
    response = context.http_client.put(
        "/api/v1/metadata/processed/runC", headers=headers, json=retag
    )
    assert response.status_code == 200
    assert _get(context, reader_d, path_c, "array/full") == (200, [0, 1, 2])


def test_a_node_sealed_after_it_was_cached_refuses_the_writer(
    settings: OpmapSettings, context: Context
) -> None:
    admin = from_context(context)
    admin["processed"].create_container("final").write_array(np.arange(2), key="c")
    writer = settings.api_key_file.read_text().strip()
    headers = {"Authorization": f"Apikey {writer}"}
    body = {"metadata": {"checked": True}}
    url = "/api/v1/metadata/processed/final/c"
    assert context.http_client.put(url, headers=headers, json=body).status_code == 200
    admin["processed/final"].update_metadata({"opmap_sealed": True})
    assert context.http_client.put(url, headers=headers, json=body).status_code == 403


def test_the_cache_keeps_an_answer_only_for_the_version_it_was_found_at(tmp_path: Path) -> None:
    database = tmp_path / "catalog.db"
    with sqlite3.connect(database) as writer:
        writer.execute("CREATE TABLE t (x)")
    cache = LookupCache(database)
    node, version = cache.get((0, ("a",)))
    assert node is None and version is not None
    cache.store((0, ("a",)), "node-a", version)
    assert cache.get((0, ("a",)))[0] == "node-a"
    stale_version = cache.get((0, ("b",)))[1]
    with sqlite3.connect(database) as writer:  # a commit between query and store
        writer.execute("INSERT INTO t VALUES (1)")
    assert cache.get((0, ("a",)))[0] is None  # dropped
    cache.store((0, ("b",)), "node-b", stale_version)
    assert cache.get((0, ("b",)))[0] is None and len(cache) == 0
    cache.close()


def test_bad_sizes_and_catalogs_that_are_not_sqlite_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_nodes"):
        LookupCache(tmp_path / "catalog.db", max_nodes=0)
    assert install_lookup_cache(object()) is None


def test_dependants_are_analysed_once_per_callable_and_arguments() -> None:
    import fastapi.dependencies.utils as utils

    memoise_dependants()
    memoise_dependants()  # idempotent

    async def dependency(x: int = 1) -> int:
        return x

    async def other(y: str = "") -> str:
        return y

    first = utils.get_dependant(path="/a", call=dependency, name="d")
    assert utils.get_dependant(path="/a", call=dependency, name="d") is first
    assert [p.name for p in first.query_params] == ["x"]
    assert utils.get_dependant(path="/b", call=dependency, name="d") is not first
    assert [p.name for p in utils.get_dependant(path="/a", call=other).query_params] == ["y"]


def test_a_write_is_never_answered_from_the_cache(
    settings: OpmapSettings, context: Context, catalog_statements: list[str]
) -> None:
    key = admin_key(settings)
    assert _get(context, key, ARRAY, "array/full")[0] == 200  # cached for reads
    catalog_statements.clear()
    from_context(context)[ARRAY].update_metadata({"touched": True})
    walk = [s for s in catalog_statements if 'nodes."key" = ?' in s]
    assert len(walk) >= 3  # the write walked the path itself: its own ORM nodes
