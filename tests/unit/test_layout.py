"""No directory on sys.path may be a package named `operator`: it would
shadow the standard library module that half the ecosystem imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_operator_folder_is_not_a_package() -> None:
    assert (REPO / "operator").is_dir()
    assert not (REPO / "operator" / "__init__.py").exists()


def test_stdlib_operator_wins_from_the_repo_root() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import operator, codex_operator; print(operator.__file__); print(operator.itemgetter)",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    first = out.stdout.splitlines()[0]
    assert not first.startswith(str(REPO)), first


def _cycle(graph: dict[str, set[str]], path: tuple[str, ...]) -> tuple[str, ...] | None:
    """The first import cycle reachable from path[-1], or None."""
    for dep in sorted(graph.get(path[-1], ())):
        if dep in path:
            return (*path, dep)
        found = _cycle(graph, (*path, dep))
        if found:
            return found
    return None


def test_no_import_cycles_between_modules_of_a_package() -> None:
    """Relative imports (type-only ones too) form no cycle inside any component package."""
    import ast

    root = Path(__file__).resolve().parents[2]
    for package in sorted(root.glob("*/codex_*")):
        if not (package / "__init__.py").exists():
            continue
        modules = {m.stem for m in package.glob("*.py")}
        graph: dict[str, set[str]] = {}
        for module in package.glob("*.py"):
            deps: set[str] = set()
            for node in ast.walk(ast.parse(module.read_text())):
                if isinstance(node, ast.ImportFrom) and node.level == 1:
                    if node.module:
                        deps.add(node.module.split(".")[0])
                    else:
                        deps.update(alias.name for alias in node.names)
            graph[module.stem] = deps & modules
        for start in sorted(graph):
            cycle = _cycle(graph, (start,))
            assert cycle is None, f"{package.name}: import cycle {' -> '.join(cycle)}"
