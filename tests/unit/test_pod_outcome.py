"""Runner pod state and finished-turn status (codex_operator.pod_outcome)."""

from __future__ import annotations

from typing import Any

import pytest

from codex_api.config import CostConfig
from codex_api.result import FRAME_PREFIX, RunnerResult
from codex_api.session import MAX_RESPONSE, Cost, ProviderCost, Usage
from codex_operator.pod_outcome import PodOutcome, TurnResult, pod_outcome, turn_result

PRICES = CostConfig()
MODEL = "gpt-5-codex"


def pod(
    phase: str | None = None,
    *,
    reason: str | None = None,
    message: str | None = None,
    terminated: dict[str, Any] | None = None,
    last_terminated: dict[str, Any] | None = None,
    container: str = "runner",
    deleting: bool = False,
) -> dict[str, Any]:
    status: dict[str, Any] = {}
    if phase is not None:
        status["phase"] = phase
    if reason is not None:
        status["reason"] = reason
    if message is not None:
        status["message"] = message
    if terminated is not None or last_terminated is not None:
        cs: dict[str, Any] = {"name": container, "state": {}, "lastState": {}}
        if terminated is not None:
            cs["state"] = {"terminated": terminated}
        if last_terminated is not None:
            cs["lastState"] = {"terminated": last_terminated}
        status["containerStatuses"] = [{"name": "sidecar", "state": {"running": {}}}, cs]
    meta: dict[str, Any] = {"name": "s-1-runner", "namespace": "codex-sessions"}
    if deleting:
        meta["deletionTimestamp"] = "2025-03-01T12:00:00Z"
    return {"metadata": meta, "status": status}


# --------------------------------------------------------------------------- pod_outcome


def test_pending() -> None:
    assert pod_outcome(pod("Pending")) == PodOutcome("pending")
    assert pod_outcome({}) == PodOutcome("pending")
    assert pod_outcome(pod("Unknown")) == PodOutcome("pending")
    out = pod_outcome(pod("Pending"))
    assert (out.finished, out.lost) == (False, False)


def test_running() -> None:
    out = pod_outcome(pod("Running"))
    assert out == PodOutcome("running")
    assert (out.finished, out.lost) == (False, False)


def test_succeeded() -> None:
    out = pod_outcome(pod("Succeeded", terminated={"exitCode": 0, "reason": "Completed", "message": "msg"}))
    assert out == PodOutcome("succeeded", 0, "Completed", "msg")
    assert (out.finished, out.lost) == (True, False)
    # no container status at all: exit code 0 is implied by the phase
    assert pod_outcome(pod("Succeeded")) == PodOutcome("succeeded", 0, "", "")


def test_failed() -> None:
    out = pod_outcome(pod("Failed", terminated={"exitCode": 1, "reason": "Error", "message": "m"}))
    assert out == PodOutcome("failed", 1, "Error", "m")
    assert (out.finished, out.lost) == (True, False)
    oom = pod_outcome(pod("Failed", terminated={"exitCode": 137, "reason": "OOMKilled"}))
    assert oom == PodOutcome("failed", 137, "OOMKilled", "")
    # no container status: the pod's own reason
    assert pod_outcome(pod("Failed", reason="NodeLost")) == PodOutcome("failed", None, "NodeLost", "")


def test_terminated_from_last_state_and_runner_container_only() -> None:
    out = pod_outcome(pod("Failed", last_terminated={"exitCode": 2, "reason": "Error", "message": "old"}))
    assert out == PodOutcome("failed", 2, "Error", "old")
    # a terminated sidecar is not the runner
    other = pod("Failed", terminated={"exitCode": 9, "reason": "Error"}, container="helper")
    assert pod_outcome(other) == PodOutcome("failed", None, "", "")


def test_terminated_runner_ends_the_turn_before_the_pod_phase_moves() -> None:
    """restartPolicy Never: the container's terminated state is final a PLEG
    relist before the phase; other restart policies wait for the phase."""
    done = pod("Running", terminated={"exitCode": 0, "reason": "Completed", "message": "frame"})
    done["spec"] = {"restartPolicy": "Never"}
    assert pod_outcome(done) == PodOutcome("succeeded", 0, "Completed", "frame")
    failed = pod("Running", terminated={"exitCode": 3, "reason": "Error"})
    failed["spec"] = {"restartPolicy": "Never"}
    assert pod_outcome(failed) == PodOutcome("failed", 3, "Error", "")
    restarting = pod("Running", terminated={"exitCode": 0, "reason": "Completed"})
    restarting["spec"] = {"restartPolicy": "OnFailure"}
    assert pod_outcome(restarting) == PodOutcome("running")
    # only the current state counts, not an earlier run's
    earlier = pod("Running", last_terminated={"exitCode": 0, "reason": "Completed"})
    earlier["spec"] = {"restartPolicy": "Never"}
    assert pod_outcome(earlier) == PodOutcome("running")
    # a sidecar that terminated is not the runner
    sidecar = pod("Running", terminated={"exitCode": 0}, container="helper")
    sidecar["spec"] = {"restartPolicy": "Never"}
    assert pod_outcome(sidecar) == PodOutcome("running")


