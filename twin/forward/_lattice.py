"""Scattering vectors of the reflections the forward model draws, from lattice parameters.

q = 2π/d (Å⁻¹). Hexagonal (LCO in its hexagonal setting, Ti):
1/d² = 4/3·(h² + hk + k²)/a² + l²/c². Cubic (Li bcc, Au fcc): 1/d² = (h² + k² + l²)/a².
So LCO (003) has q = 6π/c and (110) q = 4π/a.
"""

from __future__ import annotations

import math


def q_hexagonal(hkl: tuple[int, int, int], a_angstrom: float, c_angstrom: float) -> float:
    """q (Å⁻¹) of reflection ``hkl`` of a hexagonal lattice with ``a``, ``c`` (Å).

    Examples
    --------
    >>> round(q_hexagonal((0, 0, 3), 2.8035, 14.0), 4)
    1.3464
    """
    h, k, ell = hkl
    inv_d2 = 4.0 / 3.0 * (h * h + h * k + k * k) / a_angstrom**2 + ell * ell / c_angstrom**2
    return 2.0 * math.pi * math.sqrt(inv_d2)


def q_cubic(hkl: tuple[int, int, int], a_angstrom: float) -> float:
    """q (Å⁻¹) of reflection ``hkl`` of a cubic lattice with parameter ``a`` (Å).

    Examples
    --------
    >>> round(q_cubic((1, 1, 0), 3.491), 3)
    2.545
    """
    h, k, ell = hkl
    return 2.0 * math.pi * math.sqrt(h * h + k * k + ell * ell) / a_angstrom


def angle_to_basal_deg(hkl: tuple[int, int, int], a_angstrom: float, c_angstrom: float) -> float:
    """Angle (deg) between the normal of hexagonal plane ``hkl`` and the c axis (00l normal).

    cos ρ = (l/c)·d: 0° for (00l), 90° for (hk0).

    Examples
    --------
    >>> round(angle_to_basal_deg((1, 0, 4), 2.8035, 14.0), 1)
    55.3
    """
    ell = hkl[2]
    d = 2.0 * math.pi / q_hexagonal(hkl, a_angstrom, c_angstrom)
    return math.degrees(math.acos(min(1.0, abs(ell) / c_angstrom * d)))
