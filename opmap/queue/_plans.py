"""The plans the queue server offers: plain arguments in, opmap's plans on the session's devices.

A queue item names a plan and gives JSON values. The plans here take only such values (the
devices are the session's, bound when the worker's environment opens), validate them with
`opmap.queue._args` before their first message, then yield from `operando_experiment` or
`fly_map`. This module deliberately has no ``from __future__ import annotations``: the queue
server reads the annotations as objects to check the types of a submitted item.
"""

from collections.abc import Callable
from typing import Any

from bluesky.utils import MsgGenerator

from opmap.plans import fly_map, operando_experiment

from ._args import (
    ExperimentArguments,
    validate_experiment_arguments,
    validate_map_arguments,
)

__all__ = ["QUEUE_PLAN_NAMES", "queue_namespace", "queue_plans"]

#: Names of the plans `queue_plans` returns (the queue server's allowed plans).
QUEUE_PLAN_NAMES = ("operando_experiment_plan", "fly_map_plan")

#: Parameter names of ``operando_experiment_plan``: the fields it validates.
_ARGUMENTS = tuple(ExperimentArguments.model_fields)


def queue_plans(beamline: Any) -> dict[str, Callable[..., MsgGenerator[Any]]]:
    """The queue-facing plans bound to ``beamline``'s devices, by name.

    Parameters
    ----------
    beamline
        An `opmap.beamline.Beamline` (connected): its potentiostat, Eiger and stage axes run
        the plans; its safety window checks protocols before anything moves.
    """
    return {
        "operando_experiment_plan": _operando_plan(beamline),
        "fly_map_plan": _fly_map_plan(beamline),
    }


def queue_namespace(session: Any) -> dict[str, Any]:
    """What the queue server's worker sees: ``RE``, the devices and the queue-facing plans.

    Only these names: the worker lists every plan and device it finds, and users may submit
    only what the permissions file allows (see `opmap.queue.user_group_permissions`).
    """
    names: dict[str, Any] = {"RE": session.RE}
    names.update(session.beamline.devices)
    names.update(queue_plans(session.beamline))
    return names


def _operando_plan(beamline: Any) -> Callable[..., MsgGenerator[list[str]]]:
    def operando_experiment_plan(
        geometry: dict,
        protocol: dict | str = "paper",
        time_scale: float = 1.0,
        map_interval_s: float | None = None,
        map_schedule: list | None = None,
        pristine_map: bool = True,
        max_maps: int | None = None,
        map_during_rest: bool = True,
        poll_s: float = 60.0,
        md: dict | None = None,
    ) -> MsgGenerator[list[str]]:
        """The operando experiment: a protocol on the potentiostat, maps until it ends.

        Every argument is checked before anything moves; a bad one stops the plan with a
        message naming it. One run per map, then an electrochemistry tail run.

        Parameters
        ----------
        geometry
            Map geometry, fields of MapGeometry in µm and s, e.g. {"z_count": 6, "x_count":
            5, "x_start_um": 200, "x_stop_um": 365}.
        protocol
            "paper" (4.3 V charge, rest, 2 µA discharge to 3.0 V, rest), the path of a TOML
            file with [[steps]] tables, or {"steps": [{"technique": "constant voltage",
            "max_duration_s": 3600, "setpoint": 4.3}, ...]}.
        time_scale
            Multiplies every protocol duration (> 0; 1 = as given, 0.02 to rehearse).
        map_interval_s
            Protocol time between map starts (s, > 0); None = ``map_schedule``.
        map_schedule
            [[from_time_s, interval_s], ...]: from protocol time from_time_s on, a map
            every interval_s (the first from 0); None (no map_interval_s) = back to back.
        pristine_map
            Map the cell before the protocol starts (map 0).
        max_maps
            Stop mapping after this many maps (>= 1); the protocol still runs to its end.
        map_during_rest
            Map during open-circuit steps too.
        poll_s
            Period of the checks while waiting (s of experiment time, > 0).
        md
            Extra metadata for every run.
        """
        arguments = {name: value for name, value in locals().items() if name in _ARGUMENTS}
        return (yield from _experiment(beamline, arguments))

    return operando_experiment_plan


def _experiment(beamline: Any, arguments: dict[str, Any]) -> MsgGenerator[list[str]]:
    """Validate ``arguments`` (before the first message), then run `operando_experiment`."""
    args = validate_experiment_arguments(arguments)
    table = args.step_table(beamline.config.window)
    return (
        yield from operando_experiment(
            beamline.potentiostat,
            beamline.eiger,
            beamline.stage.x,
            beamline.stage.z,
            table,
            args.geometry,
            map_interval_s=args.map_interval_s,
            map_schedule=args.map_schedule,
            pristine_map=args.pristine_map,
            map_during_rest=args.map_during_rest,
            max_maps=args.max_maps,
            poll_s=args.poll_s,
            md={**(args.md or {}), "queue_arguments": arguments},
        )
    )


def _fly_map_plan(beamline: Any) -> Callable[..., MsgGenerator[str]]:
    def fly_map_plan(geometry: dict, md: dict | None = None) -> MsgGenerator[str]:
        """One 2-D fly map (one run): x lines flown continuously, stepped in z.

        Parameters
        ----------
        geometry
            Map geometry, fields of MapGeometry in µm and s.
        md
            Extra start-document metadata.
        """
        args = validate_map_arguments({"geometry": geometry, "md": md})
        stage = beamline.stage
        return (yield from fly_map(beamline.eiger, stage.x, stage.z, args.geometry, md=args.md))

    return fly_map_plan
