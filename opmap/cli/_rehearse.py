"""``opmap rehearse``: the paper's experiment on the digital twin (see `opmap.rehearse`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from opmap.rehearse import (
    CLOCKS,
    NETWORK_MAP_SHAPE,
    NETWORK_SPEEDUP,
    NETWORK_TIME_SCALE,
    PAPER_MAP_SCHEDULE,
    RehearsalOptions,
    rehearse,
)
from opmap.service import DataDirInUseError

from ._replay import parse_overrides


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``rehearse`` sub-command."""
    parser = subparsers.add_parser(
        "rehearse",
        help="rehearse the paper's operando experiment on simulated hardware",
        description=(
            "Start the embedded Tiled server, build the simulated beamline, calibrate on "
            "simulated CeO2, then run the paper's protocol with maps throughout and the live "
            "analysis, on the event-driven clock (--clock wall: in wall time)."
        ),
    )
    parser.add_argument("--data-dir", type=Path, default=Path("opmap-data"))
    _add_experiment_options(parser)
    _add_control_options(parser)
    parser.add_argument("--max-maps", type=int, default=None)
    parser.add_argument("--no-live-analysis", action="store_true")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="overrides",
        help="a live-analysis parameter other than its default (JSON value), e.g. "
        "--set sector_background=between_spots; repeatable",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of every random draw (detector noise, Li grains): same seed, same "
        "experiment (default 0)",
    )
    parser.set_defaults(func=run)


def _add_experiment_options(parser: argparse.ArgumentParser) -> None:
    """The detector readout, the maps and the protocol's timeline."""
    parser.add_argument(
        "--full-detector",
        action="store_true",
        help="render the full Eiger 4M (2167 x 2070) instead of the 4 x 4-binned readout",
    )
    parser.add_argument("--binning", type=int, choices=(1, 2, 4), default=None)
    parser.add_argument(
        "--map-shape",
        type=int,
        nargs=2,
        metavar=("NZ", "NX"),
        default=None,
        help=f"map pixels (default 49 49; {NETWORK_MAP_SHAPE[0]} {NETWORK_MAP_SHAPE[1]} with "
        "--control network)",
    )
    parser.add_argument(
        "--map-interval-s",
        type=float,
        default=None,
        help="protocol time between map starts (s), instead of the schedule; 0 = back to back",
    )
    parser.add_argument(
        "--map-schedule",
        type=_schedule,
        default=PAPER_MAP_SCHEDULE,
        metavar="FROM:INTERVAL,...",
        help="map cadence in protocol time (s): from FROM on, a map every INTERVAL "
        "(default %(default)s: every 5 min while the biphasic front crosses the cathode)",
    )
    parser.add_argument(
        "--no-pristine-map",
        action="store_true",
        help="do not map the cell before the protocol starts",
    )
    parser.add_argument(
        "--time-scale",
        type=float,
        default=None,
        help="multiply the protocol's durations (default 1 = the paper's real timeline; "
        f"{NETWORK_TIME_SCALE:g} with --control network)",
    )


def _add_control_options(parser: argparse.ArgumentParser) -> None:
    """In-process simulation or the real devices over the network."""
    parser.add_argument(
        "--control",
        choices=("sim", "network"),
        default="sim",
        help="sim (default): simulated devices in this process, event-driven clock; network: "
        "start `opmap sim-beamline` and drive it with the real devices over Channel Access "
        "and SIMPLON HTTP, in wall time",
    )
    parser.add_argument(
        "--speedup",
        type=float,
        default=NETWORK_SPEEDUP,
        help="--control network or --clock wall: cell seconds per wall second (default "
        "%(default)g); motors and exposures run in wall time",
    )
    parser.add_argument(
        "--clock",
        choices=CLOCKS,
        default=None,
        help="--control sim: event (default) = event-driven clock, exposures and moves cost "
        "no wall time; wall = motors and exposures in wall time and the cell at --speedup x "
        "wall, as over the network (network control is always wall)",
    )


def _schedule(text: str) -> tuple[tuple[float, float], ...]:
    """``"0:300,2100:1800"`` -> ((0.0, 300.0), (2100.0, 1800.0))."""
    try:
        return tuple(
            (float(start), float(interval))
            for start, interval in (item.split(":") for item in text.split(","))
        )
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not FROM:INTERVAL[,FROM:INTERVAL...] in seconds"
        ) from None


def run(args: argparse.Namespace) -> int:
    """Run the rehearsal; bad options exit with status 2 and a message."""
    binning = 1 if args.full_detector else (args.binning or 4)
    network = args.control == "network"
    map_shape = args.map_shape or (NETWORK_MAP_SHAPE if network else (49, 49))
    time_scale = args.time_scale
    if time_scale is None:
        time_scale = NETWORK_TIME_SCALE if network else 1.0
    try:
        overrides = parse_overrides(args.overrides)
        options = RehearsalOptions(
            data_dir=args.data_dir,
            binning=binning,
            map_shape=tuple(map_shape),
            map_interval_s=args.map_interval_s or None,
            map_schedule=None if args.map_interval_s == 0 else args.map_schedule,
            pristine_map=not args.no_pristine_map,
            time_scale=time_scale,
            max_maps=args.max_maps,
            live_analysis=not args.no_live_analysis,
            seed=args.seed,
            control=args.control,
            speedup=args.speedup,
            clock=args.clock,
            analysis_overrides=overrides,
        )
    except ValueError as error:
        print(f"opmap rehearse: {error}")
        return 2
    from opmap._network_control import NetworkStartError

    try:
        result = rehearse(options)
    except DataDirInUseError as error:  # another server holds the data dir: nothing was run
        print(f"opmap rehearse: {error}")
        return 2
    except NetworkStartError as error:  # the child is stopped already; nothing was run
        print(f"opmap rehearse: {error}")
        return 3
    failed = False
    if result.runs_not_landed:  # said in the summary, per run: emitted against stored
        print(f"opmap rehearse: {len(result.runs_not_landed)} run(s) not fully stored in Tiled")
        failed = True
    if result.analysis_failures:  # no silent loss: the summary counted them
        print(f"opmap rehearse: {result.analysis_failures} analysis error(s); see the log")
        failed = True
    return 1 if failed else 0
