"""Generated Tiled config: schema-valid, API key kept private, bad paths refused first."""

import importlib.resources
import stat
from pathlib import Path

import jsonschema
import pytest
import yaml
from tiled.config import parse_configs

from opmap.service import (
    ACCESS_POLICY,
    JSON_SEQ_EXPORTER,
    VALIDATOR_ROUTER,
    ensure_api_key,
    list_keys,
    write_server_config,
)
from opmap.settings import OpmapSettings


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_config_validates_against_tiled_schema_and_config_model(tmp_path: Path) -> None:
    settings = OpmapSettings(data_dir=tmp_path / "d", port=8123)
    config_file = write_server_config(settings)
    config = yaml.safe_load(config_file.read_text())
    schema_text = importlib.resources.files("tiled").joinpath(
        "config_schemas/service_configuration.yml"
    )
    jsonschema.validate(config, yaml.safe_load(schema_text.read_text()))
    parsed = parse_configs(config_file)  # tiled's own pydantic model, imports the plugins
    args = parsed.trees[0].args
    assert args["uri"] == f"sqlite:///{tmp_path / 'd' / 'catalog.db'}"
    assert args["init_if_not_exists"] is True
    assert args["writable_storage"] == [
        str(tmp_path / "d" / "tiled-files"),
        f"duckdb:///{tmp_path / 'd' / 'tables.duckdb'}",
    ]
    assert args["readable_storage"] == [str(tmp_path / "d" / "detector")]
    assert parsed.authentication.allow_anonymous_access is False
    assert parsed.authentication.single_user_api_key is None, "keys live in authn.db"
    assert config["authentication"]["tiled_admins"] == [{"provider": "opmap", "id": "admin"}]
    assert config["access_control"]["access_policy"] == ACCESS_POLICY
    assert config["database"]["uri"] == f"sqlite:///{tmp_path / 'd' / 'authn.db'}"
    assert config["media_types"]["BlueskyRun"]["application/json-seq"] == JSON_SEQ_EXPORTER
    assert config["routers"] == [VALIDATOR_ROUTER]
    assert parsed.uvicorn == {"host": "127.0.0.1", "port": 8123}
    assert _mode(config_file) == 0o600
    assert _mode(tmp_path / "d" / "authn.db") == 0o600, "key hashes and principals"
    assert _mode(tmp_path / "d" / "admin-key") == 0o600


def test_postgresql_catalog_goes_into_the_config(tmp_path: Path) -> None:
    settings = OpmapSettings(
        data_dir=tmp_path, catalog_uri="postgresql://opmap:pw@db.example:5432/opmap"
    )
    parsed = parse_configs(write_server_config(settings))
    assert parsed.trees[0].args["uri"] == "postgresql+asyncpg://opmap:pw@db.example:5432/opmap"


def test_key_file_is_owner_only_and_reused(tmp_path: Path) -> None:
    settings = OpmapSettings(data_dir=tmp_path)
    first = ensure_api_key(settings)
    assert settings.api_key_file is not None
    assert _mode(settings.api_key_file) == 0o600
    assert len(first) == 64 and int(first, 16) >= 0
    assert ensure_api_key(settings) == first
    write_server_config(settings)
    assert [(k.name, k.role, k.first_eight) for k in list_keys(settings)] == [
        ("admin", "admin", (tmp_path / "admin-key").read_text()[:8]),
        ("beamline", "writer", first[:8]),
    ]
    write_server_config(settings)
    assert len(list_keys(settings)) == 2, "registered once"


def test_given_key_is_used_and_not_stored(tmp_path: Path) -> None:
    settings = OpmapSettings(data_dir=tmp_path, api_key="7f3a9c1e5b2d8f4a6c0e9b3d7a1f5c2e")
    write_server_config(settings)
    writer = [k for k in list_keys(settings) if k.role == "writer"]
    assert [k.first_eight for k in writer] == ["7f3a9c1e"]
    assert settings.api_key_file is not None and not settings.api_key_file.exists()


def test_key_file_readable_by_others_is_refused_before_writing(tmp_path: Path) -> None:
    settings = OpmapSettings(data_dir=tmp_path)
    assert settings.api_key_file is not None
    settings.api_key_file.write_text("0123456789abcdef0123\n")
    settings.api_key_file.chmod(0o644)
    with pytest.raises(ValueError, match=r"api_key_file .* mode 0o644.*chmod 600"):
        write_server_config(settings)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["api-key"]


def test_unwritable_data_dir_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    settings = OpmapSettings(data_dir=tmp_path / "ok", detector_dir=blocker / "frames")
    with pytest.raises(ValueError, match=r"detector_dir .*frames cannot be created: .* not a"):
        write_server_config(settings)
    assert not (tmp_path / "ok").exists()
    with pytest.raises(ValueError, match="data_dir"):
        write_server_config(OpmapSettings(data_dir=blocker))


def test_read_only_data_dir_is_refused(tmp_path: Path) -> None:
    import os

    if os.geteuid() == 0:
        pytest.skip("root may write into read-only directories; covered by the file case")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(ValueError, match=r"data_dir .* is not writable"):
        write_server_config(OpmapSettings(data_dir=locked / "data"))
    assert list(locked.iterdir()) == []


def test_a_key_that_is_not_hex_is_refused_before_writing(tmp_path: Path) -> None:
    settings = OpmapSettings(
        data_dir=tmp_path / "d", api_key="Zq7f3a9c1e5b2d8f4a6c0e9b3d7a1f5c2eXy"
    )
    with pytest.raises(ValueError, match="must be hexadecimal"):
        write_server_config(settings)
    assert not (tmp_path / "d").exists()
