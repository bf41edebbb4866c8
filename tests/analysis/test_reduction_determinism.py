"""The compiled Li window is the same whichever thread builds it (issue 14).

pyFAI's 2D engine clamps a pixel that crosses the ends of its radial range onto them; when
the clamped polygon degenerates (a sliver of the pixel inside the range), the pixel's split
between azimuth bins is 0/0 and comes out as whatever the building thread's memory held.
The live analysis compiles its reduction in whichever thread meets the first start
document, so two rehearsals of one seed had different Li windows (a whole bin's weights
changed), different spot thresholds and different grains, while the 1D profiles, and the
lattice maps from them, agreed bit for bit. With the old code the Li window compiled in a
fresh thread differs from the one compiled in the main thread for this geometry.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from opmap.analysis.geometry import DetectorGeometry, eiger4m_integrator
from opmap.analysis.grains import find_grains_for_thresholds
from opmap.analysis.reduction import CompiledReduction, compile_reduction
from opmap.rehearse import analysis_parameters_for_twin
from opmap.twin import TwinConfig
from opmap.twin.forward import DetectorMask


@pytest.fixture(scope="module")
def setup():
    """The rehearsal's 4 × 4-binned Eiger with its analysis mask, and the twin's plan."""
    ai = eiger4m_integrator(binning=4)
    geometry = DetectorGeometry.from_integrator(ai, mask=DetectorMask().analysis_mask(ai))
    return geometry, analysis_parameters_for_twin(TwinConfig(seed=0)).reduction_plan()


def _in_new_thread(build) -> CompiledReduction:
    box: dict[str, CompiledReduction] = {}
    thread = threading.Thread(target=lambda: box.setdefault("reduction", build()))
    thread.start()
    thread.join()
    return box["reduction"]


def _li_part(reduction: CompiledReduction):
    segment = next(s for s in reduction._segments if s.key == "li_window")
    return reduction.matrix[segment.start : segment.stop], reduction._empty[segment.start :]


def test_li_window_does_not_depend_on_the_thread_that_compiles_it(setup) -> None:
    geometry, plan = setup
    reductions = [compile_reduction(plan, geometry)]
    reductions += [_in_new_thread(lambda: compile_reduction(plan, geometry)) for _ in range(2)]
    rng = np.random.default_rng(5)
    frames = rng.poisson(50.0, (6, *geometry.shape)).astype(np.uint32)
    windows = [r.reduce(frames).li_window for r in reductions]
    for window in windows[1:]:  # the symptom: the same frames, other Li windows
        np.testing.assert_array_equal(window, windows[0])
    tables = [
        find_grains_for_thresholds(np.nan_to_num(w).reshape(2, 3, 360, 10), (10.0, 6.0))
        for w in windows
    ]
    for by_k in tables[1:]:
        for k, table in by_k.items():
            for name, values in table.to_dict().items():
                np.testing.assert_array_equal(values, tables[0][k].to_dict()[name], name)
    first, first_empty = _li_part(reductions[0])
    for other in reductions[1:]:  # the cause: the compiled Li-window weights
        matrix, empty = _li_part(other)
        np.testing.assert_array_equal(matrix.indptr, first.indptr)
        np.testing.assert_array_equal(matrix.indices, first.indices)
        np.testing.assert_array_equal(matrix.data, first.data)
        np.testing.assert_array_equal(empty, first_empty)
