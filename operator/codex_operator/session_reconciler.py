"""The CodexSession lifecycle, one turn of a conversation:

    (new) -> risk -> approval policy -> AwaitingApproval (ApprovalRequest)
          -> Queued (concurrency gate) -> NetworkPolicy + runner Pod -> Running
          -> Succeeded | Failed | TimedOut | Denied

Level-triggered: every call looks at the session as it is now (and at its
pod, its approval request, its parent) and takes the next step. Names are
deterministic and creates are idempotent, so a step that ran before a crash
runs again harmlessly.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pydantic import ValidationError

from codex_api import binding, names
from codex_api.config import parse_quantity
from codex_api.model_credential import SessionRef
from codex_api.redaction import redact, shorten
from codex_api.result import parse_frame
from codex_api.session import TERMINAL_PHASES, CodexSessionSpec, CodexSessionStatus
from codex_api.status import approval_status, session_status, session_status_patch
from codex_api.turn_request import TurnOrder, TurnReport
from codex_runner.contract import RunnerArgsError, turn_settings_for
from codex_runner.invocation import CODEX_SANDBOX

from . import cost, metered
from .action_gate import decide_actions, waited_seconds
from .approval_body import approval_request_body
from .approval_policy import approvals_mode, decide, per_action_unavailable
from .conditions import now, parse_time, rfc3339, set_condition
from .context import Context, approval_key, session_key
from .kube import APPROVALS, SESSIONS, Conflict
from .live_turns import REPORT_GRACE_SECONDS, Undelivered
from .model_access import model_access
from .netpol_builder import agent_ingress_rule, build_network_policy
from .ownership import STALE_WAIT_SECONDS, Foreign, check_approval, check_child, check_claim
from .pod_builder import LivePod, build_runner_pod, build_workspace_claim, workspace_size
from .pod_outcome import (
    RUNNER_CONTAINER,
    kept_report,
    pod_outcome,
    report_result,
    turn_result,
    unschedulable,
)
from .risk import assess_risk
from .wall_bounce import WallBounceRefused, plan_wall_bounce
from .warm_pool import claim_slot, claimed_slot, is_pool_born, is_unclaimed, slot_claim

log = logging.getLogger("codex_operator.session")

SAFETY_REQUEUE = 30.0  # events normally wake us sooner; this only bounds a missed one


@dataclass(frozen=True)
class Refusal:
    reason: str
    message: str


@dataclass(frozen=True)
class Parent:
    conversation: str
    thread_id: str
    workspace_claim: str


WAIT_FOR_PARENT = object()


# --------------------------------------------------------------------------- entry
async def reconcile(ctx: Context, namespace: str, name: str) -> float | None:
    body = ctx.store.sessions.get((namespace, name))
    if body is None or body["metadata"].get("deletionTimestamp"):
        ctx.release_slot(namespace, name)
        return None
    phase = session_status(body).phase
    if phase in TERMINAL_PHASES:
        return await _finished(ctx, body)
    annotations = body["metadata"].get("annotations") or {}
    cleanup = annotations.get(names.ANNOTATION_CLEANUP)
    if cleanup is not None:
        return await _cancel(
            ctx, body, f"removal requested by {cleanup}" if cleanup else "", "CleanupRequested"
        )
    cancel = annotations.get(names.ANNOTATION_CANCEL)
    if cancel is not None:
        return await _cancel(ctx, body, cancel)
    try:
        spec = CodexSessionSpec.model_validate(body.get("spec") or {})
    except ValidationError as err:
        return await _finish(ctx, body, "Failed", "InvalidSpec", shorten(str(err), 900))
    try:
        if phase in (None, "Pending"):
            return await _admit(ctx, body, spec)
        if phase == "AwaitingApproval":
            return await _awaiting_approval(ctx, body, spec)
        if phase == "Queued":
            return await _start_or_queue(ctx, body, spec, {})
        if phase == "Running":
            return await _running(ctx, body, spec)
    except Foreign as foreign:  # from any step: an object that is not this session's
        return await _refuse(ctx, body, foreign)
    return None


def _require(found: Foreign | None) -> None:
    """Stop here when an object is not this session's (reconcile() refuses the session)."""
    if found is not None:
        raise found


# --------------------------------------------------------------------------- status
async def _write(
    ctx: Context,
    body: dict[str, Any],
    fields: dict[str, Any],
    *,
    event: tuple[str, str, bool] | None = None,
) -> dict[str, Any]:
    """Merge `fields` into status (guarded by resourceVersion); record an Event for a new phase.

    The fields go through CodexSessionStatus first: a key or value the CRD would
    refuse or prune raises here."""
    meta = body["metadata"]
    old_phase = session_status(body).phase
    fields = session_status_patch({"observedGeneration": meta.get("generation", 1), **fields})
    updated = await ctx.api.patch_status(
        SESSIONS, meta["namespace"], meta["name"], fields, meta["resourceVersion"]
    )
    ctx.store.upsert(ctx.store.sessions, updated)
    new_phase = fields.get("phase", old_phase)
    if event and new_phase != old_phase:
        await ctx.events.record(updated, *event)
    return updated


def _conditions(body: dict[str, Any], *updates: tuple[str, str, str, str]) -> list[dict[str, Any]]:
    conds = [c.to_k8s() for c in session_status(body).conditions]
    at = now()
    generation = body["metadata"].get("generation", 1)
    for type_, status, reason, message in updates:
        conds = set_condition(conds, type_, status, reason, message, generation, at)  # type: ignore[arg-type]
    return conds


def _timings(body: dict[str, Any], **changes: Any) -> dict[str, Any]:
    current = session_status(body).timings
    timings = current.to_k8s() if current is not None else {}
    timings.update({k: v for k, v in changes.items() if v is not None})
    return timings


