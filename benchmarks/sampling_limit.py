"""How well can a (003) / (110) position be measured at each detector binning? (issue 10)

The rehearsal reads the Eiger 4M binned 4 × 4 by default (300 µm pixels, for speed). Near the
LCO (003) ring one binned pixel spans ~0.027 Å⁻¹ in q, 2.6 times the peak's FWHM (~0.0105
Å⁻¹: sample broadening and instrument resolution). A ring sampled by pixels that all sit at
the same radial phase — the case of spots at 90° and 270° azimuth on a square pixel grid,
where the LCO∥ (003) spots are — cannot be located inside a pixel: the Gaussian fit of the
integrated profile is off by up to half a pixel, whatever the analysis does with the
profile. Spots at oblique azimuths (LCO⊥ at 25°, 160°, 205°, 345°) cross many radial phases
and average the error out.

This script measures that limit without noise: for one cathode scene of the twin it renders
the expected counts of each orientation family alone (no Poisson noise), reduces them with
the analysis's own reduction plan and fits the family's (003) and (110) profiles with the
analysis's default Gaussian fit, at binning 1 (the real 75 µm Eiger), 2 and 4, with the sample
on the calibrated position and at the twin's sample offset along the beam (no distance
correction: this is the parallax the correction has to remove). Errors are against the
lattice parameters of the scene the twin rendered (its state), not against any analysis. ::

    .venv/bin/python benchmarks/sampling_limit.py [--binnings 1 2 4] [--time-s 3000]

Target (issue 10): c per pixel ≤ 0.003 Å, map-mean a ≤ 0.0005 Å.
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np

from opmap.analysis.fitting import fit_gaussian
from opmap.analysis.geometry import DetectorGeometry, eiger4m_integrator
from opmap.analysis.lattice import a_from_q110, c_from_q003
from opmap.analysis.reduction import compile_reduction
from opmap.devices import SafetyWindow, paper_protocol
from opmap.rehearse import analysis_parameters_for_twin
from opmap.twin import CellTwin, TwinConfig
from opmap.twin.forward import DetectorMask, DiffractionConfig, DiffractionRenderer

C_TARGET_ANGSTROM = 0.003
A_TARGET_ANGSTROM = 0.0005
#: Counting time of the noise-free frame (s): long, so the background fit is well posed.
EXPOSURE_S = 5.0


def position_errors(binning: int, time_s: float, z_um: float) -> list[dict[str, object]]:
    """c and a errors (Å) per family and sample position at one binning, noise-free."""
    config = TwinConfig(seed=0)
    twin = CellTwin(config)
    twin.electrochemistry.start_protocol(paper_protocol(), SafetyWindow())
    ai = eiger4m_integrator(binning=binning)
    renderer = DiffractionRenderer(ai, DiffractionConfig(), twin.families)
    geometry = DetectorGeometry.from_integrator(ai, mask=DetectorMask().analysis_mask(ai))
    params = analysis_parameters_for_twin(config)
    reduction = compile_reduction(params.reduction_plan(), geometry)
    scene = twin.scene(z_um=z_um, x_start_um=983.5, x_stop_um=1016.5, time_s=time_s)
    rows = []
    for offset_um in (0.0, scene.sample_offset_um):
        for phase in scene.lco_phases:
            alone = dataclasses.replace(scene, sample_offset_um=offset_um, lco_phases=(phase,))
            counts = renderer.expected_counts(alone, exposure_s=EXPOSURE_S)
            reduced = reduction.reduce(counts[None].astype(np.float32))
            c = _fitted(reduced, f"{phase.family}:003", c_from_q003)
            a = _fitted(reduced, f"{phase.family}:110", a_from_q110)
            rows.append({
                "binning": binning, "family": phase.family, "offset_um": offset_um,
                "dc": c - phase.c_angstrom, "da": a - phase.a_angstrom,
            })  # fmt: skip
    return rows


def _fitted(reduced, key: str, to_lattice) -> float:
    fit = fit_gaussian(reduced.profiles[key], reduced.profile_q[key], min_snr=3.0)
    value, _ = to_lattice(fit.position_q)
    return float(value[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binnings", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--time-s", type=float, default=3000.0, help="scene time (s)")
    parser.add_argument("--z-um", type=float, default=10.0, help="row height in the cathode")
    args = parser.parse_args()
    print(f"noise-free (003)/(110) position errors, scene at t = {args.time_s:g} s, "
          f"z = {args.z_um:g} µm (one pure phase per family)")  # fmt: skip
    print("| binning | pixel | family | sample offset (µm) | c error (Å) | c target | "
          "a error (Å) | a target |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for binning in args.binnings:
        for row in position_errors(binning, args.time_s, args.z_um):
            c_ok = "yes" if abs(row["dc"]) <= C_TARGET_ANGSTROM else "NO"
            a_ok = "yes" if abs(row["da"]) <= A_TARGET_ANGSTROM else "NO"
            print(f"| {binning} | {75 * binning} µm | {row['family']} | {row['offset_um']:.0f} "
                  f"| {row['dc']:+.4f} | {c_ok} | {row['da']:+.5f} | {a_ok} |")  # fmt: skip


if __name__ == "__main__":
    main()
