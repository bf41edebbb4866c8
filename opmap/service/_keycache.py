"""Resolve an API key once per change of the key database, not four times per request.

Why
    Tiled 0.2.20 resolves the ``Authorization: Apikey KEY`` of every request in four
    dependencies (principal, scopes twice, access tags), each a SQLite lookup of the key
    with its principal, roles, identities and sessions (four queries), and writes the key's
    ``latest_activity`` with a commit: 17 statements through aiosqlite, about 20 ms of the
    38 ms metadata floor measured on 2 cores (docs/tiled-service.md, "Fetch latency").

What opmap does
    The three dependencies are overridden on the app (FastAPI's ``dependency_overrides``,
    the app's own mechanism; Tiled's code is not changed). A key is looked up with Tiled's
    ``lookup_valid_api_key`` and its principal, scopes and proposals are derived exactly as
    Tiled derives them; the result (a :class:`KeyGrant`) is kept in memory, under the key's
    SHA-256, until the key database changes.

Why this keeps Tiled's security
    "Until the key database changes" is exact: SQLite's ``PRAGMA data_version``, read on a
    connection of our own before every request, changes whenever *any other* connection
    (``opmap keys revoke`` in another process, Tiled deleting an expired key, an admin
    minting a key over HTTP) commits to ``authn.db``; then every grant is dropped. A key
    past its ``expiration_time`` is refused at the request it expires, as before. Requests
    without an API key, keys the database does not hold, non-hex keys and any database
    error go through Tiled's own dependencies unchanged. The one difference: a key's
    ``latest_activity`` ("last used" in ``opmap keys list``) is written at most once per
    :data:`TOUCH_INTERVAL_S`, on our connection, so the write does not itself drop the grants.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import create_engine, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import StaticPool

if TYPE_CHECKING:
    from fastapi import FastAPI
    from sqlalchemy.engine import Engine

__all__ = [
    "SERVER_TIMING_KEY",
    "TOUCH_INTERVAL_S",
    "KeyGrant",
    "KeyGrantCache",
    "grant_from_orm",
    "install_key_cache",
]

logger = logging.getLogger(__name__)

#: How often a key's ``latest_activity`` is written while it is in use (s).
TOUCH_INTERVAL_S = 60.0
#: Name of the API-key time in the ``Server-Timing`` response header (ms, all three lookups).
SERVER_TIMING_KEY = "auth"
#: Most grants kept (one per valid key in use; the cache is emptied beyond that).
MAX_GRANTS = 4096


@dataclass(frozen=True)
class KeyGrant:
    """What one API key may do, as Tiled derives it from the key database.

    Attributes
    ----------
    principal : object
        Tiled's ORM principal of the key (loaded with roles, identities and sessions).
    scopes : frozenset of str
        The key's scopes, limited to its principal's roles (``inherit`` expanded).
    access_tags : frozenset of str or None
        The proposals the key is restricted to; None for an unrestricted key.
    expires_at : datetime or None
        The key's expiration time (UTC); None if it never expires.
    first_eight : str
        The key's first eight hex digits (its row in the database).
    """

    principal: Any
    scopes: frozenset[str]
    access_tags: frozenset[str] | None
    expires_at: datetime | None
    first_eight: str

    def expired(self, now: datetime) -> bool:
        """True when the key has expired at ``now`` (aware UTC datetime)."""
        return self.expires_at is not None and self.expires_at <= now


def grant_from_orm(api_key_orm: Any) -> KeyGrant:
    """The grant of a valid key row, derived as Tiled's ``authentication`` module does."""
    from tiled.access_control.protocols import normalize_access_tags

    principal = api_key_orm.principal
    principal_scopes = set().union(*[role.scopes for role in principal.roles])
    scopes = set(api_key_orm.scopes) & (principal_scopes | {"inherit"})
    if "inherit" in scopes:
        scopes |= principal_scopes
    tags = api_key_orm.access_tags
    expires = api_key_orm.expiration_time
    return KeyGrant(
        principal=principal,
        scopes=frozenset(scopes),
        access_tags=None if tags is None else frozenset(normalize_access_tags(tags)),
        expires_at=None if expires is None else expires.replace(tzinfo=UTC),
        first_eight=api_key_orm.first_eight,
    )


