"""Refuse an ``api_key`` query parameter that no key could be, before Tiled reads it.

Tiled 0.2.20 copies a request's ``api_key`` query parameter into a cookie of the response
(``set_cookies`` in ``tiled.server.app``). A value that latin-1 cannot encode, which a
client may send percent-encoded, makes Starlette's ``set_cookie`` raise: a 500 on any route
(the schemathesis fuzz of ``make fuzz`` found ~270 of them, `docs/operations.md`). opmap's
keys, and the ones Tiled makes for ``opmap keys``, are letters and digits
(`opmap.settings.check_api_key_strength`), so :class:`ApiKeyQueryGuard` answers any other
value 401, naming the parameter and never echoing its value.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qsl

__all__ = ["API_KEY_QUERY_REFUSAL", "ApiKeyQueryGuard", "malformed_api_key_query"]

_KEY = re.compile(r"[A-Za-z0-9]*")
#: What the refused client is told (the value is never echoed, not even in part).
API_KEY_QUERY_REFUSAL = (
    "api_key: a key is letters and digits only; this query parameter holds something else"
)


def malformed_api_key_query(query_string: bytes) -> bool:
    """Whether ``query_string`` holds an ``api_key`` no key could be (not letters and digits).

    Parameters
    ----------
    query_string : bytes
        The raw query string of an ASGI scope (without ``?``).

    Returns
    -------
    bool
        True when some ``api_key`` value, percent-decoded as Starlette decodes it, holds
        anything but ASCII letters and digits.

    Examples
    --------
    >>> malformed_api_key_query(b"api_key=0123abcDEF&slice=0:2")
    False
    >>> malformed_api_key_query(b"api_key=%F3%A0%80%80")
    True
    >>> malformed_api_key_query(b"slice=%F3%A0%80%80")
    False
    """
    pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
    return any(name == "api_key" and not _KEY.fullmatch(value) for name, value in pairs)


class ApiKeyQueryGuard:
    """ASGI middleware: answers 401 to an HTTP request whose ``api_key`` cannot be a key.

    Parameters
    ----------
    app : ASGI application
        The Tiled app; every other request goes to it unchanged.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Serve ``scope``, or refuse it before the app sees it."""
        if scope.get("type") != "http" or not malformed_api_key_query(
            scope.get("query_string", b"")
        ):
            await self.app(scope, receive, send)
            return
        body = json.dumps({"detail": API_KEY_QUERY_REFUSAL}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"www-authenticate", b"Apikey"),
        ]
        await send({"type": "http.response.start", "status": 401, "headers": headers})
        await send({"type": "http.response.body", "body": body})
