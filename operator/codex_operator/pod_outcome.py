"""What a runner pod's status says about the turn, and how a finished turn
becomes CodexSession status. Pure functions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from codex_api.config import CostConfig
from codex_api.result import (
    EXIT_CODEX_MISSING,
    EXIT_COMPLETED,
    EXIT_CONFIG_ERROR,
    EXIT_NETWORK_UNFENCED,
    EXIT_TURN_FAILED,
    RunnerResult,
    clip_response,
    is_budget_refusal,
    parse_frame,
)
from codex_api.session import Cost, WallBounceStatus
from codex_api.turn_request import TurnReport

from . import cost

RUNNER_CONTAINER = "runner"

PodState = Literal["pending", "running", "succeeded", "failed", "evicted", "deadline", "deleting"]


@dataclass(frozen=True)
class PodOutcome:
    state: PodState
    exit_code: int | None = None
    reason: str = ""
    message: str = ""  # the termination message, when the container wrote one

    @property
    def finished(self) -> bool:
        return self.state in ("succeeded", "failed", "deadline")

    @property
    def lost(self) -> bool:
        """The pod went away for reasons outside the turn: worth another attempt."""
        return self.state in ("evicted", "deleting")


def _terminated(pod: dict[str, Any]) -> dict[str, Any]:
    for status in pod.get("status", {}).get("containerStatuses") or []:
        if status.get("name") == RUNNER_CONTAINER:
            state = status.get("state", {}).get("terminated") or status.get("lastState", {}).get("terminated")
            return dict(state or {})
    return {}


def pod_outcome(pod: dict[str, Any]) -> PodOutcome:
    status = pod.get("status") or {}
    phase = status.get("phase", "Pending")
    term = _terminated(pod)
    exit_code = term.get("exitCode")
    message = term.get("message") or ""
    if phase == "Succeeded":
        return PodOutcome(
            "succeeded", exit_code if exit_code is not None else 0, term.get("reason", ""), message
        )
    if phase == "Failed":
        reason = status.get("reason", "")
        if reason == "Evicted":
            return PodOutcome("evicted", exit_code, reason, status.get("message", ""))
        if reason == "DeadlineExceeded":
            return PodOutcome("deadline", exit_code, reason, status.get("message", ""))
        return PodOutcome("failed", exit_code, term.get("reason") or reason, message)
    if pod.get("metadata", {}).get("deletionTimestamp"):
        return PodOutcome("deleting", reason="Deleted", message="the runner pod is being deleted")
    current = _current_termination(pod)
    if current is not None:
        # With restartPolicy Never a terminated runner container is final, and
        # the kubelet reports it about a second before it moves the pod's
        # phase (one more PLEG relist): ending the turn here saves that second.
        code = current.get("exitCode")
        if code == 0:
            return PodOutcome("succeeded", 0, current.get("reason", ""), current.get("message") or "")
        return PodOutcome("failed", code, current.get("reason", ""), current.get("message") or "")
    return PodOutcome("running" if phase == "Running" else "pending")


def unschedulable(pod: dict[str, Any]) -> bool:
    """The scheduler found no node with room for the pod (yet)."""
    return any(
        c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get("reason") == "Unschedulable"
        for c in (pod.get("status") or {}).get("conditions") or []
    )


def _current_termination(pod: dict[str, Any]) -> dict[str, Any] | None:
    """The runner container's current terminated state, when it cannot change any more."""
    if (pod.get("spec") or {}).get("restartPolicy") != "Never":
        return None
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == RUNNER_CONTAINER:
            term = (status.get("state") or {}).get("terminated")
            return dict(term) if term else None
    return None


@dataclass(frozen=True)
class TurnResult:
    phase: Literal["Succeeded", "Failed"]
    reason: str
    message: str
    status: dict[str, Any]  # fields to merge into CodexSession status


_FAILURE_REASONS = {
    "turn_failed": "TurnFailed",
    "config_error": "RunnerConfigError",
    "codex_missing": "CodexMissing",
    "internal_error": "RunnerError",
    "network_unfenced": "NetworkNotEnforced",
    "budget_exceeded": "BudgetExceeded",
}


