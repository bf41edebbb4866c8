"""The HTTP request being served, for code deep inside Tiled that cannot see it.

Two of opmap's server hooks need to know what the current request is while Tiled's own
code calls them: the append-only check (``_append``: is this a ``PUT``/``PATCH`` of data,
and of which node) and the lookup cache (``_lookupcache``: only a ``GET`` or ``HEAD`` may
be answered from it). :class:`RequestScope`, a plain ASGI middleware outermost in the
app, keeps the request's method, path and query string in a context variable for the
time it is served; :func:`current_request` reads it.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

__all__ = ["RequestScope", "ServedRequest", "current_request"]

_READ_METHODS = frozenset({"GET", "HEAD"})


@dataclass(frozen=True)
class ServedRequest:
    """An HTTP request's method, path and query string, as its ASGI scope gave them.

    Attributes
    ----------
    method : str
        ``GET``, ``PUT``, ...
    path : str
        The URL path, e.g. ``/api/v1/array/full/raw/...``.
    query_string : bytes
        The raw query string (``latin-1``), without ``?``.
    append_only : bool
        Whether the server checks that a non-admin key's writes only append (off only in
        the benchmark that measures the check, ``serve --no-append-only``).
    """

    method: str
    path: str
    query_string: bytes = b""
    append_only: bool = True

    @property
    def is_read(self) -> bool:
        """True for ``GET`` and ``HEAD``: the request changes nothing."""
        return self.method in _READ_METHODS


_CURRENT: ContextVar[ServedRequest | None] = ContextVar("opmap_served_request", default=None)


def current_request() -> ServedRequest | None:
    """The HTTP request being served, or None outside one (a websocket, a test)."""
    return _CURRENT.get()


class RequestScope:
    """ASGI middleware: serves each HTTP request with it in :func:`current_request`.

    Parameters
    ----------
    app : ASGI application
        The Tiled app.
    append_only : bool
        Noted in each :class:`ServedRequest`: whether writes are checked to only append.
    """

    def __init__(self, app: Any, *, append_only: bool = True) -> None:
        self.app = app
        self.append_only = append_only

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Serve ``scope``; an HTTP request is noted for the time it is served."""
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        served = ServedRequest(
            scope.get("method", ""),
            scope.get("path", ""),
            scope.get("query_string", b""),
            append_only=self.append_only,
        )
        token = _CURRENT.set(served)
        try:
            await self.app(scope, receive, send)
        finally:
            _CURRENT.reset(token)
