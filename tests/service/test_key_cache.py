"""The API-key cache of the served app: one lookup per key until the key database changes.

The app is the served configuration (roles, proposals) built in this process, so the
statements Tiled sends to ``authn.db`` can be counted; the cross-process case (a key
revoked by another process) is in ``test_access.py`` against a real server process.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine
from tiled.client import Context

from opmap.service import (
    SERVER_TIMING_KEY,
    KeyGrantCache,
    build_in_process_app,
    create_key,
    grant_from_orm,
    install_key_cache,
    list_keys,
    revoke_key,
)
from opmap.settings import OpmapSettings

from ._served_app import api_get, served_app, statements_sent

# Tiled's in-process Context imports starlette's TestClient, which warns that it prefers the
# httpx2 package (a UserWarning subclass, attributed to the import machinery).
pytestmark = [
    pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient` is deprecated"),
    pytest.mark.timeout(120),
]

ARRAY = "raw/run/x"


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> OpmapSettings:
    return OpmapSettings(data_dir=tmp_path_factory.mktemp("keycache"))


@pytest.fixture(scope="module")
def context(settings: OpmapSettings) -> Iterator[Context]:
    with served_app(settings, ARRAY, "pA") as context:
        yield context


@pytest.fixture
def authn_statements() -> Iterator[list[str]]:
    """Statements Tiled's own engines send to ``authn.db`` while the test runs."""
    with statements_sent("authn.db") as found:
        yield found


def _selects(statements: list[str]) -> int:
    return sum(statement.lstrip().upper().startswith("SELECT") for statement in statements)


def _get(context: Context, key: str, path: str = ARRAY) -> int:
    return api_get(context, key, f"array/full/{path}")[0]


def test_a_key_is_looked_up_once_until_the_key_database_changes(
    settings: OpmapSettings, context: Context, authn_statements: list[str]
) -> None:
    key = create_key(settings, "erin", "reader", proposals=["pA"])
    assert _get(context, key) == 200
    assert _selects(authn_statements) >= 1  # the one lookup
    authn_statements.clear()
    assert [_get(context, key) for _ in range(5)] == [200] * 5
    assert authn_statements == []
    create_key(settings, "frank", "reader", proposals=["pB"])  # any change to authn.db
    assert _get(context, key) == 200
    assert _selects(authn_statements) >= 1


def test_a_cached_key_is_refused_right_after_it_is_revoked(
    settings: OpmapSettings, context: Context
) -> None:
    key = create_key(settings, "grace", "reader", proposals=["pA"])
    assert [_get(context, key) for _ in range(3)] == [200] * 3
    revoke_key(settings, key[:8])
    assert _get(context, key) == 401


def test_a_cached_key_is_refused_once_it_expires(
    settings: OpmapSettings, context: Context
) -> None:
    key = create_key(
        settings, "heidi", "reader", proposals=["pA"], expires_in=timedelta(seconds=2)
    )
    assert _get(context, key) == 200
    assert _get(context, key) == 200  # from the cache
    expiry = next(info.expires for info in list_keys(settings) if info.first_eight == key[:8])
    assert expiry is not None
    time.sleep(max(0.0, expiry.timestamp() - time.time()) + 0.2)
    assert _get(context, key) == 401


def test_cached_keys_keep_their_proposals_and_role(
    settings: OpmapSettings, context: Context
) -> None:
    other = create_key(settings, "ivan", "reader", proposals=["pB"])
    assert [_get(context, other) for _ in range(3)] == [404] * 3  # invisible, every time
    reader = create_key(settings, "judy", "reader", proposals=["pA"])
    assert _get(context, reader) == 200
    headers = {"Authorization": f"Apikey {reader}"}
    body = {"metadata": {"touched": True}}
    response = context.http_client.put("/api/v1/metadata/raw/run", headers=headers, json=body)
    assert response.status_code == 401  # a reader may not write, cached or not


