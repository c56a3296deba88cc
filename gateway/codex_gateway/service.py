"""The gateway's service: the tools' logic that turns calls into CodexSessions
and reads the results back from their status.

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
from dataclasses import dataclass
from typing import Any

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError

from codex_api import names
from codex_api.config import CodexMCPConfig
from codex_api.redaction import redact, shorten
from codex_api.sandbox import profile
from codex_api.session import TERMINAL_PHASES
from codex_api.status import phase_of

from .auth import Identity, current_identity
from .calls import call_record
from .guard import BudgetExceeded, Guard, RateLimited
from .kube import KubeError, SessionApi
from .logs import bind_caller
from .metrics import GatewayMetrics
from .observer import SessionObserver
from .session_cache import SessionCache
from .sessions import (
    CleanupResult,
    CodexArgs,
    InvalidArguments,
    ReplyArgs,
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

log = logging.getLogger("codex_gateway.service")

DEFAULT_WAIT_SECONDS = 20.0
CLEANUP_WAIT_SECONDS = 5.0
CREATE_ATTEMPTS = 3


@dataclass(frozen=True)
class GatewaySettings:
    namespace: str
    wait_seconds: float = DEFAULT_WAIT_SECONDS
    cleanup_wait_seconds: float = CLEANUP_WAIT_SECONDS
    # The identity of calls that carry no bearer token (stdio, in-process
    # tests). None: such calls are refused.
    default_user: str | None = None
    default_groups: tuple[str, ...] = ()


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


def invalid_call(message: str) -> CallError:
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
        # The rest of this request's log lines are this user's (codex://logs/recent);
        # the middleware resets it when the request ends.
        bind_caller(identity.user)
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
    async def own(self, user: str, session_id: str, *, fresh: bool = False) -> dict[str, Any]:
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
            raise invalid_call(str(err)) from None

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
        be reused: a turn of a cacheable sandbox level (read-only: it changes
        nothing) with caching enabled."""
        spec = body["spec"]
        if not self.config.cache.enabled or not profile(spec.get("sandbox") or "").cacheable:
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
            raise invalid_call(str(err)) from None
        await self._limits(user, ident, spends=True)
        conversation = (
            conversation_of(await self.own(user, ident, fresh=True)) if kind == "session" else ident
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
        phase = phase_of(parent)
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
            raise invalid_call("codex-session-info needs either session_id or list_active=true")
        await self._limits(user, session_id)
        if session_id:
            return SessionInfoResult(session=await self._answer(await self.own(user, session_id)))
        mine = await self.mine(user)
        active = [o for o in mine if phase_of(o) not in TERMINAL_PHASES]
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
            if phase_of(obj) not in TERMINAL_PHASES:
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
