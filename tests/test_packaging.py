"""The distribution ships every package folder under its opmap.* name."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]


def _package_folders() -> dict[str, Path]:
    """Every folder with an __init__.py, under the import name pyproject maps it to."""
    found = {}
    for alias, folder in SETUPTOOLS["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder).parts
            found[".".join((alias, *relative))] = init.parent
    return found


def test_every_package_folder_is_listed_in_pyproject():
    assert sorted(_package_folders()) == sorted(SETUPTOOLS["packages"])


@pytest.mark.parametrize("name", sorted(SETUPTOOLS["packages"]))
def test_installed_package_imports_from_its_folder(name):
    module = __import__(name, fromlist=["_"])
    assert Path(module.__file__).resolve().parent == _package_folders()[name].resolve()


def test_wheel_contains_the_mapped_packages(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("opmap-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for package in SETUPTOOLS["packages"]:
        assert f"{package.replace('.', '/')}/__init__.py" in names


def test_cli_help_runs():
    result = subprocess.run(
        [sys.executable, "-m", "opmap.cli", "--help"], capture_output=True, text=True, check=True
    )
    assert "opmap" in result.stdout
