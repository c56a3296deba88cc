"""The CodexSession lifecycle on the real control plane, with the real
operator process running as its own ServiceAccount. The tests play the node:
they set the runner pod's status the way a kubelet would."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from kubernetes import client

from codex_api import names
from codex_api.common import GROUP, VERSION
from codex_api.result import RunnerResult
from codex_api.session import Usage
from codex_devenv.admission_kit import ScopedAdmission
from codex_devenv.process import wait_for
from codex_devenv.testkit import (
    create_session,
    finish_pod,
    get_session,
    phase_is,
    session_body,
    set_pod_running,
    wait_session,
)


def _result(**kw: Any) -> RunnerResult:
    base = {
        "outcome": "completed",
        "thread_id": "thread-123",
        "final_message": "def factorial(n): ...",
        "usage": Usage(input_tokens=1200, cached_input_tokens=200, output_tokens=300, reasoning_tokens=50),
        "commands": 2,
        "file_changes": 1,
    }
    return RunnerResult(**{**base, **kw})


def test_read_only_session_runs_to_success(kube_client: Any, namespace: str, run_operator: Any) -> None:
    op = run_operator()
    create_session(kube_client, namespace, "s1", sandbox="read-only")
    s = wait_session(kube_client, namespace, "s1", phase_is("Running"))
    status = s["status"]
    assert status["riskLevel"] == "low"
    assert status["model"] == "gpt-5-codex"
    assert status["podName"] == names.runner_pod("s1", 1)
    assert status["conversationId"] == "s1"
    assert status["cost"]["estimatedUsd"] > 0
    assert {c["type"]: c["status"] for c in status["conditions"]} == {"Approved": "True", "Scheduled": "True"}
    assert status["observedGeneration"] == s["metadata"]["generation"]

    core = client.CoreV1Api(kube_client)
    pod = core.read_namespaced_pod(status["podName"], namespace)
    assert pod.metadata.owner_references[0].name == "s1" and pod.metadata.owner_references[0].controller
    policies = client.NetworkingV1Api(kube_client).list_namespaced_network_policy(namespace).items
    assert [p.metadata.name for p in policies] == [names.network_policy("s1")]

    set_pod_running(kube_client, namespace, status["podName"])
    finish_pod(kube_client, namespace, status["podName"], _result())
    s = wait_session(kube_client, namespace, "s1", phase_is("Succeeded"))
    status = s["status"]
    assert status["response"] == "def factorial(n): ..."
    assert status["threadId"] == "thread-123"
    assert status["usage"] == {
        "inputTokens": 1200,
        "cachedInputTokens": 200,
        "outputTokens": 300,
        "reasoningTokens": 50,
    }
    # 1000 uncached input at 1.25/M + 200 cached at 0.125/M + 300 output at 10/M
    assert abs(status["cost"]["actualUsd"] - (1000 * 1.25 + 200 * 0.125 + 300 * 10) / 1e6) < 1e-9
    assert status["cost"]["providers"][0]["provider"] == "openai"
    assert status["timings"]["completedAt"] and status["timings"]["durationSeconds"] >= 0
    assert status["reason"] == "Completed"

    def reasons() -> list[str]:
        events = core.list_namespaced_event(namespace, field_selector="involvedObject.name=s1").items
        return sorted(str(e.reason) for e in events)

    # The event of a transition is posted right after its status write, not with it.
    wait_for(lambda: len(reasons()) >= 2, timeout=15, what="the transition events")
    assert reasons() == ["Started", "Succeeded"]  # one per transition, nothing else
    assert op.metric("codex_mcp_tokens_consumed_total", 'type="output"') == 300.0


# --------------------------------------------------------------------------- approvals
def _approval(kube_client: Any, namespace: str, name: str) -> dict[str, Any]:
    return dict(
        client.CustomObjectsApi(kube_client).get_namespaced_custom_object(
            GROUP, VERSION, namespace, "approvalrequests", name
        )
    )


def _decide(control_plane: Any, user: str, namespace: str, name: str, patch: dict[str, Any]) -> Any:
    return control_plane.kubectl(
        "patch",
        "cxar",
        name,
        "-n",
        namespace,
        "--type",
        "merge",
        "-p",
        json.dumps({"spec": patch}),
        user=user,
        check=False,
    )


@pytest.fixture
def policies(control_plane: Any, client_for: Any, namespace: str) -> Any:
    installed = ScopedAdmission(control_plane, namespace).install(client_for)
    yield installed
    installed.uninstall()


def test_high_risk_session_waits_for_an_approver_who_is_not_the_requester(
    control_plane: Any, kube_client: Any, client_for: Any, namespace: str, run_operator: Any, policies: Any
) -> None:
    run_operator()
    secret_prompt = "Deploy with OPENAI_API_KEY=sk-proj-abcdefghijklmnopqrstuvwxyz0123 please"
    client.CustomObjectsApi(client_for("carol")).create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "codexsessions",
        session_body(
            "risky",
            sandbox="full-access",
            prompt=secret_prompt,
            requestedBy="carol",
            businessJustification="hotfix for prod",
        ),
    )
    s = wait_session(kube_client, namespace, "risky", phase_is("AwaitingApproval"))
    assert s["status"]["riskLevel"] == "high"
    ar_name = s["status"]["approvalRef"]
    assert f"kubectl patch cxar {ar_name}" in s["status"]["message"]
    ar = _approval(kube_client, namespace, ar_name)
    assert ar["metadata"]["ownerReferences"][0]["name"] == "risky"
    assert ar["spec"]["requestedBy"] == "carol" and ar["spec"]["riskLevel"] == "high"
    assert ar["spec"]["businessJustification"] == "hotfix for prod"
    assert "sk-proj-" not in json.dumps(ar) and "[REDACTED]" in ar["spec"]["arguments"]["prompt"]
    assert (
        client.CoreV1Api(kube_client).list_namespaced_pod(namespace).items == []
    )  # unanswered: nothing runs

    denied_self = _decide(
        control_plane, "carol", namespace, ar_name, {"decision": "Approved", "decidedBy": "carol"}
    )
    assert denied_self.returncode != 0 and "cannot decide their own request" in denied_self.stderr
    outsider = _decide(
        control_plane, "mallory", namespace, ar_name, {"decision": "Approved", "decidedBy": "mallory"}
    )
    assert outsider.returncode != 0 and "approver groups" in outsider.stderr
    assert "decision" not in _approval(kube_client, namespace, ar_name)["spec"]

    ok = _decide(control_plane, "bob", namespace, ar_name, {"decision": "Approved", "decidedBy": "bob"})
    assert ok.returncode == 0, ok.stderr
    s = wait_session(kube_client, namespace, "risky", phase_is("Running"))
    ar = _approval(kube_client, namespace, ar_name)
    assert ar["status"]["phase"] == "Approved" and ar["status"]["decidedBy"] == "bob"
    assert {c["type"]: c["reason"] for c in s["status"]["conditions"]}["Approved"] == "Approved"
    finish_pod(kube_client, namespace, s["status"]["podName"], _result())
    wait_session(kube_client, namespace, "risky", phase_is("Succeeded"))


def test_denial_ends_the_session(
    control_plane: Any, kube_client: Any, client_for: Any, namespace: str, run_operator: Any, policies: Any
) -> None:
    run_operator()
    client.CustomObjectsApi(client_for("carol")).create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "codexsessions",
        session_body("iso", sandbox="isolated", requestedBy="carol"),
    )
    s = wait_session(kube_client, namespace, "iso", phase_is("AwaitingApproval"))
    assert s["status"]["riskLevel"] == "medium"
    out = _decide(
        control_plane,
        "alice",
        namespace,
        s["status"]["approvalRef"],
        {"decision": "Denied", "reason": "not on prod data", "decidedBy": "alice"},
    )
    assert out.returncode == 0, out.stderr
    s = wait_session(kube_client, namespace, "iso", phase_is("Denied"))
    assert s["status"]["reason"] == "Denied"
    assert s["status"]["message"] == "denied by alice: not on prod data"
    assert client.CoreV1Api(kube_client).list_namespaced_pod(namespace).items == []


def test_unanswered_request_expires_and_denies(kube_client: Any, namespace: str, run_operator: Any) -> None:
    run_operator(approval_timeout=10)
    create_session(kube_client, namespace, "late", sandbox="full-access")
    s = wait_session(kube_client, namespace, "late", phase_is("AwaitingApproval"))
    s = wait_session(kube_client, namespace, "late", phase_is("Denied"), timeout=30)
    assert s["status"]["reason"] == "ApprovalExpired"
    assert _approval(kube_client, namespace, s["status"]["approvalRef"])["status"]["phase"] == "Expired"
    assert client.CoreV1Api(kube_client).list_namespaced_pod(namespace).items == []


def test_decision_without_a_verified_decider_is_never_approval(
    kube_client: Any, namespace: str, run_operator: Any
) -> None:
    # No admission policy in this namespace: an admin can set a bare decision.
    # The operator still refuses to treat it as an approval.
    run_operator()
    create_session(kube_client, namespace, "bare", sandbox="full-access")
    s = wait_session(kube_client, namespace, "bare", phase_is("AwaitingApproval"))
    ar_name = s["status"]["approvalRef"]
    client.CustomObjectsApi(kube_client).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "approvalrequests", ar_name, {"spec": {"decision": "Approved"}}
    )
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        ar = _approval(kube_client, namespace, ar_name)
        if (ar.get("status") or {}).get("message", "").startswith("decision ignored"):
            break
        time.sleep(0.1)
    assert ar["status"]["phase"] == "Pending"
    assert get_session(kube_client, namespace, "bare")["status"]["phase"] == "AwaitingApproval"


# --------------------------------------------------------------------------- limits and time
def _pods(kube_client: Any, namespace: str) -> list[Any]:
    return client.CoreV1Api(kube_client).list_namespaced_pod(namespace).items


def test_sessions_queue_at_the_concurrency_limit_in_order(
    kube_client: Any, namespace: str, run_operator: Any
) -> None:
    run_operator(limit=2)
    for name in ("q1", "q2", "q3", "q4"):
        create_session(kube_client, namespace, name)
        time.sleep(1.1)  # distinct creationTimestamps: FIFO is by creation time
    wait_session(kube_client, namespace, "q4", phase_is("Queued"))
    phases = {n: get_session(kube_client, namespace, n)["status"]["phase"] for n in ("q1", "q2", "q3", "q4")}
    assert phases == {"q1": "Running", "q2": "Running", "q3": "Queued", "q4": "Queued"}
    assert get_session(kube_client, namespace, "q3")["status"]["reason"] == "ConcurrencyLimit"
    assert len(_pods(kube_client, namespace)) == 2
    finish_pod(kube_client, namespace, names.runner_pod("q1", 1), _result())
    wait_session(kube_client, namespace, "q3", phase_is("Running"))
    assert get_session(kube_client, namespace, "q4")["status"]["phase"] == "Queued"
    assert len(_pods(kube_client, namespace)) == 3


def test_timeout_deletes_the_pod_and_ends_timed_out(
    kube_client: Any, namespace: str, run_operator: Any
) -> None:
    run_operator()
    create_session(kube_client, namespace, "slow", timeoutSeconds=10)
    s = wait_session(kube_client, namespace, "slow", phase_is("Running"))
    pod = client.CoreV1Api(kube_client).read_namespaced_pod(s["status"]["podName"], namespace)
    assert pod.spec.active_deadline_seconds == 40  # the second guard: timeout + 30 s
    set_pod_running(kube_client, namespace, s["status"]["podName"])
    s = wait_session(kube_client, namespace, "slow", phase_is("TimedOut"), timeout=20)
    assert s["status"]["reason"] == "Timeout" and "timeoutSeconds=10" in s["status"]["message"]
    remaining = [p for p in _pods(kube_client, namespace) if not p.metadata.deletion_timestamp]
    assert remaining == []


def test_active_deadline_of_the_pod_ends_timed_out(
    kube_client: Any, namespace: str, run_operator: Any
) -> None:
    run_operator()
    s = create_session(kube_client, namespace, "deadline")
    s = wait_session(kube_client, namespace, "deadline", phase_is("Running"))
    finish_pod(
        kube_client,
        namespace,
        s["status"]["podName"],
        None,
        exit_code=137,
        phase="Failed",
        reason="DeadlineExceeded",
    )
    s = wait_session(kube_client, namespace, "deadline", phase_is("TimedOut"))
    assert s["status"]["reason"] == "ActiveDeadlineExceeded"


def test_ttl_removes_finished_sessions_and_their_children(
    kube_client: Any, namespace: str, run_operator: Any
) -> None:
    run_operator()
    create_session(kube_client, namespace, "brief", ttlSecondsAfterFinished=1)
    s = wait_session(kube_client, namespace, "brief", phase_is("Running"))
    finish_pod(kube_client, namespace, s["status"]["podName"], _result())
    api = client.CustomObjectsApi(kube_client)
    net = client.NetworkingV1Api(kube_client)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        sessions = api.list_namespaced_custom_object(GROUP, VERSION, namespace, "codexsessions")["items"]
        if (
            not sessions
            and not _pods(kube_client, namespace)
            and not net.list_namespaced_network_policy(namespace).items
        ):
            return
        time.sleep(0.2)
    pytest.fail("the session or its children outlived ttlSecondsAfterFinished")


# --------------------------------------------------------------------------- replies
def test_reply_continues_the_conversation(kube_client: Any, namespace: str, run_operator: Any) -> None:
    run_operator()
    create_session(
        kube_client,
        namespace,
        "turn1",
        sandbox="isolated",
        workspace={"type": "persistent"},
        timeoutSeconds=300,
    )
    # isolated needs approval under the seed config; this namespace has no policy, so the admin decides.
    s = wait_session(kube_client, namespace, "turn1", phase_is("AwaitingApproval"))
    client.CustomObjectsApi(kube_client).patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "approvalrequests",
        s["status"]["approvalRef"],
        {"spec": {"decision": "Approved", "decidedBy": "alice"}},
    )
    s = wait_session(kube_client, namespace, "turn1", phase_is("Running"))
    finish_pod(kube_client, namespace, s["status"]["podName"], _result(thread_id="thread-abc"))
    wait_session(kube_client, namespace, "turn1", phase_is("Succeeded"))

    create_session(kube_client, namespace, "turn2", resumeFrom="turn1", workspace={"type": "persistent"})
    s = wait_session(kube_client, namespace, "turn2", phase_is("Running"))
    assert s["status"]["conversationId"] == "turn1"
    pod = client.CoreV1Api(kube_client).read_namespaced_pod(s["status"]["podName"], namespace)
    args = pod.spec.containers[0].args
    assert args[args.index("--resume-thread-id") + 1] == "thread-abc"
    assert pod.metadata.labels[names.LABEL_CONVERSATION] == "turn1"
    claim_names = {
        v.persistent_volume_claim.claim_name for v in pod.spec.volumes if v.persistent_volume_claim
    }
    assert claim_names == {names.workspace_claim("turn1")}
    claim = client.CoreV1Api(kube_client).read_namespaced_persistent_volume_claim(
        names.workspace_claim("turn1"), namespace
    )
    assert sorted(o.name for o in claim.metadata.owner_references) == ["turn1", "turn2"]


@pytest.mark.parametrize(
    ("parent_setup", "spec", "reason"),
    [
        (None, {"resumeFrom": "ghost"}, "ResumeParentNotFound"),
        ("failed", {"resumeFrom": "parent"}, "ResumeParentFailed"),
        ("succeeded", {"resumeFrom": "parent", "requestedBy": "mallory"}, "ResumeForbidden"),
        (
            "succeeded",
            {"resumeFrom": "parent", "workspace": {"type": "scratch"}},
            "ResumeNeedsPersistentWorkspace",
        ),
    ],
    ids=["missing", "failed-parent", "other-requester", "scratch-workspace"],
)
def test_reply_is_refused_with_a_clear_reason(
    kube_client: Any,
    namespace: str,
    run_operator: Any,
    parent_setup: str | None,
    spec: dict[str, Any],
    reason: str,
) -> None:
    run_operator()
    if parent_setup:
        create_session(kube_client, namespace, "parent", workspace={"type": "persistent"})
        s = wait_session(kube_client, namespace, "parent", phase_is("Running"))
        if parent_setup == "failed":
            finish_pod(
                kube_client, namespace, s["status"]["podName"], _result(outcome="turn_failed"), exit_code=1
            )
        else:
            finish_pod(kube_client, namespace, s["status"]["podName"], _result())
        wait_session(kube_client, namespace, "parent", phase_is("Succeeded", "Failed"))
    spec = {"workspace": {"type": "persistent"}, **spec}
    create_session(kube_client, namespace, "reply", **spec)
    s = wait_session(kube_client, namespace, "reply", phase_is("Failed"))
    assert s["status"]["reason"] == reason
    assert not [p for p in _pods(kube_client, namespace) if p.metadata.name.startswith("reply-")]


# --------------------------------------------------------------------------- failures
def test_failed_turn_reports_the_runner_errors(kube_client: Any, namespace: str, run_operator: Any) -> None:
    run_operator()
    create_session(kube_client, namespace, "bad")
    s = wait_session(kube_client, namespace, "bad", phase_is("Running"))
    finish_pod(
        kube_client,
        namespace,
        s["status"]["podName"],
        _result(outcome="turn_failed", errors=["model returned HTTP 500"], exit_code=1),
        exit_code=1,
    )
    s = wait_session(kube_client, namespace, "bad", phase_is("Failed"))
    assert s["status"]["reason"] == "TurnFailed" and "HTTP 500" in s["status"]["message"]
    assert s["status"]["usage"]["inputTokens"] == 1200  # usage still counted


def test_runner_without_a_result_fails_with_the_exit_reason(
    kube_client: Any, namespace: str, run_operator: Any
) -> None:
    run_operator()
    create_session(kube_client, namespace, "oom")
    s = wait_session(kube_client, namespace, "oom", phase_is("Running"))
    finish_pod(kube_client, namespace, s["status"]["podName"], None, exit_code=137, termination_message="")
    s = wait_session(kube_client, namespace, "oom", phase_is("Failed"))
    assert s["status"]["reason"] == "NoResult" and "exit code 137" in s["status"]["message"]


def test_evicted_pod_is_retried_then_fails_visibly(
    kube_client: Any, namespace: str, run_operator: Any
) -> None:
    run_operator(attempts=2)
    create_session(kube_client, namespace, "evict")
    s = wait_session(kube_client, namespace, "evict", phase_is("Running"))
    finish_pod(
        kube_client, namespace, s["status"]["podName"], None, exit_code=137, phase="Failed", reason="Evicted"
    )
    s = wait_session(kube_client, namespace, "evict", lambda s: s["status"].get("attempts") == 2)
    assert s["status"]["podName"] == names.runner_pod("evict", 2) and s["status"]["reason"] == "PodRecreated"
    client.CoreV1Api(kube_client).delete_namespaced_pod(
        names.runner_pod("evict", 2), namespace, grace_period_seconds=0
    )
    s = wait_session(kube_client, namespace, "evict", phase_is("Failed"))
    assert s["status"]["reason"] == "PodDeleted" and "gave up after 2 attempt(s)" in s["status"]["message"]


@pytest.mark.parametrize("stage", ["Running", "Queued", "AwaitingApproval"])
def test_cancel_annotation_ends_the_session_and_its_pod(
    kube_client: Any, namespace: str, run_operator: Any, stage: str
) -> None:
    run_operator(limit=1)
    if stage == "Queued":
        create_session(kube_client, namespace, "hog")
        wait_session(kube_client, namespace, "hog", phase_is("Running"))
    spec = {"sandbox": "full-access"} if stage == "AwaitingApproval" else {}
    create_session(kube_client, namespace, "victim", **spec)
    wait_session(kube_client, namespace, "victim", phase_is(stage))
    client.CustomObjectsApi(kube_client).patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "codexsessions",
        "victim",
        {"metadata": {"annotations": {names.ANNOTATION_CANCEL: "wrong repository"}}},
    )
    s = wait_session(kube_client, namespace, "victim", phase_is("Cancelled"))
    assert (
        s["status"]["reason"] == "CancelRequested" and s["status"]["message"] == "cancelled: wrong repository"
    )
    live = [
        p
        for p in _pods(kube_client, namespace)
        if p.metadata.name.startswith("victim-") and not p.metadata.deletion_timestamp
    ]
    assert live == []


@pytest.mark.parametrize("stage", ["Running", "Succeeded"])
def test_cleanup_annotation_removes_the_session_now(
    kube_client: Any, namespace: str, run_operator: Any, stage: str
) -> None:
    """codex-cleanup's hook: a running session is cancelled first; a finished
    one is deleted at once although its TTL is an hour away."""
    run_operator()
    create_session(kube_client, namespace, "old", ttlSecondsAfterFinished=3600)
    s = wait_session(kube_client, namespace, "old", phase_is("Running"))
    if stage == "Succeeded":
        finish_pod(kube_client, namespace, s["status"]["podName"], _result())
        wait_session(kube_client, namespace, "old", phase_is("Succeeded"))
    api = client.CustomObjectsApi(kube_client)
    api.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "codexsessions",
        "old",
        {"metadata": {"annotations": {names.ANNOTATION_CLEANUP: "alice"}}},
    )
    # The session goes at once; its pod follows through garbage collection
    # (slow only while the collector is still discovering the CRD).
    wait_for(
        lambda: not api.list_namespaced_custom_object(GROUP, VERSION, namespace, "codexsessions")["items"],
        timeout=10,
        what="the session to go after its cleanup request",
    )
    wait_for(
        lambda: not [p for p in _pods(kube_client, namespace) if not p.metadata.deletion_timestamp],
        timeout=90,
        what="the runner pod to follow its session",
    )
    if stage == "Running":
        # It was cancelled on the way out, and the Event says who asked.
        events = client.CoreV1Api(kube_client).list_namespaced_event(
            namespace, field_selector="involvedObject.name=old"
        )
        assert any("removal requested by alice" in (e.message or "") for e in events.items), [
            e.message for e in events.items
        ]


def test_reply_waits_for_a_running_parent(kube_client: Any, namespace: str, run_operator: Any) -> None:
    run_operator()
    create_session(kube_client, namespace, "first", workspace={"type": "persistent"})
    s = wait_session(kube_client, namespace, "first", phase_is("Running"))
    create_session(kube_client, namespace, "second", resumeFrom="first", workspace={"type": "persistent"})
    w = wait_session(
        kube_client,
        namespace,
        "second",
        lambda x: (x.get("status") or {}).get("reason") == "WaitingForParent",
    )
    assert w["status"]["phase"] == "Pending" and "first" in w["status"]["message"]
    finish_pod(kube_client, namespace, s["status"]["podName"], _result(thread_id="t-first"))
    s2 = wait_session(kube_client, namespace, "second", phase_is("Running"))
    assert s2["status"]["conversationId"] == "first"
