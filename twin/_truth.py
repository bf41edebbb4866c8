"""Ground truth of one map: what the analysis should recover, on the map's (z, x) pixels."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MapTruth:
    """The twin's state at ``time_s`` sampled on map pixels (nz heights by nx x positions).

    Parameters
    ----------
    time_s
        Experiment time (s).
    z_um, x_um
        Pixel centres (µm), shapes (nz,) and (nx,); a pixel spans its x spacing of travel.
    c_angstrom, a_angstrom
        Per family name, shape (nz, nx): intensity-weighted mean lattice parameters (Å) over
        the pixel's footprint; NaN where the family is not in the beam.
    x_li
        Shape (nz, nx): mean Li content of LiₓCoO₂ in the footprint; NaN outside the cathode.
    rich_fraction
        Shape (nz, nx): Li-rich phase fraction in the footprint; NaN outside the cathode.
    li_thickness_um, ti_centre_um
        Shape (nx,): plated Li thickness and z of the Ti layer centre per column (µm).
    grain_id, grain_azimuth_deg, grain_x_um, grain_x_bin, grain_visible
        Shape (k,): the Li grains in diffraction condition at ``time_s`` that overlap the
        map's x range (the grains `CellTwin.scene` renders inside the Li layer), their spot
        azimuths and centres at ``time_s`` (grains rotate and drift), x pixel index and
        detector visibility at ``time_s``.
    sample_offset_um
        Shape (nx,): the sample's offset along the beam (µm, towards the detector) per
        column: the parallax every ring on the detector carries.
    front_position_um
        Shape (nx,): z (µm) of the phase boundary of the twin's Li field (Li-rich share
        0.5) per column (the field is uniform along x); NaN without a boundary.
    front_speed_nm_per_s
        dz/dt of that boundary from the model's kinematics (nm/s; negative moving down).
    grain_new, grains_deceased
        Shape (k,): visible grains not visible at the previous map's time; and the number of
        grains visible then and not now (all grains new, 0 deceased without a previous map).
    """

    time_s: float
    z_um: np.ndarray
    x_um: np.ndarray
    c_angstrom: Mapping[str, np.ndarray]
    a_angstrom: Mapping[str, np.ndarray]
    x_li: np.ndarray
    rich_fraction: np.ndarray
    li_thickness_um: np.ndarray
    ti_centre_um: np.ndarray
    grain_id: np.ndarray
    grain_azimuth_deg: np.ndarray
    grain_x_um: np.ndarray
    grain_x_bin: np.ndarray
    grain_visible: np.ndarray
    sample_offset_um: np.ndarray
    front_position_um: np.ndarray
    front_speed_nm_per_s: float
    grain_new: np.ndarray
    grains_deceased: int

    def per_map_arrays(self) -> dict[str, tuple[np.ndarray, tuple[str, ...], str, str]]:
        """Truth of the map's front, its speed and the parallax as one-map arrays.

        Returns
        -------
        dict
            name -> (values with a leading "map" axis of length 1, dims, units, long name):
            ``front_position`` (map,) µm, ``front_speed`` (map,) nm/s, ``sample_offset``
            (map, x) µm. The products carry them as ``truth_<name>``.
        """
        front = self.front_position_um
        finite = front[np.isfinite(front)]
        # NaN where the cell has no front (pristine, or the boundary outside the cathode)
        position = float(finite.mean()) if finite.size else float("nan")
        return {
            "front_position": (np.array([position]), ("map",), "um",
                               "true front: z of the twin's phase boundary"),
            "front_speed": (np.array([self.front_speed_nm_per_s]), ("map",), "nm/s",
                            "true front speed: dz/dt of the twin's boundary"),
            "sample_offset": (np.asarray(self.sample_offset_um)[None], ("map", "x"), "um",
                              "true sample offset along the beam"),
        }  # fmt: skip

    def to_dict(self) -> dict[str, np.ndarray]:
        """Flat mapping of numpy arrays for storage; family arrays become
        ``"<family>_c_angstrom"`` and ``"<family>_a_angstrom"``."""
        out: dict[str, np.ndarray] = {"time_s": np.asarray(self.time_s)}
        for name, value in vars(self).items():
            if name == "time_s":
                continue
            if isinstance(value, Mapping):
                out.update({f"{family}_{name}": np.asarray(v) for family, v in value.items()})
            else:
                out[name] = np.asarray(value)
        return out
