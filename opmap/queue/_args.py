"""Plain, validated arguments of the queue-facing plans: dicts, numbers, strings, TOML paths.

A queue server item carries JSON values only. These pydantic models turn them into opmap's
value objects (`MapGeometry`, `StepTable`) and refuse a bad one with a message naming it,
before the plan yields its first message, so nothing moves or is written.
"""

import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from opmap.devices import ProtocolError, ProtocolStep, SafetyWindow, StepTable, Technique
from opmap.devices import paper_protocol as _paper_protocol
from opmap.plans import MapCadence, MapGeometry

__all__ = [
    "ExperimentArguments",
    "MapArguments",
    "PlanArgumentError",
    "ProtocolArguments",
    "StepArguments",
    "load_protocol",
    "validate_experiment_arguments",
    "validate_map_arguments",
]


class PlanArgumentError(ValueError):
    """A plan argument that is not allowed; raised before anything moves."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StepArguments(_Frozen):
    """One protocol step as plain values (see `opmap.devices.ProtocolStep`)."""

    technique: Literal["open circuit", "constant voltage", "constant current"]
    max_duration_s: float = Field(gt=0, allow_inf_nan=False)
    setpoint: float = Field(default=0.0, allow_inf_nan=False)
    min_potential_v: float | None = Field(default=None, allow_inf_nan=False)
    max_potential_v: float | None = Field(default=None, allow_inf_nan=False)
    min_abs_current_a: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    max_abs_charge_c: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    label: str = ""

    def step(self) -> ProtocolStep:
        """The device-layer `ProtocolStep`."""
        values = self.model_dump()
        values["technique"] = Technique(values["technique"])
        return ProtocolStep(**values)


class ProtocolArguments(_Frozen):
    """A protocol as plain values: ``{"steps": [{"technique": ..., ...}, ...]}``."""

    steps: tuple[StepArguments, ...]

    @field_validator("steps")
    @classmethod
    def _not_empty(cls, steps: tuple[StepArguments, ...]) -> tuple[StepArguments, ...]:
        if not steps:
            raise ValueError("a protocol needs at least one step")
        return steps

    def table(self) -> StepTable:
        """The device-layer `StepTable`."""
        return StepTable(steps=tuple(step.step() for step in self.steps))


def load_protocol(value: dict[str, Any] | str, *, time_scale: float = 1.0) -> StepTable:
    """A `StepTable` from ``"paper"``, a TOML file path or a ``{"steps": [...]}`` dict.

    Parameters
    ----------
    value
        ``"paper"`` (the paper's sequence), the path of a TOML file with ``[[steps]]`` tables,
        or the same content as a dict.
    time_scale
        Multiplies every step's ``max_duration_s`` (> 0; 1 = as given). A rehearsal runs the
        paper's 6-hour protocol in minutes of experiment time with e.g. 0.02.

    Raises
    ------
    PlanArgumentError
        For an unknown name, a missing or malformed file, or a bad step (named).
    """
    if not time_scale > 0:
        raise PlanArgumentError(f"time_scale={time_scale} must be > 0")
    if value == "paper":
        return _scaled(_paper_protocol(), time_scale)
    return _scaled(_protocol_table(_protocol_document(value)), time_scale)


def _protocol_document(value: dict[str, Any] | str) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    path = Path(value).expanduser()
    if path.suffix != ".toml" or not path.is_file():
        raise PlanArgumentError(
            f"protocol={value!r} must be 'paper', a dict of steps or an existing .toml file"
        )
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise PlanArgumentError(f"protocol file {path} is not valid TOML: {error}") from None


def _protocol_table(document: dict[str, Any]) -> StepTable:
    try:
        return ProtocolArguments.model_validate(document).table()
    except ValidationError as error:
        raise PlanArgumentError("; ".join(_describe_items(error))) from None
    except ProtocolError as error:
        raise PlanArgumentError(f"protocol: {error}") from None


def _scaled(table: StepTable, time_scale: float) -> StepTable:
    """Every step's time limit multiplied by ``time_scale``."""
    return StepTable(
        steps=tuple(
            replace(step, max_duration_s=step.max_duration_s * time_scale) for step in table.steps
        )
    )


class MapArguments(_Frozen):
    """Arguments of ``fly_map_plan``: one map."""

    geometry: MapGeometry
    md: dict[str, Any] | None = None


class ExperimentArguments(_Frozen):
    """Arguments of ``operando_experiment_plan``, validated before anything moves.

    Attributes
    ----------
    geometry : MapGeometry
        Every map's geometry (a dict of `MapGeometry` fields).
    protocol : dict or str
        ``"paper"``, a TOML file path or a ``{"steps": [...]}`` dict (see `load_protocol`).
    time_scale : float
        Multiplies every protocol duration (> 0).
    map_interval_s : float or None
        Protocol time between map starts (> 0 s); None = ``map_schedule``.
    map_schedule : list of (from_time_s, interval_s), or None
        The map cadence in the (scaled) protocol's time, see `opmap.plans.MapCadence`;
        None with no ``map_interval_s`` maps back to back. Not with ``map_interval_s``.
    pristine_map : bool
        Take map 0 before the protocol starts.
    max_maps : int or None
        Stop mapping after this many maps (>= 1); the protocol still runs to its end.
    map_during_rest : bool
        Map during open-circuit steps too.
    poll_s : float
        Period of the checks while waiting, in experiment seconds (> 0).
    md : dict or None
        Extra metadata for every run.
    """

    geometry: MapGeometry
    protocol: dict[str, Any] | str = "paper"
    time_scale: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    map_interval_s: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    map_schedule: list[tuple[float, float]] | None = None
    pristine_map: bool = True
    max_maps: int | None = Field(default=None, ge=1)
    map_during_rest: bool = True
    poll_s: float = Field(default=60.0, gt=0, allow_inf_nan=False)
    md: dict[str, Any] | None = None

    @field_validator("protocol")
    @classmethod
    def _protocol_loads(cls, value: dict[str, Any] | str) -> dict[str, Any] | str:
        load_protocol(value)  # refuse a bad protocol at validation, not when it starts
        return value

    @field_validator("map_schedule")
    @classmethod
    def _schedule_is_a_cadence(
        cls, value: list[tuple[float, float]] | None
    ) -> list[tuple[float, float]] | None:
        if value is not None:
            MapCadence(tuple(value))  # names the bad stretch
        return value

    @model_validator(mode="after")
    def _one_cadence(self) -> "ExperimentArguments":
        if self.map_interval_s is not None and self.map_schedule is not None:
            raise ValueError("give map_interval_s or map_schedule, not both")
        return self

    def step_table(self, window: SafetyWindow | None = None) -> StepTable:
        """The scaled protocol, checked against ``window`` when given.

        Raises
        ------
        PlanArgumentError
            When a step leaves the safety window (the step and limit are named).
        """
        table = load_protocol(self.protocol, time_scale=self.time_scale)
        if window is not None:
            try:
                table.check(window)
            except ProtocolError as error:
                raise PlanArgumentError(
                    f"operando_experiment_plan: bad argument\n  protocol: {error}"
                ) from None
        return table


def validate_experiment_arguments(values: dict[str, Any]) -> ExperimentArguments:
    """`ExperimentArguments` from plain values; raise `PlanArgumentError` naming a bad one.

    Examples
    --------
    >>> args = validate_experiment_arguments(
    ...     {"geometry": {"z_count": 6, "x_count": 5, "x_stop_um": 165.0}, "protocol": "paper"}
    ... )
    >>> args.geometry.x_pixel_um, len(args.step_table().steps)
    (33.0, 4)
    >>> try:
    ...     validate_experiment_arguments({"geometry": {"z_count": 0}})
    ... except PlanArgumentError as error:
    ...     print(error)
    operando_experiment_plan: bad argument
      geometry.z_count: Input should be greater than or equal to 1 (got 0)
    """
    try:
        return ExperimentArguments.model_validate(values)
    except ValidationError as error:
        raise PlanArgumentError(_describe(error, "operando_experiment_plan")) from None


def validate_map_arguments(values: dict[str, Any]) -> MapArguments:
    """`MapArguments` from plain values; raise `PlanArgumentError` naming a bad one."""
    try:
        return MapArguments.model_validate(values)
    except ValidationError as error:
        raise PlanArgumentError(_describe(error, "fly_map_plan")) from None


def _describe(error: ValidationError, plan: str) -> str:
    """A header naming the plan, then one indented line per bad argument."""
    return "\n  ".join([f"{plan}: bad argument", *_describe_items(error)])


def _describe_items(error: ValidationError) -> list[str]:
    """One line per bad argument: its dotted name, what is wrong and the value given."""
    lines = []
    for item in error.errors(include_url=False):
        where = ".".join(str(part) for part in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        given = "" if item["type"] in ("missing", "value_error") else f" (got {item['input']!r})"
        lines.append(f"{where}: {message}{given}")
    return lines
