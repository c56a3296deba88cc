"""Audit events: one structured record per MCP call (who, which tool, which
session, the risk, what the gateway decided, what it cost). They go to the
``codex_gateway.audit`` logger as JSON lines, so the platform's log pipeline
collects them with the rest; the prompt appears only redacted and shortened.
"""

from __future__ import annotations

import logging
from typing import Any

from codex_api.redaction import redact, shorten

from .metrics import GatewayMetrics

log = logging.getLogger("codex_gateway.audit")

PROMPT_EXCERPT = 160

# What the gateway decided about a call.
DECISIONS = (
    "allowed",  # the call went through (a session was created or read)
    "awaiting_approval",  # created, and a human must approve it
    "cache_hit",  # answered from the response cache, no session created
    "rate_limited",
    "budget_exceeded",
    "invalid",  # bad arguments: nothing created
    "not_found",  # unknown (or another user's) session
    "refused",  # the API server refused or failed
)


class AuditLog:
    def __init__(self, enabled: bool = True, metrics: GatewayMetrics | None = None) -> None:
        self.enabled = enabled
        self.metrics = metrics

    def record(
        self,
        *,
        user: str | None,
        tool: str,
        decision: str,
        seconds: float,
        session: str | None = None,
        risk: str | None = None,
        phase: str | None = None,
        cost_usd: float | None = None,
        prompt: str | None = None,
        error: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        event: dict[str, Any] = {
            "event": "mcp_call",
            "user": user,
            "tool": tool,
            "decision": decision,
            "session": session,
            "risk": risk,
            "phase": phase,
            "cost_usd": cost_usd,
            "duration_ms": round(seconds * 1000, 1),
        }
        if prompt is not None:
            event["prompt"] = shorten(redact(prompt), PROMPT_EXCERPT)
        if error is not None:
            event["error"] = shorten(redact(error), 300)
        if extra:
            event.update(extra)
        if self.enabled:
            log.info("audit %s %s by %s", tool, decision, user, extra={"audit": event})
            if self.metrics is not None:
                self.metrics.audit_events.labels(decision).inc()
        return event
