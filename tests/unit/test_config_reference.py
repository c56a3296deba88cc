"""docs/configuration.md is generated from the models and names every key."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from codex_api.config import CodexMCPConfig
from codex_devenv.generate import config_reference

REPO = Path(__file__).resolve().parents[2]


def test_committed_reference_is_current() -> None:
    committed = (REPO / config_reference.OUT_FILE).read_text()
    assert committed == config_reference.render(), "run `make generate`"


def _rows(text: str) -> set[str]:
    keys: set[str] = set()
    section = ""
    for line in text.splitlines():
        if m := re.match(r"^## `\[\[?([^\]]+)\]\]?`", line):
            section = m.group(1)
        elif m := re.match(r"^\| `([^`]+)` \|", line):
            keys.add(f"{section}.{m.group(1)}")
    return keys


def test_every_key_of_the_seed_and_of_the_models_is_documented() -> None:
    documented = _rows(config_reference.render())
    seed = tomllib.loads((REPO / "config" / "codex-mcp.toml").read_text())

    def leaves(table: dict[str, object], prefix: str) -> set[str]:
        found: set[str] = set()
        for key, value in table.items():
            path = f"{prefix}.{key}" if prefix else key
            found |= leaves(value, path) if isinstance(value, dict) else {path}
        return found

    assert leaves(seed, "") <= documented
    dumped = CodexMCPConfig().model_dump(by_alias=True)
    expected = {
        k
        for k in leaves(dumped, "")
        if not k.startswith("cost.models.")  # a table keyed by model slug: documented as [cost.default]
    }
    assert expected <= documented, sorted(expected - documented)
