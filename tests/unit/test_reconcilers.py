"""The reconcilers' state machine over an in-memory API (codex_devenv.memory_kube):
phase x approval x pod outcome x cancel/timeout, table-driven, in milliseconds.
The same transitions run against the real API server in
tests/integration/test_operator_lifecycle.py and tests/security/."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from codex_api import binding, names
from codex_api.config import CodexMCPConfig, parse_config
from codex_api.result import RunnerResult, Usage
from codex_devenv.memory_kube import CLAIMS, PODS, POLICIES, MemoryKubeApi, memory_context
from codex_operator import approval_reconciler, session_reconciler
from codex_operator.context import Context
from codex_operator.kube import APPROVALS, SESSIONS

NS = "team"
CRITICAL = {"sandbox": "full-access", "fullAuto": True, "mode": "ci"}


def config(extra: str = "") -> CodexMCPConfig:
    return parse_config("[mcp]\nmax_concurrent_sessions = 2\nmax_concurrent_sessions_per_user = 2\n" + extra)


def result(message: str = "done") -> RunnerResult:
    usage = Usage(input_tokens=100, cached_input_tokens=0, output_tokens=20, reasoning_tokens=0)
    return RunnerResult(outcome="completed", thread_id="t-1", final_message=message, usage=usage)


async def settle(ctx: Context, name: str, rounds: int = 6) -> dict[str, Any]:
    """Reconcile the session (and its approval) until nothing changes; return the session."""
    for _ in range(rounds):
        await session_reconciler.reconcile(ctx, NS, name)
        if (NS, names.approval_request(name)) in ctx.store.approvals:
            await approval_reconciler.reconcile(ctx, NS, names.approval_request(name))
    return ctx.store.sessions.get((NS, name)) or {}


def status(s: dict[str, Any]) -> dict[str, Any]:
    return s.get("status") or {}


def decide(api: MemoryKubeApi, name: str, decision: str, by: str, **extra: Any) -> None:
    spec = {"decision": decision, "decidedBy": by, **extra}
    api.change(APPROVALS, NS, names.approval_request(name), {"spec": spec})


@pytest.fixture
def world() -> tuple[Context, MemoryKubeApi]:
    return memory_context(config())


# --------------------------------------------------------------------------- admission
@pytest.mark.parametrize(
    ("spec", "phase", "risk"),
    [
        ({"sandbox": "read-only"}, "Running", "low"),
        ({"sandbox": "isolated"}, "AwaitingApproval", "medium"),
        ({"sandbox": "full-access"}, "AwaitingApproval", "high"),
        (CRITICAL, "AwaitingApproval", "critical"),
        ({"sandbox": "read-only", "mode": "ci"}, "AwaitingApproval", "medium"),
    ],
)
async def test_admission_by_risk(world: Any, spec: dict[str, Any], phase: str, risk: str) -> None:
    ctx, api = world
    created = api.session(NS, "s", {"requestedBy": "carol", **spec})
    s = await settle(ctx, "s")
    assert (status(s)["phase"], status(s)["riskLevel"]) == (phase, risk)
    pods = api.of_kind(PODS)
    if phase == "Running":
        assert [p["metadata"]["name"] for p in pods] == ["s-runner-1"]
        assert [p["metadata"]["name"] for p in api.of_kind(POLICIES)] == ["s-egress"]
    else:
        assert pods == []
        approval = api.get(APPROVALS, NS, "s-approval")
        assert approval is not None
        assert approval["spec"]["sessionUid"] == created["metadata"]["uid"]
        assert approval["spec"]["specDigest"] == binding.spec_digest(created["spec"])
        assert approval["status"]["phase"] == "Pending"


# --------------------------------------------------------------------------- approvals
@pytest.mark.parametrize(
    ("decision", "by", "extra", "phase", "reason"),
    [
        ("Approved", "alice", {}, "Running", "PodCreated"),
        ("Denied", "alice", {"reason": "no"}, "Denied", "Denied"),
        ("Approved", "carol", {}, "AwaitingApproval", "ApprovalRequired"),  # own request: ignored
    ],
)
async def test_decisions(
    world: Any, decision: str, by: str, extra: dict[str, Any], phase: str, reason: str
) -> None:
    ctx, api = world
    api.session(NS, "s", {"requestedBy": "carol", "sandbox": "full-access"})
    await settle(ctx, "s")
    decide(api, "s", decision, by, **extra)
    s = await settle(ctx, "s")
    assert (status(s)["phase"], status(s)["reason"]) == (phase, reason)
    assert bool(api.of_kind(PODS)) is (phase == "Running")


async def test_a_decision_typed_into_the_create_is_not_a_decision(world: Any) -> None:
    ctx, api = world
    api.session(NS, "s", {"requestedBy": "carol", "sandbox": "full-access"})
    session = ctx.store.sessions[(NS, "s")]
    planted = session_reconciler._approval_body(  # what the operator would make, plus a decision
        ctx, session, session_reconciler.CodexSessionSpec.model_validate(session["spec"]), "high"
    )
    planted["spec"].update(decision="Approved", decidedBy="alice")
    api.put(APPROVALS, NS, planted)  # generation 1: set on create
    s = await settle(ctx, "s")
    assert status(s)["phase"] == "AwaitingApproval" and api.of_kind(PODS) == []
    assert "set when the request was created" in api.get(APPROVALS, NS, "s-approval")["status"]["message"]


async def test_an_unanswered_request_expires_and_counts_as_no(world: Any) -> None:
    ctx, api = world
    api.session(NS, "s", {"requestedBy": "carol", "sandbox": "full-access"})
    await settle(ctx, "s")
    api.change(APPROVALS, NS, "s-approval", {"spec": {"expiresAt": "2020-01-01T00:00:00Z"}})
    s = await settle(ctx, "s")
    assert (status(s)["phase"], status(s)["reason"]) == ("Denied", "ApprovalExpired")


async def test_an_approval_for_another_object_or_spec_never_counts(world: Any) -> None:
    ctx, api = world
    api.session(NS, "s", {"requestedBy": "carol", **CRITICAL})
    await settle(ctx, "s")
    decide(api, "s", "Approved", "alice")
    # the approval is rewritten to another spec (a path admission closes; the operator stands alone)
    api.change(APPROVALS, NS, "s-approval", {"spec": {"specDigest": "sha256:" + "1" * 64}})
    s = await settle(ctx, "s")
    assert (status(s)["phase"], status(s)["reason"]) == ("Failed", "ApprovalMismatch")
    assert api.of_kind(PODS) == []


@pytest.mark.parametrize("forged", ["Queued", "Running"])
async def test_a_forged_phase_runs_nothing_without_a_bound_approval(world: Any, forged: str) -> None:
    ctx, api = world
    api.session(NS, "s", {"requestedBy": "carol", **CRITICAL})
    await settle(ctx, "s")
    api.change(SESSIONS, NS, "s", {"status": {"phase": forged, "podName": "s-runner-1"}})
    s = await settle(ctx, "s")
    assert status(s)["phase"] == "Failed" and status(s)["reason"] in ("NotApproved", "PodDeleted")
    assert api.of_kind(PODS) == []


# --------------------------------------------------------------------------- pods
@pytest.mark.parametrize(
    ("outcome", "phase", "reason"),
    [
        ("success", "Succeeded", "Completed"),
        ("turn-failed", "Failed", "TurnFailed"),
        ("deadline", "TimedOut", "ActiveDeadlineExceeded"),
        ("evicted-twice", "Failed", "PodEvicted"),
        ("deleted-twice", "Failed", "PodDeleted"),
    ],
)
async def test_pod_outcomes(world: Any, outcome: str, phase: str, reason: str) -> None:
    ctx, api = world
    api.session(NS, "s", {"requestedBy": "carol"})
    await settle(ctx, "s")
    if outcome == "success":
        api.finish_pod(NS, "s-runner-1", result("the answer"))
    elif outcome == "turn-failed":
        failed = RunnerResult(outcome="turn_failed", errors=["model said no"], exit_code=1)
        api.finish_pod(NS, "s-runner-1", failed, exit_code=1)
    elif outcome == "deadline":
        api.change(PODS, NS, "s-runner-1", {"status": {"phase": "Failed", "reason": "DeadlineExceeded"}})
    else:
        for attempt in (1, 2):  # max_pod_attempts = 2
            pod = f"s-runner-{attempt}"
            if outcome == "evicted-twice":
                api.change(PODS, NS, pod, {"status": {"phase": "Failed", "reason": "Evicted"}})
            else:
                await api.delete_pod(NS, pod)
            await settle(ctx, "s")
    s = await settle(ctx, "s")
    assert (status(s)["phase"], status(s)["reason"]) == (phase, reason), status(s)
    if phase == "Succeeded":
        assert status(s)["response"] == "the answer" and status(s)["usage"]["inputTokens"] == 100
    assert ctx.gate.holders == set()  # the slot is free again


@pytest.mark.parametrize("stage", ["AwaitingApproval", "Queued", "Running"])
@pytest.mark.parametrize("annotation", [names.ANNOTATION_CANCEL, names.ANNOTATION_CLEANUP])
async def test_cancel_and_cleanup_in_every_live_phase(world: Any, stage: str, annotation: str) -> None:
    ctx, api = world
    if stage == "Queued":
        for hog in ("h1", "h2"):
            api.session(NS, hog, {"requestedBy": "bob"})
            await settle(ctx, hog)
    spec = {"sandbox": "full-access"} if stage == "AwaitingApproval" else {}
    api.session(NS, "s", {"requestedBy": "carol", **spec})
    assert status(await settle(ctx, "s"))["phase"] == stage
    api.change(SESSIONS, NS, "s", {"metadata": {"annotations": {annotation: "carol"}}})
    s = await settle(ctx, "s")
    if annotation == names.ANNOTATION_CLEANUP:
        assert (SESSIONS, NS, "s") in api.deleted and s == {}
    else:
        assert status(s)["phase"] == "Cancelled"
    assert "s-runner-1" not in {p["metadata"]["name"] for p in api.of_kind(PODS)}


async def test_the_turn_timeout_deletes_the_pod(world: Any) -> None:
    ctx, api = world
    api.session(NS, "s", {"requestedBy": "carol", "timeoutSeconds": 60})
    await settle(ctx, "s")
    api.change(SESSIONS, NS, "s", {"status": {"timings": {"startedAt": "2020-01-01T00:00:00Z"}}})
    s = await settle(ctx, "s")
    assert (status(s)["phase"], status(s)["reason"]) == ("TimedOut", "Timeout")
    assert api.of_kind(PODS) == []


# --------------------------------------------------------------------------- the gate
async def test_queue_order_and_per_user_share() -> None:
    ctx, api = memory_context(config().model_copy(update={}))
    ctx.gate.per_user = 1
    for name, user in (("m1", "mallory"), ("m2", "mallory"), ("a1", "alice")):
        api.session(NS, name, {"requestedBy": user})
        await settle(ctx, name)
    phases = {n: status(ctx.store.sessions[(NS, n)])["phase"] for n in ("m1", "m2", "a1")}
    assert phases == {"m1": "Running", "m2": "Queued", "a1": "Running"}
    api.finish_pod(NS, "m1-runner-1", result())
    await settle(ctx, "m1")
    assert status(await settle(ctx, "m2"))["phase"] == "Running"


# --------------------------------------------------------------------------- ownership
@pytest.mark.parametrize(
    ("plant", "age", "phase", "reason"),
    [
        ("orphan-policy", timedelta(0), "Failed", "ForeignObject"),
        ("stale-policy", timedelta(0), "Pending", "WaitingForStaleObject"),
        ("stale-policy", timedelta(minutes=5), "Failed", "ForeignObject"),
        ("foreign-claim", timedelta(0), "Failed", "WorkspaceForbidden"),
    ],
)
async def test_objects_under_the_sessions_names_are_adopted_only_when_its_own(
    world: Any, plant: str, age: timedelta, phase: str, reason: str
) -> None:
    ctx, api = world
    if plant == "foreign-claim":
        api.put(
            CLAIMS,
            NS,
            {
                "metadata": {
                    "name": "s-workspace",
                    "annotations": {names.ANNOTATION_REQUESTER: "alice", names.ANNOTATION_CONVERSATION: "s"},
                }
            },
        )
        spec = {"workspace": {"type": "persistent"}}
    else:
        refs = [names.owner_reference("CodexSession", "s", "gone-uid")] if plant == "stale-policy" else []
        api.put(POLICIES, NS, {"metadata": {"name": "s-egress", "ownerReferences": refs}, "spec": {}})
        spec = {}
    api.session(NS, "s", {"requestedBy": "mallory", **spec}, age=age)
    s = await settle(ctx, "s")
    assert (status(s)["phase"], status(s)["reason"]) == (phase, reason), status(s)
    assert api.of_kind(PODS) == []


async def test_a_workspace_above_the_maximum_is_refused_first(world: Any) -> None:
    ctx, api = world
    api.session(
        NS,
        "s",
        {
            "requestedBy": "carol",
            "sandbox": "full-access",
            "workspace": {"type": "persistent", "size": "1Ti"},
        },
    )
    s = await settle(ctx, "s")
    assert (status(s)["phase"], status(s)["reason"]) == ("Failed", "WorkspaceTooLarge")
    assert api.of_kind(APPROVALS) == [] and api.of_kind(CLAIMS) == []


async def test_a_pod_that_ran_before_its_session_was_running_is_seen_at_once(world: Any) -> None:
    """An operator SIGKILLed between creating the pod and writing Running: its
    successor finds the pod already finished (all its events seen while the
    session was not Running yet) and must not wait for the turn's timeout."""
    ctx, api = world
    api.session(NS, "s", {"requestedBy": "carol"})
    await settle(ctx, "s", rounds=1)
    assert status(api.get(SESSIONS, NS, "s"))["phase"] == "Running"
    api.finish_pod(NS, "s-runner-1", result("finished while nobody looked"))
    # As the killed operator left it: the pod exists, the session never said Running.
    api.change(SESSIONS, NS, "s", {"status": {"phase": "Pending", "reason": "Admitted"}})
    again = await session_reconciler.reconcile(ctx, NS, "s")
    assert status(api.get(SESSIONS, NS, "s"))["phase"] == "Running"
    assert again == 0.0, again  # not the 300 s timeout
    await session_reconciler.reconcile(ctx, NS, "s")
    s = api.get(SESSIONS, NS, "s")
    assert (status(s)["phase"], status(s)["response"]) == ("Succeeded", "finished while nobody looked")
    assert [p["metadata"]["name"] for p in api.of_kind(PODS)] == ["s-runner-1"]
