"""Per-call bookkeeping and the MCP middleware around every request.

The tool code fills in a CallRecord (who, which session, what was decided);
CallObserver wraps every tools/call, resources/read and prompts/get with
response-time metrics, per-tool figures and one audit event, also for calls
the SDK refuses before any tool code runs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from mcp.server import MCPServer
from mcp.server.context import CallNext, ServerRequestContext
from mcp.shared.exceptions import MCPError
from mcp.types import INVALID_PARAMS

from codex_api.redaction import shorten

from .audit import AuditLog
from .auth import current_identity
from .logs import bind_caller, unbind_caller
from .metrics import GatewayMetrics
from .resources import ToolStats
from .sessions import (
    SessionResult,
)

log = logging.getLogger("codex_gateway.calls")

AUDITED_METHODS = {
    "tools/call": "name",
    "resources/read": "uri",
    "prompts/get": "name",
    # The Tasks extension's writes: a cancelled turn, a decision relayed for its requester.
    "tasks/update": "taskId",
    "tasks/cancel": "taskId",
}
TASK_METHODS = ("tasks/update", "tasks/cancel")


# --------------------------------------------------------------------------- per-call record
@dataclass
class CallRecord:
    """What one MCP call did, filled in by the tool code, written by the
    audit middleware when the call ends (however it ends)."""

    name: str
    user: str | None = None
    decision: str = "allowed"
    session: str | None = None
    risk: str | None = None
    phase: str | None = None
    cost_usd: float | None = None
    prompt: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def saw(self, result: SessionResult) -> None:
        self.session, self.risk, self.phase = result.session_id, result.risk_level, result.phase
        if result.cost is not None:
            self.cost_usd = result.cost.actual_usd if result.cost.actual_usd is not None else None
        if result.status == "awaiting_approval":
            self.decision = "awaiting_approval"


_CALL: ContextVar[CallRecord | None] = ContextVar("codex_gateway_call", default=None)


def call_record() -> CallRecord:
    return _CALL.get() or CallRecord(name="")


# --------------------------------------------------------------------------- middleware
class CallObserver:
    """MCP middleware around every request: response-time metrics, per-tool
    stats, and one audit event per tool call, resource read and prompt, also
    for calls the SDK rejects before any tool code runs."""

    def __init__(
        self, stats: ToolStats, metrics: GatewayMetrics, audit: AuditLog, server: MCPServer | None = None
    ) -> None:
        self.stats = stats
        self.metrics = metrics
        self.audit = audit
        self.server = server
        self.known: set[str] = set()
        self.prompts: set[str] = set()
        self.tool_arguments: dict[str, set[str]] = {}
        self._catalogued = False

    async def _catalog(self) -> None:
        """What the server offers (names, tool arguments), read once through its
        public listing methods, after every tool, prompt and resource is registered."""
        if self._catalogued or self.server is None:
            return
        tools = await self.server.list_tools()
        self.tool_arguments = {t.name: set((t.input_schema or {}).get("properties", {})) for t in tools}
        self.prompts = {p.name for p in await self.server.list_prompts()}
        resources = {str(r.uri) for r in await self.server.list_resources()}
        self.known = set(self.tool_arguments) | self.prompts | resources
        self._catalogued = True

    def _label(self, name: Any) -> str:
        # A hostile client must not mint metric series: unknown names fold into one.
        return name if isinstance(name, str) and name in self.known else "unknown"

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> Any:
        if ctx.request_id is None:
            return await call_next(ctx)
        await self._catalog()
        method = ctx.method
        key = AUDITED_METHODS.get(method)
        raw = (ctx.params or {}).get(key) if key and isinstance(ctx.params, dict) else None
        task = method in TASK_METHODS
        name = method if task else self._label(raw) if key else ""
        record = CallRecord(name=name, session=shorten(raw, 253) if task and isinstance(raw, str) else None)
        token = _CALL.set(record)
        # Lines logged while serving this request belong to its caller (as far
        # as the bearer token says already; Gateway.identity() confirms it).
        identity = current_identity()
        caller = bind_caller(identity.user if identity else None)
        started = time.monotonic()
        outcome, error = "ok", None
        try:
            self._check(method, raw, ctx.params)
            result = await call_next(ctx)
            if _is_error(result):
                outcome, error = "error", _error_text(result)
            return result
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        except Exception as err:
            outcome, error = "error", str(err) or type(err).__name__
            raise
        finally:
            _CALL.reset(token)
            seconds = time.monotonic() - started
            try:
                self.metrics.response_time.labels(method, name, outcome).observe(seconds)
                if key:
                    self._finish(method, raw, record, outcome, error, seconds)
            finally:
                # After the audit event, so that it too is filed under its user.
                unbind_caller(caller)

    def _check(self, method: str, name: Any, params: Any) -> None:
        """Refuse what the SDK would let through or answer with an internal
        error: arguments a tool does not have (they would be silently dropped,
        and the call run without them), and unknown prompts."""
        if method == "tools/call" and name in self.tool_arguments and isinstance(params, dict):
            given = params.get("arguments") or {}
            if isinstance(given, dict):
                unknown = sorted(set(given) - self.tool_arguments[name])
                if unknown:
                    allowed = ", ".join(sorted(self.tool_arguments[name]))
                    raise MCPError(
                        INVALID_PARAMS,
                        f"invalid arguments: {name} has no argument {', '.join(map(repr, unknown))} "
                        f"(allowed: {allowed})",
                    )
        if method == "prompts/get" and name not in self.prompts:
            raise MCPError(INVALID_PARAMS, f"unknown prompt {shorten(str(name), 64)!r}")

    def _finish(
        self, method: str, raw: Any, record: CallRecord, outcome: str, error: str | None, seconds: float
    ) -> None:
        if outcome == "error" and record.decision in ("allowed", "awaiting_approval"):
            record.decision = "invalid" if record.name == "unknown" or _looks_invalid(error) else "refused"
        if record.user is None:
            identity = current_identity()
            record.user = identity.user if identity else None
        if method == "tools/call":
            self.stats.record(record.name, seconds, outcome == "error", record.user)
            self.metrics.calls.labels(record.name, record.decision if outcome != "ok" else "ok").inc()
        self.audit.record(
            user=record.user,
            tool=record.name if record.name != "unknown" else f"unknown:{shorten(str(raw), 64)}",
            decision=record.decision,
            seconds=seconds,
            session=record.session,
            risk=record.risk,
            phase=record.phase,
            cost_usd=record.cost_usd,
            prompt=record.prompt,
            error=error,
            extra={"method": method, "outcome": outcome, **record.extra},
        )


def _is_error(result: Any) -> bool:
    if isinstance(result, dict):
        return bool(result.get("isError"))
    return bool(getattr(result, "is_error", False) or getattr(result, "isError", False))


def _error_text(result: Any) -> str:
    content = result.get("content") if isinstance(result, dict) else getattr(result, "content", None)
    for item in content or []:
        text = item.get("text") if isinstance(item, dict) else getattr(item, "text", None)
        if text:
            return str(text)
    return "error"


def _looks_invalid(error: str | None) -> bool:
    text = (error or "").lower()
    return any(w in text for w in ("invalid", "validation", "unknown", "not found", "required"))
