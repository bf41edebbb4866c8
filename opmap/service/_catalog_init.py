"""Initialise the catalog database in the server's own process.

A Tiled catalog tree with ``init_if_not_exists: true`` runs ``python -m tiled catalog init
--if-not-exists URI`` in a subprocess at every start (Tiled 0.2.20, ``tiled.catalog.from_uri``):
a second interpreter that imports Tiled again, ~4-5 s of CPU per server start on this
project's 2-core machines, even when the database exists. opmap does the same steps (check the
revision; create the tables of a new database; stamp the alembic head) here, on a short-lived
thread with its own event loop, so it works whether or not the caller runs an event loop; the
catalog tree (`opmap.service._guard.from_uri`) calls it and passes ``init_if_not_exists=False``
on to Tiled. The config file is unchanged and still serves with ``tiled serve config``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import warnings
from typing import Any

__all__ = ["init_catalog_database"]

logger = logging.getLogger(__name__)


def init_catalog_database(uri: str) -> None:
    """``tiled catalog init --if-not-exists uri``, in this process, on a short-lived thread.

    Parameters
    ----------
    uri : str
        Catalog database URI (``sqlite:///…``, ``postgresql://…``; Tiled's async driver is
        added when none is given).

    Raises
    ------
    tiled.alembic_utils.DatabaseUpgradeNeeded
        When the database exists at another schema revision (as ``tiled catalog init`` does).
    """
    _run_on_own_thread(_init_database, uri)


def _run_on_own_thread(function: Any, *args: Any) -> None:
    """Call ``function(*args)`` on a new thread and re-raise what it raised, here."""
    raised: list[BaseException] = []

    def target() -> None:
        try:
            function(*args)
        except BaseException as error:  # re-raised in the calling thread below
            raised.append(error)

    thread = threading.Thread(target=target, name="opmap-catalog-init")
    thread.start()
    thread.join()
    if raised:
        raise raised[0]


def _init_database(uri: str) -> None:
    """``tiled catalog init --if-not-exists uri``, in this process."""
    from tiled.alembic_utils import stamp_head
    from tiled.catalog.alembic_constants import ALEMBIC_DIR, ALEMBIC_INI_TEMPLATE_PATH
    from tiled.utils import ensure_specified_sql_driver

    uri = ensure_specified_sql_driver(uri)
    asyncio.run(_create_tables_if_new(uri))
    with warnings.catch_warnings():  # Tiled 0.2.20's alembic.ini template lacks path_separator
        warnings.filterwarnings("ignore", "No path_separator found", DeprecationWarning)
        stamp_head(ALEMBIC_INI_TEMPLATE_PATH, ALEMBIC_DIR, uri)


async def _create_tables_if_new(uri: str) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine
    from tiled.alembic_utils import UninitializedDatabase, check_database
    from tiled.catalog.core import ALL_REVISIONS, REQUIRED_REVISION, initialize_database

    engine = create_async_engine(uri)
    try:
        await check_database(engine, REQUIRED_REVISION, ALL_REVISIONS)
    except UninitializedDatabase:
        logger.info("catalog %s is new: creating its tables", engine.url.render_as_string())
        await initialize_database(engine)
    finally:
        await engine.dispose()
