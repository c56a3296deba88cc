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
