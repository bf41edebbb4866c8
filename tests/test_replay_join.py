"""Replay of a map whose run failed and was resumed: one map, each line from its own run.

Real documents: `fly_map` on the in-process simulated beamline (the twin's cell at rest, its
Eiger rendering every frame), stored by the `ValidatedTiledWriter` in opmap's Tiled server.
A fault in the z axis's readback strikes as a line is recorded: its frames are stored, its
``lines`` event is not, and the run fails. `resume_fly_map` flies the lines left; the replay
joins the two runs into one map and must give the map an uninterrupted run of the same
cell gives. A failed run nobody resumed is no map: the replay leaves it out and says why.
"""

from __future__ import annotations

import numpy as np
import pytest
from ophyd_async.core import init_devices, set_mock_attr

from opmap.analysis.geometry import analysis_geometry, save_poni
from opmap.beamline import BeamlineConfig, build_beamline
from opmap.callbacks.guard import GuardedCallback
from opmap.callbacks.live import routed_line_sources
from opmap.callbacks.live_analysis import LiveAnalysis
from opmap.callbacks.tiled_writer import ValidatedTiledWriter, ensure_layout
from opmap.cli import main
from opmap.plans import MapGeometry, MapResume, fly_map, map_line_sources, resume_fly_map
from opmap.rehearse import analysis_parameters_for_twin
from opmap.replay import (
    JoinedMapRun,
    ReplayOptions,
    gather_map_run,
    map_chains,
    replay_experiment,
)
from opmap.service import start_server_subprocess
from opmap.settings import OpmapSettings
from opmap.twin.forward import DetectorMask
from opmap.worker import WorkerFeed

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

#: From below the cathode into it (z = 0 is the cathode's lower face in the twin's cell):
#: line 0 holds no LCO, lines 1-5 do; the fault leaves lines 0-2 to the failed run.
GEOMETRY = MapGeometry(
    z_start_um=-1.0, z_step_um=1.0, z_count=6, x_start_um=200.0, x_stop_um=365.0, x_count=5
)
#: The joined map against the uninterrupted one (Å, any pixel): the frames differ only by
#: the detector's counting noise (each frame has its own draw). Measured: 1.1e-3 (c⊥) and
#: 4.3e-3 (c∥) at most, rms 0.6e-3 and 2.2e-3; two whole maps of the same cell differ by
#: 1.5e-3 and 2.7e-3 at most, rms 0.6e-3 and 1.5e-3.
C_TOLERANCE_A = 6e-3


class ZReadbackFault:
    """The z axis's readback fails at its ``n``-th read (``bps.read(stage_z)`` as a line's
    ``lines`` event is recorded, after its frames were collected), then works again."""

    def __init__(self, stage_z, n: int) -> None:
        self.stage_z, self.n, self.reads = stage_z, n, 0
        self.read = stage_z.read

    def __enter__(self) -> ZReadbackFault:
        async def faulty_read():
            self.reads += 1
            if self.reads == self.n:
                raise RuntimeError("stage z readback lost (injected fault)")
            return await self.read()

        set_mock_attr(self.stage_z, "read", faulty_read)
        return self

    def __exit__(self, *exc) -> None:
        object.__delattr__(self.stage_z, "read")  # the device's own read again


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """Runs of three experiments in a real Tiled server: ``ref`` (two whole maps), ``join``
    (map 0 failed in line 3 and resumed, map 1 failed in line 1 and never resumed),
    ``lost`` (one map failed in line 0)."""
    from bluesky import RunEngine

    data_dir = tmp_path_factory.mktemp("join") / "data"
    settings = OpmapSettings(data_dir=data_dir)
    RE = RunEngine(call_returns_result=True)
    with start_server_subprocess(settings, startup_timeout_s=300) as server:
        runs = ensure_layout(server.client())["raw"]
        with init_devices():
            beamline = build_beamline(BeamlineConfig(data_dir=data_dir))
        writer = ValidatedTiledWriter(runs, spool_directory=settings.backup_dir)
        RE.subscribe(writer)
        poni = save_poni(beamline.integrator, data_dir / "twin.poni")
        params = analysis_parameters_for_twin(beamline.twin.config)
        geometry = _twin_geometry(poni, beamline.integrator)
        live = _live_analysis(server.client(), params, geometry)
        RE.subscribe(guard := GuardedCallback(live))
        stage = beamline.stage
        uids = {}

        def fly(key, md, fault_at=None):
            plan = fly_map(beamline.eiger, stage.x, stage.z, GEOMETRY, md=md)
            if fault_at is None:
                uids[key] = RE(plan).run_start_uids[0]
                return
            with ZReadbackFault(stage.z, fault_at), pytest.raises(RuntimeError, match="z"):
                RE(plan)
            assert writer.wait(timeout_s=120)
            uids[key] = writer.tallies()[-1].run_uid

        fly("ref", {"experiment_id": "ref", "map_index": 0})
        fly("ref-again", {"experiment_id": "ref", "map_index": 1})
        fly("failed", {"experiment_id": "join", "map_index": 0}, fault_at=4)
        resume = MapResume.from_run(runs[uids["failed"]])
        uids["resume"] = RE(
            resume_fly_map(beamline.eiger, stage.x, stage.z, resume)
        ).run_start_uids[0]
        fly("abandoned", {"experiment_id": "join", "map_index": 1}, fault_at=2)
        fly("lost", {"experiment_id": "lost", "map_index": 0}, fault_at=1)
        assert writer.wait(timeout_s=120)
        live.finish()
        assert guard.total_failures == 0 and live.failures == 0
        yield server, runs, uids, poni, params, geometry