def test_evicted() -> None:
    p = pod("Failed", reason="Evicted", message="The node was low on resource: memory.")
    out = pod_outcome(p)
    assert out == PodOutcome("evicted", None, "Evicted", "The node was low on resource: memory.")
    assert (out.finished, out.lost) == (False, True)


def test_deadline_exceeded() -> None:
    p = pod(
        "Failed",
        reason="DeadlineExceeded",
        message="Pod was active on the node longer than the specified deadline",
        terminated={"exitCode": 137, "reason": "Error"},
    )
    out = pod_outcome(p)
    assert out == PodOutcome(
        "deadline", 137, "DeadlineExceeded", "Pod was active on the node longer than the specified deadline"
    )
    assert (out.finished, out.lost) == (True, False)


def test_deleting() -> None:
    expected = PodOutcome("deleting", reason="Deleted", message="the runner pod is being deleted")
    for phase in ("Pending", "Running", None):
        out = pod_outcome(pod(phase, deleting=True))
        assert out == expected
        assert (out.finished, out.lost) == (False, True)
    # a pod that already finished keeps its outcome while it is deleted
    done = pod("Succeeded", terminated={"exitCode": 0, "reason": "Completed"}, deleting=True)
    assert pod_outcome(done).state == "succeeded"


# --------------------------------------------------------------------------- turn_result


def finished(message: str = "", exit_code: int = 0, reason: str = "Completed") -> PodOutcome:
    return PodOutcome("succeeded" if exit_code == 0 else "failed", exit_code, reason, message)


USAGE = Usage(input_tokens=10_000, cached_input_tokens=4_000, output_tokens=3_000, reasoning_tokens=500)


def completed(**kw: Any) -> RunnerResult:
    base: dict[str, Any] = {
        "outcome": "completed",
        "thread_id": "0199a5c2-thread",
        "final_message": "All tests pass.",
        "usage": USAGE,
        "commands": 4,
        "file_changes": 2,
    }
    base.update(kw)
    return RunnerResult(**base)


def test_completed_status_fields() -> None:
    estimate = Cost(estimated_usd=0.05, providers=[ProviderCost(provider="openai", estimated_usd=0.05)])
    log = "\n".join(['{"type":"turn.started"}', completed().frame(), ""])
    got = turn_result(finished(), log, MODEL, PRICES, estimate)
    assert got == TurnResult(
        "Succeeded",
        "Completed",
        "the turn completed",
        {
            "usage": {
                "inputTokens": 10_000,
                "cachedInputTokens": 4_000,
                "outputTokens": 3_000,
                "reasoningTokens": 500,
            },
            # 6000 * 1.25 + 4000 * 0.125 + 3000 * 10 = 38000 / 1e6
            "cost": {
                "estimatedUsd": 0.05,
                "actualUsd": 0.038,
                "providers": [{"provider": "openai", "estimatedUsd": 0.05, "actualUsd": 0.038}],
            },
            "progress": {"commands": 4, "fileChanges": 2},
            "threadId": "0199a5c2-thread",
            "response": "All tests pass.",
            "responseTruncated": False,
        },
    )


def test_completed_without_estimate_thread_or_message() -> None:
    result = RunnerResult(outcome="completed")
    got = turn_result(finished(result.frame()), None, "unknown-model", PRICES, None)
    assert got.phase == "Succeeded"
    assert got.status == {
        "usage": {"inputTokens": 0, "cachedInputTokens": 0, "outputTokens": 0, "reasoningTokens": 0},
        "cost": {"actualUsd": 0.0, "providers": [{"provider": "openai", "actualUsd": 0.0}]},
        "progress": {"commands": 0, "fileChanges": 0},
    }


def test_log_frame_wins_over_termination_message() -> None:
    term = completed(final_message="from termination message").bounded_frame()
    log = completed(final_message="from log").frame()
    got = turn_result(finished(term), log, MODEL, PRICES, None)
    assert got.status["response"] == "from log"


def test_last_frame_in_log_wins() -> None:
    log = "\n".join(
        [completed(final_message="first").frame(), "noise", completed(final_message="second").frame()]
    )
    assert turn_result(finished(), log, MODEL, PRICES, None).status["response"] == "second"


@pytest.mark.parametrize("log_tail", [None, "", 'no frame here\n{"type":"item.completed"}'])
def test_termination_message_used_without_log_frame(log_tail: str | None) -> None:
    term = completed(final_message="from termination message").bounded_frame()
    got = turn_result(finished(term), log_tail, MODEL, PRICES, None)
    assert got.phase == "Succeeded"
    assert got.status["response"] == "from termination message"
    assert got.status["responseTruncated"] is False


