"""Reading opmap products over plain HTTP, for collaborators without the Tiled client.

Tiled serves every node at ``/api/v1/array/full/<path>`` (arrays) and
``/api/v1/table/full/<path>`` (tables); the API key travels in the header
``Authorization: Apikey KEY`` (a request without it is answered 401). Formats served by
the opmap server for arrays: ``application/json`` (nested lists) and
``application/octet-stream`` (raw C-order bytes; dtype and shape come from
``/api/v1/metadata/<path>``); for tables: ``text/csv``, ``application/json`` and
Apache Arrow. A slice (numpy syntax, ``"3"`` or ``"0:2,:,10"``) is cut on the server.

Every request waits up to ``REQUEST_TIMEOUT`` (30 s to read, 5 s to connect); a transport
error (timeout, refused connection while the server restarts) or a 5xx answer is retried
with backoff for up to ``RETRY_TOTAL_S`` seconds, then raised. A 4xx is raised at once.

Examples
--------
::

    from opmap.remote import fetch_array, fetch_table

    c_map = fetch_array("http://beamline:8000", "processed/lco-cell-3/v1/c_perp", KEY,
                        "octet-stream", slice_="42")          # (n_z, n_x) float32, Å
    grains = fetch_table("http://beamline:8000", "processed/lco-cell-3/v1/grains", KEY)

With the Tiled client, :func:`read_map` fetches one map of a ``(map, ...)`` array in one
request (``node[i]`` builds and runs a dask graph around the same request)::

    latest = read_map(client["processed/lco-cell-3/v1/c_perp"], -1)
"""

from __future__ import annotations

import io
import re
from typing import TYPE_CHECKING, Literal

import httpx
import numpy as np
from tiled.structures.array import BuiltinDtype

from opmap.callbacks.tiled_products import TiledUnavailableError, retry_transient

if TYPE_CHECKING:
    import pandas
    from tiled.client.array import ArrayClient

__all__ = [
    "REQUEST_TIMEOUT",
    "RETRY_TOTAL_S",
    "ArrayInfo",
    "array_info",
    "fetch_array",
    "fetch_table",
    "headers",
    "read_map",
]

#: Timeouts of one request (a loaded server answers late rather than not at all).
REQUEST_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
#: How long a request failing with a transient error is retried (s).
RETRY_TOTAL_S = 120.0

ArrayFormat = Literal["json", "octet-stream"]
_MEDIA_TYPES: dict[str, str] = {
    "json": "application/json",
    "octet-stream": "application/octet-stream",
}
_SLICE_PATTERN = re.compile(r"[0-9:,\- ]*")
_HTTP_UNAUTHORIZED = 401

#: Shape and dtype of a stored array: ``(shape, dtype)``.
ArrayInfo = tuple[tuple[int, ...], np.dtype]


def headers(api_key: str | None, media_type: str = "application/json") -> dict[str, str]:
    """HTTP headers of a request to the opmap server (``Authorization: Apikey KEY``).

    Examples
    --------
    >>> headers("0123456789abcdef")["Authorization"]
    'Apikey 0123456789abcdef'
    >>> "Authorization" in headers(None)
    False
    """
    chosen = {"Accept": media_type}
    return chosen if api_key is None else chosen | {"Authorization": f"Apikey {api_key}"}


def array_info(
    url: str, path: str, api_key: str | None, *, client: httpx.Client | None = None
) -> ArrayInfo:
    """Shape and dtype of the array at ``path``, from ``/api/v1/metadata/<path>``."""
    body = _get(client, _endpoint(url, "metadata", path), api_key, "application/json").json()
    structure = body["data"]["attributes"]["structure"]
    dtype = BuiltinDtype.from_json(structure["data_type"]).to_numpy_dtype()
    return tuple(int(n) for n in structure["shape"]), dtype