def _twin_geometry(poni, integrator):
    """The analysis geometry a rehearsal uses: the PONI and the twin's detector mask."""
    mask = DetectorMask().analysis_mask(integrator)
    return analysis_geometry(poni, mask=mask, expected_shape=integrator.detector.shape)


def _live_analysis(client, params, geometry) -> LiveAnalysis:
    """The live analysis as a rehearsal runs it, in process."""
    layout = ensure_layout(client)
    return LiveAnalysis(params, geometry, processed=layout["processed"], raw_runs=layout["raw"])


def _rms(difference: np.ndarray) -> float:
    return float(np.sqrt(np.nanmean(difference**2)))


def _replay(server, experiment_id, poni, params):
    options = ReplayOptions(params=params, poni=poni, sampling_options=None, progress=False)
    return replay_experiment(server.client(), experiment_id, options)


def test_the_fault_leaves_a_failed_run_and_the_resume_carries_the_map(stored):
    _, runs, uids, *_ = stored
    failed, resumed = runs[uids["failed"]], runs[uids["resume"]]
    assert failed.metadata["stop"]["exit_status"] == "fail"
    assert failed["lines"].read()["line_index"].values.tolist() == [0, 1, 2]
    # line 3's frames were collected before the fault: stored, claimed by no line
    assert failed["primary"]["eiger"].shape[0] == 4 * GEOMETRY.x_count
    start = resumed.metadata["start"]
    assert start["resumes"] == uids["failed"] and start["map_lines"] == [3, 4, 5]
    assert (start["experiment_id"], start["map_index"]) == ("join", 0)  # carried over
    assert resumed.metadata["stop"]["exit_status"] == "success"


def test_the_joined_map_reads_each_line_from_the_run_that_measured_it(stored):
    _, runs, uids, *_ = stored
    chain, abandoned = map_chains(runs, "join")
    assert chain.uids == [uids["failed"], uids["resume"]] and abandoned.map_index == 1
    joined = JoinedMapRun(
        [gather_map_run(run) for run in chain.runs], map_line_sources(chain.runs)
    )
    n_x = GEOMETRY.x_count
    pieces = [(part.uid, frames) for part, frames in joined.pieces()]
    # lines 0-2 from the failed run's frames 0-14 (its orphan line-3 frames 15-19 unused),
    # lines 3-5 from the resume's frames 0-14
    assert pieces == [
        (uids["failed"], list(range(3 * n_x))),
        (uids["resume"], list(range(3 * n_x))),
    ]
    assert joined.start_doc["map_index"] == 0 and joined.uid == uids["failed"]
    # every line carries the measured x of its own run's flight
    lines = joined.accumulator.lines
    failed, resumed = (gather_map_run(runs[uids[key]]) for key in ("failed", "resume"))
    own = {
        **{i: (failed, failed.accumulator.lines[i]) for i in (0, 1, 2)},
        **{i: (resumed, resumed.accumulator.lines[i]) for i in (3, 4, 5)},
    }
    for index, (part, line) in own.items():
        assert lines[index].x_measured_um == line.x_measured_um
        # and the times of its own frames
        own_times = [part.accumulator.frame_time_s[line.first_frame + k] for k in range(n_x)]
        first = lines[index].first_frame
        times = [joined.accumulator.frame_time_s[first + k] for k in range(n_x)]
        assert times == own_times
    rows_s = joined.accumulator.row_time_s(joined.layout)
    assert np.all(np.isfinite(rows_s)) and rows_s[3] > rows_s[2]  # the resume came later
    assert joined.x_source.startswith("stage x readback")


@pytest.fixture(scope="module")
def replayed(stored):
    """The products of replaying ``ref`` and ``join``."""
    server, _, _, poni, params, _ = stored
    return _replay(server, "ref", poni, params)[1], _replay(server, "join", poni, params)[1]


