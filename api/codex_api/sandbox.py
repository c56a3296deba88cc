"""The sandbox levels: one table every component reads.

What a level means is a security rule, and a security rule written in
several places drifts without any test failing. The runner (Codex's sandbox
mode, the read-only workspace), the operator (egress, approval, risk,
wall-bounce admission), the gateway (cache, wall-bounce, the tool's
description) and the docs (docs/security.md's table, generated) all read
`PROFILES` (docs/security.md's table is written from it by `make generate`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .common import SANDBOX_LEVELS, RiskLevel, SandboxLevel

Egress = Literal["model-only", "public"]
CodexSandboxMode = Literal["read-only", "workspace-write", "danger-full-access"]


@dataclass(frozen=True)
class SandboxProfile:
    level: SandboxLevel
    # The workspace is mounted read-only into the runner pod.
    workspace_read_only: bool
    # model-only: DNS and the model endpoint(s); public: also the public
    # internet on any port, never private, loopback, link-local or metadata ranges.
    egress: Egress
    # Codex's own --sandbox mode, used where its inner sandbox works in the pod.
    codex_mode: CodexSandboxMode
    # The seed's base risk of the level ([security.risk_levels] default).
    default_risk: RiskLevel
    # The [security.approval_workflows] flag that starts such a session without a human.
    auto_approve_key: str
    # The seed's default for that flag.
    auto_approve_default: bool
    # An identical earlier turn may answer from the gateway's cache: it changed nothing.
    cacheable: bool
    # Wall-bounce sends the prompt to every provider, one after the other, in one
    # pod: only where none of them can change anything.
    wall_bounce: bool
    # One line for people: what the level gives Codex.
    summary: str


PROFILES: dict[SandboxLevel, SandboxProfile] = {
    "read-only": SandboxProfile(
        level="read-only",
        workspace_read_only=True,
        egress="model-only",
        codex_mode="read-only",
        default_risk="low",
        auto_approve_key="auto_approve_read_only",
        auto_approve_default=True,
        cacheable=True,
        wall_bounce=True,
        summary="reads the workspace, writes nothing",
    ),
    "isolated": SandboxProfile(
        level="isolated",
        workspace_read_only=False,
        egress="model-only",
        codex_mode="workspace-write",
        default_risk="medium",
        auto_approve_key="auto_approve_isolated",
        auto_approve_default=False,
        cacheable=False,
        wall_bounce=False,
        summary="writes the workspace, no network but the model",
    ),
    "full-access": SandboxProfile(
        level="full-access",
        workspace_read_only=False,
        egress="public",
        codex_mode="danger-full-access",
        default_risk="high",
        auto_approve_key="auto_approve_full_access",
        auto_approve_default=False,
        cacheable=False,
        wall_bounce=False,
        summary="writes the workspace and reaches the public internet (never more privileges)",
    ),
}
assert tuple(PROFILES) == SANDBOX_LEVELS

# How many providers a wall-bounce session consults.
MIN_WALL_BOUNCE_PROVIDERS = 2
MAX_WALL_BOUNCE_PROVIDERS = 8


def profile(level: str) -> SandboxProfile:
    """The profile of `level`; a clear error for anything else."""
    try:
        return PROFILES[level]  # type: ignore[index]
    except KeyError:
        raise ValueError(f"sandbox must be one of {', '.join(SANDBOX_LEVELS)}; got {level!r}") from None


def wall_bounce_levels() -> list[SandboxLevel]:
    return [p.level for p in PROFILES.values() if p.wall_bounce]


def tool_description() -> str:
    """The `sandbox` argument's description in the MCP tools."""
    return " | ".join(f"{p.level} ({p.summary})" for p in PROFILES.values()) + " (default from config)"
