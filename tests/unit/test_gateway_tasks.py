"""codex_gateway.tasks: a CodexSession as the MCP Tasks extension's Task (the
live protocol is tests/integration/test_gateway_tasks.py)."""

from __future__ import annotations

from typing import Any

import pytest

from codex_gateway.tasks import task_of, tool_result


def session(phase: str | None, **status: Any) -> dict[str, Any]:
    conditions = [
        {
            "type": "Approved",
            "status": "True",
            "reason": "AutoApproved",
            "message": "",
            "lastTransitionTime": "2026-12-06T10:00:05Z",
        },
        {
            "type": "Scheduled",
            "status": "True",
            "reason": "PodCreated",
            "message": "",
            "lastTransitionTime": "2026-12-06T10:00:07Z",
        },
    ]
    return {
        "metadata": {"name": "cx-1", "namespace": "team", "creationTimestamp": "2026-12-06T10:00:00Z"},
        "spec": {"prompt": "go", "requestedBy": "alice"},
        "status": {"phase": phase, "conditions": conditions, **status} if phase else {},
    }


@pytest.mark.parametrize(
    ("phase", "status"),
    [
        (None, "working"),
        ("Pending", "working"),
        ("AwaitingApproval", "working"),
        ("Queued", "working"),
        ("Running", "working"),
        ("Succeeded", "completed"),
        ("Failed", "completed"),
        ("TimedOut", "completed"),
        ("Denied", "completed"),
        ("Cancelled", "cancelled"),
    ],
)
def test_each_phase_is_a_task_status(phase: str | None, status: str) -> None:
    task = task_of(session(phase, message="m"), ttl_seconds=600)
    assert task["status"] == status and task["taskId"] == "cx-1"
    assert task["createdAt"] == "2026-12-06T10:00:00Z" and task["ttlMs"] == 600_000
    assert ("result" in task) == (status == "completed")
    assert "ttl" not in task and "pollInterval" not in task  # the 2025 names


def test_a_completed_task_carries_the_blocking_call_s_result() -> None:
    done = session("Failed", message="the model said no", reason="CodexFailed")
    task = task_of(done, ttl_seconds=60)
    assert task["lastUpdatedAt"] == "2026-12-06T10:00:07Z"
    assert task["result"] == tool_result(done)
    assert task["result"]["isError"] is False  # a failed turn is a tool result, not a protocol error
    assert task["result"]["structuredContent"]["status"] == "failed"
    waiting = task_of(
        session("AwaitingApproval", message="approve with: kubectl patch cxar x"), ttl_seconds=60
    )
    assert "kubectl patch cxar" in waiting["statusMessage"]


def test_the_session_s_own_ttl_is_the_task_s() -> None:
    s = session("Succeeded")
    s["spec"]["ttlSecondsAfterFinished"] = 77
    assert task_of(s, ttl_seconds=600)["ttlMs"] == 77_000


# -- a per-action turn's input (codex_gateway.task_inputs) ------------------------------


def action_request(
    name: str = "cx-1-action-0123456789ab",
    risk: str = "medium",
    offered: tuple[str, ...] = ("accept", "acceptForSession", "decline"),
    **spec: Any,
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "team",
            "creationTimestamp": "2026-12-06T10:00:09Z",
            "resourceVersion": "42",
        },
        "spec": {
            "sessionRef": "cx-1",
            "sessionUid": "uid-1",
            "requestedBy": "alice",
            "riskLevel": risk,
            "action": {
                "kind": "command",
                "command": "/bin/bash -lc 'touch x\x1b[2K'",
                "cwd": "/workspace",
                "offered": list(offered),
                "hiddenCharacters": True,
            },
            **spec,
        },
    }


def per_action_session() -> dict[str, Any]:
    s = session("Running", approvals="per-action")
    s["metadata"]["uid"] = "uid-1"
    return s


def test_only_actions_a_person_still_decides_wait() -> None:
    from codex_gateway.task_inputs import waiting_actions

    mine = action_request()
    decided = action_request("d", decision="Denied")
    by_policy = action_request("p", policyDecision={"decision": "Approved"})
    expired = {**action_request("e"), "status": {"phase": "Expired"}}
    other_session = action_request("o", sessionUid="uid-2")
    per_turn = action_request("t")
    del per_turn["spec"]["action"]
    found = waiting_actions(
        per_action_session(), [decided, by_policy, expired, other_session, per_turn, mine]
    )
    assert [a["metadata"]["name"] for a in found] == [mine["metadata"]["name"]]