def test_replay_of_the_joined_map_equals_the_uninterrupted_map(stored, replayed):
    _, _, uids, *_ = stored
    reference, joined = replayed
    meta = joined.metadata
    assert meta["raw_uids"] == [uids["failed"]]
    assert meta["map_raw_uids"] == [[uids["failed"], uids["resume"]]]
    (skipped,) = meta["skipped_maps"]
    assert skipped["map_index"] == 1 and skipped["raw_uids"] == [uids["abandoned"]]
    assert "lines [1, 2, 3, 4, 5] of the map are in no run" in skipped["reason"]
    for name in ("c_perp", "c_par"):
        ref, again = reference.arrays[name].values[:1], reference.arrays[name].values[1:]
        got = joined.arrays[name].values
        assert got.shape == ref.shape == (1, GEOMETRY.z_count, GEOMETRY.x_count)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref), err_msg=name)
        # the frames differ from the reference's only by their noise draws: the joined map
        # is as far from it as a second whole map of the same cell is
        np.testing.assert_allclose(got, ref, rtol=0, atol=C_TOLERANCE_A, equal_nan=True)
        assert _rms(got - ref) <= 2.0 * _rms(again - ref), name
    assert np.isfinite(joined.arrays["c_perp"].values).sum() >= GEOMETRY.x_count  # measured
    assert not np.isfinite(joined.arrays["c_perp"].values).all()  # and below the cathode


def test_an_experiment_of_one_failed_map_gives_no_map_and_the_reason(stored):
    server, _, _, poni, params, _ = stored
    processed = server.client()["processed"]
    before = sorted(processed)
    with pytest.raises(ValueError, match=r"map 0: exit status 'fail'; runs: lines \[0, 1, 2"):
        _replay(server, "lost", poni, params)
    assert sorted(processed) == before  # nothing written


def test_the_live_analysis_holds_the_failed_map_and_analyses_it_joined(stored, replayed):
    server, _, uids, *_ = stored
    processed = server.client()["processed"]
    ref, joined = processed["ref"]["v1"], processed["join"]["v1"]
    # the joined map is the experiment's one map, claimed once its runs are stored whole;
    # the map nobody resumed is held, never analysed
    assert joined.metadata["raw_uids"] == [uids["failed"]]
    assert ref.metadata["raw_uids"] == [uids["ref"], uids["ref-again"]]
    assert "lost" not in processed
    for name in ("c_perp", "c_par"):
        reference, again, got = ref[name][:1], ref[name][1:], joined[name][:]
        assert got.shape == reference.shape == (1, GEOMETRY.z_count, GEOMETRY.x_count)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(reference), err_msg=name)
        np.testing.assert_allclose(got, reference, rtol=0, atol=C_TOLERANCE_A, equal_nan=True)
        assert _rms(got - reference) <= 2.0 * _rms(again - reference), name
        # the same frames, reduced as they came: the replay's joined map
        replay = replayed[1].arrays[name].values
        np.testing.assert_allclose(got, replay, rtol=0, atol=1e-6, equal_nan=True)


def test_the_live_rule_of_line_sources_is_the_stored_one(stored):
    _, runs, uids, *_ = stored
    failed, resumed = (runs[uids[key]] for key in ("failed", "resume"))
    routed = [gather_map_run(run) for run in (failed, resumed)]
    assert routed_line_sources(routed) == map_line_sources([failed, resumed])
    with pytest.raises(ValueError, match=r"lines \[3, 4, 5\] of the map are in no run"):
        routed_line_sources(routed[:1])
    with pytest.raises(ValueError, match="line 0 is held twice"):
        routed_line_sources([routed[0], routed[0]])


def test_opmap_replay_prints_the_map_it_left_out(stored, tmp_path, capsys):
    server, _, _, poni, *_ = stored
    settings = tmp_path / "opmap.toml"
    data_dir = server.settings.data_dir.as_posix()
    settings.write_text(f'data_dir = "{data_dir}"\nport = {server.settings.port}\n')
    # parameters as stored with the live version; the twin's own geometry
    assert main(["replay", "join", "--settings", str(settings), "--poni", str(poni)]) == 0
    out = capsys.readouterr().out
    assert "1 maps" in out
    assert "map 1 left out: exit status 'fail'; runs: lines [1, 2, 3, 4, 5]" in out


@pytest.mark.parametrize("restart", ["before the failed map", "before its resume"])
def test_a_restarted_worker_joins_the_map_from_the_runs_stored_before_it(
    stored, replayed, restart
):
    """The analysis worker restarts with no map held in memory. Before the failed map: it
    catches the experiment up from Tiled, each map index with all its runs. Before the
    resume: only the resume's documents arrive live, and the run it resumes is read from
    Tiled first. Either way the map is analysed once, joined, as the replay joins it."""
    _, runs, uids, _, params, geometry = stored
    live = LiveAnalysis(params, geometry)  # products in memory: the stored ones stay
    feed = WorkerFeed(live, runs)
    if restart == "before the failed map":
        assert feed.catch_up("join") == [0, 1]  # map 1: its one failed run, held
    else:
        for name, doc in runs[uids["resume"]].documents():
            feed(name, doc)
    live.finish()
    assert live.failures == 0
    experiment = live.experiments["join"]
    assert experiment.n_maps == 1
    assert experiment.metadata["raw_uids"] == [uids["failed"]]
    products = experiment.products()
    for name in ("c_perp", "c_par"):
        replay = replayed[1].arrays[name].values
        np.testing.assert_allclose(
            products.arrays[name].values, replay, rtol=0, atol=1e-6, equal_nan=True
        )
