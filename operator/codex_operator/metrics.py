"""Prometheus metrics of the operator, on its own registry and port.

The seed's codex_mcp_* names that describe sessions belong here (the operator
sees every session finish, whoever created it); the gateway exports the ones
about MCP calls.
"""

from __future__ import annotations

from typing import get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from codex_api.session import SessionPhase

PHASES: tuple[str, ...] = get_args(SessionPhase)


class OperatorMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.sessions = Gauge("codex_operator_sessions", "CodexSessions by phase.", ["phase"], registry=r)
        self.reconcile_seconds = Histogram(
            "codex_operator_reconcile_duration_seconds",
            "Time of one reconcile.",
            ["kind", "result"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.queue_depth = Gauge(
            "codex_operator_workqueue_depth", "Keys waiting to be reconciled.", registry=r
        )
        self.approvals_pending = Gauge(
            "codex_operator_approvals_pending", "ApprovalRequests waiting for a decision.", registry=r
        )
        self.approvals_decided = Counter(
            "codex_operator_approvals_decided_total", "ApprovalRequests decided.", ["decision"], registry=r
        )
        self.actions_asked = Counter(
            "codex_operator_actions_asked_total",
            "Actions Codex asked to take in per-action turns, by kind, risk and the policy's decision "
            "(accept, decline, or ask: a human decides).",
            ["kind", "risk", "decision"],
            registry=r,
        )
        self.pods_started = Counter(
            "codex_operator_runner_pods_started_total", "Runner pods created.", registry=r
        )
        self.pods_handed_over = Counter(
            "codex_operator_runner_pods_handed_over_total",
            "Replies handed to their conversation's live runner pod instead of a new one.",
            registry=r,
        )
        self.pool_pods = Gauge(
            "codex_operator_warm_pool_pods",
            "Unclaimed warm pool pods by sandbox level and state (starting, ready).",
            ["sandbox", "state"],
            registry=r,
        )
        self.pool_claims = Counter(
            "codex_operator_warm_pool_claims_total",
            "First turns that got a warm pool pod instead of a new one, by sandbox level.",
            ["sandbox"],
            registry=r,
        )
        self.pool_pods_created = Counter(
            "codex_operator_warm_pool_pods_created_total",
            "Warm pool pods created, by sandbox level.",
            ["sandbox"],
            registry=r,
        )
        self.ready = Gauge("codex_operator_ready", "1 once the operator has synced and serves.", registry=r)
        # The seed's metric names.
        self.active_sessions = Gauge(
            "codex_mcp_active_sessions_total",
            "Sessions running now (holding a concurrency slot).",
            registry=r,
        )
        self.session_duration = Histogram(
            "codex_mcp_session_duration_seconds",
            "Run time of finished turns.",
            ["phase"],
            buckets=(1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
            registry=r,
        )
        self.success_rate = Gauge(
            "codex_mcp_session_success_rate",
            "Succeeded / finished turns since the operator started.",
            registry=r,
        )
        self.cost = Counter(
            "codex_mcp_cost_usd_total", "Actual cost of finished turns, USD.", ["provider"], registry=r
        )
        self.tokens = Counter(
            "codex_mcp_tokens_consumed_total", "Tokens used by finished turns.", ["type"], registry=r
        )
        self._finished = 0
        self._succeeded = 0

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        start_http_server(port, addr=addr, registry=self.registry)

    def turn_finished(self, phase: str, duration: float | None) -> None:
        self._finished += 1
        self._succeeded += phase == "Succeeded"
        self.success_rate.set(self._succeeded / self._finished)
        if duration is not None:
            self.session_duration.labels(phase).observe(duration)

    def set_phases(self, counts: dict[str, int]) -> None:
        for phase in PHASES:
            self.sessions.labels(phase).set(counts.get(phase, 0))
