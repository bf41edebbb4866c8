"""The twin's ground truth for one map: ONE implementation, in process or over the network.

`map_truth` asks a `CellTwin` for what a map measured between two cell times: the cathode
fields row by row at each row's scan time, the front as scanned, plated Li, Ti and the
grains new or gone since the previous map. Simulation only: real-hardware modules never
import it.

Two sources serve it to the rehearsal's truth bookkeeping (`opmap.rehearse`):

- `TwinTruthSource`: the twin of this process (``opmap rehearse``, in-process control);
- `RemoteTruthSource`: the twin of ``opmap sim-beamline`` (``--control network``), through
  its truth channel ``/opmap/api/1/truth/...`` (`opmap.sim_beamline.truth_routes`), which
  calls `map_truth` on the twin the frames are rendered from. The truth travels as an
  ``.npz`` (`truth_to_npz` / `truth_from_npz`): exact floats, NaN included.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from opmap.analysis.products import LabelledArray

__all__ = [
    "TRUTH_API",
    "RemoteTruthSource",
    "TruthChannelError",
    "TwinTruthSource",
    "map_truth",
    "truth_from_npz",
    "truth_to_npz",
]

#: Root of the simulation-only truth channel on ``opmap sim-beamline``'s HTTP server.
TRUTH_API = "/opmap/api/1/truth"
#: The map geometry keys `map_truth` reads (those of the map's start document).
GEOMETRY_KEYS = ("z_start_um", "z_step_um", "z_count", "x_start_um", "x_stop_um", "x_count")


def _map_axes(geometry: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Row heights and pixel x centres (µm) of the map ``geometry`` (its start document's)."""
    missing = [key for key in GEOMETRY_KEYS if key not in geometry]
    if missing:
        raise ValueError(f"map_geometry lacks {missing}")
    n_z, n_x = int(geometry["z_count"]), int(geometry["x_count"])
    z_um = geometry["z_start_um"] + geometry["z_step_um"] * np.arange(n_z)
    x_step = (geometry["x_stop_um"] - geometry["x_start_um"]) / n_x
    x_um = geometry["x_start_um"] + x_step * (np.arange(n_x) + 0.5)
    return z_um, x_um


def map_truth(
    twin: Any,
    geometry: Mapping[str, Any],
    start_s: float,
    stop_s: float,
    previous_mid_s: float | None = None,
) -> dict[str, LabelledArray]:
    """Ground truth of one map measured from ``start_s`` to ``stop_s`` (cell time, s).

    Parameters
    ----------
    twin : CellTwin
        The twin the map's frames were rendered from.
    geometry : mapping
        The map's ``map_geometry`` (start document): `GEOMETRY_KEYS`.
    start_s, stop_s : float
        Cell times (s) of the map's start and end; rows are taken as evenly spread over
        them (bottom row first, as ``fly_map`` scans).
    previous_mid_s : float or None
        Mid time (s) of the previous map: grains new since then and those gone; None for
        the first map.

    Returns
    -------
    dict of str to LabelledArray
        One-map arrays (leading ``map`` axis): ``c_<family>``, ``a_<family>``, ``x_li``,
        ``rich_fraction`` (as scanned), ``li_thickness``, ``ti_z``, ``grains_total``,
        ``grains_new``, ``grains_deceased``, the twin's per-map arrays, the front
        (``front_position``, ``front_time``, ``front_speed``) and the times it was taken
        at (``scan_start_time``, ``scan_stop_time``: ``start_s``, ``stop_s``).

    Raises
    ------
    ValueError
        ``geometry`` lacks a key, or a time is not finite or ``stop_s < start_s``.
    """
    if not (math.isfinite(start_s) and math.isfinite(stop_s) and stop_s >= start_s):
        raise ValueError(f"start_s={start_s}, stop_s={stop_s} must be finite, stop >= start")
    z_um, x_um = _map_axes(geometry)
    mid_s = 0.5 * (start_s + stop_s)
    truth = twin.truth(z_um=z_um, x_um=x_um, time_s=mid_s, previous_time_s=previous_mid_s)
    row_time_s = start_s + (stop_s - start_s) * (np.arange(len(z_um)) + 0.5) / len(z_um)
    out = _cathode_as_scanned(twin, z_um, x_um, row_time_s)
    out["li_thickness"] = LabelledArray(
        truth.li_thickness_um[None], ("map", "x"), "um", "true plated Li thickness"
    )
    out["ti_z"] = LabelledArray(truth.ti_centre_um[None], ("map", "x"), "um", "true Ti z")
    out.update(_grain_counts(twin, truth, z_um))
    out.update({name: LabelledArray(*v) for name, v in truth.per_map_arrays().items()})
    out.update(_front_as_scanned(twin, z_um, row_time_s))
    for key, time_s, which in (("scan_start_time", start_s, "start"),
                               ("scan_stop_time", stop_s, "end")):  # fmt: skip
        out[key] = LabelledArray(np.array([float(time_s)]), ("map",), "s",
                                 f"cell time this truth takes as the map's {which}")  # fmt: skip
    return out


