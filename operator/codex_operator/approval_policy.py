"""Whether a session runs at once or waits for a human.

From ``[mcp] approval_policy`` and ``[security.approval_workflows]``:

- ``auto-approve``: everything runs, except critical risk, which always
  needs a human (one config key must not be able to waive that).
- ``always-manual``: everything waits for a human.
- ``risk-based`` (the seed): the sandbox's ``auto_approve_*`` flag decides;
  ci mode needs a human when ``require_manual_approval_for_ci``; critical
  risk always needs a human.

High and critical risks may be decided only by members of the configured
approver groups; lower risks by any authenticated user but the requester.
"""

from __future__ import annotations

from dataclasses import dataclass

from codex_api.common import ApprovalMode, RiskLevel
from codex_api.config import CodexMCPConfig
from codex_api.sandbox import profile
from codex_api.session import CodexSessionSpec

from .risk import at_least


@dataclass(frozen=True)
class ApprovalDecision:
    auto_approved: bool
    reason: str
    approver_groups: tuple[str, ...] = ()  # empty: any user but the requester may decide

    @property
    def needs_human(self) -> bool:
        return not self.auto_approved


def approvals_mode(spec: CodexSessionSpec, config: CodexMCPConfig) -> ApprovalMode:
    """The session's own choice, else per-action for the configured levels where
    the turn can have it (a live pod: warm runners, a persistent workspace, no
    wall-bounce), else per-turn."""
    if spec.approvals is not None:
        return spec.approvals
    if (
        spec.sandbox in config.security.action_approvals.levels
        and per_action_unavailable(spec, config) is None
    ):
        return "per-action"
    return "per-turn"


def per_action_unavailable(spec: CodexSessionSpec, config: CodexMCPConfig) -> str | None:
    """Why this turn cannot run with per-action approvals (None: it can): the
    decisions go to the turn's live pod, where Codex waits for them."""
    if not config.kubernetes.warm_runners.idle_seconds:
        return "per-action approvals need warm runners (kubernetes.warm_runners.idle_seconds > 0)"
    if spec.wall_bounce is not None:
        return "per-action approvals do not apply to wall-bounce turns (one Codex per provider, no live pod)"
    if spec.workspace is None or spec.workspace.type != "persistent":
        return (
            "per-action approvals need a persistent workspace (the turn runs in the conversation's live pod)"
        )
    return None


def decide(
    spec: CodexSessionSpec, risk: RiskLevel, config: CodexMCPConfig, mode: ApprovalMode = "per-turn"
) -> ApprovalDecision:
    groups = tuple(config.kubernetes.approver_groups) if at_least(risk, "high") else ()
    policy = config.mcp.approval_policy
    flows = config.security.approval_workflows
    if risk == "critical":
        return ApprovalDecision(False, "critical risk always needs a human approver", groups)
    if mode == "per-action" and policy != "always-manual":
        # The turn itself does nothing Codex does not ask for first (its
        # untrusted policy runs only read-only commands unasked).
        return ApprovalDecision(
            True, "per-action approvals: each action Codex asks for is decided on its own"
        )
    if policy == "always-manual":
        return ApprovalDecision(False, "approval_policy is always-manual", groups)
    if policy == "auto-approve":
        return ApprovalDecision(True, "approval_policy is auto-approve")
    if spec.mode == "ci" and flows.require_manual_approval_for_ci:
        return ApprovalDecision(False, "require_manual_approval_for_ci is true (ci mode)", groups)
    flag = profile(spec.sandbox).auto_approve_key
    auto = bool(getattr(flows, flag))
    if auto:
        return ApprovalDecision(True, f"{flag} is true")
    return ApprovalDecision(False, f"{flag} is false", groups)
