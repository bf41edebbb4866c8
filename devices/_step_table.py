"""Electrochemical step tables: techniques, steps with limits, and the hard safety window.

These value objects are shared by every potentiostat backend (real or simulated): a
protocol is validated against the safety window *before* anything is sent to hardware.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ophyd_async.core import StrictEnum


class Technique(StrictEnum):
    """What the potentiostat controls during a step."""

    OPEN_CIRCUIT = "open circuit"
    CONSTANT_VOLTAGE = "constant voltage"
    CONSTANT_CURRENT = "constant current"


class ProtocolError(ValueError):
    """A protocol step or setpoint that is not allowed; raised before any command is sent."""


@dataclass(frozen=True)
class SafetyWindow:
    """Hard limits the cell must never leave, checked before any command.

    Parameters
    ----------
    min_potential_v, max_potential_v
        Allowed cell potential range (V).
    max_abs_current_a
        Largest allowed |current| (A); positive current charges the cell.
    """

    min_potential_v: float = 2.5
    max_potential_v: float = 4.4
    max_abs_current_a: float = 100e-6

    def __post_init__(self) -> None:
        if not self.min_potential_v < self.max_potential_v:
            raise ProtocolError(
                f"safety window: min_potential_v={self.min_potential_v} must be below "
                f"max_potential_v={self.max_potential_v}"
            )
        if not self.max_abs_current_a > 0:
            raise ProtocolError(
                f"safety window: max_abs_current_a={self.max_abs_current_a} must be > 0"
            )

    def check_potential(self, name: str, potential_v: float) -> None:
        """Raise `ProtocolError` naming ``name`` if ``potential_v`` is outside the window."""
        if not (self.min_potential_v <= potential_v <= self.max_potential_v):
            raise ProtocolError(
                f"{name}={potential_v} V is outside the safety window "
                f"[{self.min_potential_v}, {self.max_potential_v}] V"
            )

    def check_current(self, name: str, current_a: float) -> None:
        """Raise `ProtocolError` naming ``name`` if ``|current_a|`` exceeds the window."""
        if not abs(current_a) <= self.max_abs_current_a:
            raise ProtocolError(
                f"{name}={current_a} A exceeds the safety window |I| <= {self.max_abs_current_a} A"
            )


@dataclass(frozen=True)
class ProtocolStep:
    """One step of an electrochemical protocol.

    Parameters
    ----------
    technique
        What is controlled.
    setpoint
        Potential (V) for constant voltage, current (A, positive = charge) for constant
        current, ignored for open circuit.
    max_duration_s
        The step ends after this long (s). Always required: no step runs forever.
    min_potential_v, max_potential_v
        Cut-offs (V): a constant-current step ends when the potential crosses them.
    min_abs_current_a
        A constant-voltage step ends when |current| falls below this (A).
    max_abs_charge_c
        The step ends when |charge passed in the step| reaches this (C).
    label
        A human name, e.g. ``"charge 4.3 V"``.
    """

    technique: Technique
    max_duration_s: float
    setpoint: float = 0.0
    min_potential_v: float | None = None
    max_potential_v: float | None = None
    min_abs_current_a: float | None = None
    max_abs_charge_c: float | None = None
    label: str = ""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.max_duration_s) and self.max_duration_s > 0):
            raise ProtocolError(
                f"step {self.label!r}: max_duration_s={self.max_duration_s} must be a "
                "finite positive number of seconds"
            )
        if not math.isfinite(self.setpoint):
            raise ProtocolError(f"step {self.label!r}: setpoint={self.setpoint} is not finite")

    def check(self, window: SafetyWindow) -> None:
        """Raise `ProtocolError` if this step could drive the cell outside ``window``."""
        where = f"step {self.label!r} setpoint"
        if self.technique == Technique.CONSTANT_VOLTAGE:
            window.check_potential(where, self.setpoint)
        elif self.technique == Technique.CONSTANT_CURRENT:
            window.check_current(where, self.setpoint)
        for name in ("min_potential_v", "max_potential_v"):
            value = getattr(self, name)
            if value is not None:
                window.check_potential(f"step {self.label!r} {name}", value)


@dataclass(frozen=True)
class StepTable:
    """An ordered list of steps, run by the potentiostat on its own clock."""

    steps: tuple[ProtocolStep, ...] = field(default_factory=tuple)

    def check(self, window: SafetyWindow) -> None:
        """Validate every step against ``window``; raise before anything is sent."""
        if not self.steps:
            raise ProtocolError("protocol has no steps")
        for step in self.steps:
            step.check(window)

    @property
    def max_duration_s(self) -> float:
        """Upper bound of the protocol length (s): the sum of the steps' time limits."""
        return sum(step.max_duration_s for step in self.steps)


def paper_protocol(
    *,
    charge_potential_v: float = 4.3,
    charge_duration_s: float = 2.3 * 3600,
    first_rest_s: float = 600.0,
    discharge_current_a: float = -2e-6,
    cutoff_potential_v: float = 3.0,
    max_discharge_s: float = 3 * 3600,
    final_rest_s: float = 1800.0,
) -> StepTable:
    """The paper's sequence: 4.3 V charge, rest, 2 µA discharge to 3.0 V, rest.

    Rest durations are not given in the paper: defaults are a choice, keep them configurable.
    """
    return StepTable(
        steps=(
            ProtocolStep(
                Technique.CONSTANT_VOLTAGE,
                charge_duration_s,
                setpoint=charge_potential_v,
                label="charge",
            ),
            ProtocolStep(Technique.OPEN_CIRCUIT, first_rest_s, label="rest after charge"),
            ProtocolStep(
                Technique.CONSTANT_CURRENT,
                max_discharge_s,
                setpoint=discharge_current_a,
                min_potential_v=cutoff_potential_v,
                label="discharge",
            ),
            ProtocolStep(Technique.OPEN_CIRCUIT, final_rest_s, label="rest after discharge"),
        )
    )
