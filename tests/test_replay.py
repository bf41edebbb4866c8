"""Replay of a stored rehearsal: a new product version equal to the live one, v1 untouched."""

from __future__ import annotations

import numpy as np
import pytest

from opmap.callbacks.tiled_products import versions
from opmap.cli import main
from opmap.replay import ReplayOptions, replay_experiment

LIVE_ARRAYS = ("c_perp", "c_par", "a_par", "x_li_perp", "li_thickness", "time_s")


@pytest.fixture(scope="module")
def server(rehearsal_server):
    return rehearsal_server


@pytest.fixture(scope="module")
def replayed(rehearsal, server):
    client = server.client()
    experiment = client["processed"][rehearsal.experiment_id]
    v1_before = {name: experiment["v1"][name][:] for name in LIVE_ARRAYS}
    v1_keys = sorted(experiment["v1"])
    # the sampling correction's options come from v1's metadata: off (it is opt-in)
    options = ReplayOptions(overrides={"grain_k": 12}, progress=False)
    version, products = replay_experiment(client, rehearsal.experiment_id, options)
    assert experiment["v1"].metadata["sampling_options"] is None
    return version, products, v1_before, v1_keys


def test_replay_writes_v2_and_leaves_v1_untouched(rehearsal, server, replayed):
    version, _, v1_before, v1_keys = replayed
    experiment = server.client()["processed"][rehearsal.experiment_id]
    assert version == "v2"
    assert "v2" in experiment
    assert sorted(experiment["v1"]) == v1_keys
    for name, values in v1_before.items():
        np.testing.assert_array_equal(experiment["v1"][name][:], values)


def test_replayed_maps_equal_the_live_maps(rehearsal, server, replayed):
    experiment = server.client()["processed"][rehearsal.experiment_id]
    v1, v2 = experiment["v1"], experiment["v2"]
    # grain_k only changes the grain detection: lattice, phase and anode maps are the same
    # code on the same frames, so they agree to float rounding
    for name in LIVE_ARRAYS:
        live, replay = v1[name][:], v2[name][:]
        assert live.shape == replay.shape
        np.testing.assert_array_equal(np.isnan(live), np.isnan(replay))
        np.testing.assert_allclose(replay, live, rtol=0, atol=1e-6, equal_nan=True)
    assert np.isfinite(v2["c_perp"][:]).sum() >= 10  # the comparison covers measured pixels
    assert v2.metadata["raw_uids"] == list(rehearsal.map_uids[:2])


def test_replay_records_parameters_overrides_and_origin(rehearsal, server, replayed):
    v2 = server.client()["processed"][rehearsal.experiment_id]["v2"]
    meta = v2.metadata
    assert meta["analysis_parameters"]["grain_k"] == 12
    assert meta["overrides"] == {"grain_k": 12}
    assert meta["replay_of"] == "v1"
    assert meta["opmap_version"]
    assert meta["sampling_options"] is None
    assert meta["sampling_correction"].startswith("off")
    assert meta["sector_background"].startswith("linear (default")
    assert meta["geometry_source"].startswith("calibration of run ")
    live_k = server.client()["processed"][rehearsal.experiment_id]["v1"].metadata[
        "analysis_parameters"
    ]["grain_k"]
    assert live_k != 12


def test_replay_rejects_an_unknown_override_before_writing(rehearsal, server, replayed):
    client = server.client()
    before = sorted(client["processed"][rehearsal.experiment_id])
    with pytest.raises(ValueError, match="grain_kk"):
        options = ReplayOptions(overrides={"grain_kk": 3})
        replay_experiment(client, rehearsal.experiment_id, options)
    assert sorted(client["processed"][rehearsal.experiment_id]) == before


def test_cli_replay_end_to_end_and_wrong_experiment(rehearsal, server, replayed, tmp_path, capsys):
    settings = tmp_path / "opmap.toml"
    settings.write_text(
        f'data_dir = "{rehearsal.data_dir.as_posix()}"\nport = {server.settings.port}\n'
    )
    argv = ["replay", rehearsal.experiment_id, "--settings", str(settings)]
    assert main([*argv, "--set", "grain_k=9"]) == 0
    out = capsys.readouterr().out
    assert f"processed/{rehearsal.experiment_id}/v3" in out
    processed = server.client()["processed"]
    v3 = processed[rehearsal.experiment_id]["v3"]
    assert v3.metadata["replay_of"] == "v2"
    assert v3.metadata["analysis_parameters"]["grain_k"] == 9  # --set on the stored (12)
    v1_c_perp = processed[rehearsal.experiment_id]["v1"]["c_perp"][:]
    np.testing.assert_allclose(v3["c_perp"][:], v1_c_perp, atol=1e-6, equal_nan=True)
    before = sorted(server.client()["processed"])
    assert main(["replay", "no-such-experiment", "--settings", str(settings)]) == 2
    assert "no-such-experiment" in capsys.readouterr().err
    assert sorted(server.client()["processed"]) == before
    assert main([*argv, "--set", "grain_k"]) == 2  # not KEY=VALUE


def test_deprecated_analyze_from_tiled_warns_and_forwards_to_replay(
    rehearsal, server, replayed, tmp_path, capsys
):
    settings = tmp_path / "opmap.toml"
    settings.write_text(
        f'data_dir = "{rehearsal.data_dir.as_posix()}"\nport = {server.settings.port}\n'
    )
    before = sorted(server.client()["processed"])
    argv = ["analyze", "--settings", str(settings), "--from-tiled", "no-such-experiment"]
    assert main(argv) == 2  # forwarded: replay's own error for an unknown experiment
    err = capsys.readouterr().err
    assert "--from-tiled is deprecated" in err
    assert "opmap replay: error:" in err
    assert "no-such-experiment" in err
    assert sorted(server.client()["processed"]) == before


def test_replay_through_tiled_reads_the_same_frames(rehearsal, server, replayed):
    # frames through the server instead of the HDF5 files: same maps, a further version
    client = server.client()
    before = versions(client["processed"], rehearsal.experiment_id)
    options = ReplayOptions(progress=False, frames_from="tiled", sampling_options=None)
    version, _ = replay_experiment(client, rehearsal.experiment_id, options)
    assert version not in before
    experiment = client["processed"][rehearsal.experiment_id]
    assert experiment[version].metadata["replay_of"] == before[-1]
    np.testing.assert_allclose(
        experiment[version]["c_par"][:], experiment["v1"]["c_par"][:], atol=1e-6, equal_nan=True
    )


def test_replay_on_two_worker_processes_gives_the_threaded_products(rehearsal, server, replayed):
    # every map reduced and fitted on a LocalCluster of 2 processes: the same products as
    # the threaded replay of the same parameters (the `replayed` fixture)
    from distributed import LocalCluster

    _, threaded, _, _ = replayed
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        options = ReplayOptions(
            overrides={"grain_k": 12}, progress=False, scheduler=cluster.scheduler_address
        )
        _, distributed = replay_experiment(server.client(), rehearsal.experiment_id, options)
    assert sorted(distributed.arrays) == sorted(threaded.arrays)
    for name, array in threaded.arrays.items():
        np.testing.assert_array_equal(distributed.arrays[name].values, array.values, err_msg=name)
    assert sorted(distributed.tables) == sorted(threaded.tables)
    for name, table in threaded.tables.items():
        assert sorted(distributed.tables[name]) == sorted(table), name
        for column, values in table.items():
            np.testing.assert_array_equal(distributed.tables[name][column], values, err_msg=name)
    assert np.isfinite(distributed.arrays["c_perp"].values).sum() >= 10
