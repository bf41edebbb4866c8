"""Tests for opmap.analysis.families: TOML sectors, wrap-around, overlap errors."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from opmap.analysis.families import ChiSector, FamilyConfig, load_families

PAPER_TOML = """
[[family]]
name = "perp"
azimuths_003_deg = [25, 160, 205, 345]
azimuths_110_deg = [90]
sector_half_width_deg = 10

[[family]]
name = "par"
azimuths_003_deg = [90, 275]
azimuths_110_deg = [210]
"""


def test_paper_families_load_with_ten_degree_sectors(tmp_path) -> None:
    path = tmp_path / "families.toml"
    path.write_text(PAPER_TOML)
    config = load_families(path)
    perp, par = config.family
    assert [s.start_chi_deg for s in perp.sectors("003")] == [15, 150, 195, 335]
    assert all(s.width_deg == 20 for s in perp.sectors("003"))
    assert [s.start_chi_deg for s in par.sectors("110")] == [200]


def test_sector_wrapping_through_zero_contains_both_sides() -> None:
    config = FamilyConfig.model_validate(
        {"family": [{"name": "a", "azimuths_003_deg": [355], "sector_half_width_deg": 10}]}
    )
    (sector,) = config.family[0].sectors("003")
    assert sector.start_chi_deg == 345 and sector.end_chi_deg == pytest.approx(5)
    assert sector.contains(359.9) and sector.contains(0.0) and sector.contains(4.9)
    assert not sector.contains(5.1) and not sector.contains(344.9)
    assert sector.to_pyfai_ranges_deg() == ((-15.0, 5.0),)


def test_sector_crossing_180_splits_into_two_pyfai_ranges_of_same_total_width() -> None:
    sector = ChiSector(start_chi_deg=175, width_deg=20)
    pieces = sector.to_pyfai_ranges_deg()
    assert pieces == ((175.0, 180.0), (-180.0, -165.0))
    assert sum(hi - lo for lo, hi in pieces) == pytest.approx(20)


def test_overlapping_sectors_of_two_families_name_both_families() -> None:
    families = {
        "family": [
            {"name": "perp", "azimuths_003_deg": [25]},
            {"name": "par", "azimuths_003_deg": [40]},
        ]
    }
    with pytest.raises(ValidationError, match=r"\(003\) sectors overlap: family 'perp'.*'par'"):
        FamilyConfig.model_validate(families)


def test_overlap_is_detected_across_the_0_360_wrap() -> None:
    families = {
        "family": [
            {"name": "a", "azimuths_110_deg": [355], "azimuths_003_deg": [100]},
            {"name": "b", "azimuths_110_deg": [8], "azimuths_003_deg": [200]},
        ]
    }
    with pytest.raises(ValidationError, match=r"\(110\) sectors overlap"):
        FamilyConfig.model_validate(families)


def test_touching_sectors_are_allowed() -> None:
    config = FamilyConfig.model_validate(
        {
            "family": [
                {"name": "a", "azimuths_003_deg": [10]},
                {"name": "b", "azimuths_003_deg": [30]},
            ]
        }
    )
    a, b = (f.sectors("003")[0] for f in config.family)
    assert not a.overlaps(b)


@pytest.mark.parametrize(
    ("family", "field"),
    [
        ({"name": "a", "azimuths_003_deg": [360]}, "azimuths_003_deg"),
        ({"name": "a", "azimuths_003_deg": [10], "sector_half_width_deg": 0}, "sector_half_width"),
        ({"name": "a", "azimuths_003_deg": [10], "colour": "red"}, "colour"),
        ({"name": "1bad", "azimuths_003_deg": [10]}, "name"),
    ],
)
def test_bad_family_fields_are_named(family, field) -> None:
    with pytest.raises(ValidationError, match=field):
        FamilyConfig.model_validate({"family": [family]})


def test_duplicate_family_names_are_rejected() -> None:
    families = {
        "family": [
            {"name": "a", "azimuths_003_deg": [10]},
            {"name": "a", "azimuths_003_deg": [90]},
        ]
    }
    with pytest.raises(ValidationError, match="unique"):
        FamilyConfig.model_validate(families)


def test_invalid_toml_names_the_file(tmp_path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[[family]\nname = ")
    with pytest.raises(ValueError, match=r"broken\.toml"):
        load_families(path)
