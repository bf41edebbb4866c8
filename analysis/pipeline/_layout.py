"""Where the frames of one map sit on its (z, x) grid."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["MapLayout"]


@dataclass(frozen=True)
class MapLayout:
    """How the ``n_z · n_x`` frames of one map sit on the (z, x) grid.

    Frames are acquired line by line: x fastest (one fly line per z row), rows bottom to
    top.  With ``snake`` odd rows were flown in −x, so their frames are reversed.

    Parameters
    ----------
    n_z, n_x : int
        Rows (z steps) and columns (frames per fly line), each in [1, 100000].
    snake : bool
        Odd rows scanned in −x.
    z_um : numpy.ndarray, optional
        Row heights (µm), (n_z,), strictly increasing; default 0, 1, … (1 µm steps).
    x_um : numpy.ndarray, optional
        Column centres (µm), (n_x,), strictly increasing; default 0, 1, ….

    Examples
    --------
    >>> MapLayout(n_z=2, n_x=3, snake=True).frame_index().tolist()
    [[0, 1, 2], [5, 4, 3]]
    """

    n_z: int
    n_x: int
    snake: bool = False
    z_um: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]
    x_um: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        for name in ("n_z", "n_x"):
            value = getattr(self, name)
            if not (isinstance(value, int | np.integer) and 1 <= value <= 100_000):
                raise ValueError(f"{name} must be an integer in [1, 100000], got {value!r}")
        for name, size in (("z_um", self.n_z), ("x_um", self.n_x)):
            value = getattr(self, name)
            coords = np.arange(size, dtype=float) if value is None else np.array(value, float)
            if coords.shape != (size,):
                raise ValueError(f"{name} must have shape ({size},), got {coords.shape}")
            if not np.all(np.isfinite(coords)) or np.any(np.diff(coords) <= 0):
                raise ValueError(f"{name} must be finite and strictly increasing")
            coords.flags.writeable = False
            object.__setattr__(self, name, coords)

    @property
    def n_frames(self) -> int:
        """Frames per map, ``n_z · n_x``."""
        return self.n_z * self.n_x

    def frame_index(self) -> np.ndarray:
        """Frame number (within the map) of each pixel, int (n_z, n_x)."""
        index = np.arange(self.n_frames).reshape(self.n_z, self.n_x)
        if self.snake:
            index[1::2] = index[1::2, ::-1]
        return index

    def to_map(self, values: np.ndarray) -> np.ndarray:
        """Per-frame values (n_frames, ...) of one map as (n_z, n_x, ...)."""
        values = np.asarray(values)
        if values.shape[0] != self.n_frames:
            raise ValueError(
                f"values must hold {self.n_frames} frames (n_z·n_x), got {values.shape[0]}"
            )
        return values[self.frame_index()]

    def row_time_s(self, frame_time_s: np.ndarray) -> np.ndarray:
        """Scan time of each row (s, (n_z,)): the mean of its frames' times.

        ``frame_time_s`` is (n_frames,), in acquisition order (NaN: unknown). A row whose
        frames have no time is NaN.

        Examples
        --------
        >>> layout = MapLayout(n_z=2, n_x=3, snake=True)
        >>> layout.row_time_s(np.arange(6.0)).tolist()
        [1.0, 4.0]
        """
        times = self.to_map(np.asarray(frame_time_s, dtype=float))
        known = np.isfinite(times)
        with np.errstate(invalid="ignore"):
            return np.where(known, times, 0.0).sum(axis=1) / known.sum(axis=1)

    def describe(self) -> dict[str, object]:
        """JSON-serialisable description (for provenance)."""
        return {
            "n_z": self.n_z,
            "n_x": self.n_x,
            "snake": self.snake,
            "z_um": self.z_um.tolist(),
            "x_um": self.x_um.tolist(),
        }