class KeyGrantCache:
    """Grants of the keys in use, valid while ``PRAGMA data_version`` of the database holds.

    Parameters
    ----------
    database_path : Path
        Tiled's authentication database (SQLite), ``DATA_DIR/authn.db``.
    touch_interval_s : float
        How often a key's ``latest_activity`` is written while in use (s, >= 0).
    """

    def __init__(self, database_path: Path, *, touch_interval_s: float = TOUCH_INTERVAL_S):
        if not touch_interval_s >= 0:
            raise ValueError(f"touch_interval_s must be >= 0 s; got {touch_interval_s}")
        self.database_path = Path(database_path)
        self.touch_interval_s = touch_interval_s
        self._grants: dict[bytes, KeyGrant] = {}
        self._touched: dict[bytes, float] = {}
        self._version: int | None = None
        self._engine: Engine | None = None
        self._connection: sqlite3.Connection | None = None
        self.hits = self.misses = 0

    def data_version(self) -> int | None:
        """The database's change counter as seen from our connection; None if unreadable."""
        try:
            if self._connection is None:
                self._open()
            assert self._connection is not None
            return int(self._connection.execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.Error as error:  # locked by a writer right now, or gone
            logger.debug("Key cache: %s unreadable (%s); using Tiled's lookup", self, error)
            return None

    def _open(self) -> None:
        # timeout=0: a locked database is reported at once (we fall back to Tiled's path)
        # instead of blocking the event loop.
        connection = sqlite3.connect(self.database_path, timeout=0, check_same_thread=False)
        self._engine = create_engine("sqlite://", creator=lambda: connection, poolclass=StaticPool)
        self._connection = connection

    def lookup(self, secret: bytes) -> KeyGrant | None:
        """The cached grant of ``secret`` if the database has not changed since; else None."""
        version = self.data_version()
        if version is None or version != self._version:
            self._grants.clear()
            self._version = version
            return None
        grant = self._grants.get(hashlib.sha256(secret).digest())
        if grant is None or grant.expired(datetime.now(UTC)):
            return None
        self.hits += 1
        self._touch(secret, grant)
        return grant

    async def resolve(self, secret: bytes, db_factory: Callable[[], Any]) -> KeyGrant | None:
        """Look ``secret`` up in the database (Tiled's query); keep and return its grant.

        None when the database does not hold it as a valid key (Tiled then answers).
        """
        from tiled.authn_database.core import lookup_valid_api_key

        self.misses += 1
        version = self.data_version()  # read *before* the lookup: a later change drops it
        async with db_factory() as db:
            api_key_orm = await lookup_valid_api_key(db, secret)
        if api_key_orm is None or version is None:
            return None
        grant = grant_from_orm(api_key_orm)
        if version == self._version:
            if len(self._grants) >= MAX_GRANTS:
                self._grants.clear()
            self._grants[hashlib.sha256(secret).digest()] = grant
        self._touch(secret, grant)
        return grant

    def _touch(self, secret: bytes, grant: KeyGrant) -> None:
        """Write the key's ``latest_activity`` if not written for ``touch_interval_s``."""
        from tiled.authn_database import orm

        digest = hashlib.sha256(secret).digest()
        now = time.monotonic()
        if now - self._touched.get(digest, -float("inf")) < self.touch_interval_s:
            return
        table = orm.APIKey.__table__
        statement = (
            update(table)
            .where(table.c.first_eight == grant.first_eight, table.c.hashed_secret == digest)
            .values(latest_activity=datetime.now(UTC).replace(microsecond=0))
        )
        try:
            assert self._engine is not None
            with self._engine.begin() as connection:
                connection.execute(statement)
        except DBAPIError as error:  # a busy database: try again at the next request
            logger.debug("Key cache: latest_activity not written (%s)", error)
            return
        if len(self._touched) >= MAX_GRANTS:
            self._touched.clear()
        self._touched[digest] = now

    def close(self) -> None:
        """Close our database connection."""
        if self._engine is not None:
            self._engine.dispose()
        if self._connection is not None:
            self._connection.close()
        self._engine = self._connection = None

    def __repr__(self) -> str:
        return f"KeyGrantCache({str(self.database_path)!r})"


def _secret(api_key: str | None) -> bytes | None:
    if api_key is None:
        return None
    try:
        return bytes.fromhex(api_key)
    except ValueError:
        return None  # Tiled answers: not a key


def _override(
    original: Callable[..., Awaitable[Any]],
    cache: KeyGrantCache,
    answer: Callable[[KeyGrant, dict[str, Any]], Any],
) -> Callable[..., Awaitable[Any]]:
    """``original`` (same parameters, so the same sub-dependencies), answered from a grant."""

    @functools.wraps(original)
    async def dependency(**kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            secret = _secret(kwargs.get("api_key"))
            grant = None if secret is None else cache.lookup(secret)
            if grant is None and secret is not None:
                grant = await cache.resolve(secret, kwargs["db_factory"])
            if grant is None:
                return await original(**kwargs)
            return answer(grant, kwargs)
        finally:
            _record(kwargs["request"], time.perf_counter() - started)

    return dependency


def _record(request: Any, duration_s: float) -> None:
    """Add ``duration_s`` to the request's ``auth`` entry of Tiled's Server-Timing header."""
    metrics = getattr(request.state, "metrics", None)
    if metrics is not None:
        metrics[SERVER_TIMING_KEY]["dur"] += duration_s


def _principal(grant: KeyGrant, kwargs: dict[str, Any]) -> Any:
    kwargs["request"].state.principal = grant.principal  # the access log's principal
    return grant.principal


def install_key_cache(app: FastAPI, database_uri: str | None) -> KeyGrantCache | None:
    """Answer the app's API-key dependencies from a :class:`KeyGrantCache`.

    Parameters
    ----------
    app : FastAPI
        A Tiled app with authentication (``app.state.authenticated``).
    database_uri : str or None
        Its authentication database; only a SQLite file is cached.

    Returns
    -------
    KeyGrantCache or None
        None (nothing installed) for a single-user app or a database other than a SQLite
        file: Tiled's dependencies answer as before.
    """
    from tiled.server import authentication as authn

    if not getattr(app.state, "authenticated", False) or database_uri is None:
        return None
    url = make_url(database_uri)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        logger.info("Key cache off: the key database %s is not a SQLite file", url.drivername)
        return None
    cache = KeyGrantCache(Path(url.database))
    overrides = {
        authn.get_current_principal: _principal,
        authn.get_current_scopes: lambda grant, _: set(grant.scopes),
        authn.get_current_access_tags: lambda grant, _: grant.access_tags,
    }
    for original, answer in overrides.items():
        app.dependency_overrides[original] = _override(original, cache, answer)
    app.state.opmap_key_cache = cache
    return cache