def _timeout(ctx: Context, spec: CodexSessionSpec) -> int:
    timeout = spec.timeout_seconds or max(ctx.config.mcp.session_timeout_ms // 1000, 10)
    if spec.wall_bounce is not None:
        # The runner asks the providers one after another: each gets the whole timeout.
        try:
            plan = plan_wall_bounce(spec, ctx.config)
        except WallBounceRefused:
            plan = None
        if plan is not None:
            return timeout * len(plan.providers)
    return timeout


# --------------------------------------------------------------------------- new
def _parent(ctx: Context, body: dict[str, Any], spec: CodexSessionSpec) -> Parent | Refusal | object | None:
    """The conversation a reply continues; None for a first turn."""
    if not spec.resume_from:
        return None
    namespace = body["metadata"]["namespace"]
    parent = ctx.store.sessions.get((namespace, spec.resume_from))
    if parent is None:
        return Refusal(
            "ResumeParentNotFound", f"resumeFrom: CodexSession {spec.resume_from!r} does not exist"
        )
    pspec = parent.get("spec") or {}
    pstatus = session_status(parent)
    if pspec.get("requestedBy") != spec.requested_by:
        return Refusal(
            "ResumeForbidden", f"resumeFrom: CodexSession {spec.resume_from!r} belongs to another requester"
        )
    if (
        (pspec.get("workspace") or {}).get("type") != "persistent"
        or (spec.workspace is None)
        or (spec.workspace.type != "persistent")
    ):
        return Refusal(
            "ResumeNeedsPersistentWorkspace",
            "a reply needs workspace.type=persistent on both turns (a scratch workspace is gone with its pod)",
        )
    phase = pstatus.phase
    if phase not in TERMINAL_PHASES:
        return WAIT_FOR_PARENT
    if phase != "Succeeded":
        return Refusal(
            "ResumeParentFailed", f"resumeFrom: CodexSession {spec.resume_from!r} ended as {phase}"
        )
    if not pstatus.thread_id:
        return Refusal("ResumeParentHasNoThread", f"resumeFrom: {spec.resume_from!r} has no Codex thread id")
    conversation = pstatus.conversation_id or spec.resume_from
    return Parent(
        conversation=conversation,
        thread_id=pstatus.thread_id,
        workspace_claim=pstatus.workspace_claim or names.workspace_claim(conversation),
    )


async def _admit(ctx: Context, body: dict[str, Any], spec: CodexSessionSpec) -> float | None:
    try:
        wall_bounce = plan_wall_bounce(spec, ctx.config)
    except WallBounceRefused as refused:
        return await _finish(ctx, body, "Failed", refused.reason, refused.message)
    parent = _parent(ctx, body, spec)
    if isinstance(parent, Refusal):
        return await _finish(ctx, body, "Failed", parent.reason, parent.message)
    if parent is WAIT_FOR_PARENT:
        message = f"waiting for {spec.resume_from} to finish"
        if session_status(body).message != message:
            await _write(ctx, body, {"phase": "Pending", "reason": "WaitingForParent", "message": message})
        return SAFETY_REQUEUE  # the parent's end wakes us sooner
    name = body["metadata"]["name"]
    conversation = parent.conversation if isinstance(parent, Parent) else name
    risk = assess_risk(spec, ctx.config.security.risk_levels)
    model = spec.model or ctx.config.codex.model
    extra_chars = len(spec.base_instructions or "")
    if wall_bounce is not None:
        estimate = cost.estimate_providers(
            spec.prompt, wall_bounce.models(), ctx.config.cost, extra_chars=extra_chars
        )
    else:
        estimate = cost.estimate(spec.prompt, model, ctx.config.cost, extra_chars=extra_chars)
    too_large = _workspace_too_large(ctx, spec)
    if too_large:
        return await _finish(ctx, body, "Failed", "WorkspaceTooLarge", too_large)
    if spec.approvals == "per-action":
        unavailable = per_action_unavailable(spec, ctx.config)
        if unavailable:
            return await _finish(ctx, body, "Failed", "PerActionUnavailable", unavailable)
    mode = approvals_mode(spec, ctx.config)
    decision = decide(spec, risk, ctx.config, mode)
    fields: dict[str, Any] = {
        "riskLevel": risk,
        "approvals": mode,
        "model": model,
        "conversationId": conversation,
        "cost": estimate.to_k8s(),
    }
    if decision.needs_human:
        approval = await ctx.api.create_custom(
            APPROVALS, body["metadata"]["namespace"], _approval_body(ctx, body, spec, risk)
        )
        _require(check_approval(approval, body, _is_live(ctx)))
        ctx.store.upsert(ctx.store.approvals, approval)
        approval_name = approval["metadata"]["name"]
        command = f'kubectl patch cxar {approval_name} -n {body["metadata"]["namespace"]} --type merge -p \'{{"spec":{{"decision":"Approved"}}}}\''
        fields.update(
            phase="AwaitingApproval",
            reason="ApprovalRequired",
            message=f"{risk} risk: {decision.reason}; approve with: {command}",
            approvalRef=approval_name,
            conditions=_conditions(body, ("Approved", "Unknown", "AwaitingDecision", decision.reason)),
        )
        await _write(
            ctx,
            body,
            fields,
            event=("ApprovalRequested", f"{risk} risk, ApprovalRequest {approval_name}", False),
        )
        ctx.queue.add(approval_key(body["metadata"]["namespace"], approval_name))
        return None
    fields["conditions"] = _conditions(body, ("Approved", "True", "AutoApproved", decision.reason))
    return await _start_or_queue(ctx, body, spec, fields)


# Long texts are shown this far in the ApprovalRequest; the rest is one
# command away and bound to the decision by the spec digest.
ARGUMENT_INLINE_CHARS = 2048
# Session fields that have their own place in the ApprovalRequest spec.
_OWN_APPROVAL_FIELDS = ("requestedBy", "businessJustification")


def _approval_arguments(ctx: Context, body: dict[str, Any], spec: CodexSessionSpec) -> dict[str, str]:
    """Every field of the session spec as stored, plus the effective values the
    spec leaves to the configuration: nothing that changes what runs is left out."""
    name = body["metadata"]["name"]
    raw = body.get("spec") or {}
    arguments: dict[str, str] = {}
    for key in sorted(raw):
        if key in _OWN_APPROVAL_FIELDS:
            continue
        value = raw[key]
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, separators=(",", ":"))
        shown = redact(text)
        if len(shown) > ARGUMENT_INLINE_CHARS or shown != text:
            note = f" [{len(text)} chars, {binding.text_digest(text)[:23]}; whole text: kubectl codex describe {name}]"
            shown = shorten(shown, ARGUMENT_INLINE_CHARS) + note
        arguments[key] = shown
    arguments["effective.model"] = spec.model or ctx.config.codex.model
    arguments["effective.timeoutSeconds"] = str(_timeout(ctx, spec))
    arguments["effective.workspace"] = (
        f"persistent {workspace_size(spec, ctx.config)}"
        if spec.workspace is not None and spec.workspace.type == "persistent"
        else "scratch (gone with the pod)"
    )
    if spec.wall_bounce is not None:  # approvers see that every provider gets the prompt
        arguments["effective.wallBounceProviders"] = (
            ",".join(spec.wall_bounce.providers) or "all configured providers"
        )
    return arguments


