"""The beamline profile, built whole in simulation without IPython.

The session writes into an in-process Tiled app built from the generated server config (the
one ``opmap serve`` runs), read back through the real client; nothing in Tiled is mocked.
"""

from __future__ import annotations

import asyncio
import importlib.util
import runpy
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any
from urllib.parse import urlparse

import bluesky.plan_stubs as bps
import h5py
import hdf5plugin  # noqa: F401  (bitshuffle-LZ4 reading)
import numpy as np
import pytest
from tiled.client import Context, from_context

from opmap.devices.beam import ShutterState
from opmap.plans import MapGeometry, fly_map
from opmap.service import build_in_process_app
from opmap.settings import OpmapSettings

PROFILE_DIR = Path(__file__).resolve().parent.parent / "profile"
STARTUP_FILE = PROFILE_DIR / "startup" / "00-opmap.py"
API_KEY = "opmapprofiletestkey0123456789abcd"
# 3 lines of 5 frames inside the cathode (0-20 µm), 33 µm per frame.
SMALL_MAP = MapGeometry(
    z_start_um=8.0, z_step_um=2.0, z_count=3, x_start_um=500.0, x_stop_um=665.0, x_count=5
)

# Tiled's in-process Context imports starlette's TestClient, which warns about httpx.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Using `httpx` with `starlette.testclient` is deprecated"
)


