"""Every file generated from the Python models, in one place: the CRDs, the
admission policies, the chart's config schema and the docs' generated parts.

Build-time only: nothing here is imported by the operator, the gateway or the
runner, and no product image carries it. Each module has ``outputs()``: the
files it owns and their text. ``make generate`` writes them; ``make lint``
runs ``python -m codex_devenv.generate --check``, which fails on a stale one.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from . import admission, config_reference, crds, helm_schema, sandbox_table

GENERATORS: tuple[Callable[[], dict[Path, str]], ...] = (
    crds.outputs,
    admission.outputs,
    helm_schema.outputs,
    config_reference.outputs,
    sandbox_table.outputs,
)


def outputs() -> dict[Path, str]:
    """Every generated file and its text."""
    files: dict[Path, str] = {}
    for generator in GENERATORS:
        for path, text in generator().items():
            if path in files:  # two generators writing one file would fight
                raise RuntimeError(f"{path} is generated twice")
            files[path] = text
    return files


def stale(files: dict[Path, str] | None = None) -> list[Path]:
    """The generated files that are missing or differ from what the models say."""
    files = outputs() if files is None else files
    return [p for p, text in files.items() if not p.is_file() or p.read_text() != text]


def write(files: dict[Path, str] | None = None) -> list[Path]:
    """Write the stale files; return them."""
    files = outputs() if files is None else files
    changed = stale(files)
    for path in changed:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(files[path])
    return changed
