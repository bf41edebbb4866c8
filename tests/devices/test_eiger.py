from unittest.mock import call

import bluesky.plan_stubs as bps
import pytest
from bluesky import RunEngine
from bluesky.utils import FailedStatus
from ophyd_async.core import (
    StaticFilenameProvider,
    StaticPathProvider,
    TriggerInfo,
    get_mock_put,
    init_devices,
    set_mock_value,
)

from opmap.devices.eiger import Eiger, EigerTriggerMode

from ._offline_epics import allow_offline_ca


@pytest.fixture
def RE():
    run_engine = RunEngine(call_returns_result=True)
    yield run_engine
    if run_engine.state != "idle":
        run_engine.halt()


@pytest.fixture
def eiger(RE, monkeypatch, tmp_path):
    allow_offline_ca(monkeypatch)
    provider = StaticPathProvider(StaticFilenameProvider("map_0007"), tmp_path)
    with init_devices(mock=True):
        eiger = Eiger("BL13:EIG:", provider, frame_shape=(541, 517))
    return eiger


def _prepare(eiger, **kwargs):
    def plan():
        yield from bps.stage(eiger)
        yield from bps.prepare(eiger, TriggerInfo(**kwargs), wait=True)
        return (yield from bps.wait_for([eiger.describe_collect]))

    return plan()


def test_prepare_puts_exposure_period_images_and_file_pattern(RE, eiger):
    described = RE(_prepare(eiger, number_of_events=49, livetime=0.05)).plan_result[0].result()
    driver = eiger.driver
    assert get_mock_put(driver.trigger_mode).call_args_list == [
        call(EigerTriggerMode.INTERNAL_SERIES)
    ]
    assert get_mock_put(driver.count_time_s).call_args_list == [call(0.05)]
    assert get_mock_put(driver.frame_time_s).call_args_list == [call(pytest.approx(0.0500001))]
    assert get_mock_put(driver.nimages).call_args_list == [call(49)]
    assert get_mock_put(driver.fw_name_pattern).call_args_list == [call("map_0007")]
    assert get_mock_put(driver.fw_nimages_per_file).call_args_list == [call(1000)]
    assert described["eiger"]["shape"] == [1, 541, 517]  # ophyd-async: one frame per event
    assert described["eiger"]["dtype_numpy"] == "<u4"


def test_non_positive_exposure_is_refused_before_any_put(RE, eiger):
    set_mock_value(eiger.driver.count_time_s, 0.0)
    with pytest.raises(FailedStatus) as excinfo:
        RE(_prepare(eiger, number_of_events=3))
    assert isinstance(excinfo.value.__cause__, ValueError)
    assert "exposure (livetime) = 0.0 s must be > 0" in str(excinfo.value.__cause__)
    get_mock_put(eiger.driver.count_time_s).assert_not_called()
    get_mock_put(eiger.driver.fw_name_pattern).assert_not_called()
