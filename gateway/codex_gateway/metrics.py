"""Prometheus metrics of the gateway, on their own registry and port.

One owner per metric name: the seed's session series (active sessions,
durations, success rate, cost, tokens under ``codex_mcp_*``) belong to the
operator, which sees every session whoever created it. The gateway owns the
seed's names about MCP calls (``codex_mcp_response_time_seconds``) and
wall-bounce coordination, and exports its view of the sessions created
through MCP (observed from the API server, so a turn that finishes after its
call returned still counts) under ``codex_gateway_mcp_*``. Several gateway
replicas observe the same sessions: aggregate those with ``max``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        # Sessions created through MCP, as the gateway observes them.
        self.active_sessions = Gauge(
            "codex_gateway_mcp_sessions_active",
            "Sessions created through MCP that have not finished, by phase.",
            ["phase"],
            registry=r,
        )
        self.session_duration = Histogram(
            "codex_gateway_mcp_turn_duration_seconds",
            "Run time of finished turns created through MCP.",
            ["phase"],
            buckets=(1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
            registry=r,
        )
        self.success_rate = Gauge(
            "codex_gateway_mcp_turn_success_rate",
            "Succeeded / finished turns created through MCP, since the gateway started.",
            registry=r,
        )
        self.cost = Counter(
            "codex_gateway_mcp_cost_usd_total",
            "Actual cost of finished MCP turns, USD.",
            ["model"],
            registry=r,
        )
        self.tokens = Counter(
            "codex_gateway_mcp_tokens_total", "Tokens used by finished MCP turns.", ["type"], registry=r
        )
        # The seed's names that belong to the gateway.
        self.response_time = Histogram(
            "codex_mcp_response_time_seconds",
            "Time to answer an MCP call (tool, resource or prompt).",
            ["method", "name", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.wall_bounce_time = Histogram(
            "codex_mcp_wall_bounce_coordination_time_seconds",
            "Run time of finished wall-bounce (multi-provider) turns created through MCP.",
            buckets=(1, 5, 10, 30, 60, 120, 300, 600, 1800),
            registry=r,
        )
        # The gateway's own.
        self.calls = Counter(
            "codex_gateway_tool_calls_total",
            "Tool calls by tool and outcome (ok, error, rate_limited, budget_exceeded, cached, ...).",
            ["tool", "outcome"],
            registry=r,
        )
        self.cache = Counter(
            "codex_gateway_cache_lookups_total", "Response cache lookups.", ["result"], registry=r
        )
        self.redis_up = Gauge(
            "codex_gateway_redis_up",
            "1 when the last Redis operation succeeded (0: failing open).",
            registry=r,
        )
        # Per replica (handshake-era sessions held in this process; sum them):
        # how loaded each gateway is, and how often one took over another's.
        self.mcp_connections = Gauge(
            "codex_gateway_mcp_connections_open",
            "Handshake-era MCP sessions this replica holds (opened here or adopted).",
            registry=r,
        )
        self.mcp_adopted = Counter(
            "codex_gateway_mcp_sessions_adopted_total",
            "MCP sessions opened on another replica and served here.",
            registry=r,
        )
        self.audit_events = Counter(
            "codex_gateway_audit_events_total", "Audit events written.", ["decision"], registry=r
        )
        self._finished = 0
        self._succeeded = 0

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        start_http_server(port, addr=addr, registry=self.registry)

    def turn_finished(
        self,
        phase: str,
        duration: float | None,
        model: str,
        usd: float,
        usage: dict[str, int],
        wall_bounce: bool,
    ) -> None:
        self._finished += 1
        self._succeeded += phase == "Succeeded"
        self.success_rate.set(self._succeeded / self._finished)
        if duration is not None:
            self.session_duration.labels(phase).observe(duration)
            if wall_bounce:
                self.wall_bounce_time.observe(duration)
        if usd > 0:
            self.cost.labels(model or "unknown").inc(usd)
        for kind, count in usage.items():
            if count > 0:
                self.tokens.labels(kind).inc(count)

    def set_active(self, counts: dict[str, int]) -> None:
        for phase in set(counts) | {"Pending", "AwaitingApproval", "Queued", "Running"}:
            self.active_sessions.labels(phase).set(counts.get(phase, 0))