def test_the_auth_time_is_reported_in_server_timing(
    settings: OpmapSettings, context: Context
) -> None:
    key = create_key(settings, "ken", "reader", proposals=["pA"])
    headers = {"Authorization": f"Apikey {key}"}
    response = context.http_client.get(f"/api/v1/metadata/{ARRAY}", headers=headers)
    assert response.status_code == 200
    assert f"{SERVER_TIMING_KEY};dur=" in response.headers["Server-Timing"]


def test_last_used_is_recorded_for_a_cached_key(settings: OpmapSettings, context: Context) -> None:
    key = create_key(settings, "leo", "reader", proposals=["pA"])
    assert _get(context, key) == 200
    (info,) = [info for info in list_keys(settings) if info.first_eight == key[:8]]
    assert info.last_used is not None


@pytest.mark.parametrize("role", ["reader", "writer", "admin"])
def test_a_grant_matches_what_tiled_derives_for_the_key(
    settings: OpmapSettings, context: Context, role: str
) -> None:
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
    from tiled.authn_database.core import lookup_valid_api_key
    from tiled.server.authentication import (
        get_access_tags_from_api_key,
        get_scopes_from_api_key,
    )

    proposals = ["pA"] if role != "admin" else []
    key = create_key(settings, f"{role}-m", role, proposals=proposals)
    uri = f"sqlite+aiosqlite:///{settings.data_dir / 'authn.db'}"

    async def compare() -> None:
        engine = create_async_engine(uri)
        try:
            async with AsyncSession(engine, expire_on_commit=False) as db:
                grant = grant_from_orm(await lookup_valid_api_key(db, bytes.fromhex(key)))
                scopes = await get_scopes_from_api_key(key, None, True, db)  # type: ignore[arg-type]
                tags = await get_access_tags_from_api_key(key, True, db)
        finally:
            await engine.dispose()
        assert grant.scopes == frozenset(scopes)
        assert grant.access_tags == (None if tags is None else frozenset(tags))

    asyncio.run(compare())


def test_no_cache_for_a_single_user_app_or_a_database_that_is_not_a_sqlite_file(
    tmp_path: Path,
) -> None:
    single_user = build_in_process_app(OpmapSettings(data_dir=tmp_path / "one"))
    assert install_key_cache(single_user, "sqlite:///authn.db") is None

    two = OpmapSettings(data_dir=tmp_path / "two")
    authenticated = build_in_process_app(two, access_control=True)
    before = dict(authenticated.dependency_overrides)
    for uri in ("postgresql+asyncpg://u@h/db", "sqlite:///:memory:", None):
        assert install_key_cache(authenticated, uri) is None
    assert authenticated.dependency_overrides == before


def test_touch_interval_must_not_be_negative(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="touch_interval_s"):
        KeyGrantCache(tmp_path / "authn.db", touch_interval_s=-1.0)


def test_a_reader_walk_asks_for_tags_once_per_request_not_once_per_segment(
    settings: OpmapSettings, context: Context
) -> None:
    from tiled.client import from_context

    admin = from_context(context)
    reader_a = create_key(settings, "mia", "reader", proposals=["pA"])
    reader_b = create_key(settings, "ned", "reader", proposals=["pB"])
    deep = "raw/run/deep/er/y"
    assert _get(context, reader_a) == 200 and _get(context, reader_b) == 404  # keys resolved
    admin["raw/run"].create_container("deep").create_container("er").write_array(
        np.arange(4), key="y"
    )  # a commit: the next request finds nothing cached
    closure_queries: list[str] = []

    def count(conn, cursor, statement, params, context, executemany) -> None:
        if "nodes_closure" in statement and "access_tags" in statement:
            closure_queries.append(statement)

    event.listen(Engine, "before_cursor_execute", count)
    try:
        assert _get(context, reader_a, deep) == 200
        cold = len(closure_queries)
        assert _get(context, reader_a, deep) == 200
        warm = len(closure_queries) - cold
        assert _get(context, reader_b, deep) == 404
    finally:
        event.remove(Engine, "before_cursor_execute", count)
    assert 1 <= cold <= 2  # raw (untagged) and run (pA); below it is inherited
    assert warm == 0  # until the catalog changes (opmap.service._lookupcache)