def _approval_body(ctx: Context, body: dict[str, Any], spec: CodexSessionSpec, risk: str) -> dict[str, Any]:
    meta = body["metadata"]
    tool = (meta.get("annotations") or {}).get(f"{names.PREFIX}tool", "codex")
    verb = "codex exec resume" if spec.resume_from else "codex exec"
    return approval_request_body(
        ctx,
        body,
        spec,
        name=names.approval_request(meta["name"]),
        risk=risk,
        tool=tool if tool.replace("-", "").isalnum() else "codex",
        operation=(
            f"{verb} in a {spec.sandbox} runner pod (the pod is the sandbox; Codex's own "
            f"{CODEX_SANDBOX[spec.sandbox]} sandbox too where it works), "
            f"mode={spec.mode}, fullAuto={str(spec.full_auto).lower()}"
        ),
        arguments=_approval_arguments(ctx, body, spec),
        businessJustification=redact(spec.business_justification) if spec.business_justification else None,
    )


# --------------------------------------------------------------------------- approval
async def _awaiting_approval(ctx: Context, body: dict[str, Any], spec: CodexSessionSpec) -> float | None:
    meta = body["metadata"]
    # The deterministic name, not status.approvalRef: nothing a status write
    # could point elsewhere decides which approval counts.
    ref = names.approval_request(meta["name"])
    approval = ctx.store.approvals.get((meta["namespace"], ref))
    if approval is None:
        risk = session_status(body).risk_level or assess_risk(spec, ctx.config.security.risk_levels)
        approval = await ctx.api.create_custom(
            APPROVALS, meta["namespace"], _approval_body(ctx, body, spec, risk)
        )
        _require(check_approval(approval, body, _is_live(ctx)))
        ctx.store.upsert(ctx.store.approvals, approval)
        ctx.queue.add(approval_key(meta["namespace"], ref))
        return None
    _require(check_approval(approval, body, _is_live(ctx)))
    astatus = approval_status(approval)
    phase = astatus.phase
    who = astatus.decided_by or "unknown"
    if phase == "Approved":
        fields = {"conditions": _conditions(body, ("Approved", "True", "Approved", f"approved by {who}"))}
        return await _start_or_queue(ctx, body, spec, fields)
    if phase == "Denied":
        why = (approval.get("spec") or {}).get("reason", "")
        return await _finish(ctx, body, "Denied", "Denied", f"denied by {who}: {why}", approved=False)
    if phase == "Expired":
        return await _finish(
            ctx,
            body,
            "Denied",
            "ApprovalExpired",
            f"ApprovalRequest {ref} expired without a decision",
            approved=False,
        )
    return None


# --------------------------------------------------------------------------- run
async def _start_or_queue(
    ctx: Context, body: dict[str, Any], spec: CodexSessionSpec, fields: dict[str, Any]
) -> float | None:
    meta = body["metadata"]
    key = session_key(meta["namespace"], meta["name"])
    user = spec.requested_by or ""
    if not ctx.gate.try_acquire(key, (meta.get("creationTimestamp", ""), meta["name"]), user):
        if session_status(body).phase != "Queued" or fields:
            snap = ctx.gate.snapshot()
            mine = ctx.gate.held_by(user)
            fields.update(
                phase="Queued",
                reason="ConcurrencyLimit",
                message=(
                    f"waiting for a slot: {snap['running']}/{snap['limit']} sessions running, "
                    f"{mine}/{ctx.gate.per_user} of them {user or 'unknown'}'s"
                ),
                timings=_timings(body, queuedAt=rfc3339(now())),
            )
            await _write(ctx, body, fields)
        return SAFETY_REQUEUE
    merged = {**session_status(body).to_k8s(), **fields}
    try:
        pod = await _ensure_children(ctx, body, spec, merged.get("model"), attempt=1)
    except Foreign:
        raise  # reconcile() refuses the session (and frees the slot)
    except WaitForLivePod:
        ctx.release_slot(meta["namespace"], meta["name"])
        return 0.5
    except WallBounceRefused as refused:  # the configuration changed since admission
        ctx.release_slot(meta["namespace"], meta["name"])
        return await _finish(ctx, body, "Failed", refused.reason, refused.message)
    except RunnerArgsError as err:
        ctx.release_slot(meta["namespace"], meta["name"])
        return await _finish(ctx, body, "Failed", "InvalidTurnSettings", shorten(str(err), 900))
    except Exception as err:
        ctx.release_slot(meta["namespace"], meta["name"])
        status_code = getattr(err, "status", None)
        if status_code in (400, 403, 422):  # the API server refuses this pod: retrying will not help
            return await _finish(
                ctx, body, "Failed", "PodRejected", shorten(getattr(err, "body", str(err)), 900)
            )
        raise
    started = now()
    fields.update(
        phase="Running",
        reason="PodCreated",
        message=f"runner pod {pod['metadata']['name']} created",
        podName=pod["metadata"]["name"],
        **({"workspaceClaim": claim} if (claim := _claim_name(ctx, body, spec, pod)) else {}),
        attempts=1,
        timings=_timings(body, startedAt=rfc3339(started)),
        conditions=_conditions(
            {**body, "status": merged}, ("Scheduled", "True", "PodCreated", pod["metadata"]["name"])
        ),
    )
    await _write(ctx, body, fields, event=("Started", f"runner pod {pod['metadata']['name']} created", False))
    return _look_again(ctx, spec, pod)


