"""Per-action approvals, the operator's part (issue 15): every action a turn's
Codex waits on becomes an ApprovalRequest, and its decision goes back to Codex.

For each action the turn's agent holds (codex_operator.live_turns), the
session's reconcile here:

1. finds the action's ApprovalRequest, named by what runs
   (names.action_request): the same action asked again, by a thread resumed
   after its pod restarted, finds the decision already made;
2. else assesses the action ([security.action_approvals],
   codex_operator.action_risk) and makes the request: decided by the policy
   (spec.policyDecision, final) or waiting for a human, with the same rules as
   a turn's request (no self-approval, approver groups for high and critical,
   expiry means no);
3. answers Codex once the request is decided: Approved -> accept (or
   acceptForSession with scope session, where Codex offers it), Denied or
   Expired -> decline.

The CR is the source of truth: nothing here is remembered between reconciles
but what the agent still holds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from codex_api import names
from codex_api.actions import WHAT_RUNS, Action, Answer
from codex_api.approval import ApprovalAction
from codex_api.redaction import shorten
from codex_api.session import CodexSessionSpec
from codex_api.status import approval_status

from .action_risk import ActionAssessment, assess_action
from .approval_body import approval_request_body
from .conditions import now, parse_time
from .context import Context, approval_key
from .kube import APPROVALS
from .ownership import Foreign, check_approval

log = logging.getLogger("codex_operator.action_gate")

POLICY_DECISIONS = {"accept": "Approved", "decline": "Denied"}
OPERATION_CHARS = 200


def is_action_request(approval: dict[str, Any]) -> bool:
    return bool((approval.get("spec") or {}).get("action"))


async def decide_actions(
    ctx: Context, session: dict[str, Any], spec: CodexSessionSpec, is_live: Callable[[str], bool]
) -> list[str]:
    """Bring every waiting action of the session's turn one step on; returns the
    names of the requests that wait for a human. Raises Foreign for a request
    under an action's name that is not this session's."""
    assert ctx.turns is not None
    meta = session["metadata"]
    namespace, name, uid = meta["namespace"], meta["name"], meta["uid"]
    waiting_for_people: list[str] = []
    for waiting in ctx.turns.waiting_actions(uid):
        action = waiting.action
        ref = names.action_request(name, action.digest())
        approval = ctx.store.approvals.get((namespace, ref))
        if approval is None:
            assessment = assess_action(action, ctx.config.security.action_approvals)
            approval = await ctx.api.create_custom(
                APPROVALS, namespace, _request_body(ctx, session, spec, ref, action, assessment)
            )
            ctx.store.upsert(ctx.store.approvals, approval)
            ctx.queue.add(approval_key(namespace, ref))
            _count(ctx, action, assessment)
            await ctx.events.record(
                session,
                "ActionApprovalRequested",
                f"{assessment.risk} risk {action.kind}, ApprovalRequest {ref}"
                + (f": {assessment.decision} by the policy" if assessment.decision != "ask" else ""),
                False,
            )
        foreign = check_approval(approval, session, is_live) or _other_action(approval, action)
        if foreign is not None:
            raise foreign
        answer = answer_for(approval, action)
        if answer is None:
            waiting_for_people.append(ref)
            continue
        if await ctx.turns.answer(uid, waiting.seq, answer):
            log.info("answered %s/%s action %s: %s (%s)", namespace, name, waiting.seq, answer, ref)
    return waiting_for_people


def answer_for(approval: dict[str, Any], action: Action) -> Answer | None:
    """Codex's answer from the request's decision; None while it waits for one."""
    spec = approval.get("spec") or {}
    policy = spec.get("policyDecision")
    phase = policy["decision"] if policy else approval_status(approval).phase
    if phase == "Approved":
        if spec.get("scope") == "session" and "acceptForSession" in action.offered:
            return "acceptForSession"
        return "accept"
    if phase in ("Denied", "Expired"):
        return "decline"
    return None


def waited_seconds(ctx: Context, namespace: str, uid: str) -> float:
    """How long the session's turn waited for people: the union of the times its
    action requests waited for a human (from when each was made to its decision,
    its expiry, or now). The turn's timeout does not count it."""
    spans: list[tuple[float, float]] = []
    current = now()
    for (ns, _), approval in ctx.store.approvals.items():
        spec = approval.get("spec") or {}
        if ns != namespace or spec.get("sessionUid") != uid or not spec.get("action"):
            continue
        if spec.get("policyDecision"):
            continue
        made = parse_time(approval["metadata"].get("creationTimestamp"))
        status = approval_status(approval)
        until = status.decided_at or (
            parse_time(spec.get("expiresAt")) if status.phase == "Expired" else current
        )
        if made is not None and until is not None and until > made:
            spans.append((made.timestamp(), until.timestamp()))
    total, reach = 0.0, float("-inf")
    for start, end in sorted(spans):
        start = max(start, reach)
        if end > start:
            total += end - start
            reach = end
    return total


def _request_body(
    ctx: Context,
    session: dict[str, Any],
    spec: CodexSessionSpec,
    ref: str,
    action: Action,
    assessment: ActionAssessment,
) -> dict[str, Any]:
    decided = POLICY_DECISIONS.get(assessment.decision)
    return approval_request_body(
        ctx,
        session,
        spec,
        name=ref,
        risk=assessment.risk,
        tool="codex",
        operation=_operation(action),
        action=ApprovalAction.of(action).to_k8s(),
        policyDecision=(
            {"decision": decided, "rules": list(assessment.rules)} if decided is not None else None
        ),
    )


def _operation(action: Action) -> str:
    """One line for `kubectl get`: the whole action is in spec.action."""
    if action.kind == "command":
        text = f"run {action.script!r} in {action.cwd}"
    elif action.kind == "file_change":
        files = ", ".join(change.path for change in action.changes[:3])
        more = f" and {len(action.changes) - 3} more" if len(action.changes) > 3 else ""
        text = f"change {files}{more}"
    else:
        text = "widen the sandbox: " + ", ".join(
            part
            for part, asked in (
                ("network", action.permissions is not None and action.permissions.network),
                ("read paths", action.permissions is not None and bool(action.permissions.read)),
                ("write paths", action.permissions is not None and bool(action.permissions.write)),
            )
            if asked
        )
    return shorten(text, OPERATION_CHARS)


def _other_action(approval: dict[str, Any], action: Action) -> Foreign | None:
    """A request under this action's name about another action (a digest prefix
    shared by two actions): its decision is not this action's."""
    recorded = ApprovalAction.model_validate((approval.get("spec") or {}).get("action") or {})
    what = set(WHAT_RUNS)
    if recorded.model_dump(include=what) == ApprovalAction.of(action).model_dump(include=what):
        return None
    return Foreign(
        "ApprovalMismatch",
        f"ApprovalRequest {approval['metadata']['name']} is about another action; its decision does not count",
    )


def _count(ctx: Context, action: Action, assessment: ActionAssessment) -> None:
    ctx.metrics.actions_asked.labels(action.kind, assessment.risk, assessment.decision).inc()
