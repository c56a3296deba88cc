"""What a per-action turn's MCP task asks its caller (`input_required`), and
what the caller's answer (`tasks/update`) decides.

Each action the turn waits on is an ApprovalRequest (codex_operator.action_gate)
that no policy decided. The task shows every one of them as an
`elicitation/create` form keyed by the request's name, with exactly what will
run (codex_api.action_text, escaped so a hidden character cannot change what
is read). The form offers only what the caller may decide
(codex_api.approval.requester_may_decide, the rule the `approval-decision`
admission policy enforces): deny always, approve up to
`[security.action_approvals].requester_decides_up_to`. An action beyond that
is shown too, since the caller should know what their turn waits on, with
the kubectl command an approver runs.

The caller is hostile input: an answer for a request that is not waiting on
this task, a choice the form did not offer, or a malformed result is refused
whole, before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from codex_api.action_text import action_text
from codex_api.approval import requester_may_decide
from codex_api.common import RequesterDecides
from codex_api.status import approval_status
from codex_api.visible import visible

APPROVE = "approve"
APPROVE_FOR_SESSION = "approve-for-session"
DENY = "deny"
MAX_REASON = 1024  # ApprovalRequestSpec.reason


def waiting_actions(session: dict[str, Any], approvals: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The session's action requests a person still has to decide, oldest first."""
    uid = session["metadata"].get("uid")
    waiting = [
        a
        for a in approvals
        if (spec := a.get("spec") or {}).get("sessionUid") == uid
        and spec.get("action")
        and not spec.get("policyDecision")
        and not spec.get("decision")
        and (approval_status(a).phase or "Pending") == "Pending"
    ]
    return sorted(
        waiting, key=lambda a: (a["metadata"].get("creationTimestamp") or "", a["metadata"]["name"])
    )


def choices(spec: dict[str, Any], up_to: RequesterDecides) -> list[str]:
    """The answers this request's requester may give it."""
    offered: list[str] = []
    if requester_may_decide(spec, "Approved", up_to):
        offered.append(APPROVE)
        if "acceptForSession" in ((spec.get("action") or {}).get("offered") or []):
            offered.append(APPROVE_FOR_SESSION)
    return [*offered, DENY]


def elicitation(approval: dict[str, Any], up_to: RequesterDecides) -> dict[str, Any]:
    """The `elicitation/create` request (an InputRequest) for one waiting action."""
    meta, spec = approval["metadata"], approval["spec"]
    offered = choices(spec, up_to)
    who = (
        "You may approve or deny it here."
        if APPROVE in offered
        else (
            f"You may deny it here; approving a {spec.get('riskLevel')} risk action of your own needs "
            f"an approver: kubectl codex approve {meta['name']} -n {meta.get('namespace')}"
        )
    )
    message = (
        f"Codex asks to take this action ({spec.get('riskLevel')} risk, ApprovalRequest "
        f"{meta['name']}). {who}\n\n{visible(action_text(spec['action']))}"
    )
    return {
        "method": "elicitation/create",
        "params": {
            "mode": "form",
            "message": message,
            "requestedSchema": {
                "type": "object",
                "properties": {
                    "decision": {
                        "type": "string",
                        "title": "Decision",
                        "enum": offered,
                        "description": "approve-for-session: Codex may repeat it in this conversation without asking.",
                    },
                    "reason": {"type": "string", "title": "Reason", "maxLength": MAX_REASON},
                },
                "required": ["decision"],
            },
        },
    }


class _ElicitResult(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    action: Literal["accept", "decline", "cancel"]
    content: dict[str, Any] | None = None


class _Form(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    decision: str
    reason: str | None = Field(default=None, max_length=MAX_REASON)


@dataclass(frozen=True)
class Decision:
    """The spec fields one answer sets on its ApprovalRequest."""

    name: str
    decision: Literal["Approved", "Denied"]
    reason: str
    scope: Literal["session"] | None = None

    def spec(self, user: str) -> dict[str, Any]:
        # decidedBy is the requester the gateway authenticated: a relay, which
        # the admission policy admits only for what the requester may decide.
        spec: dict[str, Any] = {"decision": self.decision, "decidedBy": user}
        if self.reason:
            spec["reason"] = self.reason
        if self.scope:
            spec["scope"] = self.scope
        return spec


class InputError(ValueError):
    """An answer that cannot be taken (the whole update is refused)."""


def problems(err: ValidationError) -> str:
    """What a caller sent wrong, one `where: why` per problem."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in err.errors())


def read_answer(
    key: str, response: Any, approval: dict[str, Any], user: str, up_to: RequesterDecides
) -> Decision | None:
    """What `response` (an ElicitResult) decides for the request `key`; None for `cancel`
    (the caller dismissed the form: the action keeps waiting)."""
    spec = approval["spec"]
    if spec.get("requestedBy") != user:
        raise InputError(f"{key}: only its requester may answer it here")
    try:
        result = _ElicitResult.model_validate(response)
        form = _Form.model_validate(result.content) if result.action == "accept" else None
    except ValidationError as err:
        raise InputError(f"{key}: not an elicitation result with a decision ({problems(err)})") from None
    if result.action == "cancel":
        return None
    answer = form.decision if form else DENY
    reason = (form.reason if form else None) or ""
    offered = choices(spec, up_to)
    if answer not in offered:
        known = answer in (APPROVE, APPROVE_FOR_SESSION, DENY)
        raise InputError(
            f"{key}: {answer!r} is not yours to give"
            + (
                f" (a {spec.get('riskLevel')} risk action needs an approver: kubectl codex approve {key})"
                if known
                else ""
            )
            + f"; you may answer {', '.join(offered)}"
        )
    if answer == DENY:
        return Decision(key, "Denied", reason or f"denied by {user} from the MCP client")
    scope: Literal["session"] | None = "session" if answer == APPROVE_FOR_SESSION else None
    return Decision(key, "Approved", reason, scope)
