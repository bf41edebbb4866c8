"""Every bad input of the command line: exit status 2, a message naming it, nothing written.

Each row of ``ROWS`` runs one command line in-process (``main([...])``) in a folder of real
inputs (a Dectris master of twin frames, a PONI, families, masks in several formats, a
settings file of a stopped server), snapshots that folder (every path, size, mtime and
SHA-256) before and after, and asserts the exit status, the message (a regex over stderr
and the log) and that nothing changed on disk. Rows marked ``server`` talk to the real
Tiled server of the shared rehearsal. A few rows run as a subprocess to show the user
sees a message, not a traceback.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import fabio
import h5py
import numpy as np
import pytest

from opmap.analysis.geometry import eiger4m_integrator, save_poni
from opmap.analysis.nexus import read_products
from opmap.cli import main
from opmap.devices import EigerMetadata, SafetyWindow, paper_protocol
from opmap.devices.sim import DectrisWriter
from opmap.twin import CellTwin, TwinConfig
from opmap.twin.forward import DiffractionConfig, DiffractionRenderer

N_Z, N_X = 2, 2
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
WEAK_KEY = "a" * 16
HEX_KEY = hashlib.sha256(b"not the server key").hexdigest()
NOT_HEX_KEY = "ghijklmnopqrstuvwxyzGHIJKLMNOPQRSTUVWXYZ0123456789ghijklmnopqrst"


def _render(folder: Path) -> tuple[Path, Path, np.ndarray]:
    """One 2 × 2 map of twin frames in the Dectris layout; the PONI; the frames."""
    twin = CellTwin(TwinConfig(seed=3))
    twin.electrochemistry.start_protocol(paper_protocol(), SafetyWindow())
    ai = eiger4m_integrator(binning=4)
    renderer = DiffractionRenderer(ai, DiffractionConfig(), twin.families)
    meta = EigerMetadata(3e-4, 3e-4, 0.1, 278.0, 268.0, 0.6888)
    writer = DectrisWriter(
        folder,
        "cell",
        renderer.shape,
        meta,
        count_time_s=0.05,
        frame_time_s=0.05,
        frames_per_file=2,
    )
    rng = np.random.default_rng(0)
    frames = []
    for i in range(N_Z):
        for j in range(N_X):
            x_um = 500.0 + 33.0 * j
            scene = twin.scene(
                z_um=8.0 + i, x_start_um=x_um, x_stop_um=x_um + 33.0, time_s=0.05 * (2 * i + j)
            )
            frame = renderer.render(scene, exposure_s=0.05, rng=rng)
            frames.append(frame)
            writer.write(frame, x_um=x_um + 16.5, time_s=0.05 * (2 * i + j))
    writer.close()
    return writer.master_path, save_poni(ai, folder / "eiger.poni"), np.asarray(frames)


def _float_frames(path: Path, frames: np.ndarray, value: float, rows: slice) -> Path:
    """The frames as float32 with ``value`` written into ``rows`` of every frame."""
    data = frames.astype(np.float32)
    data[:, rows, 100:140] = value
    with h5py.File(path, "w") as h5:
        h5["frames"] = data
    return path


def _mask_files(folder: Path, shape: tuple[int, int]) -> None:
    wrong = np.zeros((shape[0] - 1, shape[1]), np.int8)
    np.save(folder / "mask_wrong.npy", wrong)
    np.save(folder / "mask_3d.npy", np.zeros((2, *shape), np.int8))
    np.save(folder / "mask_object.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    fabio.edfimage.EdfImage(data=wrong).write(str(folder / "mask_wrong.edf"))
    fabio.tifimage.TifImage(data=wrong.astype(np.uint8)).write(str(folder / "mask_wrong.tif"))
    with h5py.File(folder / "mask_two.h5", "w") as h5:
        h5["a"] = np.zeros(shape, np.int8)
        h5["b"] = np.zeros(shape, np.int8)
    (folder / "mask.txt").write_text("not an image\n")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A folder of real inputs, good and bad, shared by every row (never changed)."""
    folder = tmp_path_factory.mktemp("bad-inputs")
    master, _, frames = _render(folder)
    (folder / "families.toml").write_text(FAMILIES)
    (folder / "broken.toml").write_text("[[family]\nname = \n")
    (folder / "not.h5").write_text("plain text, not HDF5\n")
    (folder / "times.txt").write_text("# map times\n0\nten\n")
    (folder / "existing.nxs").write_bytes(b"an earlier result\n")
    (folder / "a_file").write_text("a file where a directory is expected\n")
    (folder / "report_done").mkdir()
    rows = slice(200, 240)
    _float_frames(folder / "inf.h5", frames, np.inf, rows)
    _float_frames(folder / "nan.h5", frames, np.nan, rows)
    _float_frames(folder / "negative.h5", frames, -5.0, rows)
    with h5py.File(folder / "small.h5", "w") as h5:
        h5["frames"] = np.zeros((4, 10, 12), np.float32)
    mask = np.zeros(frames.shape[1:], np.uint8)
    mask[rows, 100:140] = 1
    np.save(folder / "nan_mask.npy", mask)
    _mask_files(folder, frames.shape[1:])
    os.symlink(master, folder / "link_to_master.h5")
    (folder / "stopped.toml").write_text(f'data_dir = "{folder / "srv"}"\nport = {_free_port()}\n')
    _worker_settings(folder)
    (folder / "cwd").mkdir()
    return folder


