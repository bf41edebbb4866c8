"""The twin's electrochemistry: a LixCoO2 thin-film cell driven by a potentiostat protocol.

`CellElectrochemistry` couples the cathode's Li field (`CathodeField`, finite volumes in z)
to the cell potential ``V = OCV(x_top) + eta_ct + i R`` (`kinetics`) and runs a
step table of open-circuit, constant-voltage and constant-current steps on its own, with
the step limits of its steps, whenever time is advanced. Deterministic, no randomness.

Time stepping: the model integrates in internal steps of at most ``max_step_s`` and only
when a call to `advance_to` has accumulated a full step; between internal steps the reported
state is the last operating point with the charge extrapolated at that current, so the many
small `advance_to` calls of a rehearsal cost almost nothing. A step that ends on its time
limit ends exactly on time; potential, current and charge limits are detected to within one
internal step.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from ._cathode import CathodeField, LiProfile, split_phases
from ._config import ElectrochemConfig
from ._ocv import OcvCurve
from ._steps import (
    CONSTANT_CURRENT,
    CONSTANT_VOLTAGE,
    OPEN_CIRCUIT,
    ControlStep,
    SafetyLimits,
    StepSequence,
)
from .kinetics import (
    FARADAY_C_PER_MOL,
    exchange_current_for,
    overpotential_v,
    solve_current_a_per_cm2,
    tafel_scale_v,
)

__all__ = [
    "CellElectrochemistry",
    "ElectrochemConfig",
    "ElectrochemState",
    "LiProfile",
]

logger = logging.getLogger(__name__)

#: Largest change of the top cell's x allowed in one internal step (explicit coupling).
_MAX_TOP_DX = 0.02


@dataclass(frozen=True)
class ElectrochemState:
    """What the potentiostat reads at one experiment time.

    Parameters
    ----------
    time_s
        Experiment time (s from the start of the simulation clock).
    potential_v
        Cell potential (V vs Li).
    current_a
        Cell current (A), positive = charge.
    charge_c
        Cumulative charge passed (C), positive = charge.
    step_index
        Index of the active protocol step, -1 when none is active.
    step_label
        Label of the active step ("" when none).
    technique
        What is being controlled (open circuit when no step is active).
    protocol_done
        True once a started protocol has finished or was stopped.
    """

    time_s: float
    potential_v: float
    current_a: float
    charge_c: float
    step_index: int
    step_label: str
    technique: str
    protocol_done: bool


def gap_diffusivity_um2_per_s(config: ElectrochemConfig, x_ahead: float) -> tuple[float, float]:
    """Two-phase diffusivities (µm²/s) at rich fraction 0 and 1 giving the front width.

    A front moving at speed v into Li-rich material of composition ``x_ahead`` is a
    travelling wave of ``dx/dt = d/dz(D dx/dz)``; integrating once in the moving frame gives
    ``D(x) dx/dz = v (x - x_ahead)``, so the distance between the points where the lever-rule
    rich fraction is 0.1 and 0.9 (the 10–90 % width) is
    ``w = (1/v) * integral of D(x) / (x_ahead - x) dx`` between those compositions. With
    ``ln D`` linear in the rich fraction and the configured contrast ``D(0) / D(1)``, the
    scale of D follows from the configured width and speed (quadrature on 2001 points).
    """
    gap = config.x_rich_eq - config.x_poor_eq
    rich = np.linspace(0.1, 0.9, 2001)
    x = config.x_poor_eq + rich * gap
    shape = config.gap_diffusivity_contrast ** (0.5 - rich)  # D(f) / D(0.5)
    integrand = shape / (x_ahead - x)
    integral = float(np.sum(0.5 * (integrand[1:] + integrand[:-1]) * np.diff(x)))
    d_mid = config.interface_width_um * config.front_speed_nm_per_s * 1e-3 / integral
    root = math.sqrt(config.gap_diffusivity_contrast)
    return d_mid * root, d_mid / root


class CellElectrochemistry:
    """Electrochemistry and Li field of the LixCoO2 / LiPON / Li thin-film cell.

    Parameters
    ----------
    config
        Cell parameters.
    x_initial
        Uniform initial Li fraction in LixCoO2 (1.0 = pristine, fully lithiated), within the
        OCV table's x range.
    """

    def __init__(self, config: ElectrochemConfig, *, x_initial: float = 1.0) -> None:
        if not (config.ocv_x[0] <= x_initial <= min(config.ocv_x[-1], 1.0)):
            raise ValueError(
                f"x_initial={x_initial} must lie in [{config.ocv_x[0]}, "
                f"{min(config.ocv_x[-1], 1.0)}] (the OCV table range)"
            )
        self.config = config
        self._ocv = OcvCurve(config.ocv_x, config.ocv_v)
        x_ahead = max(x_initial, config.x_rich_eq)
        d_gap_poor, d_gap_rich = gap_diffusivity_um2_per_s(config, x_ahead)
        self._field = CathodeField(
            thickness_um=config.cathode_thickness_um,
            n_cells=config.n_cells,
            x_initial=x_initial,
            x_poor_eq=config.x_poor_eq,
            x_rich_eq=config.x_rich_eq,
            diffusivity_um2_per_s=(
                config.diffusivity_poor_um2_per_s,
                d_gap_poor,
                d_gap_rich,
                config.diffusivity_rich_um2_per_s,
            ),
            lithiation_gap_diffusivity_um2_per_s=config.lithiation_gap_diffusivity_um2_per_s,
            lithiation_slowdown_dx=config.lithiation_slowdown_dx,
        )
        # C/cm² per unit x per µm of cathode: converts current density to Li flux in x·µm/s.
        self._q_per_x_um = config.charge_per_x_c_per_cm2 / config.cathode_thickness_um
        self._scale_v = tafel_scale_v(config.temperature_k)
        self._i0 = config.exchange_current_a_per_cm2 or self._derived_exchange(x_ahead)
        self._t = 0.0  # internal (integrated) time
        self._t_now = 0.0  # reported time, >= self._t by less than one internal step
        self._charge_c = 0.0
        self._protocol: StepSequence | None = None
        self._window: SafetyLimits | None = None
        self._index = -1
        self._done = False
        self._step_t0 = 0.0
        self._step_q0 = 0.0
        self.stop_reason = ""
        self._i_cm2, self._v = self._operating_point()

    # -- derived parameters -----------------------------------------------------------
    def _derived_exchange(self, x_ahead: float) -> float:
        cfg = self.config
        speed_um_per_s = cfg.front_speed_nm_per_s * 1e-3
        # Mass balance at the front: every µm it advances converts (x_ahead - x_poor_eq).
        i_front = speed_um_per_s * self._q_per_x_um * (x_ahead - cfg.x_poor_eq)
        driving = cfg.reference_charge_potential_v - self._ocv(cfg.x_poor_eq)
        return exchange_current_for(
            i_front,
            driving_v=driving,
            scale_v=self._scale_v,
            resistance_ohm_cm2=cfg.ohmic_resistance_ohm_cm2,
        )

    @property
    def exchange_current_a_per_cm2(self) -> float:
        """Butler–Volmer exchange current density i0 in use (A/cm²)."""
        return self._i0

    # -- public API -------------------------------------------------------------------
    @property
    def time_s(self) -> float:
        """Current experiment time (s)."""
        return self._t_now

    @property
    def state(self) -> ElectrochemState:
        """Readbacks at `time_s` (charge extrapolated at the current operating point)."""
        step = self._step
        current_a = self._i_cm2 * self.config.area_cm2
        return ElectrochemState(
            time_s=self._t_now,
            potential_v=self._v,
            current_a=current_a,
            charge_c=self._charge_c + current_a * (self._t_now - self._t),
            step_index=self._index if step is not None else -1,
            step_label=step.label if step is not None else "",
            technique=step.technique if step is not None else OPEN_CIRCUIT,
            protocol_done=self._done,
        )

    def profile(self) -> LiProfile:
        """The cathode's Li field at the last internal step (< ``max_step_s`` ago)."""
        return self._field.profile()

    def plated_li_thickness_um(self) -> float:
        """Thickness of plated Li metal (µm) from the net charge passed (0 if negative).

        1 C/cm² is 1/F mol/cm² of Li, i.e. ``V_m / F`` cm of Li: 1.4 mAh/cm² -> 6.8 µm.
        """
        areal_c = max(self.state.charge_c / self.config.area_cm2, 0.0)
        mol_per_cm2 = areal_c / FARADAY_C_PER_MOL
        return mol_per_cm2 * self.config.li_molar_volume_cm3_per_mol * 1e4

    def start_protocol(self, protocol: StepSequence, window: SafetyLimits) -> None:
        """Validate ``protocol`` against ``window`` (``check`` raises), then run it."""
        protocol.check(window)
        self._integrate(self._t_now, exact=True)
        self._protocol = protocol
        self._window = window
        self._done = False
        self.stop_reason = ""
        self._enter_step(0)

    def stop_protocol(self) -> None:
        """Stop any running protocol now: open circuit, ``protocol_done`` set."""
        self._integrate(self._t_now, exact=True)
        self._finish("stopped")

    def advance_to(self, time_s: float) -> None:
        """Advance experiment time to ``time_s`` (s), running the protocol on the way.

        Raises
        ------
        ValueError
            If ``time_s`` is not finite or is before the current time.
        """
        if not math.isfinite(time_s):
            raise ValueError(f"time_s={time_s} must be finite")
        if time_s < self._t_now:
            raise ValueError(
                f"time_s={time_s} s is before the current time {self._t_now} s: "
                "time never goes back"
            )
        self._t_now = time_s
        self._integrate(time_s, exact=False)

    # -- protocol machinery -----------------------------------------------------------
    @property
    def _step(self) -> ControlStep | None:
        if self._protocol is None or self._done or self._index < 0:
            return None
        return self._protocol.steps[self._index]

    def _enter_step(self, index: int) -> None:
        assert self._protocol is not None
        while index < len(self._protocol.steps):
            self._index = index
            self._step_t0 = self._t
            self._step_q0 = self._charge_c
            self._i_cm2, self._v = self._operating_point()
            if not self._step_ended():
                self._check_safety()
                return
            index += 1
        self._finish("completed")

    def _finish(self, reason: str) -> None:
        if self._protocol is not None and not self._done:
            logger.info("electrochemistry protocol %s at t=%.1f s", reason, self._t)
            self.stop_reason = reason
            self._done = True
        self._index = -1
        self._i_cm2, self._v = self._operating_point()

    def _step_ended(self) -> bool:
        step = self._step
        if step is None:
            return False
        if self._t >= self._step_t0 + step.max_duration_s - 1e-9:
            return True
        q_step = abs(self._charge_c - self._step_q0)
        if step.max_abs_charge_c is not None and q_step >= step.max_abs_charge_c * (1 - 1e-9):
            return True
        if step.technique == CONSTANT_VOLTAGE:
            floor = step.min_abs_current_a
            return floor is not None and abs(self._i_cm2 * self.config.area_cm2) < floor
        below = step.min_potential_v is not None and self._v <= step.min_potential_v
        above = step.max_potential_v is not None and self._v >= step.max_potential_v
        return below or above

    def _check_safety(self) -> None:
        w = self._window
        if w is None:
            return
        current_a = self._i_cm2 * self.config.area_cm2
        if not (w.min_potential_v <= self._v <= w.max_potential_v):
            reason = f"safety stop: potential {self._v:.4f} V outside the window"
        elif abs(current_a) > w.max_abs_current_a:
            reason = f"safety stop: current {current_a:.3e} A exceeds the window"
        else:
            return
        logger.warning("%s at t=%.1f s", reason, self._t)
        self._finish(reason)

    # -- physics ----------------------------------------------------------------------
    def _operating_point(self) -> tuple[float, float]:
        """(current density A/cm², potential V) for the active technique and present field."""
        step = self._step
        ocv = self._ocv(self._field.x_top)
        if step is None or step.technique == OPEN_CIRCUIT:
            return 0.0, ocv
        cfg = self.config
        if step.technique == CONSTANT_CURRENT:
            i = step.setpoint / cfg.area_cm2
            eta = overpotential_v(
                i,
                exchange_a_per_cm2=self._i0 * self._active_fraction(i),
                scale_v=self._scale_v,
                resistance_ohm_cm2=cfg.ohmic_resistance_ohm_cm2,
            )
            return i, ocv + eta
        driving = step.setpoint - ocv
        i = solve_current_a_per_cm2(
            driving,
            exchange_a_per_cm2=self._i0 * self._active_fraction(driving),
            scale_v=self._scale_v,
            resistance_ohm_cm2=cfg.ohmic_resistance_ohm_cm2,
        )
        return i, step.setpoint

    def _active_fraction(self, sign: float) -> float:
        """Surface fraction open to charge transfer.

        Li insertion (discharge, ``sign < 0``) only proceeds through the Li-poor, metallic
        part of the top of the cathode: the Li-rich phase is an insulator. Extraction works
        on both phases (delithiating the rich phase makes it metallic).
        """
        if sign >= 0:
            return 1.0
        rich, _, _ = split_phases(
            self._field.x_top, x_poor_eq=self.config.x_poor_eq, x_rich_eq=self.config.x_rich_eq
        )
        return max(1.0 - float(rich), self.config.min_active_fraction)

    def _next_dt(self) -> float:
        dt = self.config.max_step_s
        if self._i_cm2 != 0.0:
            q_top = self._q_per_x_um * self._field.dz_um
            dt = min(dt, _MAX_TOP_DX * q_top / abs(self._i_cm2))
        step = self._step
        if step is None:
            return dt
        dt = min(dt, self._step_t0 + step.max_duration_s - self._t)
        if step.max_abs_charge_c is not None and self._i_cm2 != 0.0:
            left_c = step.max_abs_charge_c - abs(self._charge_c - self._step_q0)
            dt = min(dt, left_c / abs(self._i_cm2 * self.config.area_cm2))
        return max(dt, 1e-9)

    def _integrate(self, t_target: float, *, exact: bool) -> None:
        while self._t < t_target:
            dt = self._next_dt()
            if self._t + dt > t_target:
                if not exact:
                    return
                dt = t_target - self._t
            self._advance_internal(dt)

    def _advance_internal(self, dt_s: float) -> None:
        step = self._step
        end_t = self._step_t0 + step.max_duration_s if step is not None else math.inf
        self._field.step(dt_s, self._i_cm2 / self._q_per_x_um)
        self._charge_c += self._i_cm2 * self.config.area_cm2 * dt_s
        self._t = end_t if abs(self._t + dt_s - end_t) < 1e-9 else self._t + dt_s
        self._i_cm2, self._v = self._operating_point()
        if self._step_ended():
            self._enter_step(self._index + 1)
        elif step is not None:
            self._check_safety()
