"""End to end: fly maps of the sim Eiger through a real RunEngine with the live analysis
subscribed (guarded, in process), products grown in an in-process Tiled app, compared with
the offline pipeline run on the same frames read from the files."""

from __future__ import annotations

import threading
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401
import numpy as np
import pytest
from event_model import DocumentNames, schema_validators
from tiled.client import Context, from_context

from opmap.analysis.families import FamilyConfig
from opmap.analysis.pipeline import AnalysisParameters, ExperimentAnalysis, analyze_map
from opmap.analysis.reduction import compile_reduction
from opmap.callbacks.guard import GuardedCallback
from opmap.callbacks.live_analysis import LiveAnalysis, layout_from_start
from opmap.callbacks.tiled_products import read_latest
from opmap.callbacks.tiled_writer import ensure_layout
from opmap.plans import fly_map
from opmap.service import build_in_process_app
from opmap.settings import OpmapSettings

from ._live_rig import GEOMETRY, RE, SMALL_MAP, c_truth_angstrom, rig  # noqa: F401

pytestmark = pytest.mark.filterwarnings(
    "ignore:Using `httpx` with `starlette.testclient` is deprecated"
)

FAMILIES = FamilyConfig.model_validate(
    {
        "family": [
            {"name": "perp", "azimuths_003_deg": [25, 160, 205, 345], "azimuths_110_deg": [90]},
            {"name": "par", "azimuths_003_deg": [90, 275], "azimuths_110_deg": [210]},
        ]
    }
)
PARAMS = AnalysisParameters(families=FAMILIES)
EXPERIMENT = "live-e2e"


@pytest.fixture
def processed(tmp_path: Path):
    settings = OpmapSettings(data_dir=tmp_path / "opmap-data")
    with Context.from_app(build_in_process_app(settings)) as context:
        yield ensure_layout(from_context(context))["processed"]


def _offline_products(directory: Path, uids: list[str]):
    """The offline pipeline on the frames of the master files, in acquisition order."""
    reduction = compile_reduction(PARAMS.reduction_plan(), GEOMETRY)
    layout = None
    experiment = None
    masters = sorted(directory.glob("*_master.h5"), key=lambda p: p.stat().st_mtime)
    for index, master in enumerate(masters):
        with h5py.File(master, "r") as f:
            frames = f["/entry/data/data"][()]
            time_s = float(np.mean(f["/entry/opmap/time_s"][()]))
        layout = layout_from_start({"uid": "x", "map_geometry": SMALL_MAP.model_dump()})
        if experiment is None:
            experiment = ExperimentAnalysis(layout, PARAMS)
        result = analyze_map(
            reduction.reduce(frames), layout, PARAMS, map_index=index, time_s=time_s
        )
        experiment.add_map(result)
    return experiment.products()


@pytest.mark.parametrize("background", [False, True], ids=["in-thread", "worker-thread"])
def test_live_products_in_tiled_equal_offline_pipeline_and_recover_c(
    RE,  # noqa: F811
    rig,  # noqa: F811
    processed,
    background,
):
    stage, eiger, directory = rig
    derived: list[tuple[str, dict]] = []

    def keep(name, doc):
        schema_validators[DocumentNames(name)].validate(doc)
        derived.append((name, doc))

    live = LiveAnalysis(PARAMS, GEOMETRY, processed=processed, emit=keep, background=background)
    guard = GuardedCallback(live)
    RE.subscribe(guard)
    uids = []
    for map_index in range(2):
        md = {"experiment_id": EXPERIMENT, "map_index": map_index}
        uids += RE(fly_map(eiger, stage.x, stage.z, SMALL_MAP, md=md)).run_start_uids
    live.finish()  # waits for the worker thread when analysing in the background
    assert guard.total_failures == 0 and live.failures == 0
    assert live.maps_analysed == 2

    stored = read_latest(processed, EXPERIMENT)
    offline = _offline_products(directory, uids)
    live_maps = [n for n, a in offline.arrays.items() if a.dims[:1] == ("map",)]
    assert ("c_perp" in live_maps and "ti_z_um" in " ".join(live_maps)) or live_maps
    for name in live_maps:
        np.testing.assert_allclose(
            stored.arrays[name].values,
            offline.arrays[name].values,
            rtol=1e-6,
            equal_nan=True,
            err_msg=name,
        )
        assert stored.arrays[name].dims == offline.arrays[name].dims
    assert stored.metadata["raw_uids"] == uids
    for key in ("x_li_c_range_angstrom", "pixel_flags", "front", "coverage"):
        # live and final metadata (Tiled stores NaN as null)
        assert stored.metadata[key] == _nan_as_none(offline.metadata[key]), key
    # physics: c of every pixel within 5e-3 Å of the rendered c(x) (paper changes: 0.1 Å)
    c_perp = stored.arrays["c_perp"].values  # (map, z, x)
    truth = np.array([c_truth_angstrom(x) for x in SMALL_MAP.x_centres_um()])
    np.testing.assert_allclose(c_perp, np.broadcast_to(truth, c_perp.shape), atol=5e-3)
    # derived stream: one run per map pointing at its raw run
    starts = [d for n, d in derived if n == "start"]
    assert [s["original_run_uid"] for s in starts] == uids
    events = [d for n, d in derived if n == "event"]
    assert [e["data"]["n_valid_frames"] for e in events] == [24.0, 24.0]
    assert abs(events[0]["data"]["c_perp"] - truth.mean()) < 5e-3


