from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from opmap.twin import TwinConfig

DEFAULT_TOML = Path(__file__).parents[2] / "twin" / "twin_default.toml"


def test_example_toml_holds_the_defaults():
    assert TwinConfig.from_file(DEFAULT_TOML) == TwinConfig()


def test_yaml_round_trip_and_override(tmp_path):
    config = TwinConfig(seed=7)
    data = config.model_dump(mode="json")
    data["geometry"]["ti_thickness_um"] = 0.7
    path = tmp_path / "twin.yaml"
    path.write_text(yaml.safe_dump(data))
    loaded = TwinConfig.from_file(path)
    assert loaded.seed == 7 and loaded.geometry.ti_thickness_um == 0.7
    assert loaded.families == config.families and loaded.lithium == config.lithium


def test_misspelt_field_is_named(tmp_path):
    path = tmp_path / "twin.toml"
    path.write_text("[geometry]\nlco_thicknes_um = 20.0\n")
    with pytest.raises(ValidationError, match="lco_thicknes_um"):
        TwinConfig.from_file(path)


def test_bad_value_names_field_and_range(tmp_path):
    path = tmp_path / "twin.toml"
    path.write_text("[lithium]\nclass_fractions = [0.5, 0.5, 0.5]\n")
    with pytest.raises(ValidationError, match=r"class_fractions.*sum to 1"):
        TwinConfig.from_file(path)
    path.write_text("[geometry]\nbeam_size_z_um = -1\n")
    with pytest.raises(ValidationError, match=r"beam_size_z_um[\s\S]*greater than 0"):
        TwinConfig.from_file(path)


def test_unsorted_table_and_mismatched_cathode_are_refused():
    perp = TwinConfig().families.perp.model_dump()
    perp["c_angstrom_vs_x_li"] = [[0.75, 14.13], [0.5, 14.32]]
    with pytest.raises(ValidationError, match="c_angstrom_vs_x_li"):
        TwinConfig.model_validate({"families": {"perp": perp}})
    with pytest.raises(ValidationError, match="cathode_thickness_um"):
        TwinConfig.model_validate({"geometry": {"lco_thickness_um": 18.0}})


def test_unknown_suffix_is_refused(tmp_path):
    with pytest.raises(ValueError, match="path"):
        TwinConfig.from_file(tmp_path / "twin.json")
