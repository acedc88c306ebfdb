"""The package layout a newcomer reads: layers enforced, no cycles, short modules, docs that match.

The import contracts themselves live in pyproject.toml (``[tool.importlinter]``) and run
in ``make lint``; here we prove that they would catch a wrong arrow, and check what
import-linter cannot: cycles between single modules, module length, and that README's
layout table names every package of the tree.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "services" / "jip"
MAX_MODULE_LINES = 450
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _packages() -> list[str]:
    """Every package of ``jip`` as a path relative to services/jip, e.g. ``store/dimse``."""
    return sorted(
        str(init.parent.relative_to(PACKAGE))
        for init in PACKAGE.rglob("__init__.py")
        if init.parent != PACKAGE and "migrations/versions" not in str(init)
    )


def _strongly_connected(graph: grimp.ImportGraph) -> list[set[str]]:
    """Groups of modules that import each other in a ring (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []
    counter = 0
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append(
                        (child, iter(sorted(graph.find_modules_directly_imported_by(child))))
                    )
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                group: set[str] = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.add(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(group)
    return groups


def test_no_module_of_jip_imports_itself_through_a_ring() -> None:
    graph = grimp.build_graph("jip", cache_dir=None)
    rings = [sorted(group) for group in _strongly_connected(graph)]
    assert rings == [], f"import cycles between modules: {rings}"


def test_no_module_outside_migrations_is_longer_than_the_limit() -> None:
    long = {
        str(path.relative_to(PACKAGE)): n
        for path in PACKAGE.rglob("*.py")
        if "migrations" not in path.parts
        and (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}, f"split these along their seams (>{MAX_MODULE_LINES} lines): {long}"


def test_every_package_says_what_it_holds() -> None:
    silent = [
        package
        for package in _packages()
        if not ast.get_docstring(ast.parse((PACKAGE / package / "__init__.py").read_text()))
    ]
    assert silent == [], f"packages whose __init__ has no docstring: {silent}"


def test_readme_layout_table_names_every_package() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("Code layout") :]
    section = section[: section.index("\n## ")]
    named = {
        cell.strip("/")
        for row in re.findall(r"^\| *`([^`|]+)`", section, flags=re.MULTILINE)
        for cell in [row]
    }
    missing = [package for package in _packages() if package not in named]
    assert missing == [], f"README's code layout table does not name: {missing}"
    gone = [name for name in named if "." not in name and not (PACKAGE / name).is_dir()]
    assert gone == [], f"README's code layout table names packages that do not exist: {gone}"


@pytest.fixture(scope="module")
def scratch_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the package and the contracts, to break on purpose."""
    if not LINT_IMPORTS.exists():
        pytest.skip("lint-imports is not installed (make install)")
    root = tmp_path_factory.mktemp("layout")
    shutil.copytree(PACKAGE, root / "services" / "jip", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=root,
        env={"PYTHONPATH": str(root / "services"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    ("module", "wrong_import", "contract"),
    [
        ("store/wrong_arrow.py", "import jip.flow.service", "Imports only go down"),
        ("base/wrong_arrow.py", "import jip.ui.routes", "Imports only go down"),
        ("meta/wrong_arrow.py", "import jip.store.catalog.tables", "only through jip.store"),
    ],
)
def test_a_wrong_import_breaks_the_contracts(
    scratch_tree: Path, module: str, wrong_import: str, contract: str
) -> None:
    scratch = scratch_tree / "services" / "jip" / module
    scratch.write_text(f'"""A deliberate wrong arrow."""\n\n{wrong_import}  # noqa: F401\n')
    try:
        result = _lint(scratch_tree)
    finally:
        scratch.unlink()
    assert result.returncode != 0, result.stdout
    assert contract in result.stdout
    assert wrong_import.split()[1] in result.stdout


def test_the_contracts_hold_on_the_real_tree(scratch_tree: Path) -> None:
    result = _lint(scratch_tree)
    assert result.returncode == 0, result.stdout[-4000:]