def turn_result(
    outcome: PodOutcome,
    log_tail: str | None,
    model: str,
    prices: CostConfig,
    estimate: Cost | None,
    *,
    provider_models: Mapping[str, str] | None = None,
) -> TurnResult:
    """Status of a finished turn from the runner's frame (log first, then termination message).

    For a wall-bounce turn each run is priced with the model it reports, else
    with ``provider_models[provider]`` (the configured one), else with ``model``.
    """
    result = parse_frame(log_tail or "") or parse_frame(outcome.message)
    if result is None:
        detail = f"exit code {outcome.exit_code}" + (f", {outcome.reason}" if outcome.reason else "")
        reason = "OOMKilled" if outcome.reason == "OOMKilled" else "NoResult"
        return TurnResult("Failed", reason, f"the runner ended without a result ({detail})", {})
    return _from_result(result, model, prices, estimate, provider_models or {})


def kept_report(outcome: PodOutcome, session_uid: str) -> TurnReport | None:
    """The report a live pod's agent left in its termination message, when it is
    this session's (the agent's last turn)."""
    try:
        report = TurnReport.model_validate_json(outcome.message)
    except ValueError:
        return None
    return report if report.session_uid == session_uid else None


def report_result(
    report: TurnReport, model: str, prices: CostConfig, estimate: Cost | None
) -> tuple[str, TurnResult]:
    """Status of a turn a live pod's agent ran, from its report; with the phase,
    which is TimedOut for a turn the agent interrupted (it does only at the
    turn's timeout: a cancelled turn's pod is deleted instead)."""
    errors = [report.error] if report.error else []
    if report.status == "completed":
        outcome, code = "completed", EXIT_COMPLETED
    elif any(is_budget_refusal(e) for e in errors):
        outcome, code = "budget_exceeded", EXIT_TURN_FAILED
    else:
        outcome, code = "turn_failed", EXIT_TURN_FAILED
    result = RunnerResult(
        outcome=outcome,
        thread_id=report.thread_id,
        final_message=report.final_message,
        usage=report.usage,
        commands=report.commands,
        file_changes=report.file_changes,
        errors=errors,
        exit_code=code,
        truncated=report.truncated,
    )
    turn = _from_result(result, model, prices, estimate, {})
    if report.status == "interrupted":
        return "TimedOut", TurnResult(
            "Failed", "Timeout", report.error or "the turn was interrupted", turn.status
        )
    return turn.phase, turn


def _cost(
    result: RunnerResult, model: str, prices: CostConfig, estimate: Cost | None, models: Mapping[str, str]
) -> Cost:
    wb = result.wall_bounce
    if wb is None or not wb.runs:
        return cost.actual(result.usage, model, prices, estimate_=estimate)
    runs = [(run.provider, run.usage, run.model or models.get(run.provider) or model) for run in wb.runs]
    return cost.actual_providers(runs, prices, estimate_=estimate)


def _from_result(
    result: RunnerResult,
    model: str,
    prices: CostConfig,
    estimate: Cost | None,
    provider_models: Mapping[str, str],
) -> TurnResult:
    response, truncated = clip_response(result.final_message)
    fields: dict[str, Any] = {
        "usage": result.usage.to_k8s(),
        "cost": _cost(result, model, prices, estimate, provider_models).to_k8s(),
        "progress": {"commands": result.commands, "fileChanges": result.file_changes},
    }
    if result.wall_bounce is not None:
        fields["wallBounce"] = WallBounceStatus(
            providers_used=result.wall_bounce.providers_used,
            consensus_score=result.wall_bounce.consensus_score,
            confidence_score=result.wall_bounce.confidence_score,
        ).to_k8s()
    if result.thread_id:
        fields["threadId"] = result.thread_id
    if response is not None:
        fields["response"] = response
        fields["responseTruncated"] = truncated or result.truncated
    if result.outcome == "completed":
        return TurnResult("Succeeded", "Completed", "the turn completed", fields)
    reason = _FAILURE_REASONS.get(result.outcome, "RunnerError")
    errors = "; ".join(result.errors)[:900] or f"runner exit code {result.exit_code}"
    if (
        result.exit_code in (EXIT_CONFIG_ERROR, EXIT_CODEX_MISSING, EXIT_NETWORK_UNFENCED)
        and not result.errors
    ):
        errors = f"runner exit code {result.exit_code}"
    return TurnResult("Failed", reason, errors, fields)
