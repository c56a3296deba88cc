"""MCP resources: the caller's active sessions, the effective configuration,
the gateway's recent log lines and per-tool performance statistics.

The builders are plain functions of their inputs (unit-tested without MCP);
`register_resources` wires them into the MCPServer.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError

from codex_api.config import CodexMCPConfig, redacted_dict
from codex_api.session import TERMINAL_PHASES

from .logs import record_fields
from .sessions import session_result

if TYPE_CHECKING:
    from .server import Gateway

GATEWAY_LOGGER = "codex_gateway"
LOG_CAPACITY = 500
RECENT_LOG_LINES = 200
LATENCY_WINDOW = 1000

URI_SESSIONS = "codex://sessions/active"
URI_CONFIG = "codex://config/current"
URI_LOGS = "codex://logs/recent"
URI_STATS = "codex://stats/performance"
JSON = "application/json"


def _dumps(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True)


# --------------------------------------------------------------------------- logs
class LogRing(logging.Handler):
    """The last `capacity` records as structured (JSON) lines, redacted once more
    on the way in: whatever a caller managed to put into a log message, the
    resource does not hand out a secret."""

    def __init__(self, capacity: int = LOG_CAPACITY, level: int = logging.INFO) -> None:
        super().__init__(level)
        self._lines: deque[str] = deque(maxlen=capacity)
        self._lines_lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = json.dumps(record_fields(record), ensure_ascii=False, default=str)
        except Exception:  # a logging handler never raises
            self.handleError(record)
            return
        with self._lines_lock:
            self._lines.append(line)

    def lines(self, limit: int = RECENT_LOG_LINES) -> list[str]:
        with self._lines_lock:
            items = list(self._lines)
        return items[-limit:] if limit > 0 else []


def attach_log_ring(logger_name: str = GATEWAY_LOGGER, capacity: int = LOG_CAPACITY) -> LogRing:
    """The ring buffer of `logger_name`, attached once per process."""
    logger = logging.getLogger(logger_name)
    for handler in logger.handlers:
        if isinstance(handler, LogRing):
            return handler
    # The logger's level is left alone: the ring holds what --log-level lets through.
    ring = LogRing(capacity)
    logger.addHandler(ring)
    return ring


def recent_logs(ring: LogRing, limit: int = RECENT_LOG_LINES) -> str:
    lines = ring.lines(limit)
    return "\n".join(lines) + "\n" if lines else ""


# --------------------------------------------------------------------------- stats
def percentile(values: list[float], q: float) -> float | None:
    """The nearest-rank percentile `q` (0..100) of `values`."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass
class _ToolCounters:
    calls: int = 0
    errors: int = 0
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))


class ToolStats:
    """Calls, errors and latencies per tool, fed by the tool handlers."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._started = clock()
        self._tools: dict[str, _ToolCounters] = {}
        self._lock = threading.Lock()

    def record(self, tool: str, seconds: float, error: bool) -> None:
        with self._lock:
            counters = self._tools.setdefault(tool, _ToolCounters())
            counters.calls += 1
            counters.errors += int(error)
            counters.latencies.append(seconds)

    @contextmanager
    def timed(self, tool: str) -> Iterator[None]:
        started = self._clock()
        error = False
        try:
            yield
        except Exception:  # a cancelled wait (client gone) is not an error
            error = True
            raise
        finally:
            self.record(tool, self._clock() - started, error)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            tools = {name: (c.calls, c.errors, list(c.latencies)) for name, c in sorted(self._tools.items())}
            uptime = self._clock() - self._started

        def ms(value: float | None) -> float | None:
            return None if value is None else round(value * 1000, 3)

        per_tool = {
            name: {
                "calls": calls,
                "errors": errors,
                "latency_ms": {
                    "p50": ms(percentile(lat, 50)),
                    "p95": ms(percentile(lat, 95)),
                    "max": ms(max(lat) if lat else None),
                    "samples": len(lat),
                },
            }
            for name, (calls, errors, lat) in tools.items()
        }
        return {
            "uptime_seconds": round(uptime, 3),
            "total_calls": sum(t["calls"] for t in per_tool.values()),
            "total_errors": sum(t["errors"] for t in per_tool.values()),
            "tools": per_tool,
        }


# --------------------------------------------------------------------------- sessions and config
def active_sessions(user: str, sessions: list[dict[str, Any]]) -> dict[str, Any]:
    """The user's non-terminal sessions, oldest first, with a count per phase."""
    active = [o for o in sessions if (o.get("status") or {}).get("phase") not in TERMINAL_PHASES]
    active.sort(key=lambda o: (o["metadata"].get("creationTimestamp") or "", o["metadata"]["name"]))
    results = [session_result(o) for o in active]
    by_phase: dict[str, int] = {}
    for r in results:
        by_phase[r.phase] = by_phase.get(r.phase, 0) + 1
    return {
        "user": user,
        "count": len(results),
        "by_phase": by_phase,
        "sessions": [
            {
                "session_id": r.session_id,
                "conversation_id": r.conversation_id,
                "thread_id": r.thread_id,
                "phase": r.phase,
                "status": r.status,
                "risk_level": r.risk_level,
                "model": r.model,
                "sandbox": r.sandbox,
                "last_event": r.last_event,
                "queued_at": r.timings.queued_at if r.timings else None,
                "started_at": r.timings.started_at if r.timings else None,
                "approval_request": r.approval.approval_request if r.approval else None,
            }
            for r in results
        ],
    }


def current_config(config: CodexMCPConfig, namespace: str, wait_seconds: float) -> dict[str, Any]:
    """The effective configuration (through the redaction point) and the
    gateway's own settings. Deliberately not: the tokens file or its path."""
    return {
        "config": redacted_dict(config),
        "gateway": {"namespace": namespace, "wait_seconds": wait_seconds, "auth": "bearer tokens"},
    }


# --------------------------------------------------------------------------- wiring
def register_resources(mcp: MCPServer, gateway: Gateway, stats: ToolStats, ring: LogRing) -> None:
    def caller() -> str:
        try:
            return gateway.user()
        except ToolError as err:
            raise ResourceError(str(err)) from None

    @mcp.resource(
        URI_SESSIONS,
        name="active-sessions",
        title="Active sessions",
        description="Your sessions that have not finished: phase, risk, model and ids.",
        mime_type=JSON,
    )
    async def sessions_active() -> str:
        user = caller()
        try:
            mine = await gateway.mine(user)
        except ToolError as err:
            raise ResourceError(str(err)) from None
        return _dumps(active_sessions(user, mine))

    @mcp.resource(
        URI_CONFIG,
        name="current-config",
        title="Current configuration",
        description="The gateway's effective configuration (no secrets).",
        mime_type=JSON,
    )
    async def config_current() -> str:
        caller()
        s = gateway.settings
        return _dumps(current_config(gateway.config, s.namespace, s.wait_seconds))

    @mcp.resource(
        URI_LOGS,
        name="recent-logs",
        title="Recent logs",
        description=f"The gateway's last {RECENT_LOG_LINES} log lines, one JSON object a line (redacted).",
        mime_type="text/plain",
    )
    async def logs_recent() -> str:
        caller()
        return recent_logs(ring)

    @mcp.resource(
        URI_STATS,
        name="performance-stats",
        title="Performance statistics",
        description="Tool calls and errors per tool, with latency p50/p95 in milliseconds.",
        mime_type=JSON,
    )
    async def stats_performance() -> str:
        caller()
        return _dumps(stats.snapshot())
