"""Retry a Tiled write through transient failures, with backoff, for a bounded time.

A loaded machine or a restarting server answers late (``httpx.ReadTimeout``), not at all
(``ConnectError``: connection refused) or with a 5xx. The Tiled client already retries most
single requests for up to ``TILED_RETRY_TIMEOUT`` (45 s), but not appends (a read timeout may
come after the rows landed) and not across a whole map's worth of requests.
:func:`retry_transient` re-runs an *idempotent* action (re-writing map k replaces map k;
see :class:`~.TiledProductWriter`) until it succeeds or its time is up, then raises
:class:`TiledUnavailableError`; anything else (a 4xx, a ``ValueError``) is raised at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import httpx

__all__ = ["TiledUnavailableError", "is_transient", "retry_transient"]

logger = logging.getLogger(__name__)
T = TypeVar("T")
_HTTP_TOO_MANY = 429
_HTTP_SERVER_ERROR = 500


class TiledUnavailableError(RuntimeError):
    """Tiled still failed with transient errors when the retry time was up."""


def is_transient(error: BaseException) -> bool:
    """True for errors worth retrying: transport errors, 5xx and 429 answers.

    Examples
    --------
    >>> is_transient(httpx.ReadTimeout("slow server"))
    True
    >>> is_transient(ValueError("bad shape"))
    False
    """
    if isinstance(error, httpx.HTTPStatusError):
        status = error.response.status_code
        return status >= _HTTP_SERVER_ERROR or status == _HTTP_TOO_MANY
    return isinstance(error, httpx.TransportError)


def retry_transient(
    action: Callable[[], T],
    *,
    what: str,
    total_s: float = 300.0,
    first_wait_s: float = 1.0,
    max_wait_s: float = 30.0,
    sleep: Callable[[float], object] | None = None,
) -> T:
    """Run ``action()`` until it succeeds, retrying transient errors for ``total_s``.

    Parameters
    ----------
    action : callable
        An idempotent action (running it twice has the effect of running it once).
    what : str
        What is written, for the log (e.g. ``"cell-7: products of map 12"``).
    total_s : float
        Time after which a transient error is no longer retried (s, > 0).
    first_wait_s, max_wait_s : float
        The first wait between attempts (s), doubled after each failure up to
        ``max_wait_s``.
    sleep : callable
        ``sleep(seconds)`` between attempts (``time.sleep``).

    Returns
    -------
    The value of ``action()``.

    Raises
    ------
    TiledUnavailableError
        When the last attempt failed with a transient error after ``total_s`` (the error
        is chained); every retry and the final failure are logged.
    ValueError
        For a ``total_s``, ``first_wait_s`` or ``max_wait_s`` that is not > 0.
    """
    for name, value in (("total_s", total_s), ("first_wait_s", first_wait_s)):
        if not value > 0:
            raise ValueError(f"{name} must be > 0 s; got {value}")
    if not max_wait_s >= first_wait_s:
        raise ValueError(f"max_wait_s must be >= first_wait_s ({first_wait_s}); got {max_wait_s}")
    deadline = time.monotonic() + total_s
    wait_s, attempt = first_wait_s, 1
    while True:
        try:
            return action()
        except Exception as error:
            if not is_transient(error):
                raise
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                logger.error("%s: failed %d times over %.0f s: %r", what, attempt, total_s, error)
                raise TiledUnavailableError(
                    f"{what}: still failing after {attempt} attempts over {total_s:.0f} s "
                    f"({type(error).__name__}: {error})"
                ) from error
            pause_s = min(wait_s, remaining_s)
            logger.warning(
                "%s: attempt %d failed (%r); retrying in %.1f s", what, attempt, error, pause_s
            )
            (sleep or time.sleep)(pause_s)
            wait_s, attempt = min(2 * wait_s, max_wait_s), attempt + 1