def _load_profile() -> ModuleType:
    path = PROFILE_DIR / "opmap_profile.py"
    spec = importlib.util.spec_from_file_location("opmap_profile", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


profile = _load_profile()


def _write_config(folder: Path, data_dir: Path, *, tiled: str = "", run_engine: str = "") -> Path:
    """A sim profile file like ``profile/beamline.toml``, with its data under ``data_dir``."""
    path = folder / "beamline.toml"
    path.write_text(
        "[beamline]\n"
        f'data_dir = "{data_dir.as_posix()}"\n'
        "[beamline.sim]\nbinning = 4\n"
        f'[live_analysis]\nparameters = "{(PROFILE_DIR / "analysis.toml").as_posix()}"\n'
        "[suspenders]\nmin_current_ma = 100.0\n"
        f"[run_engine]\n{run_engine}"
        f"[tiled]\n{tiled}"
    )
    return path


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("opmap-data")


@pytest.fixture(scope="module")
def tiled_root(data_dir: Path) -> Iterator[Any]:
    settings = OpmapSettings(data_dir=data_dir, api_key=API_KEY)
    with Context.from_app(build_in_process_app(settings)) as context:
        yield from_context(context)


@pytest.fixture(scope="module")
def session(data_dir: Path, tiled_root: Any) -> Iterator[Any]:
    config = _write_config(data_dir, data_dir)
    built = profile.build_session(config, tiled_client=tiled_root)
    yield built
    built.close()


@pytest.fixture(scope="module")
def map_run(session: Any) -> tuple[str, Any]:
    """Run the small fly map once through the session's RunEngine: (uid, run in raw)."""
    result = session.RE(fly_map(session.beamline.eiger, *_axes(session), SMALL_MAP))
    (uid,) = result.run_start_uids
    return uid, session.raw[uid]


def _axes(session: Any) -> tuple[Any, Any]:
    return session.beamline.stage.x, session.beamline.stage.z


def _set_shutter(session: Any, state: ShutterState) -> None:
    async def move() -> None:
        await session.beamline.beam.shutter.set(state)

    asyncio.run_coroutine_threadsafe(move(), session.RE.loop).result(5.0)


def _wait_for(condition: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_shipped_profile_file_is_a_valid_sim_configuration() -> None:
    config = profile.load_profile_config(PROFILE_DIR / "beamline.toml")
    assert config.beamline.mode == "sim"
    assert config.beamline.data_dir.is_absolute()
    assert config.live_analysis.parameters == PROFILE_DIR / "analysis.toml"
    assert config.beamline.window.max_potential_v > config.beamline.window.min_potential_v
    # `opmap serve --data-dir` on the same folder reads the frames where the detector writes
    assert config.tiled_settings().detector_dir == config.beamline.data_dir / "detector"


def test_analysis_families_are_the_twins(session: Any) -> None:
    live = session.live_analysis.callback
    shipped = {f.name: (f.azimuths_003_deg, f.azimuths_110_deg) for f in live.params.families}
    twin = {
        f.name: (tuple(f.azimuths_003_deg), tuple(f.azimuths_110_deg))
        for f in session.beamline.twin.families
    }
    assert shipped == twin


def test_a_misspelt_field_is_named_before_anything_is_built(tmp_path: Path) -> None:
    config = _write_config(tmp_path, tmp_path, tiled="urll = 'http://localhost:8000'\n")
    with pytest.raises(ValueError, match=r"tiled\.urll"):
        profile.build_session(config)


def test_a_server_that_cannot_read_the_detector_folder_is_refused(tmp_path: Path) -> None:
    settings = tmp_path / "opmap.toml"
    settings.write_text(f'data_dir = "{(tmp_path / "elsewhere").as_posix()}"\n')
    config = _write_config(tmp_path, tmp_path / "data", tiled=f'settings_file = "{settings}"\n')
    with pytest.raises(ValueError, match=r"tiled\.settings_file: the server reads detector"):
        profile.build_session(config)


def test_every_device_is_connected_and_named(session: Any) -> None:
    devices = session.beamline.devices
    assert set(devices) == {"stage", "eiger", "potentiostat", "beam", "sample_changer"}
    for name, device in devices.items():
        assert device.name == name
        # ophyd-async keeps the connection task of a connected device, done without error
        task = device._connect_task
        assert task is not None and task.done() and task.exception() is None, name


def test_namespace_holds_re_devices_plans_and_tiled_by_name(session: Any) -> None:
    names = session.namespace()
    assert names["RE"] is session.RE
    assert names["eiger"] is session.beamline.eiger
    assert names["fly_map"] is fly_map
    assert names["raw"] is session.raw and names["processed"] is session.processed
    assert {"operando_experiment", "calibrate", "align_stack", "MapGeometry"} <= set(names)


def test_run_in_raw_advertises_the_frames_taken_as_soon_as_it_stops(map_run) -> None:
    _, run = map_run
    assert run["primary"]["eiger"].shape[0] == SMALL_MAP.x_count * SMALL_MAP.z_count


def test_fly_map_is_written_to_raw_and_read_back_equal_to_the_files(session, map_run) -> None:
    uid, run = map_run
    assert run.metadata["stop"]["exit_status"] == "success"
    frames = session.raw[uid]["primary"]["eiger"].read()
    shape = session.beamline.integrator.detector.shape
    assert frames.shape == (SMALL_MAP.x_count * SMALL_MAP.z_count, *shape)
    documents = list(session.raw[uid].documents())
    (resource,) = [d for n, d in documents if n == "stream_resource" and d["data_key"] == "eiger"]
    with h5py.File(urlparse(resource["uri"]).path, "r") as f:
        np.testing.assert_array_equal(frames, f[resource["parameters"]["dataset"]][()])
    # every frame is inside the cathode (z = 8-12 µm) and carries diffracted counts
    assert np.all(frames.reshape(len(frames), -1).sum(axis=1, dtype=np.float64) > 0)


def test_live_analysis_wrote_the_maps_products_linked_to_the_run(session, map_run) -> None:
    uid, _ = map_run
    assert session.live_analysis.total_failures == 0
    versions = [
        session.processed[experiment][version]
        for experiment in session.processed
        for version in session.processed[experiment]
    ]
    assert any(uid in version.metadata.get("raw_uids", ()) for version in versions)


def test_suspenders_are_installed_and_trip_on_beam_loss_and_closed_shutter(session) -> None:
    beam, clock = session.beamline.beam, session.beamline.clock
    suspenders = session.suspenders
    assert set(session.RE.suspenders) == set(suspenders.values())
    assert set(suspenders) == {"beam_current", "shutter"}
    assert not any(s.tripped for s in suspenders.values()), "sim shutter opened at start"

    beam.trip(clock.now_s(), 1.0)
    assert _wait_for(lambda: suspenders["beam_current"].tripped)
    clock.advance(1.0)  # the trip ends on the experiment clock
    assert _wait_for(lambda: not suspenders["beam_current"].tripped)

    _set_shutter(session, ShutterState.CLOSED)
    assert _wait_for(lambda: suspenders["shutter"].tripped)
    _set_shutter(session, ShutterState.OPEN)
    assert _wait_for(lambda: not suspenders["shutter"].tripped)


def test_startup_file_fills_the_ipython_namespace(tmp_path, data_dir, tiled_root, monkeypatch):
    key_file = tmp_path / "api-key"
    key_file.write_text(API_KEY + "\n")
    url = "http://tiled.invalid:8000"
    tiled = f'url = "{url}"\napi_key_file = "{key_file.as_posix()}"\n'
    # its own RE.md: one PersistentDict folder is used by one live session at a time
    md = f'metadata_dir = "{(tmp_path / "md").as_posix()}"\n'
    config = _write_config(tmp_path, data_dir, tiled=tiled, run_engine=md)
    monkeypatch.setenv("OPMAP_BEAMLINE_CONFIG", str(config))
    connections = []

    def from_uri(uri: str, *, api_key: str) -> Any:
        connections.append((uri, api_key))
        return tiled_root

    monkeypatch.setattr("tiled.client.from_uri", from_uri)
    shell = SimpleNamespace(user_ns={})
    left = runpy.run_path(str(STARTUP_FILE), init_globals={"get_ipython": lambda: shell})
    started = shell.user_ns["session"]
    try:
        assert connections == [(url, API_KEY)]
        assert shell.user_ns == started.namespace()
        assert shell.user_ns["stage"].name == "stage"
        assert not [name for name in left if not name.startswith("__") and name != "get_ipython"]
        shell.user_ns["RE"](bps.null())
    finally:
        started.close()


def test_run_engine_metadata_persists_so_scan_id_keeps_counting(
    session, data_dir, map_run, tmp_path
):
    import shutil

    from bluesky.utils import PersistentDict, ProgressBarManager

    assert isinstance(session.RE.waiting_hook, ProgressBarManager)
    folder = data_dir / "runengine-md"  # the default: beside the data
    assert isinstance(session.RE.md, PersistentDict)
    assert session.RE.md["scan_id"] >= 1  # the map run counted
    session.RE.md["operator"] = "profile-test"
    session.RE.md.flush()
    # what the next session's RunEngine starts from (read from a copy: zict allows one
    # live PersistentDict per folder, and this session's is still open)
    copy = shutil.copytree(folder, tmp_path / "next-session-md")
    reopened = dict(PersistentDict(str(copy)))
    assert reopened["scan_id"] == session.RE.md["scan_id"]
    assert reopened["operator"] == "profile-test"


def test_run_engine_metadata_folder_and_progress_bars_follow_the_config(tmp_path) -> None:
    run_engine = 'metadata_dir = "md"\nprogress_bars = false\n'
    config_file = _write_config(tmp_path, tmp_path / "data", run_engine=run_engine)
    config = profile.load_profile_config(config_file)
    assert config.run_engine.metadata_dir == tmp_path / "md"
    assert not config.run_engine.progress_bars
