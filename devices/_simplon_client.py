"""The Dectris SIMPLON REST API as an async HTTP client and an ophyd-async signal backend.

SIMPLON (API version e.g. ``1.8.0``) exposes every parameter as a resource
``/<subsystem>/api/<version>/<section>/<param>`` with ``subsystem`` in ``detector``,
``filewriter``, ``monitor``, ``stream`` and ``section`` in ``config``, ``status``,
``command``. A GET returns ``{"value": ..., "value_type": ..., ...}``; a PUT of
``{"value": ...}`` sets it and returns the list of parameters it changed. Commands are
PUTs without a body to ``/detector/api/<version>/command/<name>``.

Every request has a timeout, and every failure raises `SimplonError` naming the device
and the endpoint.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import httpx
from ophyd_async.core import SignalDatatypeT, SignalR, SignalRW, SoftSignalBackend

__all__ = [
    "DEFAULT_API_VERSION",
    "SimplonClient",
    "SimplonError",
    "SimplonSignalBackend",
    "simplon_r",
    "simplon_rw",
]

DEFAULT_API_VERSION = "1.8.0"
#: Timeout of one ordinary request (s); commands that last a series pass their own.
REQUEST_TIMEOUT_S = 10.0


class SimplonError(RuntimeError):
    """A SIMPLON request failed or the detector reported an error (names device and URL)."""


@dataclass
class SimplonClient:
    """One detector control unit (DCU) reached over HTTP.

    Parameters
    ----------
    base_url
        ``http://host:port`` of the DCU.
    api_version
        SIMPLON API version in the URLs.
    timeout_s
        Timeout of an ordinary request (s).
    label
        Name used in error messages (the device name).
    """

    base_url: str
    api_version: str = DEFAULT_API_VERSION
    timeout_s: float = REQUEST_TIMEOUT_S
    label: str = "simplon"
    _http: httpx.AsyncClient | None = field(default=None, repr=False)

    def url(self, subsystem: str, section: str, param: str) -> str:
        """Full URL of one SIMPLON resource."""
        base = self.base_url.rstrip("/")
        return f"{base}/{subsystem}/api/{self.api_version}/{section}/{param}"

    async def get(self, subsystem: str, section: str, param: str) -> Any:
        """GET a resource and return its ``value``."""
        url = self.url(subsystem, section, param)
        body = await self._request("GET", url, None, self.timeout_s)
        if not isinstance(body, dict) or "value" not in body:
            raise SimplonError(f"{self.label}: GET {url} returned no 'value': {body!r}")
        return body["value"]

    async def put(self, subsystem: str, section: str, param: str, value: Any) -> Any:
        """PUT ``{"value": value}`` to a resource; return the reply (changed parameters)."""
        url = self.url(subsystem, section, param)
        return await self._request("PUT", url, {"value": value}, self.timeout_s)

    async def command(self, name: str, *, timeout_s: float | None = None) -> Any:
        """PUT a detector command (``arm``, ``trigger``, ``disarm``, ``abort``, ``cancel``)."""
        url = self.url("detector", "command", name)
        return await self._request("PUT", url, None, timeout_s or self.timeout_s)

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def _request(self, method: str, url: str, body: Any, timeout_s: float) -> Any:
        # The pool is made in the running loop (the RunEngine's), never at import.
        if self._http is None:
            self._http = httpx.AsyncClient()
        try:
            reply = await self._http.request(method, url, json=body, timeout=timeout_s)
        except httpx.TimeoutException as err:
            message = f"{self.label}: {method} {url} timed out after {timeout_s} s"
            raise SimplonError(message) from err
        except httpx.HTTPError as err:
            raise SimplonError(f"{self.label}: {method} {url} failed: {err!r}") from err
        if reply.status_code >= 400:
            raise SimplonError(
                f"{self.label}: {method} {url} answered HTTP {reply.status_code}: "
                f"{reply.text.strip()[:200]!r}"
            )
        return reply.json() if reply.content else None


def _to_wire(value: Any) -> Any:
    return value.value if isinstance(value, enum.Enum) else value


class SimplonSignalBackend(SoftSignalBackend[SignalDatatypeT]):
    """A signal on one SIMPLON resource: GET on read, PUT on set, polled when monitored.

    Parameters
    ----------
    datatype
        Python type of the value (``float``, ``int``, ``bool``, ``str`` or a `StrictEnum`).
    client
        The DCU.
    subsystem, section, param
        The resource, e.g. ``("detector", "config", "count_time")``.
    units
        Units of the value, for the data key.
    poll_period_s
        Poll period while subscribed (s).
    """

    def __init__(
        self,
        datatype: type[SignalDatatypeT],
        client: SimplonClient,
        subsystem: str,
        section: str,
        param: str,
        *,
        units: str | None = None,
        poll_period_s: float = 0.5,
    ) -> None:
        self.client, self.resource = client, (subsystem, section, param)

        async def getter() -> Any:
            return await client.get(*self.resource)

        async def setter(value: Any) -> None:
            await client.put(*self.resource, _to_wire(value))

        super().__init__(
            datatype, units=units, getter=getter, setter=setter, poll_period=poll_period_s
        )

    def source(self, name: str, read: bool) -> str:
        return self.client.url(*self.resource)

    async def connect(self, timeout: float) -> None:
        # A first GET proves the resource exists (and fills the cached reading).
        await self._update_value_from_getter()


def simplon_rw(
    datatype: type[SignalDatatypeT],
    client: SimplonClient,
    subsystem: str,
    param: str,
    *,
    units: str | None = None,
) -> SignalRW[SignalDatatypeT]:
    """A read-write signal on ``/<subsystem>/api/<v>/config/<param>``."""
    backend = SimplonSignalBackend(datatype, client, subsystem, "config", param, units=units)
    return SignalRW(backend)


def simplon_r(
    datatype: type[SignalDatatypeT],
    client: SimplonClient,
    subsystem: str,
    section: str,
    param: str,
    *,
    units: str | None = None,
) -> SignalR[SignalDatatypeT]:
    """A read-only signal on ``/<subsystem>/api/<v>/<section>/<param>``."""
    backend = SimplonSignalBackend(datatype, client, subsystem, section, param, units=units)
    return SignalR(backend)
