"""The MCP server's wiring: the MCPServer with its tools, prompts and
resources, the call middleware, authentication, and the HTTP routes.
The tools' logic is the service (service.py); the middleware is calls.py.
"""

from __future__ import annotations

import logging
from typing import Annotated

from mcp.server import MCPServer
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import Context
from pydantic import Field, StrictBool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from codex_api.common import ApprovalMode, SandboxLevel
from codex_api.sandbox import tool_description as sandbox_tool_description
from codex_api.session import Mode, ReasoningEffort, Verbosity

from .audit import AuditLog
from .auth import Identity, Verifier
from .calls import CallObserver
from .legacy_tasks import LegacyTasks
from .prompts import register_prompts
from .resources import ToolStats, attach_log_ring, register_resources
from .service import Gateway, invalid_call
from .sessions import (
    APPROVALS_DESCRIPTION,
    WALL_BOUNCE_DESCRIPTION,
    CleanupResult,
    CodexArgs,
    MaxCostUsd,
    ModelSlug,
    Prompt,
    ReplyArgs,
    SessionId,
    SessionInfoResult,
    SessionResult,
)
from .tasks import TasksExtension

log = logging.getLogger("codex_gateway.server")


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
    tasks = TasksExtension(gateway)
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
        middleware=[observer, LegacyTasks(tasks)],
        extensions=[tasks],
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
        sandbox: Annotated[SandboxLevel | None, Field(description=sandbox_tool_description())] = None,
        mode: Annotated[Mode | None, Field(description="interactive | non-interactive | ci")] = None,
        full_auto: Annotated[
            StrictBool | None, Field(description="Autonomous execution; raises the risk.")
        ] = None,
        reasoning_effort: Annotated[
            ReasoningEffort | None, Field(description="minimal | low | medium | high")
        ] = None,
        verbosity: Annotated[Verbosity | None, Field(description="low | medium | high")] = None,
        wall_bounce: Annotated[StrictBool | None, Field(description=WALL_BOUNCE_DESCRIPTION)] = None,
        max_cost_usd: MaxCostUsd | None = None,
        approvals: Annotated[ApprovalMode | None, Field(description=APPROVALS_DESCRIPTION)] = None,
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
                max_cost_usd=max_cost_usd,
                approvals=approvals,
            )
        except ValueError as err:
            raise invalid_call(str(err)) from None
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
            raise invalid_call(str(err)) from None
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
        if found is None:
            return None
        return Identity(found.subject or found.client_id, tuple((found.claims or {}).get("groups") or ()))

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
        caller = await authenticated(request)
        if caller is None:
            return unauthorized()
        # Tool figures are per caller, as in codex://stats/performance; the rest
        # is operational state without users or session ids (also on /metrics).
        return JSONResponse(
            {
                "tools": stats.snapshot(None if gateway.is_admin(caller) else caller.user),
                "sessions": {
                    "active_by_phase": gateway.observer.active,
                    "finished_seen": gateway.observer.finished_seen,
                    "last_listed_at": gateway.observer.last_ok,
                },
                "redis": gateway.guard.status(),
                "cache": {
                    "ready": bool(gateway.cache and gateway.cache.ready),
                    "sessions": len(gateway.cache) if gateway.cache else 0,
                    "last_error": gateway.cache.last_error if gateway.cache else None,
                },
            }
        )

    return mcp
