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
