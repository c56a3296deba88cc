"""Handshake-era MCP sessions that every gateway replica can serve.

A 2025-era client opens a session with `initialize` on whichever replica the
Service picked and then sends `Mcp-Session-Id` with every request, possibly
to another replica (no affinity, a replica that was killed, a rolling
update). The MCP SDK keeps sessions in one process's memory and answers 404
elsewhere, and most clients do not re-initialize on that 404. So each
replica records the sessions it opens in Redis (who opened it, as the SDK's
own ownership check sees them, and the `initialize` parameters) and a
replica that gets a session it does not hold *adopts* it: it builds the
session's transport under the same id, born initialized with the recorded
parameters, and serves the request. The session state the gateway keeps is
nothing but that: calls are stateless and their results live in
CodexSessions, so an adopted session behaves exactly like the original.

Rules:
- Only the credential that opened a session may use or adopt it (the
  record holds a hash of the SDK's `AuthorizationContext`, never a token);
  anyone else gets the same 404 as for an unknown id.
- DELETE on any replica ends the session everywhere: the record goes, and a
  replica that still holds it checks the record on its next request (one
  Redis round trip that also refreshes the record's idle TTL) and drops it.
- Redis down: each replica keeps serving the sessions it holds (the record
  is written when Redis is back); a session that is not held here gets 404,
  as with a single replica. Sessions are routing state, not a guard, so this
  fails open for what is local and closed for what is not.

The SDK has no hook for this, so `share_sessions` replaces one method of the
manager instance (`_handle_stateful_request`) and uses the manager's own
session table; `mcp` is pinned to its minor version for that reason, and
tests/integration/test_gateway_scale_out.py fails if the SDK changes under it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.abc import TaskStatus
from mcp.server.auth.middleware.bearer_auth import (
    AuthenticatedUser,
    AuthorizationContext,
    authorization_context,
)
from mcp.server.connection import Connection
from mcp.server.runner import ServerRunner, serve_connection
from mcp.server.streamable_http import MCP_SESSION_ID_HEADER, StreamableHTTPServerTransport
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.inbound import MCP_PROTOCOL_VERSION_HEADER
from mcp.shared.jsonrpc_dispatcher import JSONRPCDispatcher
from mcp.shared.transport_context import TransportContext
from mcp_types import InitializeRequestParams
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import Message, Receive, Scope, Send

from .guard import Guard, RedisUnavailable

log = logging.getLogger("codex_gateway.mcp_sessions")

Handler = Callable[[Scope, Receive, Send], Awaitable[None]]

# An `initialize` body is a few hundred bytes; more is not kept for the record.
MAX_INITIALIZE_BYTES = 64 * 1024


def owner_of(scope: Scope) -> AuthorizationContext | None:
    """The principal the SDK binds a session to (None without authentication)."""
    user = scope.get("user")
    return authorization_context(user) if isinstance(user, AuthenticatedUser) else None


def fingerprint(owner: AuthorizationContext | None) -> str:
    return hashlib.sha256(json.dumps(owner, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class SessionRecord:
    owner: str
    protocol_version: str
    params: dict[str, Any] | None

    def to_json(self) -> str:
        return json.dumps(
            {"owner": self.owner, "protocol_version": self.protocol_version, "params": self.params}
        )

    @classmethod
    def from_json(cls, raw: bytes | str) -> SessionRecord:
        data = json.loads(raw)
        return cls(str(data["owner"]), str(data["protocol_version"]), data.get("params"))


class SessionDirectory:
    """The installation's open MCP sessions, in Redis, expiring after `ttl`
    seconds without a request (the SDK's own idle timeout)."""

    def __init__(self, guard: Guard, ttl: float) -> None:
        self._guard = guard
        self._ttl = max(1, int(ttl))

    def _key(self, session_id: str) -> str:
        return self._guard.key("mcp-session", session_id)

    async def record(self, session_id: str, record: SessionRecord) -> None:
        """Raises RedisUnavailable."""
        await self._guard.call(
            "mcp-session-record", lambda r: r.set(self._key(session_id), record.to_json(), ex=self._ttl)
        )

    async def lookup(self, session_id: str) -> SessionRecord | None:
        """Raises RedisUnavailable."""
        raw = await self._guard.call("mcp-session-lookup", lambda r: r.get(self._key(session_id)))
        if raw is None:
            return None
        try:
            return SessionRecord.from_json(raw)
        except (ValueError, KeyError, TypeError):
            log.warning("unreadable MCP session record ignored: session=%s", session_id[:64])
            return None

    async def touch(self, session_id: str) -> bool:
        """Refresh the idle TTL; False when the record is gone. Raises RedisUnavailable."""
        return bool(
            await self._guard.call("mcp-session-touch", lambda r: r.expire(self._key(session_id), self._ttl))
        )

    async def forget(self, session_id: str) -> None:
        """Raises RedisUnavailable."""
        await self._guard.call("mcp-session-forget", lambda r: r.delete(self._key(session_id)))


def _initialize_record(body: bytes, owner: str) -> SessionRecord:
    params: dict[str, Any] | None = None
    try:
        message = json.loads(body)
        if isinstance(message, dict) and message.get("method") == "initialize":
            params = message.get("params") if isinstance(message.get("params"), dict) else None
    except ValueError:
        pass
    version = ServerRunner._negotiate_initialize(params)[1] if params else HANDSHAKE_PROTOCOL_VERSIONS[-1]
    return SessionRecord(owner=owner, protocol_version=version, params=params)


def _not_found() -> JSONResponse:
    # The SDK's own answer for an unknown session, byte for byte in meaning.
    return JSONResponse(
        {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "Session not found"}}, 404
    )


