"""``mode = "real"``: the profile's TOML builds the EPICS and SIMPLON devices at its addresses.

Nothing connects here (no IOC or DCU); the network rehearsal (tests/test_rehearse_network.py)
drives the same factories against ``opmap sim-beamline`` over Channel Access and HTTP.
"""

from __future__ import annotations

import importlib.util

import pytest
from ophyd_async.core import walk_signal_sources
from pydantic import ValidationError

from opmap.analysis.geometry import eiger4m_integrator, save_poni
from opmap.beamline import BeamlineConfig, build_beamline, load_beamline_config
from opmap.devices import SafetyWindow
from opmap.devices.simplon import SimplonEiger

REAL_TOML = """
[beamline]
mode = "real"
data_dir = "data"
poni = "geometry/eiger.poni"

[beamline.safety_window]
min_potential_v = 2.6
max_potential_v = 4.35
max_abs_current_a = 5e-5

[beamline.real]
stage_prefix = "BL13:MAP:"
potentiostat_prefix = "BL13:EC:"
beam_current_pv = "SR:CURRENT"
shutter_prefix = "BL13:SHTR:"
sample_changer_pv = "BL13:CHANGER:POS"
simplon_url = "http://10.0.0.17"
detector_dir = "dcu-files"   # the DCU's storage, mounted here
"""


@pytest.fixture
def profile(tmp_path):
    (tmp_path / "geometry").mkdir()
    save_poni(eiger4m_integrator(binning=4, distance_m=0.123), tmp_path / "geometry/eiger.poni")
    path = tmp_path / "beamline.toml"
    path.write_text(REAL_TOML.replace("[beamline]\n", "").replace("beamline.", ""))
    return path


def test_a_real_profile_builds_each_device_at_its_address(profile):
    beamline = build_beamline(load_beamline_config(profile))
    assert beamline.stage.x.user_readback.source == "ca://BL13:MAP:X.RBV"
    assert beamline.stage.z.user_setpoint.source == "ca://BL13:MAP:Z.VAL"
    assert beamline.beam.beam_current_ma.source == "ca://SR:CURRENT"
    assert beamline.beam.shutter.source == "ca://BL13:SHTR:Pos-Sts"
    assert beamline.sample_changer.source == "ca://BL13:CHANGER:POS"
    sources = walk_signal_sources(beamline.potentiostat).values()
    channel_access = [source for source in sources if source.startswith("ca://")]
    assert len(channel_access) > 10  # the PV table (the rest are soft signals derived here)
    assert all(source.startswith("ca://BL13:EC:") for source in channel_access)
    assert beamline.potentiostat.window == SafetyWindow(2.6, 4.35, 5e-5)
    assert isinstance(beamline.eiger, SimplonEiger)
    assert beamline.eiger.client.base_url == "http://10.0.0.17"
    assert beamline.config.real.detector_dir == profile.parent / "dcu-files"
    # the geometry is the profile's PONI, not the twin's
    assert beamline.integrator.dist == pytest.approx(0.123)
    assert beamline.twin is None and beamline.seed is None


def test_the_fastcs_eiger_is_chosen_by_configuration(profile, tmp_path):
    from ophyd_async.fastcs.eiger import EigerDetector

    text = profile.read_text().replace('simplon_url = "http://10.0.0.17"', 'detector = "fastcs"')
    text += 'fastcs_prefix = "BL13:EIGER:"\n'
    profile.write_text(text)
    config = load_beamline_config(profile)
    if importlib.util.find_spec("p4p") is None:  # ophyd-async's FastCS Eiger talks PVA
        with pytest.raises(RuntimeError, match=r"real.detector='fastcs' talks PV Access"):
            build_beamline(config)
        return
    eiger = build_beamline(config).eiger
    assert isinstance(eiger, EigerDetector)
    sources = walk_signal_sources(eiger).values()
    assert any(source.startswith("pva://BL13:EIGER:") for source in sources)


def test_real_mode_without_geometry_is_refused_naming_poni(tmp_path):
    with pytest.raises(ValidationError, match="poni: mode='real' needs the detector geometry"):
        BeamlineConfig(mode="real", data_dir=tmp_path)


@pytest.mark.parametrize(
    ("field", "value"),
    [("simplon_url", "eiger-dcu:80"), ("simplon_url", "http://dcu/api"), ("detector", "odin")],
)
def test_a_bad_detector_address_is_refused_naming_the_field(tmp_path, field, value):
    with pytest.raises(ValidationError, match=field):
        BeamlineConfig(mode="real", data_dir=tmp_path, poni=tmp_path, real={field: value})
