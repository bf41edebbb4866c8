"""Polarisation of the cell: ohmic drop plus symmetric Butler–Volmer charge transfer.

Sign convention: current density ``i`` > 0 charges the cell (Li leaves the cathode), and the
cell potential is ``V = OCV(x_top) + eta_ct(i) + i * R``. With a transfer coefficient of 1/2,
Butler–Volmer ``i = 2 a i0 sinh(F eta / 2RT)`` inverts to
``eta_ct = (2RT/F) asinh(i / (2 a i0))``, where ``a`` is the fraction of the cathode surface
available for charge transfer (the Li-poor, electronically conducting part on discharge).
"""

from __future__ import annotations

import math

FARADAY_C_PER_MOL = 96485.33212
GAS_CONSTANT_J_PER_MOL_K = 8.314462618


def tafel_scale_v(temperature_k: float) -> float:
    """``2RT/F`` (V): the Butler–Volmer scale for a transfer coefficient of 1/2."""
    return 2.0 * GAS_CONSTANT_J_PER_MOL_K * temperature_k / FARADAY_C_PER_MOL


def overpotential_v(
    current_a_per_cm2: float,
    *,
    exchange_a_per_cm2: float,
    scale_v: float,
    resistance_ohm_cm2: float,
) -> float:
    """Total polarisation ``eta_ct + i R`` (V) at current density ``current_a_per_cm2``.

    ``exchange_a_per_cm2`` is the effective exchange current density ``a * i0`` (A/cm²).
    """
    ct = scale_v * math.asinh(current_a_per_cm2 / (2.0 * exchange_a_per_cm2))
    return ct + current_a_per_cm2 * resistance_ohm_cm2


def solve_current_a_per_cm2(
    driving_v: float, *, exchange_a_per_cm2: float, scale_v: float, resistance_ohm_cm2: float
) -> float:
    """Current density (A/cm²) whose polarisation equals ``driving_v = V - OCV`` (V).

    The polarisation is strictly increasing in the current, so the root is unique; it is
    bracketed by the ohmic-only and charge-transfer-only solutions and found by bisection
    on that bracket refined with Newton steps (converges to ~1e-15 A/cm² in a few steps).
    """
    if driving_v == 0.0:
        return 0.0
    sign = 1.0 if driving_v > 0 else -1.0
    target = abs(driving_v)
    kw = {"exchange_a_per_cm2": exchange_a_per_cm2, "scale_v": scale_v}
    # Each term alone reaches the target at a larger current than both together.
    hi = 2.0 * exchange_a_per_cm2 * math.sinh(min(target / scale_v, 700.0))
    if resistance_ohm_cm2 > 0:
        hi = min(hi, target / resistance_ohm_cm2)
    lo = 0.0
    i = 0.5 * hi
    for _ in range(60):
        g = overpotential_v(i, resistance_ohm_cm2=resistance_ohm_cm2, **kw) - target
        if g > 0:
            hi = i
        else:
            lo = i
        slope = resistance_ohm_cm2 + scale_v / math.hypot(2.0 * exchange_a_per_cm2, i)
        i_new = i - g / slope
        if not lo < i_new < hi:
            i_new = 0.5 * (lo + hi)
        if abs(i_new - i) <= 1e-12 * hi:
            return sign * i_new
        i = i_new
    return sign * i


def exchange_current_for(
    current_a_per_cm2: float, *, driving_v: float, scale_v: float, resistance_ohm_cm2: float
) -> float:
    """Exchange current density i0 (A/cm²) giving ``current_a_per_cm2`` at ``driving_v``.

    Raises
    ------
    ValueError
        If the ohmic drop alone already exceeds ``driving_v``.
    """
    ct_v = driving_v - current_a_per_cm2 * resistance_ohm_cm2
    if ct_v <= 0:
        raise ValueError(
            f"ohmic_resistance_ohm_cm2={resistance_ohm_cm2} is too large: the ohmic drop "
            f"{current_a_per_cm2 * resistance_ohm_cm2:.3f} V at {current_a_per_cm2:.3e} A/cm² "
            f"exceeds the {driving_v:.3f} V available; lower it or the front speed"
        )
    return current_a_per_cm2 / (2.0 * math.sinh(ct_v / scale_v))
