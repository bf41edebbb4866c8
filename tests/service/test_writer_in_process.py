"""End to end, in process: bp.count of a real HDF5-writing detector through the TiledWriter.

The Tiled app is built from the generated config file (the one ``opmap serve`` runs) and
read through the real client; no part of Tiled is mocked.
"""

import logging
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import bluesky.plans as bp
import h5py
import numpy as np
import pytest
from bluesky import RunEngine
from event_model import DocumentNames, schema_validators
from ophyd_async.core import StaticPathProvider, UUIDFilenameProvider, init_devices
from ophyd_async.sim import SimBlobDetector
from tiled.client import Context, from_context

from opmap.callbacks.tiled_writer import (
    RunValidationError,
    ValidatedTiledWriter,
    ensure_layout,
    validate_run,
)
from opmap.service import build_in_process_app
from opmap.settings import OpmapSettings

N_FRAMES = 3

# Tiled's in-process Context imports starlette's TestClient, which warns that it prefers the
# httpx2 package (a UserWarning subclass, attributed to the import machinery).
pytestmark = pytest.mark.filterwarnings(
    "ignore:Using `httpx` with `starlette.testclient` is deprecated"
)


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> OpmapSettings:
    return OpmapSettings(data_dir=tmp_path_factory.mktemp("opmap-data"))


@pytest.fixture(scope="module")
def client(settings: OpmapSettings) -> Iterator:
    with Context.from_app(build_in_process_app(settings)) as context:
        yield ensure_layout(from_context(context))["raw"]


@pytest.fixture(scope="module")
def recorded(settings: OpmapSettings, client) -> tuple[str, list, str, list[str]]:
    """Run bp.count once; return (uid, documents emitted, detector name, log messages)."""
    engine = RunEngine({})  # before init_devices: it owns the event loop
    with init_devices():
        det = SimBlobDetector(StaticPathProvider(UUIDFilenameProvider(), settings.detector_dir))
    emitted: list[tuple[str, dict]] = []
    engine.subscribe(lambda name, doc: emitted.append((name, doc)))
    engine.subscribe(ValidatedTiledWriter(client, backup_directory=settings.backup_dir))
    handler = _ListHandler()
    logger = logging.getLogger("opmap.callbacks.tiled_writer")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        (uid,) = engine(bp.count([det], num=N_FRAMES))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    return uid, emitted, det.name, handler.messages


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _frames_on_disk(emitted: list, data_key: str) -> np.ndarray:
    resource = next(d for n, d in emitted if n == "stream_resource" and d["data_key"] == data_key)
    with h5py.File(urlparse(resource["uri"]).path, "r") as f:
        return f[resource["parameters"]["dataset"]][()]


def test_frames_read_back_as_n_h_w_equal_to_the_hdf5_file(recorded, client) -> None:
    uid, emitted, name, _ = recorded
    on_disk = _frames_on_disk(emitted, name)
    assert on_disk.ndim == 3 and on_disk.shape[0] == N_FRAMES
    frames = client[uid]["primary"][name].read()
    assert frames.shape == on_disk.shape, "validation fixed the (N, 1, H, W) declaration"
    np.testing.assert_array_equal(frames, on_disk)
    assert frames.std() > 0, "the simulated blobs are not a constant image"


def test_frames_are_stored_in_the_detector_directory(recorded, settings) -> None:
    _, emitted, _, _ = recorded
    for name, doc in emitted:
        if name == "stream_resource":
            assert Path(urlparse(doc["uri"]).path).parent == settings.detector_dir


def test_exported_documents_are_schema_valid_and_match_the_run(recorded, client) -> None:
    uid, emitted, _, _ = recorded
    exported = list(client[uid].documents())
    for name, doc in exported:
        schema_validators[DocumentNames(name)].validate(doc)
    names = [name for name, _ in exported]
    assert names[0] == "start" and names[-1] == "stop"
    assert names.count("event") == N_FRAMES
    assert exported[0][1]["uid"] == uid
    assert exported[-1][1] == next(d for n, d in emitted if n == "stop")


def test_writer_validates_after_stop_and_logs_the_fix_with_the_uid(recorded, client) -> None:
    uid, _, name, messages = recorded
    fixes = [m for m in messages if "Fixed shape mismatch" in m]
    assert fixes, f"expected the (N, 1, H, W) -> (N, H, W) fix in the log, got {messages}"
    assert all(m.startswith(f"Run {uid}: ") and f"primary/{name}" in m for m in fixes)
    assert validate_run(client, uid) is True  # already fixed: still valid


def test_missing_run_is_logged_and_raised_on_request(client, caplog) -> None:
    with caplog.at_level(logging.ERROR, logger="opmap.callbacks.tiled_writer"):
        assert validate_run(client, "no-such-run") is False
    assert "Run no-such-run is missing" in caplog.text
    with pytest.raises(RunValidationError, match="no-such-run"):
        validate_run(client, "no-such-run", raise_on_invalid=True)


def test_layout_keeps_products_beside_runs_and_is_idempotent(client) -> None:
    root = from_context(client.context)
    again = ensure_layout(root)
    assert sorted(root) == ["processed", "raw"]
    again["processed"].write_array(np.arange(4.0), key="c_map")
    np.testing.assert_array_equal(root["processed"]["c_map"].read(), np.arange(4.0))
    assert [spec.name for spec in again["raw"].specs] == ["CatalogOfBlueskyRuns"]


def test_background_validation_runs_off_the_runengine_thread_and_is_awaitable(
    client, settings, caplog
) -> None:
    with pytest.raises(ValueError, match="background=True cannot raise_on_invalid"):
        ValidatedTiledWriter(client, background=True, raise_on_invalid=True)
    writer = ValidatedTiledWriter(client, background=True)
    writer("stop", {"run_start": "no-such-run", "uid": "x", "time": 0.0, "exit_status": "fail"})
    with caplog.at_level("ERROR", logger="opmap.callbacks.tiled_writer"):
        writer.wait()  # the missing run is validated in the worker thread, and logged
    assert any("no-such-run" in r.getMessage() and r.threadName.startswith("tiled-validate")
               for r in caplog.records)  # fmt: skip
