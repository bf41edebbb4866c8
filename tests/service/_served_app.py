"""The served app built in this test process, and the SQL statements it sends.

Shared by the key-cache and lookup-cache tests: the app is the served configuration
(roles, proposals, sealing) built in process (``build_in_process_app``), so the statements
Tiled sends to ``authn.db`` or ``catalog.db`` can be counted with SQLAlchemy's events.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
from sqlalchemy import event
from sqlalchemy.engine import Engine
from tiled.client import Context, from_context

from opmap.service import build_in_process_app
from opmap.settings import OpmapSettings

#: (statement, database file name) -> None
StatementSink = Callable[[str, str], None]


@contextmanager
def served_app(settings: OpmapSettings, array_path: str, tag: str) -> Iterator[Context]:
    """A client context on the served app, as the admin, with one small array stored.

    Parameters
    ----------
    settings : OpmapSettings
        Where the server's databases and data go.
    array_path : str
        ``top/run/key``: the containers are created, ``run`` tagged with ``tag``, and
        ``key`` written as an array of six floats.
    tag : str
        The proposal of the run container.
    """
    top, run, key = array_path.split("/")
    app = build_in_process_app(settings, access_control=True)
    with Context.from_app(app, api_key=admin_key(settings)) as context:
        root = from_context(context)
        container = root.create_container(top).create_container(run, access_tags=[tag])
        container.write_array(np.arange(6.0), key=key)
        yield context


def admin_key(settings: OpmapSettings) -> str:
    """The server's admin API key, as ``opmap serve`` wrote it."""
    return (settings.data_dir / "admin-key").read_text().strip()


def api_get(context: Context, key: str, path: str) -> tuple[int, dict]:
    """``GET /api/v1/{path}`` with ``key``: the status and, on 200, the JSON body."""
    headers = {"Authorization": f"Apikey {key}", "Accept": "application/json"}
    response = context.http_client.get(f"/api/v1/{path}", headers=headers)
    return response.status_code, response.json() if response.status_code == 200 else {}


@contextmanager
def statements_sent(database_file: str) -> Iterator[list[str]]:
    """Collects the SQL statements sent to the database file named ``database_file``
    (e.g. ``catalog.db``) by any engine in this process while the block runs."""
    found: list[str] = []

    def note(conn, cursor, statement, params, context, executemany) -> None:
        if (conn.engine.url.database or "").endswith(database_file):
            found.append(statement)

    event.listen(Engine, "before_cursor_execute", note)
    try:
        yield found
    finally:
        event.remove(Engine, "before_cursor_execute", note)
