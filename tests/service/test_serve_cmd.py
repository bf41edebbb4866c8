"""``opmap serve`` sub-command: options, --settings, --config-only, bad input."""

import argparse
from pathlib import Path

import pytest
from tiled.config import parse_configs

from opmap.cli import build_parser, settings_from_args


def _parse(argv: list[str]) -> argparse.Namespace:
    return build_parser().parse_args(["serve", *argv])


def test_config_only_writes_config_and_reports_key_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _parse(["--data-dir", str(tmp_path), "--port", "8123", "--config-only"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "tiled-config.yml") in out
    assert str(tmp_path / "api-key") in out
    assert (tmp_path / "api-key").read_text().strip() not in out, "the key is never printed"
    assert parse_configs(tmp_path / "tiled-config.yml").uvicorn["port"] == 8123


def test_options_override_the_settings_file(tmp_path: Path) -> None:
    toml = tmp_path / "opmap.toml"
    toml.write_text('data_dir = "data"\nport = 8100\nhost = "0.0.0.0"\n')
    with pytest.raises(ValueError, match=r"host '0\.0\.0\.0' .* needs allow_remote"):
        settings_from_args(_parse(["--settings", str(toml)]))
    settings = settings_from_args(
        _parse(
            [
                *("--settings", str(toml), "--port", "8200", "--allow-remote"),
                *("--catalog", "postgresql://h/db"),
            ]
        )
    )
    assert settings.data_dir == tmp_path / "data"
    assert (settings.port, settings.host) == (8200, "0.0.0.0")
    assert settings.catalog_uri == "postgresql+asyncpg://h/db"


def test_bad_port_exits_2_and_writes_nothing(tmp_path: Path, caplog) -> None:
    args = _parse(["--data-dir", str(tmp_path / "d"), "--port", "0", "--config-only"])
    assert args.func(args) == 2
    assert "port" in caplog.text and "greater than or equal to 1" in caplog.text
    assert not (tmp_path / "d").exists()
