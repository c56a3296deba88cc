"""MCP resources: the caller's active sessions, the effective configuration,
the gateway's recent log lines and per-tool performance statistics.

Logs and statistics are per caller: a user reads their own log lines and
figures only (the lines name users, session ids and prompt excerpts);
members of `[kubernetes].admin_groups` read everyone's.

The builders are plain functions of their inputs (unit-tested without MCP);
`register_resources` wires them into the MCPServer.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError

from codex_api.config import CodexMCPConfig, redacted_dict
from codex_api.session import TERMINAL_PHASES
from codex_api.status import phase_of

from .auth import Identity
from .logs import record_fields, record_user
from .sessions import session_result


class SessionsView(Protocol):
    """What the resources read from the gateway's service (codex_gateway.service.Gateway);
    a protocol, so the service and its resources do not import each other."""

    config: CodexMCPConfig

    settings: Any

    def identity(self) -> Identity: ...

    def is_admin(self, identity: Identity) -> bool: ...

    async def mine(self, user: str) -> list[dict[str, Any]]: ...


GATEWAY_LOGGER = "codex_gateway"
LOG_CAPACITY = 500
RECENT_LOG_LINES = 200
LATENCY_WINDOW = 1000
# Per-user state (log lines, tool figures) is kept for this many users at most,
# the least recently active forgotten first.
MAX_TRACKED_USERS = 256
USER_LOG_CAPACITY = RECENT_LOG_LINES
USER_LATENCY_WINDOW = 100

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
    resource does not hand out a secret.

    Each line is also filed under its user (`record_user`: the audit event's
    user, else the caller of the request that logged it), in a ring of its own
    per user, so a caller reads their own lines, and a busy user does not push
    a quiet one's lines out. At most `max_users` users are tracked, the least
    recently logged one forgotten first: however many identities a hostile
    caller can present, the memory stays bounded (capacity + max_users *
    per_user lines; the per-user rings share the line strings with the main one)."""

    def __init__(
        self,
        capacity: int = LOG_CAPACITY,
        level: int = logging.INFO,
        *,
        per_user: int = USER_LOG_CAPACITY,
        max_users: int = MAX_TRACKED_USERS,
    ) -> None:
        super().__init__(level)
        self._lines: deque[str] = deque(maxlen=capacity)
        self._per_user = per_user
        self._max_users = max_users
        self._users: OrderedDict[str, deque[str]] = OrderedDict()
        self._lines_lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = json.dumps(record_fields(record), ensure_ascii=False, default=str)
            user = record_user(record)
        except Exception:  # a logging handler never raises
            self.handleError(record)
            return
        with self._lines_lock:
            self._lines.append(line)
            if user is None:
                return
            mine = self._users.get(user)
            if mine is None:
                mine = self._users[user] = deque(maxlen=self._per_user)
                while len(self._users) > self._max_users:
                    self._users.popitem(last=False)
            else:
                self._users.move_to_end(user)
            mine.append(line)

    def lines(self, limit: int = RECENT_LOG_LINES, user: str | None = None) -> list[str]:
        """The last `limit` lines: everyone's (user None: the gateway's own
        lines too), or only those filed under `user`."""
        with self._lines_lock:
            items = list(self._lines) if user is None else list(self._users.get(user, ()))
        return items[-limit:] if limit > 0 else []

    def users(self) -> list[str]:
        with self._lines_lock:
            return list(self._users)


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


def recent_logs(ring: LogRing, limit: int = RECENT_LOG_LINES, user: str | None = None) -> str:
    """The resource's text: everyone's lines (user None, administrators) or the caller's."""
    lines = ring.lines(limit, user)
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

    def add(self, seconds: float, error: bool) -> None:
        self.calls += 1
        self.errors += int(error)
        self.latencies.append(seconds)


