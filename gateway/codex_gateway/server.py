"""The MCP server: tools that turn calls into CodexSessions and read the
results back from their status.

A call creates the CR, then waits at most ``wait_seconds`` for the turn to
end (sending progress notifications when the client asked for them) and
returns either the result or a structured "running" answer with the ids; a
session that needs approval returns at once. A dropped connection cancels
the waiting, never the session.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Annotated, Any

from mcp.server import MCPServer
from mcp.server.auth.settings import AuthSettings
from mcp.server.context import CallNext, ServerRequestContext
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.exceptions import MCPError
from mcp.types import INVALID_PARAMS
from pydantic import Field, StrictBool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from codex_api import names
from codex_api.common import SandboxLevel
from codex_api.config import CodexMCPConfig
from codex_api.redaction import redact, shorten
from codex_api.session import TERMINAL_PHASES, Mode, ReasoningEffort, Verbosity

from .audit import AuditLog
from .auth import Identity, Verifier, current_identity
from .guard import BudgetExceeded, Guard, RateLimited
from .kube import KubeError, SessionApi
from .metrics import GatewayMetrics
from .observer import SessionObserver
from .prompts import register_prompts
from .resources import ToolStats, attach_log_ring, register_resources
from .session_cache import SessionCache
from .sessions import (
    WALL_BOUNCE_DESCRIPTION,
    CleanupResult,
    CodexArgs,
    InvalidArguments,
    ModelSlug,
    Prompt,
    ReplyArgs,
    SessionId,
    SessionInfoResult,
    SessionResult,
    build_session,
    cleanup_targets,
    conversation_of,
    latest_turn,
    owner,
    progress_message,
    session_result,
    settled,
)

log = logging.getLogger("codex_gateway.server")

DEFAULT_WAIT_SECONDS = 20.0
CLEANUP_WAIT_SECONDS = 5.0
CREATE_ATTEMPTS = 3
AUDITED_METHODS = {"tools/call": "name", "resources/read": "uri", "prompts/get": "name"}


@dataclass(frozen=True)
class GatewaySettings:
    namespace: str
    wait_seconds: float = DEFAULT_WAIT_SECONDS
    cleanup_wait_seconds: float = CLEANUP_WAIT_SECONDS
    # The identity of calls that carry no bearer token (stdio, in-process
    # tests). None: such calls are refused.
    default_user: str | None = None
    default_groups: tuple[str, ...] = ()


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


class CallError(ToolError):
    """A tool error that also says what the gateway decided (for the audit)."""

    def __init__(self, message: str, decision: str = "refused") -> None:
        super().__init__(message)
        self.decision = decision
        call_record().decision = decision


def _not_found(session_id: str) -> CallError:
    # Another user's session gets the same answer as a missing one: the
    # gateway does not reveal which session ids exist.
    return CallError(f"unknown session {session_id!r}: no such session of yours", "not_found")


def _invalid(message: str) -> CallError:
    return CallError(message if message.startswith("invalid") else f"invalid arguments: {message}", "invalid")


# --------------------------------------------------------------------------- behaviour
class Gateway:
    """The tools' behaviour, independent of the MCP plumbing."""

    def __init__(
        self,
        sessions: SessionApi,
        config: CodexMCPConfig,
        settings: GatewaySettings,
        *,
        guard: Guard | None = None,
        metrics: GatewayMetrics | None = None,
        observer: SessionObserver | None = None,
        cache: SessionCache | None = None,
    ) -> None:
        self.sessions = sessions
        self.cache = cache
        self.config = config
        self.settings = settings
        self.guard = guard or Guard(config, None)
        self.metrics = metrics or GatewayMetrics()
        self.observer = observer or SessionObserver(sessions, self.metrics, self.guard)

    # -- identity ------------------------------------------------------------------
    def identity(self) -> Identity:
        identity = current_identity()
        if identity is None and self.settings.default_user:
            identity = Identity(self.settings.default_user, self.settings.default_groups)
        if identity is None:
            raise CallError("unauthenticated: this gateway needs a bearer token", "refused")
        call_record().user = identity.user
        return identity

    def user(self) -> str:
        return self.identity().user

    def is_admin(self, identity: Identity) -> bool:
        return bool(set(identity.groups) & set(self.config.kubernetes.admin_groups))

    # -- guard ---------------------------------------------------------------------
    async def _limits(self, user: str, session: str | None = None, *, spends: bool = False) -> None:
        try:
            await self.guard.check_rate(user, session)
            if spends:
                await self.guard.check_budget(user)
        except RateLimited as err:
            raise CallError(f"rate limited: {err}", "rate_limited") from None
        except BudgetExceeded as err:
            raise CallError(f"budget exceeded: {err}", "budget_exceeded") from None
        finally:
            self.metrics.redis_up.set(1 if self.guard.status().get("reachable") is not False else 0)

    # -- API access ----------------------------------------------------------------
    async def _own(self, user: str, session_id: str, *, fresh: bool = False) -> dict[str, Any]:
        obj = None if fresh else self._cached(session_id)
        obj = obj or await self._get(session_id)
        if obj is None or owner(obj) != user:
            raise _not_found(session_id)
        return obj

    def _cached(self, name: str) -> dict[str, Any] | None:
        return self.cache.get(name) if self.cache is not None and self.cache.ready else None

    async def mine(self, user: str) -> list[dict[str, Any]]:
        """The user's sessions: from the watch-fed cache when it is in sync."""
        if self.cache is not None and self.cache.ready:
            return self.cache.owned_by(user)
        try:
            return await self.sessions.list_for(user)
        except KubeError as err:
            raise CallError(f"cannot list sessions: {err}") from None

    async def _get(self, name: str) -> dict[str, Any] | None:
        try:
            return await self.sessions.get(name)
        except KubeError as err:
            raise CallError(f"cannot read session {name!r}: {err}") from None

    @staticmethod
    def _built(build: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """The session body, validated before anything exists."""
        try:
            return build()
        except ValueError as err:
            raise _invalid(str(err)) from None

    async def _create(self, build: Callable[[], dict[str, Any]], body: dict[str, Any]) -> dict[str, Any]:
        """Create `body`; on a name collision, `build` another (it draws a new random name)."""
        for attempt in range(CREATE_ATTEMPTS):
            try:
                return await self.sessions.create(body)
            except KubeError as err:
                if err.status == 409 and attempt + 1 < CREATE_ATTEMPTS:
                    body = build()
                    continue
                raise CallError(f"the API server refused the session: {err}") from None
        raise AssertionError("unreachable")

    async def _wait(self, created: dict[str, Any], ctx: Context | None) -> SessionResult:
        name = created["metadata"]["name"]
        step = 0

        async def progress(obj: dict[str, Any]) -> None:
            nonlocal step
            step += 1
            if ctx is not None:
                await ctx.report_progress(step, None, progress_message(obj))

        try:
            final = await self.sessions.wait(name, settled, self.settings.wait_seconds, progress)
        except KubeError as err:
            log.warning("reading %s failed: %s", name, err)
            final = None
        return await self._answer(final or created)

    async def _answer(self, obj: dict[str, Any]) -> SessionResult:
        result = session_result(obj)
        if result.done:
            await self.observer.finished(obj)  # charge the budget now, not at the next tick
        call_record().saw(result)
        return result

    # -- tools ---------------------------------------------------------------------
    async def codex(self, args: CodexArgs, ctx: Context | None = None) -> SessionResult:
        user = self.user()
        rec = call_record()
        rec.prompt = args.prompt

        def build() -> dict[str, Any]:
            return build_session(args, user=user, config=self.config)

        body = self._built(build)
        await self._limits(user, spends=True)
        cache_args = self._cacheable(body)
        if cache_args is not None:
            hit = await self.guard.cache_get(user, "codex", cache_args)
            self.metrics.cache.labels("hit" if hit else "miss").inc()
            if hit is not None:
                rec.decision = "cache_hit"
                cached = SessionResult.model_validate({**hit, "cached": True})
                rec.session, rec.phase = cached.session_id, cached.phase
                return cached
        created = await self._create(build, body)
        log.info(
            "codex: user=%s session=%s sandbox=%s prompt=%r",
            user,
            created["metadata"]["name"],
            created["spec"].get("sandbox"),
            shorten(redact(args.prompt), 120),
        )
        result = await self._wait(created, ctx)
        if cache_args is not None and result.status == "completed":
            await self.guard.cache_put(user, "codex", cache_args, result.model_dump(mode="json"))
        return result

    def _cacheable(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """The cache key's arguments, for the one kind of call whose answer may
        be reused: a read-only turn (it changes nothing) with caching enabled."""
        spec = body["spec"]
        if not self.config.cache.enabled or spec.get("sandbox") != "read-only":
            return None
        keys = ("prompt", "model", "sandbox", "mode", "fullAuto", "reasoningEffort", "verbosity")
        cache_args = {k: spec.get(k) for k in keys}
        if "wallBounce" in spec:  # a wall-bounce answer is not an ordinary turn's answer
            cache_args["wallBounce"] = spec["wallBounce"]
        return cache_args

    async def reply(self, args: ReplyArgs, ctx: Context | None = None) -> SessionResult:
        user = self.user()
        rec = call_record()
        rec.prompt = args.prompt
        try:
            kind, ident = args.target()
        except InvalidArguments as err:
            raise _invalid(str(err)) from None
        await self._limits(user, ident, spends=True)
        conversation = (
            conversation_of(await self._own(user, ident, fresh=True)) if kind == "session" else ident
        )
        try:
            turns = await self.sessions.list_for(user, conversation)
        except KubeError as err:
            raise CallError(f"cannot list the conversation: {err}") from None
        if not turns:
            first = await self._get(conversation)
            if first is None or owner(first) != user:
                raise CallError(
                    f"unknown conversation {conversation!r}: no such conversation of yours", "not_found"
                )
            turns = [first]
        parent = latest_turn(turns)
        assert parent is not None
        phase = (parent.get("status") or {}).get("phase")
        if phase in TERMINAL_PHASES and phase != "Succeeded":
            raise CallError(
                f"the conversation's latest turn {parent['metadata']['name']!r} ended as {phase}; "
                "it cannot be continued (start a new conversation with the codex tool)",
                "invalid",
            )
        codex_args = CodexArgs(prompt=args.prompt)

        def build() -> dict[str, Any]:
            return build_session(codex_args, user=user, config=self.config, parent=parent, tool="codex-reply")

        created = await self._create(build, self._built(build))
        log.info(
            "codex-reply: user=%s session=%s resumeFrom=%s",
            user,
            created["metadata"]["name"],
            parent["metadata"]["name"],
        )
        return await self._wait(created, ctx)

    async def info(self, session_id: str | None, list_active: bool) -> SessionInfoResult:
        user = self.user()
        if bool(session_id) == bool(list_active):
            raise _invalid("codex-session-info needs either session_id or list_active=true")
        await self._limits(user, session_id)
        if session_id:
            return SessionInfoResult(session=await self._answer(await self._own(user, session_id)))
        mine = await self.mine(user)
        active = [o for o in mine if (o.get("status") or {}).get("phase") not in TERMINAL_PHASES]
        active.sort(key=lambda o: o["metadata"].get("creationTimestamp") or "")
        return SessionInfoResult(sessions=[session_result(o) for o in active])

    async def cleanup(self, force: bool) -> CleanupResult:
        """Ask the operator to remove the caller's finished sessions (with
        `force`: all of them, cancelling what still runs; admins: everyone's)."""
        identity = self.identity()
        await self._limits(identity.user)
        everyone = force and self.is_admin(identity)
        try:
            pool = await (self.sessions.list_all() if everyone else self.sessions.list_for(identity.user))
        except KubeError as err:
            raise CallError(f"cannot list sessions: {err}") from None
        targets, kept = cleanup_targets(pool, force)
        result = CleanupResult(scope="all" if everyone else "mine", force=force, kept_active=kept)
        marked: list[str] = []
        for obj in targets:
            name = obj["metadata"]["name"]
            try:
                found = await self.sessions.annotate(name, {names.ANNOTATION_CLEANUP: identity.user})
            except KubeError as err:
                result.failed[name] = str(err)
                continue
            if found is None:
                result.removed.append(name)  # already gone
                continue
            marked.append(name)
            if (obj.get("status") or {}).get("phase") not in TERMINAL_PHASES:
                result.cancelled.append(name)
        still = await self._wait_gone(marked, self.settings.cleanup_wait_seconds, everyone, identity.user)
        result.removed += [n for n in marked if n not in still]
        result.pending = [n for n in marked if n in still]
        call_record().extra = {"removed": len(result.removed) + len(result.pending), "scope": result.scope}
        log.info(
            "codex-cleanup: user=%s scope=%s force=%s marked=%d",
            identity.user,
            result.scope,
            force,
            len(marked),
        )
        return result

    async def _wait_gone(self, wanted: list[str], timeout: float, everyone: bool, user: str) -> set[str]:
        left = set(wanted)
        deadline = time.monotonic() + timeout
        while left and time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            try:
                pool = await (self.sessions.list_all() if everyone else self.sessions.list_for(user))
            except KubeError:
                continue
            left &= {o["metadata"]["name"] for o in pool}
        return left

    # -- health --------------------------------------------------------------------
    async def health(self) -> tuple[bool, dict[str, Any]]:
        """API server and Redis reachability. Only the API server decides
        health: without Redis the gateway serves (see docs/architecture.md)."""
        api_problem = await self.sessions.ping()
        redis: dict[str, Any] = dict(self.guard.status())
        if redis.get("configured"):
            redis["reachable"] = await self.guard.ping()
        self.metrics.redis_up.set(1 if redis.get("reachable") else 0)
        body = {
            "status": "ok" if api_problem is None else "degraded",
            "kubernetes": {"reachable": api_problem is None, "error": api_problem},
            "redis": redis,
        }
        return api_problem is None, body


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
        name = self._label(raw) if key else ""
        record = CallRecord(name=name)
        token = _CALL.set(record)
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
            self.metrics.response_time.labels(method, name, outcome).observe(seconds)
            if key:
                self._finish(method, raw, record, outcome, error, seconds)

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
            self.stats.record(record.name, seconds, outcome == "error")
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


# --------------------------------------------------------------------------- wiring
def build_server(
    gateway: Gateway,
    *,
    token_verifier: Verifier | None = None,
    resource_url: str = "http://127.0.0.1/mcp",
    issuer_url: str | None = None,
    stats: ToolStats | None = None,
    audit: AuditLog | None = None,
) -> MCPServer:
    """The MCPServer; with `token_verifier` every HTTP request needs a bearer token."""
    stats = stats if stats is not None else ToolStats()
    audit = audit or AuditLog(gateway.config.security.audit_logging, gateway.metrics)
    observer = CallObserver(stats, gateway.metrics, audit)  # its server is set below
    auth = None
    if token_verifier is not None:
        # Static gateway tokens are issued for this gateway only: no audience to check.
        auth = AuthSettings(
            issuer_url=issuer_url or resource_url,
            resource_server_url=resource_url,
            validate_token_resource=False,
        )
    cfg = gateway.config.server
    mcp: MCPServer = MCPServer(
        cfg.name,
        description=cfg.description,
        version=cfg.version,
        instructions=(
            "Run OpenAI Codex turns in sandboxed Kubernetes pods. `codex` starts a conversation, "
            "`codex-reply` continues one, `codex-session-info` fetches a result that was still running, "
            "`codex-cleanup` removes your finished sessions."
        ),
        token_verifier=token_verifier,
        auth=auth,
        middleware=[observer],
    )

    @mcp.tool(
        name="codex",
        description=(
            "Run a Codex turn in a sandboxed runner pod. Returns the result, or (for long turns) a "
            "'running' answer with session_id to fetch later with codex-session-info; high-risk "
            "requests return AwaitingApproval with the ApprovalRequest to approve."
        ),
    )
    async def codex(
        prompt: Prompt,
        ctx: Context,
        model: ModelSlug | None = None,
        sandbox: Annotated[
            SandboxLevel | None, Field(description="read-only | isolated | full-access (default from config)")
        ] = None,
        mode: Annotated[Mode | None, Field(description="interactive | non-interactive | ci")] = None,
        full_auto: Annotated[
            StrictBool | None, Field(description="Autonomous execution; raises the risk.")
        ] = None,
        reasoning_effort: Annotated[
            ReasoningEffort | None, Field(description="minimal | low | medium | high")
        ] = None,
        verbosity: Annotated[Verbosity | None, Field(description="low | medium | high")] = None,
        wall_bounce: Annotated[StrictBool | None, Field(description=WALL_BOUNCE_DESCRIPTION)] = None,
    ) -> SessionResult:
        try:
            args = CodexArgs(
                prompt=prompt,
                model=model,
                sandbox=sandbox,
                mode=mode,
                full_auto=full_auto,
                reasoning_effort=reasoning_effort,
                verbosity=verbosity,
                wall_bounce=wall_bounce,
            )
        except ValueError as err:
            raise _invalid(str(err)) from None
        return await gateway.codex(args, ctx)

    @mcp.tool(
        name="codex-reply",
        description=(
            "Continue a conversation: a new turn that resumes from the conversation's latest turn, "
            "with the same workspace and Codex history. Give session_id or conversation_id."
        ),
    )
    async def codex_reply(
        prompt: Prompt,
        ctx: Context,
        session_id: SessionId | None = None,
        conversation_id: SessionId | None = None,
    ) -> SessionResult:
        try:
            args = ReplyArgs(prompt=prompt, session_id=session_id, conversation_id=conversation_id)
        except ValueError as err:
            raise _invalid(str(err)) from None
        return await gateway.reply(args, ctx)

    @mcp.tool(
        name="codex-session-info",
        description="One of your sessions (status, result, usage, cost, approval) or, with list_active, all active ones.",
    )
    async def codex_session_info(
        session_id: SessionId | None = None,
        list_active: Annotated[
            StrictBool, Field(description="List your sessions that have not finished.")
        ] = False,
    ) -> SessionInfoResult:
        return await gateway.info(session_id, list_active)

    @mcp.tool(
        name="codex-cleanup",
        description=(
            "Remove your finished sessions now instead of at their TTL. force=true removes all of "
            "your sessions, cancelling those still running (administrators: everyone's)."
        ),
    )
    async def codex_cleanup(
        force: Annotated[
            StrictBool, Field(description="Also remove unfinished sessions (they are cancelled first).")
        ] = False,
    ) -> CleanupResult:
        return await gateway.cleanup(force)

    register_prompts(mcp)
    register_resources(mcp, gateway, stats, attach_log_ring())
    observer.server = mcp

    async def authenticated(request: Request) -> Identity | None:
        if token_verifier is None:
            return Identity(gateway.settings.default_user or "anonymous")
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        found = await token_verifier.verify_token(token.strip())
        return Identity(found.subject or found.client_id) if found else None

    def unauthorized() -> Response:
        return JSONResponse(
            {"error": "invalid_token", "error_description": "a bearer token is required"},
            status_code=401,
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )

    @mcp.custom_route("/health", methods=["GET"])
    async def health(request: Request) -> Response:
        # Liveness: the process serves. Unauthenticated, says nothing else.
        return JSONResponse({"status": "ok"})

    @mcp.custom_route("/mcp/codex/health", methods=["GET"])
    async def codex_health(request: Request) -> Response:
        if await authenticated(request) is None:
            return unauthorized()
        ok, body = await gateway.health()
        return JSONResponse(body, status_code=200 if ok else 503)

    @mcp.custom_route("/mcp/codex/stats", methods=["GET"])
    async def codex_stats(request: Request) -> Response:
        if await authenticated(request) is None:
            return unauthorized()
        return JSONResponse(
            {
                "tools": stats.snapshot(),
                "sessions": {
                    "active_by_phase": gateway.observer.active,
                    "finished_seen": gateway.observer.finished_seen,
                    "last_listed_at": gateway.observer.last_ok,
                },
                "redis": gateway.guard.status(),
                "cache": {
                    "ready": bool(gateway.cache and gateway.cache.ready),
                    "sessions": len(gateway.cache.items()) if gateway.cache else 0,
                    "last_error": gateway.cache.last_error if gateway.cache else None,
                },
            }
        )

    return mcp
