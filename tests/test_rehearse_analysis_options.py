"""``opmap rehearse --set KEY=VALUE``: the live analysis with parameters other than defaults.

Bad keys and values are refused before anything runs; a good one reaches the live analysis
(its products' stored parameters) and is recorded with the rehearsal's options, so that
``opmap resume`` rebuilds the same analysis.
"""

from __future__ import annotations

import pytest

from opmap.cli import main
from opmap.rehearse import RehearsalOptions, rehearse
from opmap.replay import stored_parameters
from opmap.service import start_server_subprocess
from opmap.settings import OpmapSettings

#: Two parameters other than the defaults: the (003) background and the grain threshold.
OVERRIDES = {"sector_background": "between_spots", "grain_k": 12}


def test_an_unknown_parameter_exits_2_naming_it_before_anything_starts(tmp_path, capsys):
    data_dir = tmp_path / "data"
    assert main(["rehearse", "--data-dir", str(data_dir), "--set", "grain_kk=12"]) == 2
    out = capsys.readouterr().out
    assert "analysis_overrides" in out and "grain_kk" in out
    assert not data_dir.exists()


def test_a_value_out_of_range_is_refused_naming_the_parameter_and_what_it_allows():
    with pytest.raises(ValueError, match="sector_background") as error:
        RehearsalOptions(analysis_overrides={"sector_background": "everywhere"})
    assert "between_spots" in str(error.value)


@pytest.fixture(scope="module")
def rehearsal_with_option(tmp_path_factory):
    options = RehearsalOptions(
        data_dir=tmp_path_factory.mktemp("rehearsal-option"),
        map_shape=(6, 4),
        time_scale=0.02,
        map_interval_s=None,
        max_maps=1,
        pristine_map=False,
        analysis_overrides=OVERRIDES,
    )
    return rehearse(options)


def test_the_live_analysis_runs_with_the_parameters_given(rehearsal_with_option):
    result = rehearsal_with_option
    assert result.analysis_failures == 0
    settings = OpmapSettings(data_dir=result.data_dir)
    with start_server_subprocess(settings, startup_timeout_s=120) as server:
        client = server.client()
        (experiment_id,) = list(client["processed"])
        _, stored = stored_parameters(client["processed"], experiment_id)
        starts = [run.metadata["start"] for run in client["raw"].values()]
    parameters = stored["analysis_parameters"]
    assert parameters["sector_background"] == "between_spots"
    assert parameters["grain_k"] == 12
    assert stored["sector_background"].startswith("opt-in, applied")  # labelled as such
    # what `opmap resume` rebuilds the rehearsal from: the map runs' recorded options
    recorded = [s["rehearsal_options"] for s in starts if "rehearsal_options" in s]
    assert recorded, "the map runs record the rehearsal's options"
    for options in recorded:
        assert options["analysis_overrides"] == OVERRIDES
