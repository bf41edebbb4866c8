"""The live web page of an experiment, served by the Tiled server next to its API.

``opmap serve`` (and every server opmap starts) mounts one static page at
:data:`LIVE_PAGE_PATH` (``/opmap/live/``). The page is plain HTML + JavaScript with no
external resource (no CDN: it works on a beamline network with no internet). It reads
Tiled's own HTTP API from the same origin, with the API key in the ``Authorization``
header, never in a URL the server logs:

- the key comes from the address's *fragment* (``#key=...``, which browsers never send to
  the server) or from the page's key field; the page then removes it from the address bar
  and keeps it in the tab's ``sessionStorage`` only;
- ``#experiment=ID`` picks an experiment; default: the experiment of the latest raw run;
- ``#poll=S`` polls every S seconds (default 5).

It shows the latest c and x maps per orientation family, the phase maps, the
electrochemistry curve with the map times marked, grain counts against time and the status of
the latest run, and redraws as new maps land in ``processed/<experiment>/vN``. The values a
test or a user may want to compare are DOM text with ids (``n-maps``, ``status``,
``c-mean-<family>``, ``x-mean-<family>``, ...; see ``docs/remote-operation.md``).

Examples
--------
>>> live_page_url("http://127.0.0.1:8000", experiment_id="lco-1", poll_s=2)
'http://127.0.0.1:8000/opmap/live/#experiment=lco-1&poll=2'
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["LIVE_PAGE_PATH", "STATIC_DIR", "live_page_url", "mount_live_page"]

#: Where the page is served on the Tiled server.
LIVE_PAGE_PATH = "/opmap/live"
#: The page's files (``index.html``, ``live.js``, ``live.css``), shipped with the package.
STATIC_DIR = Path(__file__).resolve().parent / "static"


def mount_live_page(app: FastAPI) -> FastAPI:
    """Serve the live page's static files at :data:`LIVE_PAGE_PATH` on ``app``; return it.

    The files hold no data and no key: everything the page shows it reads from Tiled's API
    with the user's key, so they are served without authentication.
    """
    from starlette.staticfiles import StaticFiles

    app.mount(LIVE_PAGE_PATH, StaticFiles(directory=STATIC_DIR, html=True), name="opmap-live")
    return app


def live_page_url(
    base_url: str,
    *,
    experiment_id: str | None = None,
    api_key: str | None = None,
    poll_s: float | None = None,
) -> str:
    """The page's address on the server ``base_url``, options in the fragment.

    Parameters
    ----------
    base_url : str
        ``http(s)://host:port`` of the Tiled server.
    experiment_id : str, optional
        Experiment to show; default: the one of the latest raw run.
    api_key : str, optional
        Put into the fragment (never sent to the server, removed by the page at once).
        Leave it out for an address you share: the page asks for the key.
    poll_s : float, optional
        Seconds between polls (> 0); default 5.

    Raises
    ------
    ValueError
        For a base URL that is not ``http(s)://`` or a non-positive ``poll_s``.
    """
    if not base_url.startswith(("http://", "https://")) or "?" in base_url or "#" in base_url:
        raise ValueError(f"base_url must be http(s)://host:port; got {base_url!r}")
    if poll_s is not None and not poll_s > 0:
        raise ValueError(f"poll_s must be > 0 s; got {poll_s}")
    options = {"experiment": experiment_id, "key": api_key, "poll": poll_s}
    fragment = "&".join(
        f"{name}={quote(str(value), safe='')}" for name, value in options.items() if value
    )
    page = f"{base_url.rstrip('/')}{LIVE_PAGE_PATH}/"
    return f"{page}#{fragment}" if fragment else page
