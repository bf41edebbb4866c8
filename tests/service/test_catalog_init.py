"""The catalog database is initialised in the server's process, not in a second interpreter."""

from __future__ import annotations

import asyncio
import importlib

import pytest
from sqlalchemy.ext.asyncio import create_async_engine
from tiled.alembic_utils import check_database, get_current_revision
from tiled.catalog.core import ALL_REVISIONS, REQUIRED_REVISION

from opmap.service import CATALOG_TREE, init_catalog_database


async def _revision(uri: str) -> str | None:
    engine = create_async_engine(uri)
    try:
        await check_database(engine, REQUIRED_REVISION, ALL_REVISIONS)
        return await get_current_revision(engine, ALL_REVISIONS)
    finally:
        await engine.dispose()


def test_a_new_database_gets_tables_and_the_alembic_head_and_a_second_call_keeps_it(tmp_path):
    uri = f"sqlite+aiosqlite:///{tmp_path / 'catalog.db'}"
    init_catalog_database(uri)
    assert asyncio.run(_revision(uri)) == REQUIRED_REVISION
    init_catalog_database(uri)  # --if-not-exists: an initialised database is left as it is
    assert asyncio.run(_revision(uri)) == REQUIRED_REVISION


async def test_it_works_while_the_caller_runs_an_event_loop(tmp_path):
    uri = f"sqlite+aiosqlite:///{tmp_path / 'catalog.db'}"
    init_catalog_database(uri)  # on its own thread: no "asyncio.run() cannot be called" error
    assert await _revision(uri) == REQUIRED_REVISION


def test_the_catalog_tree_starts_no_tiled_subprocess(tmp_path, monkeypatch):
    import subprocess

    def refuse(*args, **kwargs):
        raise AssertionError(f"a subprocess was started: {args}")

    monkeypatch.setattr(subprocess, "run", refuse)
    (tmp_path / "files").mkdir()
    module, name = CATALOG_TREE.split(":")
    adapter = getattr(importlib.import_module(module), name)(
        f"sqlite:///{tmp_path / 'catalog.db'}",
        init_if_not_exists=True,
        writable_storage=[str(tmp_path / "files")],
    )
    assert adapter is not None
    assert asyncio.run(_revision(f"sqlite+aiosqlite:///{tmp_path / 'catalog.db'}")) == (
        REQUIRED_REVISION
    )


def test_a_database_at_another_revision_is_refused_not_restamped(tmp_path):
    from tiled.alembic_utils import DatabaseUpgradeNeeded

    uri = f"sqlite+aiosqlite:///{tmp_path / 'catalog.db'}"
    init_catalog_database(uri)
    older = next(r for r in ALL_REVISIONS if r != REQUIRED_REVISION)
    asyncio.run(_set_revision(uri, older))
    with pytest.raises(DatabaseUpgradeNeeded):
        init_catalog_database(uri)


async def _set_revision(uri: str, revision: str) -> None:
    from sqlalchemy import text

    engine = create_async_engine(uri)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                text("UPDATE alembic_version SET version_num = :r"), {"r": revision}
            )
    finally:
        await engine.dispose()