def _look_again(ctx: Context, spec: CodexSessionSpec, pod: dict[str, Any]) -> float:
    """When to look at a session that has just got its pod. Its timeout, as a
    rule: the pod's own events bring the session back. But a pod that already
    exists may have run already (an operator killed between creating it and
    writing Running leaves exactly that to its successor), and its events were
    all seen before the session was Running: look again now. A live pod is
    handed its turn by _running, at once."""
    if _is_live_pod(pod):
        return 0.0
    if pod_outcome(pod).state in ("pending", "running"):
        return float(_timeout(ctx, spec))
    return 0.0


def _is_live(ctx: Context) -> Callable[[str], bool]:
    """Whether a session with a uid exists (scans the store; only asked when refusing)."""
    return lambda uid: any(b["metadata"].get("uid") == uid for b in ctx.store.sessions.values())


def _workspace_too_large(ctx: Context, spec: CodexSessionSpec) -> str | None:
    if spec.workspace is None or spec.workspace.type != "persistent":
        return None
    size = workspace_size(spec, ctx.config)
    most = ctx.config.kubernetes.runner_resources.max_workspace_size
    if parse_quantity(size) > parse_quantity(most):
        return (
            f"workspace.size {size} is above the maximum of {most} "
            "([kubernetes.runner_resources] max_workspace_size)"
        )
    return None


def _authorize(ctx: Context, body: dict[str, Any], spec: CodexSessionSpec) -> None:
    """Raise Foreign unless this session may run now: its risk needs no human, or the
    ApprovalRequest under its name is Approved and bound to this very object and spec.

    Checked again right before any pod is created, whatever the phase says, so no
    path (a status write, a restart, a lost pod) starts a runner without a decision.
    """
    risk = assess_risk(spec, ctx.config.security.risk_levels)
    # From the spec and the configuration, never from status: a forged status
    # cannot make a turn per-action to skip its approval.
    if not decide(spec, risk, ctx.config, approvals_mode(spec, ctx.config)).needs_human:
        return
    meta = body["metadata"]
    ref = names.approval_request(meta["name"])
    approval = ctx.store.approvals.get((meta["namespace"], ref))
    phase = approval_status(approval).phase
    if approval is None or phase != "Approved":
        raise Foreign(
            "NotApproved",
            f"a {risk} risk session runs only after a human approves ApprovalRequest {ref} "
            f"(it is {phase or 'missing'})",
        )
    _require(check_approval(approval, body, _is_live(ctx)))


async def _ensure_children(
    ctx: Context, body: dict[str, Any], spec: CodexSessionSpec, model: str | None, *, attempt: int
) -> dict[str, Any]:
    meta = body["metadata"]
    namespace, name, uid = meta["namespace"], meta["name"], meta["uid"]
    _authorize(ctx, body, spec)
    parent = _parent(ctx, body, spec)
    if isinstance(parent, Refusal):
        raise RuntimeError(f"{parent.reason}: {parent.message}")
    # From the checked parent chain, not from status: which conversation's
    # volume a pod mounts is decided by what the operator verified.
    conversation = parent.conversation if isinstance(parent, Parent) else name
    thread = parent.thread_id if isinstance(parent, Parent) else None
    is_live = _is_live(ctx)
    k8s_cfg = ctx.config.kubernetes
    access = model_access(
        ctx.config, plan_wall_bounce(spec, ctx.config), SessionRef(namespace, name, uid), ctx.credential_key
    )
    wall_bounce = access.wall_bounce
    settings = turn_settings_for(
        spec,
        model=model or ctx.config.codex.model,
        resume_thread_id=thread,
        endpoint=access.endpoint,
        wall_bounce=wall_bounce.settings() if wall_bounce is not None else None,
        network_fence_seconds=k8s_cfg.network_fence_seconds,
    )
    live = _live_pod(ctx, spec)
    claim_name = _claim_name(ctx, body, spec, None) or ""

    def manifest_for(claim: str) -> dict[str, Any]:
        return build_runner_pod(
            session_name=name,
            session_uid=uid,
            namespace=namespace,
            spec=spec,
            settings=settings,
            conversation=conversation,
            attempt=attempt,
            timeout_seconds=_timeout(ctx, spec),
            config=ctx.config,
            credential=access.credential,
            live=live,
            workspace_claim=claim,
        )

    if live is not None and parent is None and attempt == 1 and ctx.pool is not None:
        pooled = claimed_slot(ctx, namespace, uid) or await claim_slot(ctx, body, spec, manifest_for)
        if pooled is not None:
            await _mount_workspace(ctx, body, spec, conversation, slot_claim(pooled), bind=True)
            return pooled
    if spec.workspace and spec.workspace.type == "persistent":
        await _mount_workspace(ctx, body, spec, conversation, claim_name, bind=False)
    manifest = manifest_for(claim_name)
    if live is not None and isinstance(parent, Parent) and attempt == 1:
        handed = await _hand_over(ctx, body, spec.resume_from or "", manifest)
        if handed is not None:
            return handed
    if isinstance(parent, Parent):
        await _end_live_pods(ctx, namespace, conversation)
    desired = build_network_policy(
        session_name=name,
        namespace=namespace,
        session_uid=uid,
        conversation=conversation,
        sandbox=spec.sandbox,
        endpoint=access.endpoint,
        extra_endpoints=wall_bounce.providers if wall_bounce is not None else (),
        ingress=[agent_ingress_rule(ctx.config.kubernetes.warm_runners)] if live is not None else (),
    )
    policy = await ctx.api.ensure_network_policy(namespace, desired)
    _require(check_child(policy, uid, is_live))
    pod = await ctx.api.create_pod(namespace, manifest)
    _require(check_child(pod, uid, is_live))
    ctx.store.upsert(ctx.store.pods, pod)
    ctx.metrics.pods_started.inc()
    return pod


