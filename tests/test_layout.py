"""The layout rules import-linter cannot see: one definition per name, small functions,
and no private imports from the tests, benchmarks and the profile.

import-linter (``make lint``) checks the installed packages; these checks read the source
tree with `ast`, so they also cover the folders that are not packages.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Folders installed as opmap packages (pyproject's package-dir mapping).
SOURCE = ("opmap", "devices", "plans", "callbacks", "analysis", "twin")
#: Folders that are not packages but import opmap.
CLIENTS = ("tests", "benchmarks", "profile", "tools")
#: Longest function allowed, in lines of code: signature and body, docstring not counted
#: (numpydoc parameter tables are documentation, not complexity).
MAX_FUNCTION_LINES = 60
#: The subcommand interface every ``opmap/cli/_*.py`` module implements (``opmap.cli`` calls them).
COMMAND_INTERFACE = {"register", "run"}


def _modules(folders: tuple[str, ...]) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_tests_benchmarks_and_profile_import_only_public_modules() -> None:
    offenders = []
    for path in _modules(CLIENTS):
        for node in ast.walk(_tree(path)):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
                if not any(_private(p) for p in node.module.split(".")):
                    names += [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            for name in names:
                parts = name.split(".")
                if parts[0] == "opmap" and any(_private(p) for p in parts[1:]):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {name}")
    assert not offenders, "import the package's public name instead:\n" + "\n".join(offenders)


def test_each_public_name_is_defined_once() -> None:
    homes: dict[str, list[str]] = defaultdict(list)
    for path in _modules(SOURCE):
        is_command = path.parent.name == "cli" and path.name.startswith("_")
        for node in _tree(path).body:
            if not isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            if node.name.startswith("_") or (is_command and node.name in COMMAND_INTERFACE):
                continue
            homes[node.name].append(str(path.relative_to(ROOT)))
    twice = {name: where for name, where in homes.items() if len(where) > 1}
    assert not twice, f"one name, one meaning; defined more than once: {twice}"


def code_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines of a function from ``def`` to its end, its docstring not counted."""
    lines = node.end_lineno - node.lineno + 1
    first = node.body[0]
    docstring = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
    if docstring and isinstance(first.value.value, str):
        lines -= first.end_lineno - first.lineno + 1
    return lines


def test_no_function_is_longer_than_60_lines() -> None:
    long = []
    for path in _modules((*SOURCE, "benchmarks", "profile", "tools")):
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = code_lines(node)
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} {lines}")
    assert not long, f"split functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(long)
