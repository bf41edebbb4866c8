"""Logging of the opmap Tiled server: Tiled's layout, with secrets cut out of the access log.

Tiled accepts an API key as the query parameter ``?api_key=KEY`` (curl users, old
profiles) and uvicorn's access log writes the request line verbatim, so the key would land
in the log. :class:`RedactingAccessFormatter` replaces the value of every credential
parameter (:data:`SECRET_PARAMETERS`) with ``[redacted]`` before the line is formatted;
other parameters (``slice=``, ``format=``) stay, they are useful when reading the log.

Examples
--------
>>> redact_request_line("GET /api/v1/?api_key=s3cr3t&slice=0:2 HTTP/1.1")
'GET /api/v1/?api_key=[redacted]&slice=0:2 HTTP/1.1'
"""

from __future__ import annotations

import copy
import logging
import re
from typing import Any

from tiled.server.logging_config import LOGGING_CONFIG, AccessFormatter

__all__ = [
    "SECRET_PARAMETERS",
    "RedactingAccessFormatter",
    "logging_config",
    "redact_request_line",
]

#: Query parameters whose values never reach a log.
SECRET_PARAMETERS = ("api_key", "access_token", "refresh_token", "code", "state", "password")
_SECRET = re.compile(
    r"(?P<name>(?:^|[?&;])(?:" + "|".join(SECRET_PARAMETERS) + r")=)[^&;#\s]*", re.IGNORECASE
)


def redact_request_line(text: str) -> str:
    """Replace the values of credential query parameters in ``text`` by ``[redacted]``."""
    return _SECRET.sub(r"\g<name>[redacted]", text)


class RedactingAccessFormatter(AccessFormatter):
    """Tiled's access-log formatter, with credential query parameters redacted.

    Redaction runs after Tiled percent-decodes the path, so an encoded ``api%5Fkey``
    is caught too.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:
        """Format like Tiled, then redact the request line."""
        return redact_request_line(super().formatMessage(record))


def logging_config() -> dict[str, Any]:
    """Tiled's uvicorn logging config with :class:`RedactingAccessFormatter` for access lines.

    Colours are off: the log usually goes to a file.
    """
    config = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["access"]["()"] = f"{__name__}.RedactingAccessFormatter"
    for formatter in config["formatters"].values():
        formatter["use_colors"] = False
    return config