def _tool_table(tools: dict[str, tuple[int, int, list[float]]]) -> dict[str, Any]:
    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1000, 3)

    return {
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


def _copy(tools: dict[str, _ToolCounters]) -> dict[str, tuple[int, int, list[float]]]:
    return {name: (c.calls, c.errors, list(c.latencies)) for name, c in sorted(tools.items())}


class ToolStats:
    """Calls, errors and latencies per tool, fed by the tool handlers: for the
    whole gateway, and per user (what a caller who is not an administrator sees).

    Bounded whatever callers do: tool names are the known ones (the middleware
    folds the rest into "unknown"), at most `max_users` users are tracked (the
    least recently active forgotten first: their figures start again from zero)
    and each keeps its last `user_window` latencies per tool."""

    def __init__(
        self,
        clock: Any = time.monotonic,
        *,
        max_users: int = MAX_TRACKED_USERS,
        user_window: int = USER_LATENCY_WINDOW,
    ) -> None:
        self._clock = clock
        self._started = clock()
        self._tools: dict[str, _ToolCounters] = {}
        self._max_users = max_users
        self._user_window = user_window
        self._users: OrderedDict[str, dict[str, _ToolCounters]] = OrderedDict()
        self._lock = threading.Lock()

    def record(self, tool: str, seconds: float, error: bool, user: str | None = None) -> None:
        with self._lock:
            self._tools.setdefault(tool, _ToolCounters()).add(seconds, error)
            if user is None:
                return
            mine = self._users.get(user)
            if mine is None:
                mine = self._users[user] = {}
                while len(self._users) > self._max_users:
                    self._users.popitem(last=False)
            else:
                self._users.move_to_end(user)
            counters = mine.get(tool)
            if counters is None:
                counters = mine[tool] = _ToolCounters(latencies=deque(maxlen=self._user_window))
            counters.add(seconds, error)

    @contextmanager
    def timed(self, tool: str, user: str | None = None) -> Iterator[None]:
        started = self._clock()
        error = False
        try:
            yield
        except Exception:  # a cancelled wait (client gone) is not an error
            error = True
            raise
        finally:
            self.record(tool, self._clock() - started, error, user)

    def users(self) -> list[str]:
        with self._lock:
            return list(self._users)

    def snapshot(self, user: str | None = None) -> dict[str, Any]:
        """Everyone's figures (user None: for administrators, with a line per
        tracked user), or only `user`'s."""
        with self._lock:
            uptime = self._clock() - self._started
            if user is None:
                tools = _copy(self._tools)
                per_user = {
                    name: (sum(c.calls for c in t.values()), sum(c.errors for c in t.values()))
                    for name, t in sorted(self._users.items())
                }
            else:
                tools = _copy(self._users.get(user, {}))
        per_tool = _tool_table(tools)
        out: dict[str, Any] = {
            "scope": "all" if user is None else "mine",
            "uptime_seconds": round(uptime, 3),
            "total_calls": sum(t["calls"] for t in per_tool.values()),
            "total_errors": sum(t["errors"] for t in per_tool.values()),
            "tools": per_tool,
        }
        if user is None:
            out["users"] = {name: {"calls": c, "errors": e} for name, (c, e) in per_user.items()}
        else:
            out["user"] = user
        return out


# --------------------------------------------------------------------------- sessions and config
def active_sessions(user: str, sessions: list[dict[str, Any]]) -> dict[str, Any]:
    """The user's non-terminal sessions, oldest first, with a count per phase."""
    active = [o for o in sessions if phase_of(o) not in TERMINAL_PHASES]
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
def register_resources(mcp: MCPServer, gateway: SessionsView, stats: ToolStats, ring: LogRing) -> None:
    def caller() -> Identity:
        try:
            return gateway.identity()
        except ToolError as err:
            raise ResourceError(str(err)) from None

    def scope(identity: Identity) -> str | None:
        """Whose records the caller may read: their own, or (administrators,
        `[kubernetes].admin_groups`) everyone's (None)."""
        return None if gateway.is_admin(identity) else identity.user

    @mcp.resource(
        URI_SESSIONS,
        name="active-sessions",
        title="Active sessions",
        description="Your sessions that have not finished: phase, risk, model and ids.",
        mime_type=JSON,
    )
    async def sessions_active() -> str:
        user = caller().user
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
        description=(
            f"Your last {RECENT_LOG_LINES} gateway log lines (administrators: everyone's), "
            "one JSON object a line (redacted)."
        ),
        mime_type="text/plain",
    )
    async def logs_recent() -> str:
        return recent_logs(ring, user=scope(caller()))

    @mcp.resource(
        URI_STATS,
        name="performance-stats",
        title="Performance statistics",
        description=(
            "Your tool calls and errors per tool, with latency p50/p95 in milliseconds "
            "(administrators: everyone's)."
        ),
        mime_type=JSON,
    )
    async def stats_performance() -> str:
        return _dumps(stats.snapshot(scope(caller())))
