"""What the twin's electrochemistry reads of the step table a potentiostat runs.

The twin is driven by whatever potentiostat backend simulates the instrument; it needs only
these attributes, so it names them as structural types instead of importing a device's
classes (the twin imports no control-system code). ``opmap.devices``' ``StepTable``,
``ProtocolStep`` and ``SafetyWindow`` satisfy them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

#: Technique names, as the potentiostat's step table spells them.
OPEN_CIRCUIT = "open circuit"
CONSTANT_VOLTAGE = "constant voltage"
CONSTANT_CURRENT = "constant current"


class ControlStep(Protocol):
    """One step: a technique, its setpoint (V or A, + = charge) and its end conditions."""

    technique: str
    max_duration_s: float
    setpoint: float
    min_potential_v: float | None
    max_potential_v: float | None
    min_abs_current_a: float | None
    max_abs_charge_c: float | None
    label: str


class SafetyLimits(Protocol):
    """Hard limits (V, A): the cell is stopped at open circuit when it leaves them."""

    min_potential_v: float
    max_potential_v: float
    max_abs_current_a: float


class StepSequence(Protocol):
    """An ordered step table that can check itself against safety limits."""

    @property
    def steps(self) -> Sequence[ControlStep]: ...

    def check(self, window: SafetyLimits) -> None: ...
