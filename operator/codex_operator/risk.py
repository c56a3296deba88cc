"""The risk matrix.

| risk     | when                               |
|----------|------------------------------------|
| critical | full-access + fullAuto + ci mode   |
| high     | full-access                        |
| medium   | isolated, or fullAuto, or ci mode  |
| low      | read-only, interactive             |

The per-sandbox base level comes from ``[security.risk_levels]`` (the seed's
values reproduce the table); fullAuto and ci mode raise it to at least
medium, and all three together are critical whatever the config says.
"""

from __future__ import annotations

from codex_api.common import RISK_LEVELS, RiskLevel
from codex_api.config import RiskLevelsConfig
from codex_api.session import CodexSessionSpec


def _max(a: RiskLevel, b: RiskLevel) -> RiskLevel:
    return a if RISK_LEVELS.index(a) >= RISK_LEVELS.index(b) else b


def assess_risk(spec: CodexSessionSpec, levels: RiskLevelsConfig) -> RiskLevel:
    risk: RiskLevel = levels.for_sandbox(spec.sandbox)
    autonomous = spec.full_auto or spec.mode == "ci"
    if autonomous:
        risk = _max(risk, "medium")
    if spec.sandbox == "full-access" and spec.full_auto and spec.mode == "ci":
        risk = "critical"
    return risk


def at_least(risk: RiskLevel, floor: RiskLevel) -> bool:
    return RISK_LEVELS.index(risk) >= RISK_LEVELS.index(floor)
