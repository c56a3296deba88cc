"""The configuration part of the chart's values.schema.json (``properties.config``
and ``$defs``), from the pydantic models; the rest of the file is hand-written."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from codex_api.config import CodexMCPConfig

from ..helm import CHART_DIR

SCHEMA_FILE = CHART_DIR / "values.schema.json"


def config_schema() -> dict[str, Any]:
    """JSON Schema of the TOML configuration (values.config), from the pydantic models."""
    return CodexMCPConfig.model_json_schema(mode="validation")


def render_schema(current: Mapping[str, Any]) -> dict[str, Any]:
    """values.schema.json with its generated parts (properties.config, $defs) brought up to date."""
    generated = config_schema()
    defs = generated.pop("$defs", {})
    generated["description"] = (
        "The TOML configuration (config/codex-mcp.toml) as a nested dict, rendered into the "
        "ConfigMap codex-config. Generated from api/codex_api/config.py."
    )
    schema = json.loads(json.dumps(current))
    schema["properties"]["config"] = generated
    schema["$defs"] = defs
    return dict(schema)


def outputs() -> dict[Path, str]:
    current = json.loads(SCHEMA_FILE.read_text())
    return {SCHEMA_FILE: json.dumps(render_schema(current), indent=2, ensure_ascii=False) + "\n"}