def _claim_name(
    ctx: Context, body: dict[str, Any], spec: CodexSessionSpec, pod: dict[str, Any] | None
) -> str | None:
    """The conversation's workspace claim (None: a scratch workspace): the one its
    first turn's pool pod was made with, else the one named after it. From the
    checked parent chain and the turn's own pod, never from the spec."""
    if spec.workspace is None or spec.workspace.type != "persistent":
        return None
    if pod is not None and is_pool_born(pod):
        return slot_claim(pod)
    parent = _parent(ctx, body, spec)
    if isinstance(parent, Parent):
        return parent.workspace_claim
    return session_status(body).workspace_claim or names.workspace_claim(body["metadata"]["name"])


async def _mount_workspace(
    ctx: Context,
    body: dict[str, Any],
    spec: CodexSessionSpec,
    conversation: str,
    claim_name: str,
    *,
    bind: bool,
) -> None:
    """The conversation's workspace claim, made or checked to be this requester's
    and conversation's, with this turn as one more owner. `bind`: the claim of
    the pool pod this turn has claimed, recorded as the conversation's while
    it is still no one's (a guarded write; any other claim must already be)."""
    meta = body["metadata"]
    namespace, name, uid = meta["namespace"], meta["name"], meta["uid"]
    requester = spec.requested_by or "unknown"
    owner = names.owner_reference("CodexSession", name, uid, controller=False)
    workspace = spec.workspace
    assert workspace is not None
    claim = await ctx.api.ensure_claim(
        namespace,
        build_workspace_claim(
            conversation=conversation,
            namespace=namespace,
            owner_refs=[owner],
            size=workspace_size(spec, ctx.config),
            storage_class=workspace.storage_class_name
            or ctx.config.kubernetes.runner_resources.storage_class_name
            or None,
            requester=requester,
            name=claim_name,
        ),
    )
    if bind and binding.claim_owner(claim) == ("", ""):
        claim = await ctx.api.bind_pool_claim(
            namespace, claim, requester=requester, conversation=conversation, owner=owner
        )
    _require(check_claim(claim, requester, conversation))
    await ctx.api.add_claim_owner(namespace, claim, owner)


def _live_pod(ctx: Context, spec: CodexSessionSpec) -> LivePod | None:
    """The agent a turn's pod runs when it is to outlive the turn: with warm runners
    on, for a conversation that can have a next turn (a persistent workspace;
    a wall-bounce turn runs one Codex per provider and stays a pod of its own)."""
    if ctx.turns is None or spec.wall_bounce is not None:
        return None
    if spec.workspace is None or spec.workspace.type != "persistent":
        return None
    return ctx.turns.live_pod()


def _is_live_pod(pod: dict[str, Any]) -> bool:
    return names.ANNOTATION_AGENT_KEY in (pod["metadata"].get("annotations") or {})


async def _hand_over(
    ctx: Context, body: dict[str, Any], parent_name: str, manifest: dict[str, Any]
) -> dict[str, Any] | None:
    """The conversation's live pod, made this reply's runner; None when there is
    none this reply may have (then it gets a new pod, as a cold turn).

    A pod goes to a reply only when it is exactly the pod the reply would
    otherwise get (same spec: same level, model, image, workspace, key), it
    runs, and it still belongs to the reply's parent, a turn of the same
    conversation and requester (_parent checked that). The move is one write
    guarded by the resourceVersion read here: two replies, or two operators,
    cannot both get the pod."""
    assert ctx.turns is not None
    meta = body["metadata"]
    namespace, uid = meta["namespace"], meta["uid"]
    parent = ctx.store.sessions.get((namespace, parent_name))
    if parent is None:
        return None
    pod = ctx.store.pods.get((namespace, session_status(parent).pod_name or ""))
    if pod is None or not _is_live_pod(pod):
        return None
    pod_meta = pod["metadata"]
    if binding.controller_uid(pod) == uid:
        return pod  # handed over already, by an operator that stopped before writing status
    annotations = pod_meta.get("annotations") or {}
    labels = pod_meta.get("labels") or {}
    wanted = manifest["metadata"]
    why = next(
        (
            reason
            for reason, applies in (
                ("it serves another turn", binding.controller_uid(pod) != parent["metadata"]["uid"]),
                ("it is being deleted", bool(pod_meta.get("deletionTimestamp"))),
                ("it does not run", pod_outcome(pod).state != "running"),
                ("it has no address yet", not (pod.get("status") or {}).get("podIP")),
                (
                    "the reply needs another pod (level, model, image, workspace)",
                    annotations.get(names.ANNOTATION_POD_SHAPE)
                    != wanted["annotations"][names.ANNOTATION_POD_SHAPE],
                ),
                (
                    "another operator key started it",
                    annotations.get(names.ANNOTATION_AGENT_KEY) != ctx.turns.fingerprint,
                ),
                (
                    "it holds another conversation",
                    labels.get(names.LABEL_CONVERSATION) != wanted["labels"][names.LABEL_CONVERSATION],
                ),
                ("it has no policy label", not labels.get(names.LABEL_POLICY)),
            )
            if applies
        ),
        None,
    )
    if why is not None:
        log.info("live pod %s not handed to %s/%s: %s", pod_meta["name"], namespace, meta["name"], why)
        return None
    policy = await ctx.api.read_network_policy(namespace, names.network_policy(labels[names.LABEL_POLICY]))
    if policy is None:
        return None
    owner = names.owner_reference("CodexSession", meta["name"], uid)
    try:
        # The policy first: it must outlive every turn the pod serves.
        await ctx.api.add_policy_owner(namespace, policy, {**owner, "controller": False})
        handed = await ctx.api.hand_over_pod(
            namespace, pod, owner=owner, labels={names.LABEL_SESSION: meta["name"]}
        )
    except Conflict as err:
        log.info("live pod %s not handed to %s/%s: %s", pod_meta["name"], namespace, meta["name"], err)
        return None
    _require(check_child(handed, uid, _is_live(ctx)))
    ctx.store.upsert(ctx.store.pods, handed)
    ctx.metrics.pods_handed_over.inc()
    log.info("handed live pod %s to %s/%s", pod_meta["name"], namespace, meta["name"])
    return handed


def _running_live_pods(ctx: Context, namespace: str) -> list[dict[str, Any]]:
    """The live pods of a namespace that have not ended (some may be ending)."""
    return [
        pod
        for pod in ctx.store.pods.values()
        if pod["metadata"]["namespace"] == namespace and _is_live_pod(pod) and not pod_outcome(pod).finished
    ]