def test_cut_off_log_frame_falls_back_to_termination_message() -> None:
    full = completed(final_message="from log").frame()
    log = "events...\n" + full[: len(full) // 2]  # the log tail ends mid-frame
    term = completed(final_message="from termination message").bounded_frame()
    got = turn_result(finished(term), log, MODEL, PRICES, None)
    assert got.status["response"] == "from termination message"


def test_truncated_termination_frame_marks_response_truncated() -> None:
    huge = completed(final_message="x" * 20_000, errors=["e" * 1000] * 10)
    term = huge.bounded_frame()
    assert len(term.encode()) <= 4096
    got = turn_result(finished(term), None, MODEL, PRICES, None)
    assert got.phase == "Succeeded"
    assert got.status["responseTruncated"] is True
    assert set(got.status["response"]) == {"x"}
    assert len(got.status["response"]) < 4096
    # the usage survived the truncation
    assert got.status["usage"]["inputTokens"] == 10_000
    assert got.status["cost"]["actualUsd"] == 0.038


def test_full_log_frame_clips_long_response() -> None:
    log = completed(final_message="y" * (MAX_RESPONSE + 500)).frame()
    got = turn_result(finished(), log, MODEL, PRICES, None)
    assert got.status["responseTruncated"] is True
    assert got.status["response"] == "y" * (MAX_RESPONSE - 1) + "…"
    exact = completed(final_message="z" * MAX_RESPONSE).frame()
    got = turn_result(finished(), exact, MODEL, PRICES, None)
    assert got.status["responseTruncated"] is False
    assert got.status["response"] == "z" * MAX_RESPONSE


def test_no_frame_is_no_result() -> None:
    got = turn_result(finished("", 1, "Error"), "plain output\n", MODEL, PRICES, None)
    assert got == TurnResult(
        "Failed", "NoResult", "the runner ended without a result (exit code 1, Error)", {}
    )
    got = turn_result(PodOutcome("failed", 2), None, MODEL, PRICES, None)
    assert got == TurnResult("Failed", "NoResult", "the runner ended without a result (exit code 2)", {})


def test_no_frame_oom_killed() -> None:
    outcome = pod_outcome(pod("Failed", terminated={"exitCode": 137, "reason": "OOMKilled"}))
    got = turn_result(outcome, None, MODEL, PRICES, None)
    assert got == TurnResult(
        "Failed", "OOMKilled", "the runner ended without a result (exit code 137, OOMKilled)", {}
    )


def test_malformed_frames_only_is_no_result() -> None:
    bad = "\n".join([FRAME_PREFIX + "{not json", FRAME_PREFIX + '{"outcome": "exploded"}'])
    got = turn_result(finished(bad, 1, "Error"), bad, MODEL, PRICES, None)
    assert got.reason == "NoResult"


def test_turn_failed_reports_errors_and_usage() -> None:
    result = RunnerResult(
        outcome="turn_failed",
        thread_id="t-1",
        final_message=None,
        usage=Usage(input_tokens=1_000, output_tokens=100),
        errors=["stream disconnected before completion", "429 Too Many Requests"],
        exit_code=1,
    )
    got = turn_result(finished(result.bounded_frame(), 1, "Error"), None, MODEL, PRICES, None)
    assert got.phase == "Failed"
    assert got.reason == "TurnFailed"
    assert got.message == "stream disconnected before completion; 429 Too Many Requests"
    # 1000 * 1.25 + 100 * 10 = 2250 / 1e6
    assert got.status == {
        "usage": {"inputTokens": 1_000, "cachedInputTokens": 0, "outputTokens": 100, "reasoningTokens": 0},
        "cost": {"actualUsd": 0.00225, "providers": [{"provider": "openai", "actualUsd": 0.00225}]},
        "progress": {"commands": 0, "fileChanges": 0},
        "threadId": "t-1",
    }


def test_turn_failed_message_bounded_and_defaulted() -> None:
    many = RunnerResult(outcome="turn_failed", errors=["e" * 400] * 5, exit_code=1)
    got = turn_result(finished(), many.frame(), MODEL, PRICES, None)
    assert got.message == "; ".join(["e" * 400] * 5)[:900]
    assert len(got.message) == 900
    silent = RunnerResult(outcome="turn_failed", exit_code=1)
    assert turn_result(finished(), silent.frame(), MODEL, PRICES, None).message == "runner exit code 1"


@pytest.mark.parametrize(
    ("outcome", "exit_code", "reason"),
    [
        ("config_error", 78, "RunnerConfigError"),
        ("codex_missing", 69, "CodexMissing"),
        ("internal_error", 70, "RunnerError"),
        ("network_unfenced", 77, "NetworkNotEnforced"),
        ("budget_exceeded", 1, "BudgetExceeded"),
    ],
)
def test_runner_failures(outcome: str, exit_code: int, reason: str) -> None:
    result = RunnerResult.model_validate({"outcome": outcome, "exit_code": exit_code})
    got = turn_result(finished(result.frame(), exit_code, "Error"), None, MODEL, PRICES, None)
    assert (got.phase, got.reason, got.message) == ("Failed", reason, f"runner exit code {exit_code}")
    with_error = RunnerResult.model_validate(
        {"outcome": outcome, "exit_code": exit_code, "errors": ["codex: not found"]}
    )
    got = turn_result(finished(with_error.frame(), exit_code), None, MODEL, PRICES, None)
    assert (got.reason, got.message) == (reason, "codex: not found")