def _nan_as_none(value):
    """``value`` with every float NaN as None, as Tiled returns stored JSON metadata."""
    if isinstance(value, dict):
        return {k: _nan_as_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_nan_as_none(v) for v in value]
    if isinstance(value, float) and np.isnan(value):
        return None
    return value


def _maps_with_the_first_hook_held(RE, rig, processed, experiments):  # noqa: F811
    """Fly one map per ``experiments`` entry with the live analysis in the background, its
    first ``on_map`` call held until every map has stopped; return the analysis (finished),
    the raw uids and, per hook call, ``(experiment_id, map_index, maps in the products)``."""
    stage, eiger, _ = rig
    released = threading.Event()
    drawn: list[tuple[str, int, int]] = []

    def hook(products, result):
        size = products.arrays["time_s"].values.size
        drawn.append((products.metadata["experiment_id"], result.map_index, size))
        assert released.wait(timeout=120), "the test never released the first hook"

    live = LiveAnalysis(PARAMS, GEOMETRY, processed=processed, on_map=[hook], background=True)
    RE.subscribe(GuardedCallback(live))
    uids, indices = [], {}
    for experiment in experiments:
        map_index = indices[experiment] = indices.get(experiment, -1) + 1
        md = {"experiment_id": experiment, "map_index": map_index}
        uids += RE(fly_map(eiger, stage.x, stage.z, SMALL_MAP, md=md)).run_start_uids
    released.set()
    live.finish()
    return live, uids, drawn


def test_a_worker_behind_writes_waiting_maps_together_and_draws_the_newest(
    RE,  # noqa: F811
    rig,  # noqa: F811
    processed,
):
    """Map 0's hook is held until maps 1 and 2 have stopped: map 1 is analysed while map 2
    waits, so it is written with map 2's products and gets no hook call of its own; the
    stored products are still every map, equal to the offline pipeline's."""
    live, uids, drawn = _maps_with_the_first_hook_held(RE, rig, processed, [EXPERIMENT] * 3)
    assert live.failures == 0 and live.maps_analysed == 3
    assert live.maps_coalesced == 1
    assert [(index, size) for _, index, size in drawn] == [(0, 1), (2, 3)]
    stored = read_latest(processed, EXPERIMENT)
    assert stored.metadata["raw_uids"] == uids
    offline = _offline_products(rig[2], uids)
    for name in ("c_perp", "c_par", "time_s", "ti_z"):
        np.testing.assert_allclose(
            stored.arrays[name].values, offline.arrays[name].values, rtol=1e-6,
            equal_nan=True, err_msg=name,
        )  # fmt: skip


def test_a_waiting_map_of_another_experiment_does_not_hold_a_map_back(
    RE,  # noqa: F811
    rig,  # noqa: F811
    processed,
):
    """As above, but map 2 belongs to another experiment: map 1 is the newest of its own
    experiment, so it is written and drawn at once, not left for a later map."""
    experiments = [EXPERIMENT, EXPERIMENT, "other"]
    live, _, drawn = _maps_with_the_first_hook_held(RE, rig, processed, experiments)
    assert live.failures == 0 and live.maps_analysed == 3
    assert live.maps_coalesced == 0
    assert [experiment for experiment, _, _ in drawn] == [EXPERIMENT, EXPERIMENT, "other"]