async def _trim_idle_pods(ctx: Context, namespace: str, *, room: int = 0) -> None:
    """End the longest-idle live pods past `max_idle_pods`: an idle pod holds its
    resource requests, and the gate counts only running turns. `room`: end at
    least that many idle pods anyway (a new runner pod finds no node with room):
    the longest-idle conversation pods first, then the oldest pool pods."""
    assert ctx.turns is not None
    idle: list[tuple[str, str]] = []
    pool: list[tuple[str, str]] = []  # unclaimed pool pods count as idle pods; the pool keeps them
    for pod in _running_live_pods(ctx, namespace):
        meta = pod["metadata"]
        if meta.get("deletionTimestamp"):
            continue
        if is_unclaimed(pod):
            pool.append((str(meta.get("creationTimestamp", "")), meta["name"]))
            continue
        owner = ctx.store.sessions.get((namespace, (meta.get("labels") or {}).get(names.LABEL_SESSION, "")))
        status = session_status(owner) if owner is not None else None
        if status is not None and status.phase not in TERMINAL_PHASES:
            continue  # serving a turn
        since = status.timings.completed_at if status is not None and status.timings else None
        idle.append((rfc3339(since) if since else "", meta["name"]))
    over = max(len(idle) + len(pool) - ctx.turns.config.max_idle_pods, 0)
    ending = sorted(idle)[: max(over, room)]
    ending += sorted(pool)[: max(room - len(ending), 0)]
    why = "a runner pod waits for room on the nodes" if room else "more than max_idle_pods wait"
    for _since, name in ending:
        log.info("ending idle live pod %s/%s: %s", namespace, name, why)
        await ctx.api.delete_pod(namespace, name, grace_seconds=1)


async def _make_room(ctx: Context, namespace: str) -> None:
    """A runner pod waits for a node with room: end an idle live pod, one at a
    time (idle pods keep their requests while new turns wait)."""
    if ctx.turns is None:
        return
    if any(pod["metadata"].get("deletionTimestamp") for pod in _running_live_pods(ctx, namespace)):
        return  # one is ending already; the scheduler tries again when it is gone
    await _trim_idle_pods(ctx, namespace, room=1)


class WaitForLivePod(Exception):
    """The conversation's live pod is ending; the turn starts once it is gone."""


async def _end_live_pods(ctx: Context, namespace: str, conversation: str) -> None:
    """End the conversation's live pods that this turn did not get, and raise
    WaitForLivePod until they are gone: Codex lets one process at a time write a
    thread ("already has an active writer"), and a conversation is one pod."""
    waiting = False
    for pod in _running_live_pods(ctx, namespace):
        meta = pod["metadata"]
        if (meta.get("labels") or {}).get(names.LABEL_CONVERSATION) != conversation:
            continue
        waiting = True
        if not meta.get("deletionTimestamp"):
            log.info("ending live pod %s/%s: the next turn runs elsewhere", namespace, meta["name"])
            await ctx.api.delete_pod(namespace, meta["name"], grace_seconds=1)
    if waiting:
        raise WaitForLivePod()


async def _running(ctx: Context, body: dict[str, Any], spec: CodexSessionSpec) -> float | None:
    meta = body["metadata"]
    status = session_status(body)
    pod = ctx.store.pods.get((meta["namespace"], status.pod_name or ""))
    if pod is None:
        return await _lost(ctx, body, spec, "PodDeleted", "the runner pod disappeared")
    if _is_live_pod(pod):
        return await _running_live(ctx, body, spec, pod)
    outcome = pod_outcome(pod)
    if outcome.lost:
        return await _lost(
            ctx, body, spec, f"Pod{outcome.reason or 'Lost'}", outcome.message or "the runner pod was lost"
        )
    timeout = _timeout(ctx, spec)
    if outcome.state == "deadline":
        fields, conditions = await _metered(ctx, body, {})
        return await _finish(
            ctx,
            body,
            "TimedOut",
            "ActiveDeadlineExceeded",
            f"the runner pod exceeded its deadline ({timeout}s)",
            extra=fields,
            conditions=conditions,
        )
    if outcome.finished:
        frame = parse_frame(outcome.message)
        log_tail = None
        if frame is None or frame.truncated:
            log_tail = await ctx.api.pod_log_tail(
                meta["namespace"], pod["metadata"]["name"], RUNNER_CONTAINER
            )
        model = status.model or ctx.config.codex.model
        provider_models = {p.provider_id: p.model for p in ctx.config.kubernetes.wall_bounce_providers}
        result = turn_result(
            outcome, log_tail, model, ctx.config.cost, status.cost, provider_models=provider_models
        )
        fields, conditions = await _metered(ctx, body, result.status)
        return await _finish(
            ctx, body, result.phase, result.reason, result.message, extra=fields, conditions=conditions
        )
    remaining = _remaining(body, timeout)
    if remaining <= 0:
        return await _timed_out(ctx, body, pod["metadata"]["name"], timeout)
    if outcome.state == "pending" and unschedulable(pod):
        await _make_room(ctx, meta["namespace"])
    return min(remaining + 0.05, SAFETY_REQUEUE * 10)


def _remaining(body: dict[str, Any], timeout: int) -> float:
    """Seconds left of the turn's timeout, counted from when it started running."""
    timings = session_status(body).timings
    started = (timings.started_at if timings else None) or now()
    return (started + timedelta(seconds=timeout) - now()).total_seconds()


async def _timed_out(ctx: Context, body: dict[str, Any], pod_name: str, timeout: int) -> float | None:
    """End a turn past its timeout: its pod goes, what it spent until then is charged."""
    await ctx.api.delete_pod(body["metadata"]["namespace"], pod_name)
    fields, conditions = await _metered(ctx, body, {})
    return await _finish(
        ctx,
        body,
        "TimedOut",
        "Timeout",
        f"the turn exceeded timeoutSeconds={timeout}",
        extra=fields,
        conditions=conditions,
    )