def fetch_array(
    url: str,
    path: str,
    api_key: str | None,
    fmt: ArrayFormat = "octet-stream",
    *,
    slice_: str | None = None,
    info: ArrayInfo | None = None,
    client: httpx.Client | None = None,
) -> np.ndarray:
    """Fetch an array (or a slice of it) from the opmap Tiled server over plain HTTP.

    Parameters
    ----------
    url : str
        Base URL of the server, e.g. ``http://127.0.0.1:8000``.
    path : str
        Node path, e.g. ``processed/lco-cell-3/v1/c_perp``.
    api_key : str or None
        The server's API key; None sends no key (the opmap server answers 401).
    fmt : {"octet-stream", "json"}
        ``"octet-stream"``: raw bytes, exact dtype (one extra metadata request unless
        ``info`` is given). ``"json"``: nested lists, read back as float64 or int64.
    slice_ : str, optional
        Numpy-style slice cut on the server, e.g. ``"42"`` for map 42 of a
        ``(map, z, x)`` array; default the whole array.
    info : (shape, dtype), optional
        From :func:`array_info`, to skip the metadata request when fetching many slices.
    client : httpx.Client, optional
        A client to reuse (keeps the connection open between requests).

    Returns
    -------
    ndarray
        The array, with the slice applied.

    Raises
    ------
    ValueError
        For an unknown ``fmt`` or a malformed ``slice_``, before any request.
    PermissionError
        When the server answers 401 (missing or wrong API key).
    httpx.HTTPStatusError
        For any other error answer (404 for a wrong path, ...).
    ConnectionError
        When the server still fails transiently (timeouts, refused connections, 5xx)
        after ``RETRY_TOTAL_S`` of retries.
    """
    if fmt not in _MEDIA_TYPES:
        raise ValueError(f"fmt must be one of {sorted(_MEDIA_TYPES)}; got {fmt!r}")
    if slice_ is not None and not _SLICE_PATTERN.fullmatch(slice_):
        raise ValueError(
            f"slice_ must be numpy slice syntax like '3' or '0:2,:,5'; got {slice_!r}"
        )
    params = {} if slice_ is None else {"slice": slice_}
    endpoint = _endpoint(url, "array/full", path)
    response = _get(client, endpoint, api_key, _MEDIA_TYPES[fmt], params)
    if fmt == "json":
        return np.asarray(response.json())
    shape, dtype = info if info is not None else array_info(url, path, api_key, client=client)
    return np.frombuffer(response.content, dtype=dtype).reshape(_sliced_shape(shape, slice_))


def read_map(array: ArrayClient, index: int) -> np.ndarray:
    """Map ``index`` of a ``(map, ...)`` array, through the Tiled client, in one request.

    The same bytes as ``array[index]``, without the dask graph the Tiled client builds and
    computes around its request (a few ms of client CPU per call). Shape and dtype come
    from the client's structure, so no metadata request is made; the map axis may have
    grown since (``index`` is checked by the server), and ``-1`` is the latest map.

    Parameters
    ----------
    array : tiled.client.array.ArrayClient
        An array node, e.g. ``client["processed/lco-cell-3/v1/c_perp"]``.
    index : int
        Map number along axis 0; negative counts from the end.

    Returns
    -------
    ndarray
        Shape ``array.shape[1:]``, dtype ``array.dtype``.

    Raises
    ------
    ValueError
        For an array without a map axis or a non-integer ``index``, before any request.
    """
    shape = tuple(array.shape)
    if len(shape) < 1:
        raise ValueError(f"array must have a map axis (ndim >= 1); got shape {shape}")
    if isinstance(index, bool) or not isinstance(index, int | np.integer):
        raise ValueError(f"index must be an integer map number; got {index!r}")
    buffer = io.BytesIO()
    array.export(buffer, format=_MEDIA_TYPES["octet-stream"], slice=int(index))
    return np.frombuffer(buffer.getvalue(), dtype=array.dtype).reshape(shape[1:])


def fetch_table(
    url: str, path: str, api_key: str | None, *, client: httpx.Client | None = None
) -> pandas.DataFrame:
    """Fetch a table (e.g. the grain table) as CSV over plain HTTP and parse it.

    Raises
    ------
    PermissionError
        When the server answers 401 (missing or wrong API key).
    """
    import pandas

    endpoint = _endpoint(url, "table/full", path)
    response = _get(client, endpoint, api_key, "text/csv")
    return pandas.read_csv(io.StringIO(response.text))


def _endpoint(url: str, route: str, path: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"url must start with http:// or https://; got {url!r}")
    return f"{url.rstrip('/')}/api/v1/{route}/{path.strip('/')}"


def _get(
    client: httpx.Client | None,
    endpoint: str,
    api_key: str | None,
    media_type: str,
    params: dict[str, str] | None = None,
) -> httpx.Response:
    get = client.get if client is not None else httpx.get

    def attempt() -> httpx.Response:
        response = get(
            endpoint,
            headers=headers(api_key, media_type),
            params=params or {},
            timeout=REQUEST_TIMEOUT,
        )
        if response.status_code == _HTTP_UNAUTHORIZED:
            raise PermissionError(f"{endpoint} answered 401: missing or wrong API key")
        response.raise_for_status()
        return response

    try:
        return retry_transient(attempt, what=f"GET {endpoint}", total_s=RETRY_TOTAL_S)
    except TiledUnavailableError as error:
        raise ConnectionError(str(error)) from error.__cause__


def _sliced_shape(shape: tuple[int, ...], slice_: str | None) -> tuple[int, ...]:
    """The shape ``slice_`` leaves of ``shape`` (computed on a zero-size stand-in)."""
    if slice_ is None:
        return shape
    stand_in = np.lib.stride_tricks.as_strided(np.zeros(1), shape, (0,) * len(shape))
    index = tuple(_parse_index(part) for part in slice_.split(","))
    return stand_in[index].shape


def _parse_index(part: str) -> int | slice:
    part = part.strip()
    if ":" not in part:
        return int(part)
    bounds = [int(b) if b.strip() else None for b in part.split(":")]
    return slice(*bounds)
