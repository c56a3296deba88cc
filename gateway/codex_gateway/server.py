"""The MCP server: tools that turn calls into CodexSessions and read the
results back from their status.

A call creates the CR, then waits at most ``wait_seconds`` for the turn to
end (sending progress notifications when the client asked for them) and
returns either the result or a structured "running" answer with the ids; a
session that needs approval returns at once. A dropped connection cancels
the waiting, never the session.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated, Any

from mcp.server import MCPServer
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field, StrictBool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from codex_api.common import SandboxLevel
from codex_api.config import CodexMCPConfig
from codex_api.redaction import redact, shorten
from codex_api.session import TERMINAL_PHASES, Mode, ReasoningEffort, Verbosity

from .auth import TokenStore, current_user
from .kube import KubeError, SessionApi
from .prompts import register_prompts
from .resources import ToolStats, attach_log_ring, register_resources
from .sessions import (
    CodexArgs,
    InvalidArguments,
    ModelSlug,
    Prompt,
    ReplyArgs,
    SessionId,
    SessionInfoResult,
    SessionResult,
    build_session,
    conversation_of,
    latest_turn,
    owner,
    progress_message,
    session_result,
    settled,
)

log = logging.getLogger("codex_gateway.server")

DEFAULT_WAIT_SECONDS = 20.0
CREATE_ATTEMPTS = 3


@dataclass(frozen=True)
class GatewaySettings:
    namespace: str
    wait_seconds: float = DEFAULT_WAIT_SECONDS
    # The identity of calls that carry no bearer token (stdio, in-process
    # tests). None: such calls are refused.
    default_user: str | None = None


def _not_found(session_id: str) -> ToolError:
    # Another user's session gets the same answer as a missing one: the
    # gateway does not reveal which session ids exist.
    return ToolError(f"unknown session {session_id!r}: no such session of yours")


class Gateway:
    """The tools' behaviour, independent of the MCP plumbing."""

    def __init__(self, sessions: SessionApi, config: CodexMCPConfig, settings: GatewaySettings) -> None:
        self.sessions = sessions
        self.config = config
        self.settings = settings

    def user(self) -> str:
        user = current_user() or self.settings.default_user
        if not user:
            raise ToolError("unauthenticated: this gateway needs a bearer token")
        return user

    async def _own(self, user: str, session_id: str) -> dict[str, Any]:
        obj = await self._get(session_id)
        if obj is None or owner(obj) != user:
            raise _not_found(session_id)
        return obj

    async def _get(self, name: str) -> dict[str, Any] | None:
        try:
            return await self.sessions.get(name)
        except KubeError as err:
            raise ToolError(f"cannot read session {name!r}: {err}") from None

    async def _create(self, build: Any) -> dict[str, Any]:
        for attempt in range(CREATE_ATTEMPTS):
            body = build()
            try:
                return await self.sessions.create(body)
            except KubeError as err:
                if err.status == 409 and attempt + 1 < CREATE_ATTEMPTS:
                    continue  # a random name collided: draw another
                raise ToolError(f"the API server refused the session: {err}") from None
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
        return session_result(final or created)

    async def codex(self, args: CodexArgs, ctx: Context | None = None) -> SessionResult:
        user = self.user()
        try:
            build_session(args, user=user, config=self.config)  # validate before anything exists
        except ValueError as err:
            raise ToolError(f"invalid arguments: {err}") from None
        created = await self._create(lambda: build_session(args, user=user, config=self.config))
        log.info(
            "codex: user=%s session=%s sandbox=%s prompt=%r",
            user,
            created["metadata"]["name"],
            created["spec"].get("sandbox"),
            shorten(redact(args.prompt), 120),
        )
        return await self._wait(created, ctx)

    async def reply(self, args: ReplyArgs, ctx: Context | None = None) -> SessionResult:
        user = self.user()
        try:
            kind, ident = args.target()
        except InvalidArguments as err:
            raise ToolError(str(err)) from None
        conversation = conversation_of(await self._own(user, ident)) if kind == "session" else ident
        try:
            turns = await self.sessions.list_for(user, conversation)
        except KubeError as err:
            raise ToolError(f"cannot list the conversation: {err}") from None
        if not turns:
            first = await self._get(conversation)
            if first is None or owner(first) != user:
                raise ToolError(f"unknown conversation {conversation!r}: no such conversation of yours")
            turns = [first]
        parent = latest_turn(turns)
        assert parent is not None
        phase = (parent.get("status") or {}).get("phase")
        if phase in TERMINAL_PHASES and phase != "Succeeded":
            raise ToolError(
                f"the conversation's latest turn {parent['metadata']['name']!r} ended as {phase}; "
                "it cannot be continued (start a new conversation with the codex tool)"
            )
        codex_args = CodexArgs(prompt=args.prompt)
        try:
            build_session(codex_args, user=user, config=self.config, parent=parent, tool="codex-reply")
        except ValueError as err:
            raise ToolError(f"invalid arguments: {err}") from None
        created = await self._create(
            lambda: build_session(
                codex_args, user=user, config=self.config, parent=parent, tool="codex-reply"
            )
        )
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
            raise ToolError("codex-session-info needs either session_id or list_active=true")
        if session_id:
            return SessionInfoResult(session=session_result(await self._own(user, session_id)))
        try:
            mine = await self.sessions.list_for(user)
        except KubeError as err:
            raise ToolError(f"cannot list sessions: {err}") from None
        active = [o for o in mine if (o.get("status") or {}).get("phase") not in TERMINAL_PHASES]
        active.sort(key=lambda o: o["metadata"].get("creationTimestamp") or "")
        return SessionInfoResult(sessions=[session_result(o) for o in active])


def build_server(
    gateway: Gateway,
    *,
    token_store: TokenStore | None = None,
    resource_url: str = "http://127.0.0.1/mcp",
    issuer_url: str | None = None,
    stats: ToolStats | None = None,
) -> MCPServer:
    """The MCPServer; with `token_store` every HTTP request needs a bearer token."""
    stats = stats if stats is not None else ToolStats()
    auth = None
    if token_store is not None:
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
            "`codex-reply` continues one, `codex-session-info` fetches a result that was still running."
        ),
        token_verifier=token_store,
        auth=auth,
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
    ) -> SessionResult:
        with stats.timed("codex"):
            try:
                args = CodexArgs(
                    prompt=prompt,
                    model=model,
                    sandbox=sandbox,
                    mode=mode,
                    full_auto=full_auto,
                    reasoning_effort=reasoning_effort,
                    verbosity=verbosity,
                )
            except ValueError as err:
                raise ToolError(f"invalid arguments: {err}") from None
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
        with stats.timed("codex-reply"):
            try:
                args = ReplyArgs(prompt=prompt, session_id=session_id, conversation_id=conversation_id)
            except ValueError as err:
                raise ToolError(f"invalid arguments: {err}") from None
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
        with stats.timed("codex-session-info"):
            return await gateway.info(session_id, list_active)

    register_prompts(mcp)
    register_resources(mcp, gateway, stats, attach_log_ring())

    @mcp.custom_route("/health", methods=["GET"])
    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return mcp
