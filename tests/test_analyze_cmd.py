import h5py
import numpy as np
import pytest

from opmap.analysis.geometry import eiger4m_integrator, save_poni
from opmap.analysis.nexus import read_products
from opmap.cli import build_parser, forward_deprecated
from opmap.devices import EigerMetadata, SafetyWindow, paper_protocol
from opmap.devices.sim import DectrisWriter
from opmap.twin import CellTwin, TwinConfig
from opmap.twin.forward import DiffractionConfig, DiffractionRenderer

from ._dectris_links import write_links_master

N_Z, N_X, N_MAPS = 3, 4, 2
FAMILIES = """
[[family]]
name = "perp"
azimuths_003_deg = [25, 160, 205, 345]
azimuths_110_deg = [90]

[[family]]
name = "par"
azimuths_003_deg = [90, 275]
azimuths_110_deg = [210]
"""


def run(*argv: str) -> int:
    args = build_parser().parse_args(["analyze", *map(str, argv)])
    return args.func(args)


@pytest.fixture(scope="module")
def acquisition(tmp_path_factory):
    """Two 3 × 4 maps of twin frames in the Dectris layout, a PONI and a families file."""
    folder = tmp_path_factory.mktemp("acquisition")
    twin = CellTwin(TwinConfig(seed=1))
    twin.electrochemistry.start_protocol(paper_protocol(), SafetyWindow())
    ai = eiger4m_integrator(binning=4)
    renderer = DiffractionRenderer(ai, DiffractionConfig(), twin.families)
    meta = EigerMetadata(3e-4, 3e-4, 0.1, 278.0, 268.0, 0.6888)
    writer = DectrisWriter(folder, "cell", renderer.shape, meta, count_time_s=0.05,
                           frame_time_s=0.05, frames_per_file=10)  # fmt: skip
    rng = np.random.default_rng(0)
    for m in range(N_MAPS):
        for i in range(N_Z):
            for j in range(N_X):
                time_s = 600.0 * m + 0.05 * (i * N_X + j)
                x_um = 500.0 + 33.0 * j
                scene = twin.scene(z_um=8.0 + i, x_start_um=x_um, x_stop_um=x_um + 33.0,
                                   time_s=time_s)  # fmt: skip
                frame = renderer.render(scene, exposure_s=0.05, rng=rng)
                writer.write(frame, x_um=x_um + 16.5, time_s=time_s)
    writer.close()
    poni = save_poni(ai, folder / "eiger.poni")
    families = folder / "families.toml"
    families.write_text(FAMILIES)
    return folder, writer.master_path, poni, families


def common(acquisition):
    _, master, poni, families = acquisition
    return [master, "--poni", poni, "--families", families, "--map-shape", N_Z, N_X]


def test_analyze_writes_products_and_never_overwrites(acquisition, capsys):
    folder = acquisition[0]
    assert run(*common(acquisition), "--z-start-um", 8.0) == 0
    first = folder / "cell_analysis.nxs"
    assert f"products written to {first}" in capsys.readouterr().out
    products = read_products(first)
    c = products.arrays["c_perp"].values
    assert c.shape == (N_MAPS, N_Z, N_X)
    assert np.nanmax(np.abs(c - 14.0)) < 0.2  # LCO in the beam, c near pristine
    np.testing.assert_allclose(products.arrays["time_s"].values, [0.275, 600.275])
    assert products.metadata["time_source"] == "entry/opmap/time_s"
    np.testing.assert_allclose(products.coords["z"].values, [8.0, 9.0, 10.0])
    # A second run gets a new version; an explicit existing --out is refused.
    assert run(*common(acquisition), "--maps", 1) == 0
    assert read_products(folder / "cell_analysis.v2.nxs").arrays["c_perp"].values.shape[0] == 1
    before = first.read_bytes()
    assert run(*common(acquisition), "--out", first) == 2
    assert "exists" in capsys.readouterr().err
    assert first.read_bytes() == before


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (["--map-shape", 5, 4], "does not divide the 24 frames"),
        (["--maps", 3], "n_maps must be in [1, 2]"),
    ],
)
def test_bad_map_shape_is_refused(acquisition, tmp_path, capsys, change, message):
    argv = [*common(acquisition), "--out", tmp_path / "out.nxs"]
    argv[argv.index("--map-shape") : argv.index("--map-shape") + 3] = []
    argv += change if change[0] == "--map-shape" else ["--map-shape", N_Z, N_X, *change]
    assert run(*argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out.nxs").exists()


def test_poni_of_another_detector_and_overlapping_families(acquisition, tmp_path, capsys):
    _, master, _, families = acquisition
    other = save_poni(eiger4m_integrator(binning=2), tmp_path / "binned2.poni")
    assert run(master, "--poni", other, "--families", families, "--map-shape", N_Z, N_X) == 2
    assert "does not describe this detector" in capsys.readouterr().err
    bad = tmp_path / "overlap.toml"
    bad.write_text(FAMILIES.replace("[90, 275]", "[30, 275]"))
    poni = acquisition[2]
    assert run(master, "--poni", poni, "--families", bad, "--map-shape", N_Z, N_X) == 2
    assert "sectors overlap" in capsys.readouterr().err
    garbage = tmp_path / "garbage.poni"
    garbage.write_text("this is: not [a poni\n\x00")
    assert run(master, "--poni", garbage, "--families", families, "--map-shape", N_Z, N_X) == 2


def test_nan_frames_are_refused_and_nothing_is_written(acquisition, tmp_path, capsys):
    _, master, poni, families = acquisition
    with h5py.File(master) as f:
        frames = f["entry/data/data"][:].astype(np.float32)
    frames[5] = np.nan
    path = tmp_path / "float_frames.h5"
    with h5py.File(path, "w") as f:
        f["scan/frames"] = frames
    out = tmp_path / "out.nxs"
    argv = [path, "--dataset", "scan/frames", "--poni", poni, "--families", families]
    assert run(*argv, "--map-shape", N_Z, N_X, "--out", out) == 2
    assert "NaN" in capsys.readouterr().err
    assert not out.exists()


def test_distributed_scheduler_gives_the_local_result(acquisition, tmp_path):
    from distributed import LocalCluster

    out_local, out_cluster = tmp_path / "local.nxs", tmp_path / "cluster.nxs"
    assert run(*common(acquisition), "--out", out_local, "--chunk-frames", 5) == 0
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False) as cluster:
        address = cluster.scheduler_address
        assert run(*common(acquisition), "--out", out_cluster, "--scheduler", address) == 0
    a, b = read_products(out_local), read_products(out_cluster)
    np.testing.assert_array_equal(a.arrays["c_perp"].values, b.arrays["c_perp"].values)


