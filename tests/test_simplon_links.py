"""A fly map over HTTP whose frames sit behind Dectris per-file links, read by every reader.

Real processes: ``opmap sim-dcu`` (the SIMPLON API, writing a master + data files of
``nimages_per_file`` frames per series) and opmap's Tiled server (its readable storage is
the DCU's data directory). In this process a RunEngine flies a 3-line map with
``SimplonEiger`` (one series per line, 5 frames per line, 4 frames per data file: files of
4 and 1 frames), writes the run with `ValidatedTiledWriter` and reduces the frames with the
live analysis; then replays the experiment from Tiled and runs ``opmap analyze`` on the
three masters. The frames Tiled serves, and the maps
the live analysis and the replay compute, are those of the data files, read here with h5py
through the master's links.
"""

from __future__ import annotations

from pathlib import Path

import bluesky.plan_stubs as bps
import h5py
import hdf5plugin  # noqa: F401  (registers the bitshuffle filter for reading)
import numpy as np
import pytest
from ophyd_async.core import StaticFilenameProvider, StaticPathProvider, init_devices
from ophyd_async.sim import SimMotor

from opmap.analysis.geometry import DetectorGeometry, eiger4m_integrator, save_poni
from opmap.analysis.nexus import read_products
from opmap.analysis.pipeline import ExperimentAnalysis, analyze_map
from opmap.analysis.reduction import compile_reduction
from opmap.callbacks.guard import GuardedCallback
from opmap.callbacks.live_analysis import (
    MAP_INDEX_TIME_SOURCE,
    LiveAnalysis,
    layout_from_start,
)
from opmap.callbacks.tiled_writer import ValidatedTiledWriter, ensure_layout
from opmap.cli import build_parser
from opmap.devices.simplon import SimplonEiger
from opmap.plans import MapGeometry, fly_map
from opmap.replay import ReplayOptions, replay_experiment
from opmap.service import start_server_subprocess
from opmap.settings import OpmapSettings

from .callbacks.test_live_analysis import PARAMS
from .devices._simplon_servers import initialize, sim_dcu
from .test_analyze_cmd import FAMILIES as ANALYZE_FAMILIES

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
GEOMETRY = MapGeometry(
    z_start_um=2.0, z_step_um=1.0, z_count=3, x_stop_um=50.0, x_count=5, exposure_s=0.01
)
PER_FILE = 4
EXPERIMENT = "links"


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """(Tiled server, DCU URL, the DCU's data directory = the server's readable storage)."""
    settings = OpmapSettings(data_dir=tmp_path_factory.mktemp("opmap-data"))
    detector = settings.detector_dir
    detector.mkdir(parents=True, exist_ok=True)
    with (
        start_server_subprocess(settings, startup_timeout_s=300) as server,
        sim_dcu(detector) as base_url,
    ):
        initialize(base_url)
        yield server, base_url, detector


def frames_through_links(master: Path) -> np.ndarray:
    """Every frame of a series, read with h5py through the master's links in order."""
    with h5py.File(master, "r") as f:
        links = sorted(k for k in f["/entry/data"] if k.startswith("data_"))
        return np.concatenate([f[f"/entry/data/{name}"][()] for name in links])


