"""A small end-to-end rehearsal: server, calibration, maps with live analysis, ground truth."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def client(rehearsal_server):
    return rehearsal_server.client()


def test_rehearsal_calibrates_and_records_every_map_run(rehearsal, client):
    assert rehearsal.poni is not None and rehearsal.poni.is_file()
    assert rehearsal.analysis_failures == 0
    raw = client["raw"]
    map_runs = [raw[uid] for uid in rehearsal.map_uids[:-1]]
    assert [run.metadata["start"]["map_index"] for run in map_runs] == [0, 1]
    # map 0 is the cell before the protocol: the potentiostat idle at both its ec_state reads
    assert [run.metadata["start"]["pristine"] for run in map_runs] == [True, False]
    pristine_steps = map_runs[0]["ec_state"].read()["potentiostat-step"]
    assert list(np.asarray(pristine_steps)) == [-1, -1]
    for run in map_runs:
        assert run.metadata["stop"]["exit_status"] == "success"
        assert run["primary"]["eiger"].shape[0] == 8 * 5
    assert all(
        run.metadata["start"]["experiment_id"] == rehearsal.experiment_id for run in map_runs
    )


def test_electrochemistry_is_gapless_across_the_runs_of_the_experiment(rehearsal, client):
    raw = client["raw"]
    times = np.concatenate(
        [raw[uid]["electrochemistry"].read()["time_s"] for uid in rehearsal.map_uids]
    )
    assert np.allclose(np.diff(times), 1.0)
    assert times[0] == 0.0


def test_products_and_truth_are_served_beside_each_other(rehearsal, client):
    products = client["processed"][rehearsal.experiment_id]["v1"]
    c_perp, truth = products["c_perp"][:], products["truth_c_perp"][:]
    assert c_perp.shape == truth.shape == (2, 8, 5)
    inside = np.isfinite(c_perp) & np.isfinite(truth)
    assert inside.sum() >= 10  # rows inside the cathode with the family in the beam
    # binned 4 x 4 detector: see docs/analysis-pipeline.md for the per-pixel accuracy
    assert np.nanmax(np.abs(c_perp - truth)[inside]) < 0.05
    assert products.metadata["experiment_id"] == rehearsal.experiment_id
    assert rehearsal.figures
