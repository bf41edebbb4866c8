"""The sealed check's cache: one database query per node until a metadata change.

In process (the served configuration, `build_in_process_app(access_control=True)`), with
the policy's query counted; the HTTP test against a server process is
``tests/service/test_access.py::test_a_run_sealed_after_a_first_request_is_refused_on_the_next_one``.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterator

import numpy as np
import pytest
from tiled.client import Context, from_context

from opmap.service import SealedCache, build_in_process_app
from opmap.settings import OpmapSettings

pytestmark = pytest.mark.filterwarnings(
    "ignore:Using `httpx` with `starlette.testclient` is deprecated"
)


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The node ids of every sealed query (a node's ancestry) the policy makes."""
    from opmap.service import ProposalTags

    asked: list[int] = []
    query = ProposalTags.ancestry

    async def ancestry(self: ProposalTags, node_id: int) -> list:
        asked.append(node_id)
        return await query(self, node_id)

    monkeypatch.setattr(ProposalTags, "ancestry", ancestry)
    return asked


@pytest.fixture
def writer(tmp_path, counted: list[int]) -> Iterator[Context]:
    settings = OpmapSettings(data_dir=tmp_path / "data")
    app = build_in_process_app(settings, access_control=True)
    key = settings.api_key_file.read_text().strip()
    with Context.from_app(app, api_key=key) as context:
        raw = from_context(context).create_container("raw")
        for name in ("run1", "run2"):
            raw.create_container(name).create_container("primary").write_array(
                np.arange(3), key="x"
            )
        yield context


#: Extent of each run's ``x`` per client context (x starts with 3 elements).
_EXTENTS: weakref.WeakKeyDictionary[Context, dict[str, int]] = weakref.WeakKeyDictionary()


def _put_x(context: Context, run: str) -> int:
    """The writer key grows ``x`` by 3 at its extent (the writer key may only append)."""
    extents = _EXTENTS.setdefault(context, {})
    offset = extents.get(run, 3)
    status = context.http_client.patch(
        f"/api/v1/array/full/raw/{run}/primary/x",
        params={"offset": offset, "shape": 3, "extend": "true"},
        content=np.arange(3).tobytes(),
        headers={"Content-Type": "application/octet-stream"},
    ).status_code
    if status == 200:
        extents[run] = offset + 3
    return status


def test_repeated_writer_requests_on_a_node_query_once(
    writer: Context, counted: list[int]
) -> None:
    from_context(writer)["raw"].update_metadata(metadata={"note": "drops the cache"})
    counted.clear()
    assert [_put_x(writer, "run1") for _ in range(5)] == [200] * 5
    assert len(counted) == 1  # before the cache: 5 (one per request)
    assert _put_x(writer, "run2") == 200
    assert len(counted) == 2  # another node: asked once


def test_a_metadata_change_drops_the_cache(writer: Context, counted: list[int]) -> None:
    raw = from_context(writer)["raw"]
    assert _put_x(writer, "run1") == 200
    counted.clear()
    raw["run2"].update_metadata(metadata={"note": "any change"})
    assert _put_x(writer, "run1") == 200
    assert len(counted) == 1  # asked again: the change might have sealed an ancestor
    raw["run1"].update_metadata(metadata={"opmap_sealed": True})
    assert _put_x(writer, "run1") == 403


def test_answers_found_during_a_change_are_not_kept() -> None:
    cache = SealedCache()
    key = (7, None)
    generation = cache.generation
    token = cache.begin_change()
    cache.store(key, False, generation)  # found before the change began: stale
    assert cache.get(key) is None
    cache.store(key, False, cache.generation)  # found while the change is on its way
    assert cache.get(key) is None and len(cache) == 0
    generation = cache.generation
    cache.end_change(token)
    cache.store(key, False, generation)  # its query overlapped the commit
    assert len(cache) == 0
    cache.store(key, True, cache.generation)
    assert cache.get(key) is True


def test_an_abandoned_change_stops_blocking_the_cache() -> None:
    cache = SealedCache(abandoned_after_s=0.05)
    cache.begin_change()  # the request failed before writing: never ended
    cache.store((1, None), False, cache.generation)
    assert len(cache) == 0
    time.sleep(0.1)
    cache.store((1, None), False, cache.generation)
    assert cache.get((1, None)) is False


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [("max_nodes", 0, "max_nodes"), ("abandoned_after_s", 0.0, "abandoned_after_s")],
)
def test_bad_cache_options_are_refused(option: str, value: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SealedCache(**{option: value})