def _grain_counts(twin: Any, truth: Any, z_um: np.ndarray) -> dict[str, LabelledArray]:
    """Grains the map can see: visible on the detector, and the map reaches the Li layer."""
    visible = np.asarray(truth.grain_visible, bool)
    li_bottom_um, li_top_um = twin.geometry.li_bounds_um(float(np.nanmean(truth.li_thickness_um)))
    reaches_li = bool(z_um.min() < li_top_um and z_um.max() > li_bottom_um)
    if not reaches_li:
        visible = np.zeros_like(visible)
    new = int((truth.grain_new & visible).sum())
    dead = truth.grains_deceased if reaches_li else 0
    return {
        "grains_total": LabelledArray(
            np.array([int(visible.sum())]), ("map",), "", "true grains in diffraction, visible"
        ),
        "grains_new": LabelledArray(np.array([new]), ("map",), "", "true new grains"),
        "grains_deceased": LabelledArray(np.array([dead]), ("map",), "", "true lost"),
    }


def _cathode_as_scanned(
    twin: Any, z_um: np.ndarray, x_um: np.ndarray, row_time_s: np.ndarray
) -> dict[str, LabelledArray]:
    """True c, a, x and Li-rich fraction of a map as scanned: each row at its scan time.

    The cathode changes while a map is measured (the front moves ~2 µm, c by up to ~0.01 Å
    in 4 min): a pixel is compared with the sample at the moment it was measured.
    """
    rows = [
        twin.truth(z_um=np.array([z]), x_um=x_um, time_s=float(t))
        for z, t in zip(z_um, row_time_s, strict=True)
    ]
    zx = ("map", "z", "x")

    def stacked(get: Callable[[Any], np.ndarray]) -> np.ndarray:
        return np.concatenate([get(row) for row in rows], axis=0)[None]

    out = {}
    for family in rows[0].c_angstrom:
        c = stacked(lambda r, f=family: r.c_angstrom[f])
        a = stacked(lambda r, f=family: r.a_angstrom[f])
        out[f"c_{family}"] = LabelledArray(c, zx, "angstrom", f"true c, {family}, as scanned")
        out[f"a_{family}"] = LabelledArray(a, zx, "angstrom", f"true a, {family}, as scanned")
    out["x_li"] = LabelledArray(stacked(lambda r: r.x_li), zx, "", "true x in LixCoO2")
    out["rich_fraction"] = LabelledArray(stacked(lambda r: r.rich_fraction), zx, "",
                                         "true Li-rich fraction")  # fmt: skip
    return out


def _front_as_scanned(
    twin: Any, z_um: np.ndarray, row_time_s: np.ndarray
) -> dict[str, LabelledArray]:
    """True front as the map saw it (`CellTwin.front_as_scanned`), its scan time, and the
    twin's kinematic speed then."""
    position_um, time_s = twin.front_as_scanned(z_um, row_time_s)
    speed = twin.front_speed_nm_per_s(time_s) if np.isfinite(time_s) else np.nan
    return {
        "front_position": LabelledArray(np.array([position_um]), ("map",), "um",
                                        "true front: the twin's phase boundary as scanned"),
        "front_time": LabelledArray(np.array([time_s]), ("map",), "s",
                                    "scan time of the rows at the true front"),
        "front_speed": LabelledArray(np.array([speed]), ("map",), "nm/s",
                                     "true front speed: dz/dt of the twin's boundary then"),
    }  # fmt: skip


