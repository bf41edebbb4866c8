"""A stock ophyd-async detector through opmap's live analysis, unchanged.

ophyd-async's own `SimBlobDetector` (a plain `StandardDetector` writing HDF5 frames) declares
its frame key ``[1, H, W]`` and its per-frame sum ``[1]``, while the file holds
``(N, H, W)``. Flown by `fly_map` on the simulated stage, its documents go through
`LiveAnalysis` as they are: the map the live analysis reduces is the map the offline
pipeline reduces from the same file, frame for frame.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import h5py
import numpy as np
from ophyd_async.core import StaticPathProvider, UUIDFilenameProvider, init_devices
from ophyd_async.sim import SimBlobDetector
from pyFAI.detectors import Detector

from opmap.analysis.families import FamilyConfig
from opmap.analysis.geometry import DetectorGeometry
from opmap.analysis.pipeline import AnalysisParameters, analyze_map
from opmap.analysis.reduction import compile_reduction
from opmap.callbacks.guard import GuardedCallback
from opmap.callbacks.live_analysis import LiveAnalysis, layout_from_start
from opmap.devices.sim import SimClock, SimMapStage
from opmap.plans import MapGeometry, fly_map

#: The blob detector's frames (ophyd_async.sim: 240 rows x 320 columns), 300 µm pixels.
BLOB_SHAPE = (240, 320)
GEOMETRY = DetectorGeometry(
    Detector(pixel1=300e-6, pixel2=300e-6, max_shape=BLOB_SHAPE),
    distance_m=0.05,
    poni1_m=0.036,
    poni2_m=0.048,
)
MAP = MapGeometry(
    z_start_um=18.0,
    z_step_um=1.0,
    z_count=2,
    x_start_um=0.0,
    x_stop_um=90.0,
    x_count=3,
    exposure_s=0.02,
)
PARAMS = AnalysisParameters(
    families=FamilyConfig.model_validate(
        {"family": [{"name": "perp", "azimuths_003_deg": [25, 160], "azimuths_110_deg": [90]}]}
    )
)


def test_blob_detector_documents_go_through_the_live_analysis_unchanged(RE, tmp_path: Path):
    with init_devices():
        stage = SimMapStage(SimClock())
        blob = SimBlobDetector(StaticPathProvider(UUIDFilenameProvider(), tmp_path))
    documents: list[tuple[str, dict]] = []
    results = []
    live = LiveAnalysis(PARAMS, GEOMETRY, on_map=[lambda _, result: results.append(result)])
    guard = GuardedCallback(live)
    RE.subscribe(lambda name, doc: documents.append((name, doc)))
    RE.subscribe(guard)
    RE(fly_map(blob, stage.x, stage.z, MAP, md={"experiment_id": "stock", "map_index": 0}))
    live.finish()

    descriptor = next(d for n, d in documents if n == "descriptor" and d["name"] == "primary")
    assert descriptor["data_keys"]["blob"]["shape"] == [1, *BLOB_SHAPE]  # stock convention
    assert guard.total_failures == 0 and live.failures == 0
    assert live.maps_analysed == 1 and len(results) == 1

    # the same map from the file the detector wrote, reduced offline: (N, H, W) frames
    resource = next(d for n, d in documents if n == "stream_resource" and d["data_key"] == "blob")
    with h5py.File(urlparse(resource["uri"]).path, "r") as f:
        frames = f[resource["parameters"]["dataset"]][()]
    assert frames.shape == (MAP.z_count * MAP.x_count, *BLOB_SHAPE)
    start = next(d for n, d in documents if n == "start")
    reduced = compile_reduction(PARAMS.reduction_plan(), GEOMETRY).reduce(frames)
    offline = analyze_map(reduced, layout_from_start(start), PARAMS, map_index=0, time_s=0.0)
    for band, values in offline.band_intensity.items():
        assert np.isfinite(values).all() and values.max() > 0, band
        np.testing.assert_allclose(results[0].band_intensity[band], values, rtol=1e-6)
