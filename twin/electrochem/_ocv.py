"""Open-circuit voltage of LixCoO2 versus Li: a monotonic table, interpolated cheaply.

The default table follows Reimers & Dahn (1992, the paper's ref. 24): a sloping Li-rich solid
solution near x = 1, the two-phase plateau (~3.92–3.93 V) for 0.75 < x < 0.94, the metallic
solid solution rising to ~4.2 V near the order–disorder transition at x = 0.5.

The table is interpolated once with a shape-preserving cubic (PCHIP, no overshoot, so the
curve stays monotonic) onto a dense grid; evaluation is then a linear look-up, cheap enough
to be called at every internal time step of the cell model.
"""

from __future__ import annotations

import numpy as np
from scipy.interpolate import PchipInterpolator

#: Default OCV table: Li fraction x in LixCoO2 (strictly increasing) ...
DEFAULT_OCV_X: tuple[float, ...] = (
    0.35, 0.40, 0.45, 0.47, 0.50, 0.52, 0.55, 0.60, 0.70, 0.75, 0.94, 1.00,
)  # fmt: skip
#: ... and the open-circuit potential versus Li/Li+ (V) at those x (strictly decreasing).
DEFAULT_OCV_V: tuple[float, ...] = (
    4.40, 4.30, 4.23, 4.20, 4.17, 4.08, 4.06, 4.02, 3.96, 3.935, 3.92, 3.88,
)  # fmt: skip

_N_DENSE = 4001


def check_ocv_table(x_li: tuple[float, ...], potential_v: tuple[float, ...]) -> None:
    """Raise `ValueError` unless the table is a valid, strictly monotonic OCV curve.

    Parameters
    ----------
    x_li
        Li fractions, strictly increasing, inside [0, 1].
    potential_v
        Open-circuit potentials (V), strictly decreasing with ``x_li``.
    """
    if len(x_li) != len(potential_v) or len(x_li) < 2:
        raise ValueError(
            f"ocv_x and ocv_v must have the same length >= 2, got {len(x_li)} and "
            f"{len(potential_v)}"
        )
    x = np.asarray(x_li, dtype=float)
    v = np.asarray(potential_v, dtype=float)
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(v))):
        raise ValueError("ocv_x and ocv_v must be finite")
    if x[0] < 0.0 or x[-1] > 1.0 or np.any(np.diff(x) <= 0):
        raise ValueError(f"ocv_x must be strictly increasing inside [0, 1], got {x_li}")
    if np.any(np.diff(v) >= 0):
        raise ValueError(f"ocv_v must be strictly decreasing with x (V), got {potential_v}")


class OcvCurve:
    """Open-circuit potential OCV(x) of LixCoO2 (V), monotonically decreasing in x.

    Parameters
    ----------
    x_li, potential_v
        The table (see `check_ocv_table`). Outside its x range the end values are held.

    Examples
    --------
    >>> ocv = OcvCurve()
    >>> round(ocv(0.85), 2), round(ocv(0.5), 2)
    (3.93, 4.17)
    """

    def __init__(
        self,
        x_li: tuple[float, ...] = DEFAULT_OCV_X,
        potential_v: tuple[float, ...] = DEFAULT_OCV_V,
    ) -> None:
        check_ocv_table(x_li, potential_v)
        self.x_min = float(x_li[0])
        self.x_max = float(x_li[-1])
        self._x_dense = np.linspace(self.x_min, self.x_max, _N_DENSE)
        self._v_dense = PchipInterpolator(x_li, potential_v)(self._x_dense)
        self._step = (self.x_max - self.x_min) / (_N_DENSE - 1)

    def __call__(self, x_li: float) -> float:
        """OCV (V) at Li fraction ``x_li`` (scalar, clamped to the table range)."""
        u = (min(max(x_li, self.x_min), self.x_max) - self.x_min) / self._step
        i = min(int(u), _N_DENSE - 2)
        w = u - i
        return float((1.0 - w) * self._v_dense[i] + w * self._v_dense[i + 1])

    def values(self, x_li: np.ndarray) -> np.ndarray:
        """OCV (V) for an array of Li fractions (any shape)."""
        return np.interp(x_li, self._x_dense, self._v_dense)