def test_deprecated_from_tiled_is_rewritten_as_replay_with_a_warning(capsys):
    argv = ["-v", "analyze", "--settings", "s.toml", "--from-tiled", "cell-3", "--set", "k=1"]
    expected = ["-v", "replay", "cell-3", "--settings", "s.toml", "--set", "k=1"]
    assert forward_deprecated(argv) == expected
    assert "use: opmap replay cell-3" in capsys.readouterr().err
    for unchanged in (["analyze", "frames.h5"], ["replay", "cell-3"], ["report", "--from-tiled"]):
        assert forward_deprecated(unchanged) == unchanged
    assert capsys.readouterr().err == ""


#: A file analysis's required arguments.
FILE = ["analyze", "f.h5", "--poni", "p", "--families", "f"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([*FILE, "--map-shape", "2", "2", "--set", "k=3"], "unrecognized arguments: --set"),
        (FILE, "the following arguments are required: --map-shape"),
        ([*FILE, "--map-shape", "2", "2", "--z-step-um", "0"], "must be > 0"),
        (["replay", "c", "--settings", "s", "--out", "x"], "unrecognized arguments: --out"),
        (["replay", "c"], "one of the arguments --settings --data-dir is required"),
        (["replay", "c", "--settings", "s", "--data-dir", "d"], "not allowed with"),
        (["analyze", "--from-tiled", "c", "--settings", "s", "--maps", "2"], "arguments: --maps"),
    ],
)
def test_each_mode_accepts_only_its_own_options(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(forward_deprecated(argv))
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_master_with_only_links_is_read_file_by_file(acquisition, tmp_path, capsys):
    """What a real DCU writes: no stacked /entry/data/data, no /entry/opmap; 10 + 10 + 4."""
    _, master, poni, families = acquisition
    with h5py.File(master, "r") as f:
        stack = f["entry/data/data"][()]
    links_only = write_links_master(tmp_path, "real", stack, per_file=10)
    with h5py.File(links_only, "r") as f:
        assert sorted(f["entry/data"]) == ["data_000001", "data_000002", "data_000003"]
        assert "entry/opmap" not in f
        assert f["entry/data/data_000003"].shape[0] == 4
    shape = ["--poni", poni, "--families", families, "--map-shape", N_Z, N_X]
    out_links, out_stacked = tmp_path / "links.nxs", tmp_path / "stacked.nxs"
    assert run(links_only, *shape, "--out", out_links) == 0
    assert run(master, "--dataset", "/entry/data/data", *shape, "--out", out_stacked) == 0
    links, stacked = read_products(out_links), read_products(out_stacked)
    np.testing.assert_array_equal(links.arrays["c_perp"].values, stacked.arrays["c_perp"].values)
    assert np.isfinite(links.arrays["c_perp"].values).all()
    assert links.metadata["time_source"] == "map index (no per-frame times in the file)"
    np.testing.assert_array_equal(links.arrays["time_s"].values, [0.0, 1.0])
    # a data file missing: a clear error naming it, nothing written
    (tmp_path / "real_data_000003.h5").unlink()
    out = tmp_path / "missing.nxs"
    assert run(links_only, *shape, "--out", out) == 2
    assert "links to the missing data file real_data_000003.h5" in capsys.readouterr().err
    assert not out.exists()


def test_one_master_per_series_is_read_in_the_order_given(acquisition, tmp_path):
    """A SIMPLON Eiger arms once per fly line: one links-only master per series."""
    _, master, poni, families = acquisition
    with h5py.File(master, "r") as f:
        stack = f["entry/data/data"][()]
    masters = [
        write_links_master(tmp_path, f"map_{k + 1:04d}", stack[8 * k : 8 * k + 8], per_file=3)
        for k in range(3)
    ]  # 3 + 3 + 2 frames each
    shape = ["--poni", poni, "--families", families, "--map-shape", N_Z, N_X]
    out_series, out_stacked = tmp_path / "series.nxs", tmp_path / "stacked.nxs"
    assert run(*masters, *shape, "--out", out_series) == 0
    assert run(master, "--dataset", "/entry/data/data", *shape, "--out", out_stacked) == 0
    series, stacked = read_products(out_series), read_products(out_stacked)
    np.testing.assert_array_equal(series.arrays["c_perp"].values, stacked.arrays["c_perp"].values)
    assert series.metadata["frames_file"] == ", ".join(m.name for m in masters)
    # another order gives other maps: the files are read in the order given
    assert run(masters[1], masters[0], masters[2], *shape, "--out", tmp_path / "swap.nxs") == 0
    swapped = read_products(tmp_path / "swap.nxs").arrays["c_perp"].values
    assert not np.array_equal(swapped, stacked.arrays["c_perp"].values, equal_nan=True)
