"""ApprovalRequest status: Pending until a verified human decision or expiry.

The decision and its decider come from the spec, which admission guarantees:
the ValidatingAdmissionPolicy checked `decidedBy` against the authenticated
user of the request that set the decision. The operator adds two guards of
its own: a decision without a decider, or by the requester, is never honoured
(an unanswered request never counts as approval), and a decision the API
server recorded after `expiresAt` is too late. The one exception is the
admission policy's too (codex_api.approval.requester_may_decide): the
requester of an action may deny it, and approve it up to
`requester_decides_up_to` risk.
"""

from __future__ import annotations

from typing import Any

from codex_api.approval import requester_may_decide
from codex_api.status import approval_status, approval_status_patch

from .admission import decision_time
from .conditions import now, parse_time, rfc3339, set_condition
from .context import Context, session_key
from .kube import APPROVALS

TERMINAL = ("Approved", "Denied", "Expired")
# Who decided an action the policy decided (status.decidedBy): no user has this name.
POLICY_DECIDER = "policy:security.action_approvals"


async def _write(
    ctx: Context, body: dict[str, Any], fields: dict[str, Any], event: tuple[str, str, bool]
) -> None:
    meta = body["metadata"]
    at = now()
    current = approval_status(body)
    conds = set_condition(
        [c.to_k8s() for c in current.conditions],
        "Decided",
        "True" if fields.get("phase") in TERMINAL else "False",
        fields.get("phase", "Pending"),
        fields.get("message", ""),
        meta.get("generation"),
        at,
    )
    fields = approval_status_patch(
        {"observedGeneration": meta.get("generation", 1), "conditions": conds, **fields}
    )
    updated = await ctx.api.patch_status(
        APPROVALS, meta["namespace"], meta["name"], fields, meta["resourceVersion"]
    )
    ctx.store.upsert(ctx.store.approvals, updated)
    if fields.get("phase") != current.phase:
        await ctx.events.record(updated, *event)


async def reconcile(ctx: Context, namespace: str, name: str) -> float | None:
    body = ctx.store.approvals.get((namespace, name))
    if body is None:
        return None
    spec = body.get("spec") or {}
    status = approval_status(body)
    session = session_key(namespace, spec.get("sessionRef", ""))
    if status.phase in TERMINAL:
        ctx.queue.add(session)
        return None
    policy = spec.get("policyDecision")
    if policy:  # an action [security.action_approvals] decided: final when made
        decision = policy["decision"]
        message = f"{decision} by the action policy (rules: {', '.join(policy.get('rules') or []) or 'none'})"
        fields = {
            "phase": decision,
            "decidedBy": POLICY_DECIDER,
            "decidedAt": body["metadata"].get("creationTimestamp"),
            "message": message,
        }
        await _write(ctx, body, fields, (decision, message, False))
        ctx.metrics.approvals_decided.labels(decision).inc()
        ctx.queue.add(session)
        return None
    expires = parse_time(spec.get("expiresAt"))
    decision = spec.get("decision")
    current = now()
    if decision:
        decider = spec.get("decidedBy")
        # The spec is frozen but for the decision, so a decision made by an
        # update is generation 2 or later; one present at generation 1 was
        # typed into the create, which only the operator may do and never does.
        on_create = int(body["metadata"].get("generation") or 1) < 2
        by_requester = decider == spec.get("requestedBy") and not requester_may_decide(
            spec, decision, ctx.config.security.action_approvals.requester_decides_up_to
        )
        if not decider or by_requester or on_create:
            if on_create:
                message = "decision ignored: it was set when the request was created, not decided"
            elif not decider:
                message = "decision ignored: no verified decider (is the admission policy installed?)"
            else:
                message = (
                    "decision ignored: the requester cannot decide their own request "
                    "(only deny their own actions, or approve them as far as "
                    "[security.action_approvals].requester_decides_up_to allows)"
                )
            if status.message != message:
                await _write(
                    ctx, body, {"phase": "Pending", "message": message}, ("DecisionIgnored", message, True)
                )
            return None
        decided_at = decision_time(body) or current
        if expires and decided_at > expires:
            message = f"the decision by {decider} came after expiresAt"
            await _write(ctx, body, {"phase": "Expired", "message": message}, ("Expired", message, True))
        else:
            message = f"{decision} by {decider}" + (f": {spec['reason']}" if spec.get("reason") else "")
            fields = {
                "phase": decision,
                "decidedBy": decider,
                "decidedAt": rfc3339(decided_at),
                "message": message,
            }
            await _write(ctx, body, fields, (decision, message, decision == "Denied"))
            ctx.metrics.approvals_decided.labels(decision).inc()
        ctx.queue.add(session)
        return None
    if expires and current >= expires:
        message = "no decision before expiresAt; counts as denied"
        await _write(ctx, body, {"phase": "Expired", "message": message}, ("Expired", message, True))
        ctx.queue.add(session)
        return None
    if not status.phase:
        message = f"waiting for a decision until {spec.get('expiresAt')}"
        await _write(ctx, body, {"phase": "Pending", "message": message}, ("Pending", message, False))
    return (expires - current).total_seconds() + 0.05 if expires else None
