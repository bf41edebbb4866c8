"""Validate the map pipeline against the digital twin's ground truth (issue 10, targets).

Renders maps from the twin directly (CellTwin + DiffractionRenderer, binned Eiger 4M, maps of
``n_z × n_x`` frames at times through the paper protocol, kept in memory), runs the
reduction + `analyze_map` + `ExperimentAnalysis` with the analysis's defaults, adds the
twin's truth to the products as ``truth_*`` arrays (as the rehearsal does) and prints the
report's truth table (`opmap.callbacks.report.report_table`: worst map, coverage, issue 10's
targets). The truth comes from the twin's state only: fields as scanned row by row, the
front from its phase boundary, the speed from its kinematics, grains with their identities
(rotating and drifting). Run::

    .venv/bin/python benchmarks/validate_twin.py [--n-z 49] [--n-x 49] [--maps 12]
        [--binning 4] [--interval-s 300] [--late-interval-s 1800 --late-from-s 2100]
        [--times T0 T1 ...] [--cache DIR] [--sampling-correction]
        [--sector-background between_spots]

Maps start at ``--first-s + m × --interval-s`` (protocol time, s; every
``--late-interval-s`` from ``--late-from-s`` on, if given), or at the ``--times`` given:
e.g. ``--times 0 300 600 900 1200 1500 1800 2100 14700 16500`` has the biphasic front's
crossing every 300 s (its last map sees it ~1.6 µm above the Pt), a single-phase map
after it, the discharge front near the electrolyte (14700 s) and a single-phase map during
discharge (16500 s), as the default rehearsal's maps.

``--cache DIR`` keeps each map's reduced frames and truth (~40 MB per 49 × 49 map, one file
per start time), so the analysis can be re-run without rendering again (same arguments
required).

Rendering costs ~30–70 ms per binned-2 frame on a shared 2-core machine (pessimistic).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import pickle
import time
from pathlib import Path

import numpy as np

from opmap.analysis.geometry import DetectorGeometry, eiger4m_integrator
from opmap.analysis.pipeline import (
    ExperimentAnalysis,
    MapLayout,
    analyze_map,
    sampling_correction,
)
from opmap.analysis.products import LabelledArray, Products
from opmap.analysis.reduction import compile_reduction
from opmap.callbacks.report import format_table, report_table
from opmap.devices import SafetyWindow, paper_protocol
from opmap.rehearse import analysis_parameters_for_twin
from opmap.twin import CellTwin, TwinConfig
from opmap.twin.forward import (
    DetectorMask,
    DiffractionConfig,
    DiffractionRenderer,
    ring_visibility,
)

LI_110_Q_INV_ANGSTROM = 2.545  # as opmap's simulated beamline
#: Time per frame (s): 0.05 s exposure + readout/motion share, so a map spans minutes.
FRAME_S = 0.1


def build(binning: int, seed: int, ti_band: str, sector_background: str = "linear"):
    config = TwinConfig(seed=seed)
    twin = CellTwin(config)
    twin.electrochemistry.start_protocol(paper_protocol(), SafetyWindow())
    ai = eiger4m_integrator(binning=binning)
    renderer = DiffractionRenderer(ai, DiffractionConfig(), twin.families)
    geometry = DetectorGeometry.from_integrator(ai, mask=DetectorMask().analysis_mask(ai))
    params = analysis_parameters_for_twin(config, ti_band=ti_band)
    params = type(params).model_validate(
        params.model_dump() | {"sector_background": sector_background}
    )
    return twin, renderer, compile_reduction(params.reduction_plan(), geometry), params, geometry


def li_visibility(binning: int):
    """``visible(chi)`` of the Li (110) ring on the binned Eiger (gaps, beamstop, shadow).

    A grain whose spot falls in a module gap is in diffraction condition but not on the
    detector: the true counts are those of visible grains, as in `opmap rehearse`.
    """
    ai = eiger4m_integrator(binning=binning)
    spot_fwhm_deg = TwinConfig().lithium.spot_fwhm_deg
    return ring_visibility(
        ai, DetectorMask(), q_inv_angstrom=LI_110_Q_INV_ANGSTROM, spot_fwhm_deg=spot_fwhm_deg
    )


def render(twin, renderer, layout, t0_s, frame_s, rng):
    """Frames of one map and the truth of every row at the time that row was scanned."""
    frames = np.empty((layout.n_frames, *renderer.shape), np.uint32)
    index = layout.frame_index()
    rows = []
    for i, z in enumerate(layout.z_um):
        for j, x in enumerate(layout.x_um):
            t = t0_s + frame_s * index[i, j]
            scene = twin.scene(z_um=float(z), x_start_um=x - 16.5, x_stop_um=x + 16.5, time_s=t)
            frames[index[i, j]] = renderer.render(scene, exposure_s=0.05, rng=rng)
        t_row = t0_s + frame_s * float(np.mean(index[i]))
        rows.append(twin.truth(z_um=np.array([z]), x_um=layout.x_um, time_s=t_row))
    return frames, rows


def as_scanned(rows, mid, twin, row_time_s):
    """Truth of the map as scanned: cathode fields row by row at each row's scan time.

    The cathode changes during a map (c by up to ~0.01 Å, the front by ~2 µm over 4 min):
    a pixel is compared with the sample at the moment it was measured. The anode and the
    grains are taken when the row at the middle of the Li layer was scanned.
    """
    stack = lambda get: np.concatenate([get(r) for r in rows], axis=0)  # noqa: E731
    # the front as the map saw it: the twin's boundary at the scan time of the rows there
    front_um, front_time_s = twin.front_as_scanned(mid.z_um, row_time_s)
    front_speed = twin.front_speed_nm_per_s(front_time_s) if np.isfinite(front_time_s) else np.nan
    families = list(mid.c_angstrom)
    z_li = 24.0 + float(mid.li_thickness_um.mean()) / 2
    li_row = rows[int(np.argmin([abs(r.z_um[0] - z_li) for r in rows]))]
    return dataclasses.replace(
        li_row,
        z_um=mid.z_um,
        c_angstrom={f: stack(lambda r, f=f: r.c_angstrom[f]) for f in families},
        a_angstrom={f: stack(lambda r, f=f: r.a_angstrom[f]) for f in families},
        x_li=stack(lambda r: r.x_li),
        rich_fraction=stack(lambda r: r.rich_fraction),
        front_position_um=np.array([front_um]),
        front_speed_nm_per_s=front_speed,
        sample_offset_um=mid.sample_offset_um,
    )


def map_data(args, twin, renderer, reduction, layout, m, rng):
    """Reduced frames, as-scanned truth and mid-map time of map ``m`` (cached on disk)."""
    t0 = map_start_s(args, m)
    path = None if args.cache is None else Path(args.cache) / f"map_t{t0:.0f}s.pkl"
    if path is not None and path.exists():
        with path.open("rb") as f:
            return pickle.load(f), 0.0
    t1 = time.perf_counter()
    frames, rows = render(twin, renderer, layout, t0, FRAME_S, rng)
    t_render = time.perf_counter() - t1
    mid = t0 + 0.5 * FRAME_S * layout.n_frames
    row_time_s = row_times_s(layout, t0)
    at_mid = twin.truth(z_um=layout.z_um, x_um=layout.x_um, time_s=mid)
    truth = as_scanned(rows, at_mid, twin, row_time_s)
    data = (reduction.reduce(frames), truth, mid)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as f:
            pickle.dump(data, f)
    return data, t_render


def map_start_s(args: argparse.Namespace, m: int) -> float:
    """Start of map ``m`` (s): ``--times`` if given, else every ``interval_s`` from
    ``first_s``, then every ``late_interval_s`` from ``late_from_s`` on (the rehearsal's
    5-min / 30-min cadence)."""
    if args.times:
        return args.times[m]
    t_s = args.first_s + m * args.interval_s
    if args.late_interval_s is None or t_s < args.late_from_s:
        return t_s
    n_early = int(np.ceil((args.late_from_s - args.first_s) / args.interval_s))
    return args.late_from_s + (m - n_early) * args.late_interval_s


def row_times_s(layout, t0_s: float) -> np.ndarray:
    """Scan time of each row (s): the mean time of its frames, as the live analysis has it."""
    return layout.row_time_s(t0_s + FRAME_S * np.arange(layout.n_frames))


def rms(a) -> float:
    return float(np.sqrt(np.nanmean(np.square(a))))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-z", type=int, default=49)
    parser.add_argument("--n-x", type=int, default=49)
    parser.add_argument("--maps", type=int, default=12)
    parser.add_argument("--first-s", type=float, default=60.0)
    parser.add_argument("--interval-s", type=float, default=300.0, help="map period (s)")
    parser.add_argument(
        "--late-interval-s", type=float, default=None,
        help="map period (s) from --late-from-s on (e.g. 1800, the rehearsal's late cadence)",
    )  # fmt: skip
    parser.add_argument("--late-from-s", type=float, default=2100.0)
    parser.add_argument(
        "--times", type=float, nargs="+", default=None,
        help="map start times (s, increasing); replaces --first-s/--interval-s/--maps",
    )  # fmt: skip
    parser.add_argument("--binning", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ti-band", default="ti_100", help="band locating the anode stack")
    parser.add_argument(
        "--sampling-correction",
        dest="sampling_correction",
        action="store_true",
        help="opt-in: correct (003) positions with the detector-sampling model (it models "
        "rings with the renderer's own formula)",
    )
    parser.add_argument(
        "--sector-background",
        choices=("linear", "between_spots"),
        default="linear",
        help="background under each family's (003) peak: 'linear' (default, the paper's) or "
        "opt-in 'between_spots' (the profile between all spots subtracted first)",
    )
    parser.add_argument(
        "--no-grain-noise-floor",
        dest="grain_noise_floor",
        action="store_false",
        help="Li spots by the paper's k x mean threshold alone (no Poisson noise floor)",
    )
    parser.add_argument("--cache", default=None, help="directory keeping reduced maps + truth")
    args = parser.parse_args()
    if args.times:
        if np.any(np.diff(args.times) <= 0):
            parser.error(f"--times must increase, got {args.times}")
        args.maps = len(args.times)
    return args


def main() -> None:
    args = parse_args()
    twin, renderer, reduction, params, geometry = build(
        args.binning, args.seed, args.ti_band, args.sector_background
    )
    if not args.grain_noise_floor:
        params = params.model_copy(update={"grain_false_spots_per_map": None})
    check_rows_reach_anode(args.n_z, twin.config.geometry)
    # The LCO spots' azimuthal FWHM (6°) is measured on the cake (a sample property).
    sampling = (
        sampling_correction(reduction, geometry, params, chi_fwhm_deg=6.0)
        if args.sampling_correction
        else None
    )
    z_um = -2.0 + np.arange(args.n_z) * 1.0
    x_um = 1000.0 + 33.0 * (np.arange(args.n_x) - args.n_x / 2 + 0.5)
    layout = MapLayout(n_z=args.n_z, n_x=args.n_x, z_um=z_um, x_um=x_um)
    options = {"chi_fwhm_deg": 6.0} if args.sampling_correction else None
    experiment = ExperimentAnalysis(layout, params, metadata={"sampling_options": options})
    rng = np.random.default_rng(args.seed)
    visible = li_visibility(args.binning)
    truths, rows = [], []
    t_render = t_analyse = 0.0
    for m in range(args.maps):
        (reduced, truth, mid), t_map = map_data(args, twin, renderer, reduction, layout, m, rng)
        t_render += t_map
        t2 = time.perf_counter()
        result = analyze_map(reduced, layout, params, map_index=m, time_s=mid, sampling=sampling)
        experiment.add_map(result, row_time_s=row_times_s(layout, map_start_s(args, m)))
        t_analyse += time.perf_counter() - t2
        on_detector = np.array([visible(a) for a in truth.grain_azimuth_deg], dtype=bool)
        truth = dataclasses.replace(truth, grain_visible=truth.grain_visible & on_detector)
        truths.append(truth)
        rows.append(map_row(result, truth))
        print(f"map {m} t={mid:.0f} s " + " ".join(f"{k}={v:.4g}" for k, v in rows[-1].items()))
    products = experiment.products()
    summary(products, truths, rows, layout)
    n = args.maps * layout.n_frames
    print(f"\n{n} frames: render {1e3 * t_render / n:.1f} ms/frame, reduce+analyse "
          f"{1e3 * t_analyse / n:.2f} ms/frame (shared 2 cores: pessimistic)")  # fmt: skip


def check_rows_reach_anode(n_z: int, geometry) -> None:
    """Refuse a map whose rows (z = −2 + i µm) stop below the anode stack's top (Au).

    The Ti (Li thickness, distance reference) and the Li grains lie above the cathode: a
    shorter map (e.g. ``--n-z 24``, top row 21 µm) has neither, and its distance scale, Ti
    position and grain counts are NaN or zero by construction, not misses of the analysis.
    """
    top_um = (geometry.lco_thickness_um + geometry.lipon_thickness_um
              + geometry.ti_thickness_um + geometry.parylene_thickness_um
              + geometry.au_thickness_um)  # fmt: skip
    needed = int(np.ceil(top_um + 2.0 + 2.0))  # rows from z = -2 µm, 2 rows above the Au
    if n_z < needed:
        raise SystemExit(
            f"--n-z must be >= {needed}: rows from -2 µm must pass the anode stack's top at "
            f"{top_um:g} µm (Ti, Li grains, Au), got {n_z}"
        )


def map_row(result, truth) -> dict[str, float]:
    row: dict[str, float] = {}
    for family in ("perp", "par"):
        d_c = result.c_angstrom[family] - truth.c_angstrom[family]
        d_a = result.a_angstrom[family] - truth.a_angstrom[family]
        row[f"c_rms_{family}"] = rms(d_c)
        # Map means over the pixels where both the fit and the truth exist.
        row[f"c_mean_err_{family}"] = float(np.nanmean(d_c))
        row[f"a_mean_err_{family}"] = float(np.nanmean(d_a))
        row[f"a_rms_{family}"] = rms(d_a)
    row["x_rms_perp"] = rms(result.x_li["perp"] - truth.x_li)
    row["grains"] = float(len(result.grains))
    row["grains_true"] = float(np.sum(truth.grain_visible))
    return row


def summary(products, truths, rows, layout) -> None:
    """Print the report's truth table for the products plus the twin's truth."""
    products = with_truth(products, truths)
    print()
    print(format_table(report_table(products)), end="")
    total = products.arrays["grains_total"].values.astype(int).tolist()
    print("grains recovered / true per map:", total, [int(r["grains_true"]) for r in rows])
    front = products.arrays["front_position"].values
    true_front = products.arrays["truth_front_position"].values
    print("front recovered / true (µm):", np.round(front, 2).tolist(),
          np.round(true_front, 2).tolist())  # fmt: skip
    print("front speed (twin kinematics, nm/s):",
          np.round(products.arrays["truth_front_speed"].values, 2).tolist())  # fmt: skip


def with_truth(products: Products, truths) -> Products:
    """``products`` plus the twin's truth as ``truth_*`` arrays (names as in the rehearsal)."""
    zx = ("map", "z", "x")
    arrays = dict(products.arrays)
    for family in truths[0].c_angstrom:
        arrays[f"truth_c_{family}"] = LabelledArray(
            np.stack([t.c_angstrom[family] for t in truths]), zx, "angstrom"
        )
        arrays[f"truth_a_{family}"] = LabelledArray(
            np.stack([t.a_angstrom[family] for t in truths]), zx, "angstrom"
        )
    arrays["truth_x_li"] = LabelledArray(np.stack([t.x_li for t in truths]), zx, "")
    per_map = {
        "truth_front_position": ([np.nanmean(t.front_position_um) for t in truths], "um"),
        "truth_front_speed": ([t.front_speed_nm_per_s for t in truths], "nm/s"),
        # the analysis measures the Ti displacement since the first map
        "truth_li_thickness_mean": (
            [t.li_thickness_um.mean() - truths[0].li_thickness_um.mean() for t in truths],
            "um",
        ),
    }
    ids = [set(t.grain_id[t.grain_visible].tolist()) for t in truths]
    per_map["truth_grains_total"] = ([len(i) for i in ids], "")
    per_map["truth_grains_new"] = (
        [len(ids[0])] + [len(b - a) for a, b in itertools.pairwise(ids)],
        "",
    )
    per_map["truth_grains_deceased"] = ([0] + [len(a - b) for a, b in itertools.pairwise(ids)], "")
    for name, (values, units) in per_map.items():
        arrays[name] = LabelledArray(np.asarray(values, float), ("map",), units)
    return Products(arrays, products.coords, products.tables, products.metadata)  # fmt: skip


if __name__ == "__main__":
    main()