async def _running_live(
    ctx: Context, body: dict[str, Any], spec: CodexSessionSpec, pod: dict[str, Any]
) -> float | None:
    """A turn in a live pod: its agent's report ends it, not the pod's exit."""
    meta = body["metadata"]
    namespace, name, uid = meta["namespace"], meta["name"], meta["uid"]
    pod_name = pod["metadata"]["name"]
    turns = ctx.turns
    found = turns.outcome(uid) if turns is not None else None
    outcome = pod_outcome(pod)
    if found is None and outcome.finished:
        found = kept_report(outcome, uid)  # it answered while this operator was away
    if isinstance(found, TurnReport):
        status = session_status(body)
        model = status.model or ctx.config.codex.model
        phase, result = report_result(found, model, ctx.config.cost, status.cost)
        fields, conditions = await _metered(ctx, body, result.status)
        if phase == "TimedOut":
            await ctx.api.delete_pod(namespace, pod_name)  # an interrupted thread is not handed on
        return await _finish(
            ctx, body, phase, result.reason, result.message, extra=fields, conditions=conditions
        )
    if (
        turns is None
        or (pod["metadata"].get("annotations") or {}).get(names.ANNOTATION_AGENT_KEY) != turns.fingerprint
    ):
        await ctx.api.delete_pod(namespace, pod_name)
        return await _lost(
            ctx, body, spec, "AgentKeyChanged", "the live pod takes turns signed with another operator key"
        )
    if isinstance(found, Undelivered):
        turns.forget(uid)
        if not found.retry:
            return await _finish(ctx, body, "Failed", found.reason, found.message)
        await ctx.api.delete_pod(namespace, pod_name)
        return await _lost(ctx, body, spec, found.reason, found.message)
    if outcome.lost or outcome.finished:
        turns.forget(uid)
        return await _lost(
            ctx,
            body,
            spec,
            f"Pod{outcome.reason or 'Ended'}",
            "the live runner pod ended before its agent reported the turn",
        )
    timeout = _timeout(ctx, spec)
    # Per-action if admission said so or the spec and configuration say so: the
    # more careful of the two, so no status write turns the gate off.
    per_action = "per-action" in (session_status(body).approvals, approvals_mode(spec, ctx.config))
    # The timeout bounds Codex's work: the time its actions wait for people does not count.
    remaining = _remaining(body, timeout) + (waited_seconds(ctx, namespace, uid) if per_action else 0.0)
    if remaining <= -REPORT_GRACE_SECONDS:  # the agent should have interrupted it and reported
        turns.forget(uid)
        return await _timed_out(ctx, body, pod_name, timeout)
    ip = (pod.get("status") or {}).get("podIP")
    if not ip:
        if unschedulable(pod):
            await _make_room(ctx, namespace)
        return SAFETY_REQUEUE  # the pod's next status (its address) wakes us
    parent = _parent(ctx, body, spec)
    access = model_access(
        ctx.config, plan_wall_bounce(spec, ctx.config), SessionRef(namespace, name, uid), ctx.credential_key
    )
    order = TurnOrder(
        namespace=namespace,
        session=name,
        session_uid=uid,
        prompt=spec.prompt,
        sandbox=spec.sandbox,
        thread_id=parent.thread_id if isinstance(parent, Parent) else None,
        timeout_seconds=max(remaining, 1.0),
        credential=access.credential,
        approvals="per-action" if per_action else "never",
    )
    turns.deliver(session_key(namespace, name), order, pod_ip=ip, pod_uid=pod["metadata"]["uid"])
    if per_action:
        people = await decide_actions(ctx, body, spec, _is_live(ctx))
        if people:
            await _note_waiting(ctx, body, people)
            return SAFETY_REQUEUE  # each decision wakes us (the approval reconciler)
    return remaining + REPORT_GRACE_SECONDS + 1


async def _note_waiting(ctx: Context, body: dict[str, Any], people: list[str]) -> None:
    """Say in the session's status which ApprovalRequests its turn waits on."""
    ns = body["metadata"]["namespace"]
    message = shorten(
        f"Codex waits for a decision on ApprovalRequest {', '.join(people)}: "
        f"kubectl codex describe {people[0]} -n {ns}",
        1000,
    )
    if session_status(body).message != message:
        await _write(ctx, body, {"message": message})


async def _metered(
    ctx: Context, body: dict[str, Any], reported: dict[str, Any]
) -> tuple[dict[str, Any], list[tuple[str, str, str, str]]]:
    """A finished turn's status fields with usage and cost from the model proxy's
    meter when runners go through it (codex_operator.metered), and the condition
    that says whether they did. Also for a turn stopped mid-way (timed out,
    cancelled): what it spent until then is exactly what must not go uncounted."""
    if not ctx.config.model_proxy.url or ctx.credential_key is None:
        return reported, []
    meta = body["metadata"]
    status = session_status(body)
    answer = await metered.fetch(
        ctx.config, ctx.credential_key, SessionRef(meta["namespace"], meta["name"], meta["uid"])
    )
    fields, condition = metered.choose(
        reported,
        answer,
        wall_bounce=(body.get("spec") or {}).get("wallBounce") is not None,
        model=status.model or ctx.config.codex.model,
        prices=ctx.config.cost,
        estimate=status.cost,
        provider_models={p.provider_id: p.model for p in ctx.config.kubernetes.wall_bounce_providers},
    )
    if isinstance(answer, metered.Unavailable):
        await ctx.events.record(body, "UsageUnverified", condition[3], True)
    return fields, [condition]


async def _lost(
    ctx: Context, body: dict[str, Any], spec: CodexSessionSpec, reason: str, message: str
) -> float | None:
    if ctx.turns is not None:
        # The lost attempt's delivery ends with its pod: the next attempt's
        # order goes to the next pod, not queued behind one that is gone.
        ctx.turns.forget(body["metadata"]["uid"])
    status = session_status(body)
    attempts = status.attempts or 1
    limit = ctx.config.kubernetes.max_pod_attempts
    if attempts >= limit:
        return await _finish(ctx, body, "Failed", reason, f"{message}; gave up after {attempts} attempt(s)")
    try:
        pod = await _ensure_children(ctx, body, spec, status.model, attempt=attempts + 1)
    except WaitForLivePod:
        return 0.5
    except WallBounceRefused as refused:  # the configuration changed since the first attempt
        return await _finish(ctx, body, "Failed", refused.reason, refused.message)
    pod_name = pod["metadata"]["name"]
    await _write(
        ctx,
        body,
        {
            "podName": pod_name,
            "attempts": attempts + 1,
            "reason": "PodRecreated",
            "message": f"{message}; started {pod_name} (attempt {attempts + 1} of {limit})",
        },
    )
    await ctx.events.record(body, "PodRecreated", f"{message}; attempt {attempts + 1} of {limit}", True)
    return min(SAFETY_REQUEUE, _look_again(ctx, spec, pod))