class SharedSessions:
    """Installed on a manager by :func:`share_sessions`."""

    def __init__(
        self,
        manager: StreamableHTTPSessionManager,
        directory: SessionDirectory,
        on_adopt: Callable[[], None] | None = None,
    ) -> None:
        self.manager = manager
        self.directory = directory
        self._local = manager._handle_stateful_request
        self._on_adopt = on_adopt
        # Sessions of this replica whose record exists (written or adopted).
        self._recorded: set[str] = set()

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        session_id = Headers(scope=scope).get(MCP_SESSION_ID_HEADER)
        if session_id is None:
            await self._open(scope, receive, send)
            return
        owner = owner_of(scope)
        held = self.manager._server_instances.get(session_id)
        if held is not None and self.manager._session_owners.get(session_id) == owner:
            if not await self._still_open(session_id, owner):
                await self.manager._discard_session(session_id, held)
                await _not_found()(scope, receive, send)
                return
        elif held is None and not await self._adopt(session_id, owner, scope):
            await _not_found()(scope, receive, send)
            return
        # Held here now (or held by another principal: the SDK answers 404 itself).
        await self._local(scope, receive, send)
        transport = self.manager._server_instances.get(session_id)
        if transport is None or transport.is_terminated:
            await self._forget(session_id)

    async def _open(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = bytearray()
        opened: list[str] = []

        async def receive_and_keep() -> Message:
            message = await receive()
            if message["type"] == "http.request" and len(body) < MAX_INITIALIZE_BYTES:
                body.extend(message.get("body", b""))
            return message

        async def record_then_send(message: Message) -> None:
            # The record is written before the client can learn the id: its
            # next request (often sent the moment the answer arrives) must
            # find it, or it would look like a session ended elsewhere.
            if message["type"] == "http.response.start" and message["status"] < 400:
                session_id = Headers(raw=message.get("headers", [])).get(MCP_SESSION_ID_HEADER)
                if session_id and session_id in self.manager._server_instances:
                    opened.append(session_id)
                    await self._record_new(session_id, bytes(body), scope)
            await send(message)

        # Sessions the SDK let go (idle timeout) leave the set here.
        self._recorded &= self.manager._server_instances.keys()
        await self._local(scope, receive_and_keep, record_then_send)
        if opened and opened[0] not in self.manager._server_instances:
            await self._forget(opened[0])  # the SDK dropped it: its opening failed after all

    async def _record_new(self, session_id: str, body: bytes, scope: Scope) -> None:
        record = _initialize_record(body, fingerprint(owner_of(scope)))
        try:
            await self.directory.record(session_id, record)
            self._recorded.add(session_id)
        except RedisUnavailable:
            log.info("MCP session not shared (Redis unavailable): session=%s", session_id[:64])

    async def _still_open(self, session_id: str, owner: AuthorizationContext | None) -> bool:
        """False when the session was ended through another replica (or its record expired)."""
        try:
            if await self.directory.touch(session_id):
                return True
            if session_id not in self._recorded:
                # Opened here while Redis was down: share it now.
                await self.directory.record(session_id, SessionRecord(fingerprint(owner), "", None))
                self._recorded.add(session_id)
                return True
        except RedisUnavailable:
            return True
        self._recorded.discard(session_id)
        return False

    async def _forget(self, session_id: str) -> None:
        self._recorded.discard(session_id)
        with contextlib.suppress(RedisUnavailable):  # else its TTL ends it
            await self.directory.forget(session_id)

    async def _adopt(self, session_id: str, owner: AuthorizationContext | None, scope: Scope) -> bool:
        try:
            record = await self.directory.lookup(session_id)
        except RedisUnavailable:
            return False
        if record is None or record.owner != fingerprint(owner):
            if record is not None:
                log.warning("refused to adopt MCP session %s: another credential opened it", session_id[:64])
            return False
        header = Headers(scope=scope).get(MCP_PROTOCOL_VERSION_HEADER)
        version = header if header in HANDSHAKE_PROTOCOL_VERSIONS else record.protocol_version
        if version not in HANDSHAKE_PROTOCOL_VERSIONS:
            version = HANDSHAKE_PROTOCOL_VERSIONS[-1]
        params: InitializeRequestParams | None = None
        if record.params:
            try:
                params = InitializeRequestParams.model_validate(record.params, by_name=False)
            except ValueError:
                params = None
        manager = self.manager
        async with manager._session_creation_lock:
            if session_id in manager._server_instances:
                return True  # a concurrent request adopted it
            if manager.max_sessions is not None and len(manager._server_instances) >= manager.max_sessions:
                return False
            transport = StreamableHTTPServerTransport(
                mcp_session_id=session_id,
                is_json_response_enabled=manager.json_response,
                event_store=manager.event_store,
                security_settings=manager.security_settings,
                retry_interval=manager.retry_interval,
                idle_timeout=manager.session_idle_timeout,
            )
            if owner is not None:
                manager._session_owners[session_id] = owner
            manager._server_instances[session_id] = transport
        assert manager._task_group is not None
        await manager._task_group.start(self._serve_adopted, session_id, transport, version, params)
        self._recorded.add(session_id)
        log.info("adopted MCP session %s (protocol %s)", session_id[:64], version)
        if self._on_adopt is not None:
            self._on_adopt()
        return True

    async def _serve_adopted(
        self,
        session_id: str,
        transport: StreamableHTTPServerTransport,
        version: str,
        params: InitializeRequestParams | None,
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """The SDK's per-session server task, with the handshake already done."""
        manager = self.manager
        try:
            async with transport.connect() as (read_stream, write_stream):
                dispatcher: JSONRPCDispatcher[TransportContext] = JSONRPCDispatcher(
                    read_stream, write_stream, inline_methods=frozenset({"initialize"})
                )
                connection = Connection.for_loop(
                    dispatcher, session_id=session_id, protocol_version_hint=version
                )
                if params is not None:
                    connection.client_params = params
                connection.initialized.set()
                task_status.started()
                idle_scope = transport.idle_scope or anyio.CancelScope()
                with idle_scope:
                    await serve_connection(
                        manager.app, dispatcher, connection=connection, lifespan_state=manager._lifespan_state
                    )
        except Exception:
            log.exception("adopted MCP session %s crashed", session_id[:64])
        finally:
            await manager._discard_session(session_id, transport)


def share_sessions(
    manager: StreamableHTTPSessionManager,
    directory: SessionDirectory,
    on_adopt: Callable[[], None] | None = None,
) -> SharedSessions:
    """Make `manager`'s handshake-era sessions servable by every replica."""
    shared = SharedSessions(manager, directory, on_adopt)
    manager._handle_stateful_request = shared.handle  # type: ignore[method-assign]
    return shared
