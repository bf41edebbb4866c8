"""OpmapSettings: defaults under the data directory, TOML loading, precise errors."""

from pathlib import Path

import pytest

from opmap.settings import OpmapSettings


def test_defaults_live_under_the_chosen_data_dir(tmp_path: Path) -> None:
    s = OpmapSettings(data_dir=tmp_path / "beamtime")
    root = tmp_path / "beamtime"
    assert s.detector_dir == root / "detector"
    assert s.file_storage_dir == root / "tiled-files"
    assert s.api_key_file == root / "api-key"
    assert s.catalog_uri == f"sqlite:///{root / 'catalog.db'}"
    assert s.table_store_uri == f"duckdb:///{root / 'tables.duckdb'}"
    assert (s.host, s.port, s.url) == ("127.0.0.1", 8000, "http://127.0.0.1:8000")


def test_default_data_dir_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert OpmapSettings().data_dir == tmp_path / "opmap-data"
    assert not (tmp_path / "opmap-data").exists(), "constructing settings must not write"


def test_postgresql_catalog_uses_the_asyncpg_driver() -> None:
    s = OpmapSettings(catalog_uri="postgresql://opmap:pw@db.example/opmap")
    assert s.catalog_uri == "postgresql+asyncpg://opmap:pw@db.example/opmap"
    assert s.uses_postgresql


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("port", 0, "greater than or equal to 1"),
        ("port", 65536, "less than or equal to 65535"),
        ("api_key", "short", "api_key is weak: 5 characters, at least 32"),
        ("api_key", "has-dash-and-is-long-hunter2pw-0123", "api_key must be letters and digits"),
        ("api_key", "hunter2pw" * 4, "api_key is weak: it repeats a shorter pattern"),
        ("api_key", "hunter2pwaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "api_key is weak: about 5. bits"),
        ("host", "0.0.0.0", "host '0.0.0.0' is reachable .* needs allow_remote = true"),
        ("catalog_uri", "mysql://u:hunter2pw@h/db", "catalog_uri must start with one of"),
        ("table_store_uri", "parquet:///x", "table_store_uri must start with one of"),
        ("prot", 8000, "Extra inputs are not permitted"),
    ],
)
def test_bad_setting_names_the_field_and_the_allowed_values(
    field: str, value: object, message: str
) -> None:
    with pytest.raises(ValueError, match=message) as info:
        OpmapSettings(**{field: value})
    assert field in str(info.value)
    if field in ("api_key", "catalog_uri"):
        assert "hunter2pw" not in str(info.value) and str(value) not in str(info.value)


def test_toml_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    toml = tmp_path / "conf" / "opmap.toml"
    toml.write_text('[opmap.service]\ndata_dir = "../run1"\nport = 8100\n')
    s = OpmapSettings.from_toml(toml, table="opmap.service")
    assert s.data_dir == tmp_path / "conf" / ".." / "run1"
    assert s.detector_dir == s.data_dir / "detector"
    assert s.port == 8100


def test_toml_with_unknown_field_or_missing_table_is_refused(tmp_path: Path) -> None:
    toml = tmp_path / "opmap.toml"
    toml.write_text('data_dir = "d"\nhots = "0.0.0.0"\n')
    with pytest.raises(ValueError, match="hots"):
        OpmapSettings.from_toml(toml)
    with pytest.raises(ValueError, match=r"no table \[service\]"):
        OpmapSettings.from_toml(toml, table="service")
    toml.write_text("port = \n")
    with pytest.raises(ValueError, match="not valid TOML"):
        OpmapSettings.from_toml(toml)
