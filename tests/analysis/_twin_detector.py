"""The twin on the simulated Eiger 4M: noise-free frames of its cell for accuracy tests.

The twin's forward model renders the frames; the analysis shares none of it. Tests compare
what the analysis reads from these frames with the twin's own state.
"""

from __future__ import annotations

from typing import NamedTuple

from opmap.analysis.geometry import DetectorGeometry, eiger4m_integrator
from opmap.analysis.pipeline import AnalysisParameters
from opmap.devices import SafetyWindow, paper_protocol
from opmap.rehearse import analysis_parameters_for_twin
from opmap.twin import CellTwin, TwinConfig
from opmap.twin.forward import DetectorMask, DiffractionConfig, DiffractionRenderer


class TwinOnDetector(NamedTuple):
    """A twin running the paper's protocol, its renderer and the analysis's view of both."""

    twin: CellTwin
    renderer: DiffractionRenderer
    geometry: DetectorGeometry
    params: AnalysisParameters


def twin_on_binned_eiger(binning: int, seed: int = 0) -> TwinOnDetector:
    """The twin (seed ``seed``) on the Eiger 4M read ``binning`` × ``binning`` binned, with
    the detector's analysis mask and the rehearsal's analysis parameters."""
    config = TwinConfig(seed=seed)
    twin = CellTwin(config)
    twin.electrochemistry.start_protocol(paper_protocol(), SafetyWindow())
    ai = eiger4m_integrator(binning=binning)
    renderer = DiffractionRenderer(ai, DiffractionConfig(), twin.families)
    geometry = DetectorGeometry.from_integrator(ai, mask=DetectorMask().analysis_mask(ai))
    return TwinOnDetector(twin, renderer, geometry, analysis_parameters_for_twin(config))