@pytest.mark.parametrize(
    ("up_to", "risk", "offered"),
    [
        ("none", "medium", ["deny"]),
        ("low", "medium", ["deny"]),
        ("medium", "medium", ["approve", "approve-for-session", "deny"]),
        ("medium", "low", ["approve", "approve-for-session", "deny"]),
        ("medium", "high", ["deny"]),
        ("medium", "critical", ["deny"]),
    ],
)
def test_the_form_offers_only_what_the_requester_may_decide(
    up_to: Any, risk: str, offered: list[str]
) -> None:
    from codex_gateway.task_inputs import elicitation

    form = elicitation(action_request(risk=risk), up_to)
    assert form["method"] == "elicitation/create" and form["params"]["mode"] == "form"
    schema = form["params"]["requestedSchema"]
    assert schema["properties"]["decision"]["enum"] == offered and schema["required"] == ["decision"]
    message = form["params"]["message"]
    # Exactly what runs, with the hidden escape shown, never acted on.
    assert "touch x\\x1b[2K" in message and "\x1b" not in message and "/workspace" in message
    assert ("kubectl codex approve cx-1-action-0123456789ab -n team" in message) == ("approve" not in offered)


def test_without_accept_for_session_on_offer_the_form_has_no_such_choice() -> None:
    from codex_gateway.task_inputs import choices

    assert choices(action_request(offered=("accept", "decline"))["spec"], "medium") == ["approve", "deny"]


def test_answers_become_the_decision_written_on_the_request() -> None:
    from codex_gateway.task_inputs import read_answer

    request = action_request()
    approve = read_answer(
        "k", {"action": "accept", "content": {"decision": "approve-for-session"}}, request, "alice", "medium"
    )
    assert approve is not None and approve.spec("alice") == {
        "decision": "Approved",
        "decidedBy": "alice",
        "scope": "session",
    }
    deny = read_answer(
        "k", {"action": "accept", "content": {"decision": "deny", "reason": "no"}}, request, "alice", "none"
    )
    assert deny is not None and deny.spec("alice") == {
        "decision": "Denied",
        "decidedBy": "alice",
        "reason": "no",
    }
    # Declining the form is a deny (a Denied decision needs a reason: one is given).
    declined = read_answer("k", {"action": "decline"}, request, "alice", "none")
    assert declined is not None and declined.decision == "Denied" and "alice" in declined.reason
    assert read_answer("k", {"action": "cancel"}, request, "alice", "none") is None  # keeps waiting


@pytest.mark.parametrize(
    ("response", "user", "up_to", "says"),
    [
        ({"action": "accept", "content": {"decision": "approve"}}, "alice", "none", "needs an approver"),
        ({"action": "accept", "content": {"decision": "approve"}}, "mallory", "medium", "only its requester"),
        ({"action": "accept", "content": {"decision": "yes please"}}, "alice", "medium", "not yours to give"),
        (
            {"action": "accept", "content": {"decision": "approve", "decidedBy": "bob"}},
            "alice",
            "medium",
            "decidedBy",
        ),
        ({"action": "accept", "content": {}}, "alice", "medium", "decision"),
        ({"action": "accept"}, "alice", "medium", "not an elicitation result"),
        ({"action": "approve"}, "alice", "medium", "not an elicitation result"),
        ("approve", "alice", "medium", "not an elicitation result"),
        (
            {"action": "accept", "content": {"decision": "deny", "reason": "x" * 2000}},
            "alice",
            "medium",
            "reason",
        ),
        ({"action": "accept", "content": {"decision": ["approve"]}}, "alice", "medium", "decision"),
    ],
)
def test_bad_answers_are_refused_with_why(response: Any, user: str, up_to: Any, says: str) -> None:
    from codex_gateway.task_inputs import InputError, read_answer

    with pytest.raises(InputError) as refused:
        read_answer("k", response, action_request(), user, up_to)
    assert says in str(refused.value)


def test_a_requester_may_deny_even_a_critical_action_but_not_approve_it() -> None:
    from codex_gateway.task_inputs import InputError, read_answer

    critical = action_request(risk="critical")
    denied = read_answer("k", {"action": "decline"}, critical, "alice", "medium")
    assert denied is not None and denied.decision == "Denied"
    with pytest.raises(InputError, match="critical risk action needs an approver"):
        read_answer(
            "k", {"action": "accept", "content": {"decision": "approve"}}, critical, "alice", "medium"
        )


@pytest.mark.parametrize("phase", ["Running", "Succeeded", "Cancelled"])
def test_a_2025_task_is_the_same_task_in_that_era_s_words(phase: str) -> None:
    from mcp_types import _v2025_11_25 as v2025

    from codex_gateway.legacy_tasks import legacy_task

    modern = task_of(session(phase, message="m"), ttl_seconds=60)
    old = legacy_task(modern)
    v2025.Task.model_validate(old, by_name=False)  # that era's schema
    assert (old["taskId"], old["status"], old["ttl"], old["pollInterval"]) == (
        modern["taskId"],
        modern["status"],
        60_000,
        modern["pollIntervalMs"],
    )
    assert not {"ttlMs", "pollIntervalMs", "result", "inputRequests"} & set(old)
