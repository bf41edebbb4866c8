"""Fixtures shared by the whole suite."""

from __future__ import annotations

import pytest
from bluesky import RunEngine


@pytest.fixture
def RE():
    """A RunEngine for one test (created before any device connects), halted if left busy."""
    run_engine = RunEngine(call_returns_result=True)
    yield run_engine
    if run_engine.state != "idle":
        run_engine.halt()


@pytest.fixture(scope="session")
def rehearsal(tmp_path_factory):
    """One small real rehearsal (2 maps of 8 x 5), shared by the rehearsal and replay tests."""
    from opmap.rehearse import RehearsalOptions, rehearse

    options = RehearsalOptions(
        data_dir=tmp_path_factory.mktemp("rehearsal"),
        map_shape=(8, 5),
        time_scale=0.02,
        map_interval_s=None,
        max_maps=2,
    )
    return rehearse(options)


@pytest.fixture(scope="session")
def rehearsal_server(rehearsal):
    """The rehearsal's Tiled server, started again on its data directory."""
    from opmap.service import start_server_subprocess
    from opmap.settings import OpmapSettings

    with start_server_subprocess(
        OpmapSettings(data_dir=rehearsal.data_dir), startup_timeout_s=300
    ) as handle:
        yield handle
