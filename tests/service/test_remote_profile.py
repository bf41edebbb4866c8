"""``opmap profile install`` without a server: file content, permissions, refusals."""

import argparse
import re
import stat
from pathlib import Path

import pytest
from tiled.profiles import gather_profiles

from opmap.cli import build_parser
from opmap.remote import fetch_array


def _parse(argv: list[str]) -> argparse.Namespace:
    return build_parser().parse_args(["profile", "install", *argv])


@pytest.fixture
def profiles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TILED_PROFILES", str(tmp_path / "profiles"))
    return tmp_path / "profiles"


def test_profile_holds_the_settings_url_and_key_and_passes_tiled_schema(
    tmp_path: Path, profiles: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    toml = tmp_path / "opmap.toml"
    key = "7f3a9c1e5b2d8f4a6c0e9b3d7a1f5c2e"
    toml.write_text(f'data_dir = "data"\nport = 8123\napi_key = "{key}"\n')
    args = _parse(["--settings", str(toml), "--name", "beamtime"])
    assert args.func(args) == 0
    path = profiles / "beamtime.yml"
    assert str(path) in capsys.readouterr().out
    (content,) = gather_profiles([profiles], strict=True)[0].values()  # tiled's own validation
    assert content == {
        "beamtime": {"uri": "http://127.0.0.1:8123?api_key=7f3a9c1e5b2d8f4a6c0e9b3d7a1f5c2e"}
    }
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not list(profiles.glob(".*")), "no temporary file left behind"


def test_existing_profile_is_kept_unless_forced(tmp_path: Path, profiles: Path) -> None:
    first = _parse(["--data-dir", str(tmp_path), "--url", "http://a:8000", "--key-from-env"])
    assert first.func(first) == 0
    again = _parse(["--data-dir", str(tmp_path), "--url", "http://b:8000", "--key-from-env"])
    assert again.func(again) == 2
    assert "http://a:8000" in (profiles / "opmap.yml").read_text()
    forced = _parse(["--url", "http://b:8000", "--key-from-env", "--force"])
    assert forced.func(forced) == 0
    assert (profiles / "opmap.yml").read_text() == "opmap:\n  uri: http://b:8000\n"


def test_missing_key_file_bad_name_or_url_exit_2_and_write_nothing(
    tmp_path: Path, profiles: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for argv, message in [
        (["--data-dir", str(tmp_path / "never-served")], "no API key: .*never-served/api-key"),
        (["--name", "../x", "--key-from-env"], "name must be letters, digits"),
        (["--url", "ftp://host", "--key-from-env"], "url must be http"),
        (["--url", "http://h:1?api_key=k", "--key-from-env"], "without a query"),
    ]:
        args = _parse(argv)
        assert args.func(args) == 2
        assert caplog.records, f"no error logged for {argv}"
        assert re.search(message, caplog.records[-1].getMessage()), caplog.records[-1]
    assert not profiles.exists()


def test_fetch_array_refuses_bad_format_slice_and_url_before_any_request() -> None:
    with pytest.raises(ValueError, match=r"fmt must be one of \['json', 'octet-stream'\]"):
        fetch_array("http://127.0.0.1:9", "a", None, "npy")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="slice_ must be numpy slice syntax"):
        fetch_array("http://127.0.0.1:9", "a", None, "json", slice_="0; drop")
    with pytest.raises(ValueError, match="url must start with http"):
        fetch_array("127.0.0.1:9", "a", None, "json")