def truth_to_npz(truth: Mapping[str, LabelledArray]) -> bytes:
    """``truth`` as ``.npz`` bytes: each array by name, dims/units/long names in ``_labels``."""
    labels = {name: [list(a.dims), a.units, a.long_name] for name, a in truth.items()}
    buffer = io.BytesIO()
    arrays = {name: np.asarray(a.values) for name, a in truth.items()}
    np.savez(buffer, _labels=np.array(json.dumps(labels)), **arrays)
    return buffer.getvalue()


def truth_from_npz(data: bytes) -> dict[str, LabelledArray]:
    """The truth written by `truth_to_npz`.

    Raises
    ------
    ValueError
        ``data`` is not such an ``.npz`` (no ``_labels``, or an array without labels).
    """
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        if "_labels" not in npz.files:
            raise ValueError("truth npz has no _labels entry")
        labels = json.loads(str(npz["_labels"]))
        names = [name for name in npz.files if name != "_labels"]
        if set(names) != set(labels):
            raise ValueError(f"truth npz arrays {sorted(names)} != labels {sorted(labels)}")
        return {
            name: LabelledArray(npz[name], tuple(labels[name][0]), *labels[name][1:])
            for name in names
        }


class TwinTruthSource:
    """The truth of a twin in this process: `map_truth` on it, and its ``forget_before``.

    Parameters
    ----------
    twin : CellTwin
        The twin the frames are rendered from.
    """

    def __init__(self, twin: Any) -> None:
        self.twin = twin

    def map_truth(
        self,
        geometry: Mapping[str, Any],
        start_s: float,
        stop_s: float,
        previous_mid_s: float | None,
    ) -> dict[str, LabelledArray]:
        """`map_truth` of this twin."""
        return map_truth(self.twin, geometry, start_s, stop_s, previous_mid_s)

    def forget_before(self, time_s: float) -> None:
        """Let the twin drop its snapshots before ``time_s`` (s; `CellTwin.forget_before`)."""
        self.twin.forget_before(time_s)


class TruthChannelError(RuntimeError):
    """``opmap sim-beamline``'s truth channel refused a request or did not answer."""


class RemoteTruthSource:
    """The truth of ``opmap sim-beamline``'s twin, and its cell clock, over its HTTP truth
    channel.

    Parameters
    ----------
    url
        ``http://HOST:PORT`` of the child's HTTP server (the SIMPLON one).
    timeout_s
        Longest wait for one answer (s): a truth takes seconds on a loaded machine.
    """

    def __init__(self, url: str, timeout_s: float = 120.0) -> None:
        if not (math.isfinite(timeout_s) and timeout_s > 0):
            raise ValueError(f"timeout_s={timeout_s} must be a finite time > 0 s")
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def _request(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> bytes:
        import httpx

        where = f"{self.url}{TRUTH_API}/{path}"
        content = None if body is None else dict(body)
        try:
            response = httpx.request(method, where, json=content, timeout=self.timeout_s)
        except httpx.HTTPError as err:
            raise TruthChannelError(f"truth channel {where}: {err!r}") from err
        if response.status_code != 200:
            raise TruthChannelError(
                f"truth channel {where}: HTTP {response.status_code}: {response.text}"
            )
        return response.content

    def map_truth(
        self,
        geometry: Mapping[str, Any],
        start_s: float,
        stop_s: float,
        previous_mid_s: float | None,
    ) -> dict[str, LabelledArray]:
        """`map_truth` of the child's twin (``POST .../truth/map``)."""
        body = {
            "map_geometry": {key: geometry[key] for key in GEOMETRY_KEYS},
            "start_s": start_s,
            "stop_s": stop_s,
            "previous_mid_s": previous_mid_s,
        }
        return truth_from_npz(self._request("POST", "map", body))

    def forget_before(self, time_s: float) -> None:
        """The child's twin may drop snapshots before ``time_s`` (``PUT .../truth/keep_from``)."""
        self._request("PUT", "keep_from", {"value": time_s})

    def now_s(self) -> float:
        """The child's cell time now (s; ``GET .../truth/now``): ``$(P)EC:TIME``'s clock."""
        return float(json.loads(self._request("GET", "now"))["value"])
