"""What `approve` and `deny` write: exactly the documented

    kubectl patch cxar NAME --type merge -p '{"spec":{"decision":"Approved","decidedBy":"<you>"}}'

with `decidedBy` set to the caller's own username (from a SelfSubjectReview),
so the decision goes through with or without the operator's stamping
webhook: the webhook overwrites it with the same name, and the
ValidatingAdmissionPolicy checks it against the authenticated user either
way. The patch also carries the resourceVersion it was decided on, so two
people deciding at the same moment cannot both think they did."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from codex_api.status import approval_status

from .views import decision_summary

Decision = Literal["Approved", "Denied"]
MAX_REASON = 1024  # ApprovalRequestSpec.reason


def reason_problem(decision: Decision, reason: str | None) -> str | None:
    """A usage error in the reason, or None."""
    if reason is not None and len(reason) > MAX_REASON:
        return f"--reason is {len(reason)} characters long; at most {MAX_REASON} are allowed"
    if decision == "Denied" and not (reason or "").strip():
        return "deny needs a reason: --reason TEXT (the requester sees it)"
    if reason is not None and not reason.strip():
        return "--reason must not be empty"
    return None


def closed_message(approval: Mapping[str, Any]) -> str | None:
    """Why this request cannot be decided any more (already decided, expired), or None."""
    name = (approval.get("metadata") or {}).get("name")
    spec = approval.get("spec") or {}
    policy = spec.get("policyDecision")
    if policy:
        rules = ", ".join(policy.get("rules") or []) or "none"
        return (
            f'ApprovalRequest "{name}" was decided by the action policy ({policy.get("decision")}; '
            f"rules: {rules}); a decision is final"
        )
    if spec.get("decision"):
        return (
            f'ApprovalRequest "{name}" is already decided ({decision_summary(approval)}); a decision is final'
        )
    if approval_status(approval).phase == "Expired":
        return (
            f'ApprovalRequest "{name}" expired at {spec.get("expiresAt")} and counts as denied; '
            "it can no longer be decided (the requester can ask again with a new session)"
        )
    return None


def for_session_problem(approval: Mapping[str, Any]) -> str | None:
    """Why `approve --for-session` cannot apply to this request, or None."""
    name = (approval.get("metadata") or {}).get("name")
    action = (approval.get("spec") or {}).get("action")
    if not action:
        return (
            f'ApprovalRequest "{name}" approves a whole turn, not an action: --for-session applies to actions'
        )
    if "acceptForSession" not in (action.get("offered") or []):
        return (
            f'Codex does not offer "accept for this session" for ApprovalRequest "{name}" '
            f"(it offers {', '.join(action.get('offered') or [])}): approve it without --for-session"
        )
    return None


def decision_patch(
    decision: Decision,
    decided_by: str | None,
    reason: str | None,
    resource_version: str | None,
    *,
    scope: str | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"decision": decision}
    if scope is not None:
        spec["scope"] = scope
    if reason is not None:
        spec["reason"] = reason.strip()
    if decided_by:
        spec["decidedBy"] = decided_by
    patch: dict[str, Any] = {"spec": spec}
    if resource_version:
        patch["metadata"] = {"resourceVersion": resource_version}
    return patch