def test_fly_map_read_by_tiled_live_analysis_replay_and_analyze(RE, servers, tmp_path):
    server, base_url, detector = servers
    runs = ensure_layout(server.client())["raw"]
    provider = StaticPathProvider(StaticFilenameProvider("linked"), detector)
    with init_devices():
        eiger = SimplonEiger(base_url, provider, frames_per_file=PER_FILE, external_timeout_s=30.0)
        stage_x = SimMotor(instant=False, units="um")
        stage_z = SimMotor(units="um")
    RE(bps.mv(stage_x.acceleration_time, 0.01))
    geometry = DetectorGeometry.from_integrator(eiger4m_integrator(binning=4))
    live = LiveAnalysis(PARAMS, geometry)
    guard = GuardedCallback(live)
    starts = []
    RE.subscribe(ValidatedTiledWriter(runs, raise_on_invalid=True))
    RE.subscribe(guard)
    RE.subscribe(lambda name, doc: starts.append(doc) if name == "start" else None)
    md = {"experiment_id": EXPERIMENT, "map_index": 0}
    result = RE(fly_map(eiger, stage_x, stage_z, GEOMETRY, md=md))
    live.finish()
    assert result.exit_status == "success"

    masters = [detector / f"linked_{k:04d}_master.h5" for k in (1, 2, 3)]
    per_line = [frames_through_links(m) for m in masters]
    assert [len(f) for f in per_line] == [5, 5, 5]
    assert sorted(p.name for p in detector.glob("linked_0001_data_*.h5")) == [
        "linked_0001_data_000001.h5",
        "linked_0001_data_000002.h5",
    ]
    expected = np.concatenate(per_line)
    assert expected.shape == (15, 541, 517) and expected.sum(axis=(1, 2)).min() > 0

    # Tiled: one array over the 6 data files of the 3 series, equal to the files
    node = runs[result.run_start_uids[0]]["primary"][eiger.name]
    assert node.shape == expected.shape
    np.testing.assert_array_equal(node.read(), expected)
    (source,) = node.data_sources()
    assert [a.data_uri.rsplit("/", 1)[1] for a in source.assets] == [
        f"linked_{line:04d}_data_{n:06d}.h5" for line in (1, 2, 3) for n in (1, 2)
    ]

    # the live analysis reduced the same frames: its map equals the offline pipeline's
    assert guard.total_failures == 0 and live.failures == 0 and live.maps_analysed == 1
    stored = live.experiments[EXPERIMENT].products()
    layout = layout_from_start(starts[0])
    reduction = compile_reduction(PARAMS.reduction_plan(), geometry)
    assert stored.metadata["time_source"] == MAP_INDEX_TIME_SOURCE  # no frame times, no cell
    time_s = float(stored.arrays["time_s"].values[0])
    assert time_s == 0.0
    offline = ExperimentAnalysis(layout, PARAMS)
    offline.add_map(analyze_map(reduction.reduce(expected), layout, PARAMS, map_index=0,
                                time_s=time_s))  # fmt: skip
    compared = [n for n, a in offline.products().arrays.items() if a.dims[:1] == ("map",)]
    assert "c_perp" in compared
    for name in compared:
        np.testing.assert_allclose(
            stored.arrays[name].values,
            offline.products().arrays[name].values,
            rtol=1e-6,
            equal_nan=True,
            err_msg=name,
        )
    c_perp = stored.arrays["c_perp"].values
    assert np.isfinite(c_perp).any(), "the twin's LCO rings are found in the frames"

    # the replay: Tiled exports the 6 data files as the first one only, so it reads through
    # Tiled (the files cannot tell it the rows of the others) and finds the live map again
    poni = save_poni(eiger4m_integrator(binning=4), tmp_path / "dcu.poni")
    options = ReplayOptions(params=PARAMS, poni=poni, sampling_options=None, progress=False)
    _, replayed = replay_experiment(server.client(), EXPERIMENT, options)
    np.testing.assert_allclose(replayed.arrays["c_perp"].values, c_perp, rtol=1e-6, equal_nan=True)
    assert replayed.metadata["time_source"] == MAP_INDEX_TIME_SOURCE

    # opmap analyze on the three masters (one per line), as a facility without Tiled would
    (tmp_path / "families.toml").write_text(ANALYZE_FAMILIES)
    args = build_parser().parse_args(
        ["analyze", *map(str, masters), "--poni", str(poni), "--families",
         str(tmp_path / "families.toml"), "--map-shape", "3", "5",
         "--out", str(tmp_path / "offline.nxs")]
    )  # fmt: skip
    assert args.func(args) == 0
    analysed = read_products(tmp_path / "offline.nxs")
    np.testing.assert_allclose(analysed.arrays["c_perp"].values, c_perp, rtol=1e-6, equal_nan=True)