def _worker_settings(folder: Path) -> None:
    (folder / "params.toml").write_text(FAMILIES)
    good = 'parameters = "params.toml"\nponi = "eiger.poni"\n'
    (folder / "worker_good.toml").write_text(good)
    (folder / "worker_bad_toml.toml").write_text("parameters = \n")
    (folder / "worker_extra.toml").write_text(good + "colour = 3\n")
    (folder / "worker_no_params.toml").write_text(
        'parameters = "gone.toml"\nponi = "eiger.poni"\n'
    )
    (folder / "worker_out_file.toml").write_text(good + 'output_dir = "a_file/products"\n')
    (folder / "worker_ftp.toml").write_text(good + 'tiled_uri = "ftp://example.org/"\n')
    (folder / "worker_nohost.toml").write_text(good + 'tiled_uri = "http://"\n')
    (folder / "worker_port.toml").write_text(good + 'tiled_uri = "http://localhost:99999"\n')


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under ``root``: (size, mtime_ns, sha256) of files, None of directories."""
    out: dict[str, tuple] = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            out[str(path)] = ("link", os.readlink(path))
        elif path.is_dir():
            out[str(path)] = ("dir",)
        else:
            stat = path.stat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            out[str(path)] = (stat.st_size, stat.st_mtime_ns, digest)
    return out


ANALYZE = ["analyze", "{master}", "--poni", "{w}/eiger.poni", "--families", "{w}/families.toml"]
SHAPE = ["--map-shape", str(N_Z), str(N_X)]
GOOD = [*ANALYZE, *SHAPE]


def floats(name: str) -> list[str]:
    return ["analyze", f"{{w}}/{name}", "--dataset", "frames", *ANALYZE[2:], *SHAPE]


#: (id, argv with {w} = the folder and {master} = the master file, exit status, regex).
ROWS: list[tuple[str, list[str], int, str]] = [
    # opmap analyze: inputs
    ("frames-missing", ["analyze", "{w}/gone.h5", *ANALYZE[2:], *SHAPE], 2, "not found"),
    ("frames-not-hdf5", ["analyze", "{w}/not.h5", *ANALYZE[2:], *SHAPE], 2, "HDF5"),
    (
        "dataset-missing",
        ["analyze", "{w}/inf.h5", "--dataset", "nope", *ANALYZE[2:], *SHAPE],
        2,
        "nope",
    ),
    ("poni-missing", [*ANALYZE[:3], "{w}/gone.poni", *ANALYZE[4:], *SHAPE], 2, "gone.poni"),
    ("poni-garbage", [*ANALYZE[:3], "{w}/families.toml", *ANALYZE[4:], *SHAPE], 2, "PONI"),
    ("families-missing", [*ANALYZE[:5], "{w}/gone.toml", *SHAPE], 2, "gone.toml"),
    ("families-broken", [*ANALYZE[:5], "{w}/broken.toml", *SHAPE], 2, "not valid TOML"),
    ("params-missing", [*GOOD, "--params", "{w}/gone.toml"], 2, "--params .*not found"),
    ("map-shape-not-dividing", [*ANALYZE, "--map-shape", "3", "1"], 2, "does not divide"),
    ("map-shape-zero", [*ANALYZE, "--map-shape", "0", "2"], 2, "n_z|map|shape"),
    ("map-shape-negative", [*ANALYZE, "--map-shape", "-1", "2"], 2, "n_z|map|shape"),
    ("map-shape-text", [*ANALYZE, "--map-shape", "two", "2"], 2, "invalid int"),
    ("maps-too-many", [*GOOD, "--maps", "5"], 2, r"n_maps must be in \[1, 1\]"),
    ("maps-zero", [*GOOD, "--maps", "0"], 2, r"n_maps must be in \[1, 1\]"),
    ("z-step-zero", [*GOOD, "--z-step-um", "0"], 2, "must be > 0"),
    ("z-step-nan", [*GOOD, "--z-step-um", "nan"], 2, "must be > 0"),
    ("chunk-frames-zero", [*GOOD, "--chunk-frames", "0"], 2, "1-100000"),
    ("frame-shape-vs-poni", floats("small.h5"), 2, "PONI does not describe"),
    # opmap analyze: --mask
    ("mask-missing", [*GOOD, "--mask", "{w}/gone.npy"], 2, "--mask .*file not found"),
    ("mask-wrong-shape-npy", [*GOOD, "--mask", "{w}/mask_wrong.npy"], 2, "--mask .*has shape"),
    ("mask-wrong-shape-edf", [*GOOD, "--mask", "{w}/mask_wrong.edf"], 2, "--mask .*has shape"),
    ("mask-wrong-shape-tif", [*GOOD, "--mask", "{w}/mask_wrong.tif"], 2, "--mask .*has shape"),
    ("mask-3d", [*GOOD, "--mask", "{w}/mask_3d.npy"], 2, "--mask .*2-D"),
    ("mask-pickled", [*GOOD, "--mask", "{w}/mask_object.npy"], 2, "--mask .*cannot be read"),
    ("mask-h5-ambiguous", [*GOOD, "--mask", "{w}/mask_two.h5"], 2, "FILE::/path"),
    ("mask-h5-no-dataset", [*GOOD, "--mask", "{w}/mask_two.h5::/c"], 2, "no dataset '/c'"),
    ("mask-text", [*GOOD, "--mask", "{w}/mask.txt"], 2, "--mask .*cannot be read"),
    # opmap analyze: --map-times-s
    ("times-words", [*GOOD, "--map-times-s", "a,b"], 2, "--map-times-s .*must be numbers"),
    ("times-nan", [*GOOD, "--map-times-s", "nan"], 2, "--map-times-s must be finite"),
    ("times-inf", [*GOOD, "--map-times-s", "inf"], 2, "--map-times-s must be finite"),
    ("times-decreasing", [*GOOD, "--map-times-s", "10,5"], 2, "strictly increasing"),
    ("times-too-many", [*GOOD, "--map-times-s", "0,600"], 2, "holds 2 times but 1 maps"),
    ("times-empty", [*GOOD, "--map-times-s", " "], 2, "holds no times"),
    ("times-file-words", [*GOOD, "--map-times-s", "{w}/times.txt"], 2, "must be numbers"),
    # opmap analyze: the output
    ("out-master", [*GOOD, "--out", "{master}", "--overwrite"], 2, "would overwrite the input"),
    (
        "out-data-file",
        [*GOOD, "--out", "{w}/cell_data_000001.h5", "--overwrite"],
        2,
        "would overwrite the input",
    ),
    (
        "out-link-to-master",
        [*GOOD, "--out", "{w}/link_to_master.h5", "--overwrite"],
        2,
        "would overwrite the input",
    ),
    ("out-poni", [*GOOD, "--out", "{w}/eiger.poni", "--overwrite"], 2, "overwrite the input"),
    ("out-families", [*GOOD, "--out", "{w}/families.toml", "--overwrite"], 2, "the input"),
    (
        "out-mask",
        [*GOOD, "--mask", "{w}/nan_mask.npy", "--out", "{w}/nan_mask.npy", "--overwrite"],
        2,
        "would overwrite the input",
    ),
    (
        "out-times-file",
        [*GOOD, "--map-times-s", "{w}/times.txt", "--out", "{w}/times.txt", "--overwrite"],
        2,
        "would overwrite the input",
    ),
    ("out-missing-parent", [*GOOD, "--out", "{w}/new/dir/x.nxs"], 2, "does not exist"),
    ("out-parent-is-file", [*GOOD, "--out", "{w}/a_file/x.nxs"], 2, "does not exist"),
    ("out-is-directory", [*GOOD, "--out", "{w}/report_done"], 2, "is a directory"),
    ("out-exists", [*GOOD, "--out", "{w}/existing.nxs"], 2, "exists; pass overwrite"),
    # opmap analyze: the counts
    ("counts-inf", floats("inf.h5"), 2, "infinite counts .*--mask FILE"),
    ("counts-nan", floats("nan.h5"), 2, "NaN counts .*--mask FILE"),
    ("counts-negative", floats("negative.h5"), 2, "negative counts"),
    # opmap report
    ("report-nexus-missing", ["report", "x", "--from-nexus", "{w}/gone.nxs"], 2, "not found"),
    ("report-nexus-not-nexus", ["report", "x", "--from-nexus", "{w}/not.h5"], 2, "not.h5"),
    (
        "report-version-without-tiled",
        ["report", "x", "--from-nexus", "{w}/existing.nxs", "--version", "v1"],
        2,
        "needs --settings",
    ),
    (
        "report-version-bogus",
        ["report", "x", "--settings", "{w}/stopped.toml", "--version", "latest"],
        2,
        "must be v1, v2",
    ),
    (
        "report-formats",
        ["report", "x", "--from-nexus", "{w}/existing.nxs", "--formats", "bmp"],
        2,
        "allowed are png, pdf, svg",
    ),
    (
        "report-dpi",
        ["report", "x", "--from-nexus", "{w}/existing.nxs", "--dpi", "5"],
        2,
        "30-600",
    ),
    (
        "report-area",
        ["report", "x", "--from-nexus", "{w}/existing.nxs", "--cell-area-cm2", "0"],
        2,
        "must be > 0",
    ),
    (
        "report-out-parent",
        ["report", "x", "--from-nexus", "{w}/existing.nxs", "--out", "{w}/new/report"],
        2,
        "does not exist",
    ),
    (
        "report-out-exists",
        ["report", "x", "--from-nexus", "{w}/existing.nxs", "--out", "{w}/report_done"],
        2,
        "exists; pass --overwrite",
    ),
    ("report-settings-missing", ["report", "x", "--settings", "{w}/gone.toml"], 2, "not found"),
    (
        "report-server-stopped",
        ["report", "x", "--settings", "{w}/stopped.toml"],
        2,
        "no Tiled server answers",
    ),
    # opmap serve
    ("serve-port-zero", ["serve", "--data-dir", "{w}/srv", "--port", "0"], 2, "port"),
    ("serve-port-high", ["serve", "--data-dir", "{w}/srv", "--port", "70000"], 2, "port"),
    (
        "serve-remote",
        ["serve", "--data-dir", "{w}/srv", "--host", "0.0.0.0"],
        2,
        "allow.remote",
    ),
    ("serve-weak-key", ["serve", "--data-dir", "{w}/srv", "--api-key", WEAK_KEY], 2, "weak"),
    (
        "serve-key-not-hex",
        ["serve", "--data-dir", "{w}/srv", "--config-only", "--api-key", NOT_HEX_KEY],
        2,
        "hexadecimal",
    ),
    (
        "serve-settings-and-dir",
        ["serve", "--settings", "{w}/stopped.toml", "--data-dir", "{w}/srv"],
        2,
        "cannot be combined",
    ),
    (
        "serve-data-dir-file",
        ["serve", "--data-dir", "{w}/a_file/data", "--config-only"],
        2,
        "not a directory",
    ),
    (
        "serve-catalog-scheme",
        ["serve", "--data-dir", "{w}/srv", "--catalog", "mysql://x/y"],
        2,
        "catalog_uri must start",
    ),
    # opmap analysis-worker (argument checks only)
    (
        "worker-zmq",
        ["analysis-worker", "--zmq", "nohost", "--settings", "{w}/worker_good.toml"],
        2,
        "--zmq .*HOST:PORT",
    ),
    (
        "worker-zmq-port",
        ["analysis-worker", "--zmq", "localhost:99999", "--settings", "{w}/worker_good.toml"],
        2,
        "PORT in 1-65535",
    ),
    (
        "worker-max-maps",
        [
            "analysis-worker",
            "--zmq",
            "localhost:5578",
            "--settings",
            "{w}/worker_good.toml",
            "--max-maps",
            "0",
        ],
        2,
        ">= 1",
    ),
    (
        "worker-settings-missing",
        ["analysis-worker", "--zmq", "localhost:5578", "--settings", "{w}/gone.toml"],
        2,
        "not found",
    ),
    (
        "worker-settings-toml",
        ["analysis-worker", "--zmq", "localhost:5578", "--settings", "{w}/worker_bad_toml.toml"],
        2,
        "not valid TOML",
    ),
    (
        "worker-settings-extra",
        ["analysis-worker", "--zmq", "localhost:5578", "--settings", "{w}/worker_extra.toml"],
        2,
        "colour",
    ),
    (
        "worker-params-missing",
        ["analysis-worker", "--zmq", "localhost:5578", "--settings", "{w}/worker_no_params.toml"],
        2,
        "parameters .*not found",
    ),
    (
        "worker-out-unwritable",
        ["analysis-worker", "--zmq", "localhost:5578", "--settings", "{w}/worker_out_file.toml"],
        2,
        "output_dir .*is a file",
    ),
    (
        "worker-tiled-scheme",
        ["analysis-worker", "--zmq", "localhost:5578", "--settings", "{w}/worker_ftp.toml"],
        2,
        "tiled_uri .*http",
    ),
    (
        "worker-tiled-host",
        ["analysis-worker", "--zmq", "localhost:5578", "--settings", "{w}/worker_nohost.toml"],
        2,
        "tiled_uri .*http",
    ),
    (
        "worker-tiled-port",
        ["analysis-worker", "--zmq", "localhost:5578", "--settings", "{w}/worker_port.toml"],
        2,
        "tiled_uri .*port",
    ),
    # opmap keys, replay
    (
        "keys-role",
        ["keys", "--data-dir", "{w}/srv", "create", "bob", "--role", "god"],
        2,
        "invalid choice",
    ),
    (
        "keys-expiry",
        [
            "keys",
            "--data-dir",
            "{w}/srv",
            "create",
            "bob",
            "--role",
            "reader",
            "--proposal",
            "p1",
            "--expires-in",
            "soon",
        ],
        2,
        "--expires-in",
    ),
    (
        "replay-no-catalog",
        ["replay", "x", "--data-dir", "{w}/report_done"],
        2,
        "holds no opmap catalog",
    ),
    (
        "replay-stopped",
        ["replay", "x", "--settings", "{w}/stopped.toml"],
        2,
        "no Tiled server answers",
    ),
    # opmap resume: refused before any server starts
    (
        "resume-id-path",
        ["resume", "../x", "--data-dir", "{w}/report_done"],
        2,
        "EXPERIMENT_ID '../x' cannot name a file",
    ),
    ("resume-no-dir", ["resume", "x", "--data-dir", "{w}/gone"], 2, "--data-dir .*gone is not a"),
    (
        "resume-not-opmap-dir",
        ["resume", "x", "--data-dir", "{w}/report_done"],
        2,
        "is not an opmap data directory",
    ),
]


def run_main(argv: list[str], capsys, caplog) -> tuple[int, str]:
    """``opmap ARGV`` in-process; its exit status and everything it said on stderr/log."""
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        try:
            status = main(argv)
        except SystemExit as stop:  # argparse's own errors
            status = int(stop.code or 0)
    captured = capsys.readouterr()
    return status, captured.err + captured.out + caplog.text


def fill(argv: list[str], world: Path) -> list[str]:
    master = world / "cell_master.h5"
    return [word.format(w=world, master=master) for word in argv]


@pytest.mark.parametrize(
    ("argv", "status", "message"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS]
)
def test_bad_input_is_refused_and_nothing_written(
    world, argv, status, message, capsys, caplog, monkeypatch
):
    monkeypatch.chdir(world / "cwd")
    monkeypatch.delenv("TILED_API_KEY", raising=False)
    before = snapshot(world)
    code, said = run_main(fill(argv, world), capsys, caplog)
    assert code == status, said
    assert re.search(message, said), said
    assert "Traceback" not in said
    assert snapshot(world) == before


def test_the_table_is_large_and_covers_each_command():
    commands = {row[1][0] for row in ROWS}
    assert len(ROWS) >= 60
    assert {"analyze", "report", "serve", "analysis-worker", "keys", "replay"} <= commands


def test_serve_on_a_port_in_use_writes_no_key_and_no_catalog(world, capsys, caplog):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        before = snapshot(world)
        argv = ["serve", "--data-dir", str(world / "srv"), "--port", str(port)]
        code, said = run_main(argv, capsys, caplog)
    assert code == 2
    assert re.search(rf"--port {port} .*in use", said), said
    assert snapshot(world) == before
    assert not (world / "srv").exists()


@pytest.fixture
def server_settings(rehearsal_server, tmp_path):
    """Settings files for the shared rehearsal's running server: its key and a wrong one."""
    port = rehearsal_server.settings.port
    data_dir = rehearsal_server.settings.data_dir
    good = tmp_path / "good.toml"
    good.write_text(f'data_dir = "{data_dir}"\nport = {port}\n')
    wrong = tmp_path / "wrong.toml"
    wrong.write_text(f'data_dir = "{data_dir}"\nport = {port}\napi_key = "{HEX_KEY}"\n')
    return good, wrong, rehearsal_server.client()