# --------------------------------------------------------------------------- end
async def _refuse(ctx: Context, body: dict[str, Any], foreign: Foreign) -> float | None:
    """An object under this session's name is not this session's: wait a little when
    the garbage collector is about to remove it, else end the session; never run."""
    meta = body["metadata"]
    ctx.release_slot(meta["namespace"], meta["name"])
    created = parse_time(meta.get("creationTimestamp")) or now()
    if foreign.stale and (now() - created).total_seconds() < STALE_WAIT_SECONDS:
        status = session_status(body)
        if status.reason != "WaitingForStaleObject":
            phase = status.phase or "Pending"
            await _write(
                ctx, body, {"phase": phase, "reason": "WaitingForStaleObject", "message": foreign.message}
            )
        return 1.0
    log.warning(
        "refused %s/%s: %s",
        meta["namespace"],
        meta["name"],
        foreign.message,
        extra={"reason": foreign.reason},
    )
    approval = foreign.reason in ("ApprovalMismatch", "NotApproved")
    return await _finish(
        ctx, body, "Failed", foreign.reason, foreign.message, approved=False if approval else None
    )


async def _finish(
    ctx: Context,
    body: dict[str, Any],
    phase: str,
    reason: str,
    message: str,
    *,
    extra: dict[str, Any] | None = None,
    approved: bool | None = None,
    conditions: list[tuple[str, str, str, str]] | None = None,
) -> float | None:
    meta = body["metadata"]
    status = session_status(body)
    completed = now()
    started = status.timings.started_at if status.timings else None
    duration = round((completed - started).total_seconds(), 3) if started else None
    updates = [("Completed", "True" if phase == "Succeeded" else "False", reason, message)]
    if approved is False:
        updates.append(("Approved", "False", reason, message))
    updates += conditions or []
    fields: dict[str, Any] = {
        **(extra or {}),
        "phase": phase,
        "reason": reason,
        "message": shorten(message, 1024),
        "timings": _timings(body, completedAt=rfc3339(completed), durationSeconds=duration),
        "conditions": _conditions(body, *updates),
    }
    updated = await _write(ctx, body, fields, event=(phase, shorten(message, 512), phase != "Succeeded"))
    ctx.release_slot(meta["namespace"], meta["name"])
    if ctx.turns is not None:
        ctx.turns.forget(meta["uid"])
        await _trim_idle_pods(ctx, meta["namespace"])
    _count(ctx, phase, duration, CodexSessionStatus.model_validate(extra or {}))
    for reply in ctx.store.replies_to(meta["namespace"], meta["name"]):
        ctx.queue.add(session_key(*reply))
    return _ttl_remaining(ctx, updated)


def _count(ctx: Context, phase: str, duration: float | None, outcome: CodexSessionStatus) -> None:
    ctx.metrics.turn_finished(phase, duration)
    if outcome.usage is not None:
        for kind, tokens in outcome.usage.by_kind().items():
            if tokens:
                ctx.metrics.tokens.labels(kind).inc(tokens)
    for provider in outcome.cost.providers if outcome.cost is not None else []:
        if provider.actual_usd:
            ctx.metrics.cost.labels(provider.provider).inc(provider.actual_usd)


def _ttl_remaining(ctx: Context, body: dict[str, Any]) -> float:
    if names.ANNOTATION_CLEANUP in (body["metadata"].get("annotations") or {}):
        return 0.05  # removal was requested: no TTL to wait for
    spec = body.get("spec") or {}
    ttl = spec.get("ttlSecondsAfterFinished")
    ttl = ctx.config.kubernetes.default_ttl_seconds_after_finished if ttl is None else ttl
    timings = session_status(body).timings
    completed = (timings.completed_at if timings else None) or now()
    return max((completed + timedelta(seconds=ttl) - now()).total_seconds(), 0.0) + 0.05


async def _cancel(
    ctx: Context, body: dict[str, Any], why: str, reason: str = "CancelRequested"
) -> float | None:
    meta = body["metadata"]
    pods = list(ctx.store.pods_of(meta["namespace"], meta["name"]))
    for pod in pods:
        if not pod_outcome(pod).finished:
            await ctx.api.delete_pod(meta["namespace"], pod["metadata"]["name"])
    message = f"cancelled: {shorten(why, 200)}" if why else "cancelled"
    # A turn that never got a pod never asked the model: nothing to meter.
    fields, conditions = await _metered(ctx, body, {}) if pods else ({}, [])
    return await _finish(ctx, body, "Cancelled", reason, message, extra=fields, conditions=conditions)


async def _finished(ctx: Context, body: dict[str, Any]) -> float | None:
    meta = body["metadata"]
    ctx.release_slot(meta["namespace"], meta["name"])
    if session_status(body).phase in ("TimedOut", "Cancelled"):
        for pod in list(ctx.store.pods_of(meta["namespace"], meta["name"])):
            if not pod_outcome(pod).finished and not pod["metadata"].get("deletionTimestamp"):
                await ctx.api.delete_pod(meta["namespace"], pod["metadata"]["name"])
    cleanup = (meta.get("annotations") or {}).get(names.ANNOTATION_CLEANUP)
    remaining = _ttl_remaining(ctx, body)
    if remaining <= 0.05:
        await ctx.api.delete_custom(SESSIONS, meta["namespace"], meta["name"])
        why = f"removal requested by {cleanup}" if cleanup is not None else "ttlSecondsAfterFinished passed"
        log.info("deleted %s/%s: %s", meta["namespace"], meta["name"], why)
        return None
    return remaining
