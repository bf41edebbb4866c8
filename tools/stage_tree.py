"""Stage the installed layout (opmap/ with its mapped subpackages) into one folder.

import-linter walks the filesystem from ``opmap/``; with pyproject's package-dir mapping the
domain folders live beside it, so the layer contracts are checked on a staged copy that has the
installed shape. Usage: ``python tools/stage_tree.py DEST`` stages and runs ``lint-imports``
on the staged copy (the editable-install finder is set aside so the copy is what is read).
"""

from __future__ import annotations

import os
import shutil
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def stage(dest: Path) -> None:
    """Copy each mapped package folder to ``dest/<import path>``, Python files only."""
    mapping = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-dir"
    ]
    shutil.rmtree(dest, ignore_errors=True)
    for alias, folder in sorted(mapping.items()):
        target = dest.joinpath(*alias.split("."))
        for source in (ROOT / folder).rglob("*.py"):
            relative = source.relative_to(ROOT / folder)
            if relative.parts[0] in {p.split(".")[-1] for p in mapping if p != alias}:
                continue  # a mapped child package folder, staged under its own alias
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / relative)


def lint_staged(dest: Path) -> int:
    """Run import-linter's contracts (from pyproject.toml) on the staged tree."""
    # The source tree (cwd) and the editable finder's path entry would shadow the copy.
    shadowing = {"", ".", str(ROOT)}
    sys.path[:] = [str(dest)] + [
        p for p in sys.path if p not in shadowing and "__editable__" not in p
    ]
    from importlinter.cli import lint_imports

    os.chdir(dest)  # import-linter puts the working directory first on sys.path

    return lint_imports(config_filename=str(ROOT / "pyproject.toml"))


if __name__ == "__main__":
    staged = Path(sys.argv[1]).resolve()
    stage(staged)
    sys.exit(lint_staged(staged))