def test_report_answers_a_wrong_key_an_unknown_experiment_and_version(
    server_settings, tmp_path, monkeypatch, capsys, caplog
):
    good, wrong, client = server_settings
    experiment = next(iter(client["processed"]))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TILED_API_KEY", raising=False)
    cases = [
        (["report", experiment, "--settings", str(wrong)], "refused the API key"),
        (["report", "no-such-exp", "--settings", str(good)], f"stored: .*{experiment}"),
        (
            ["report", experiment, "--settings", str(good), "--version", "v99"],
            r"--version v99 .*does not exist; stored versions: v1",
        ),
    ]
    for argv, message in cases:
        before = snapshot(tmp_path)
        code, said = run_main(argv, capsys, caplog)
        assert code == 2, said
        assert re.search(message, said), said
        assert "Traceback" not in said
        assert snapshot(tmp_path) == before


@pytest.mark.parametrize("row", ["report-server-stopped", "worker-zmq"])
def test_a_subprocess_sees_a_message_not_a_traceback(world, row, tmp_path):
    _, argv, status, message = next(r for r in ROWS if r[0] == row)
    before = snapshot(world)
    done = subprocess.run(
        [sys.executable, "-m", "opmap.cli", *fill(argv, world)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == status, done.stderr
    assert re.search(message, done.stderr), done.stderr
    assert "Traceback" not in done.stderr
    assert snapshot(world) == before


def test_nan_pixels_masked_with_a_mask_file_are_analysed(world, tmp_path, capsys, caplog):
    """The remedy the NaN refusal names works: --mask excludes them and c is still right."""
    out = tmp_path / "masked.nxs"
    argv = [
        *fill(floats("nan.h5"), world),
        "--mask",
        str(world / "nan_mask.npy"),
        "--map-times-s",
        "1234.5",
        "--out",
        str(out),
    ]
    code, said = run_main(argv, capsys, caplog)
    assert code == 0, said
    products = read_products(out)
    c = products.arrays["c_perp"].values
    assert np.isfinite(c).sum() >= 2
    assert np.nanmax(np.abs(c - 14.0)) < 0.2  # LCO near pristine c (Å)
    np.testing.assert_allclose(products.arrays["time_s"].values, [1234.5])
    assert products.metadata["time_source"] == "given"
