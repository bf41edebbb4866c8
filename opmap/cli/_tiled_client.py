"""The Tiled client of an ``--settings`` file, with connection failures as clear errors.

A stopped server, a refused key or a server error become a ``ValueError`` naming the URL
and what to do, so the commands exit with status 2 and a message instead of a traceback.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["client_from_settings", "tiled_error_message"]


def client_from_settings(settings_path: Path) -> Any:
    """Connect to the server that ``settings_path`` (OpmapSettings TOML) describes.

    The key is ``api_key``, else ``$TILED_API_KEY``, else the content of ``api_key_file``.

    Raises
    ------
    ValueError
        Unreadable settings, no server answering, or the key refused (401/403).
    """
    import httpx
    from tiled.client import from_uri

    from opmap.settings import OpmapSettings

    if not Path(settings_path).is_file():
        raise ValueError(f"--settings {settings_path}: file not found")
    settings = OpmapSettings.from_toml(settings_path)
    key = settings.api_key or os.environ.get("TILED_API_KEY")
    if key is None and settings.api_key_file is not None and settings.api_key_file.exists():
        key = settings.api_key_file.read_text().strip()
    _check_answering(settings.host, settings.port, settings.url)
    try:
        return from_uri(settings.url, api_key=key)
    except httpx.HTTPError as error:
        raise ValueError(tiled_error_message(error, settings.url)) from None


def tiled_error_message(error: Exception, url: str) -> str:
    """One line saying what a Tiled client error means for the user.

    Examples
    --------
    >>> import httpx
    >>> tiled_error_message(httpx.ConnectError("refused"), "http://127.0.0.1:8000")
    'no Tiled server answers at http://127.0.0.1:8000 (refused); is `opmap serve` running there?'
    """
    import httpx

    if isinstance(error, httpx.TransportError):
        return f"no Tiled server answers at {url} ({error}); is `opmap serve` running there?"
    if isinstance(error, httpx.HTTPStatusError):
        status = error.response.status_code
        if status in (401, 403):
            return (
                f"the Tiled server at {url} refused the API key ({status}); use the key of "
                "DATA_DIR/api-key or one from `opmap keys create` (api_key_file in "
                "--settings, or $TILED_API_KEY)"
            )
        return f"the Tiled server at {url} answered {status}: {error}"
    return f"Tiled request to {url} failed: {error}"


def _check_answering(host: str, port: int, url: str, timeout_s: float = 5.0) -> None:
    """Fail at once when nothing listens (Tiled's client would retry for half a minute)."""
    import socket

    connect_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    try:
        with socket.create_connection((connect_host, port), timeout=timeout_s):
            pass
    except OSError as error:
        raise ValueError(
            f"no Tiled server answers at {url} ({error}); is `opmap serve` running there?"
        ) from None
