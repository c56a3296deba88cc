"""Two gateway replicas, one Redis, one control plane: every handshake-era
MCP session is served by either replica (codex_gateway.mcp_sessions).

The protocol checks speak raw HTTP to each replica, so which replica gets a
request is the test's choice. The client check runs the SDK's own client
through a front the test can point at either replica (a Service, after one
of its pods died), and SIGKILLs the replica that opened the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from codex_devenv.gateway_process import GatewayProcess, mcp_client, start_gateway
from codex_devenv.process import free_port, wait_for
from codex_devenv.redis_server import RedisServer

ALICE = "alice-token-" + secrets.token_hex(8)
BOB = "bob-token-" + secrets.token_hex(8)
LEGACY = "2025-11-25"
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": LEGACY,
        "capabilities": {},
        "clientInfo": {"name": "scale-out-test", "version": "1"},
    },
}


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def replicas(
    control_plane: Any, namespace: str, redis: RedisServer, tmp_path: Path
) -> Iterator[list[GatewayProcess]]:
    tokens = {ALICE: "alice", BOB: "bob"}
    gws = [
        start_gateway(control_plane, namespace, tmp_path, tokens, redis_url=redis.url, name=f"gw-{i}")
        for i in range(2)
    ]
    yield gws
    for gw in gws:
        gw.stop()


def _post(
    gw: GatewayProcess, token: str, body: dict[str, Any], session: str | None = None
) -> httpx2.Response:
    headers = {**HEADERS, "Authorization": f"Bearer {token}", "MCP-Protocol-Version": LEGACY}
    if session:
        headers["Mcp-Session-Id"] = session
    return httpx2.post(gw.url, json=body, headers=headers, timeout=30)


def _payload(resp: httpx2.Response) -> dict[str, Any]:
    """The JSON-RPC message of a JSON or single-event SSE answer."""
    if resp.headers.get("content-type", "").startswith("text/event-stream"):
        data = [line[5:].strip() for line in resp.text.splitlines() if line.startswith("data:")]
        return json.loads([d for d in data if d][-1])
    return resp.json()


def _open(gw: GatewayProcess, token: str) -> str:
    headers = {**HEADERS, "Authorization": f"Bearer {token}"}
    resp = httpx2.post(gw.url, json=INITIALIZE, headers=headers, timeout=30)
    assert resp.status_code == 200, resp.text
    session = resp.headers["mcp-session-id"]
    ack = _post(gw, token, {"jsonrpc": "2.0", "method": "notifications/initialized"}, session)
    assert ack.status_code == 202, ack.text
    return session


def _tools(gw: GatewayProcess, token: str, session: str) -> httpx2.Response:
    return _post(gw, token, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, session)


def _adopted(gw: GatewayProcess) -> float:
    return gw.metric("codex_gateway_mcp_sessions_adopted_total") or 0.0


def test_a_session_opened_on_one_replica_is_served_by_the_other(replicas: list[GatewayProcess]) -> None:
    a, b = replicas
    session = _open(a, ALICE)
    resp = _tools(b, ALICE, session)
    assert resp.status_code == 200, resp.text
    assert {t["name"] for t in _payload(resp)["result"]["tools"]} >= {"codex", "codex-reply"}
    assert _adopted(b) == 1 and _adopted(a) == 0
    # Both hold it now; both keep serving it, and a tool call runs on either.
    for gw in (a, b, a):
        call = _post(
            gw,
            ALICE,
            {
                "jsonrpc": "2.0",
                "id": 3,
                "method": "tools/call",
                "params": {"name": "codex-session-info", "arguments": {"list_active": True}},
            },
            session,
        )
        assert call.status_code == 200 and "error" not in _payload(call), call.text
    assert _adopted(b) == 1
    assert (b.metric("codex_gateway_mcp_connections_open") or 0) >= 1


def test_a_new_session_is_recorded_before_its_id_reaches_the_client(
    replicas: list[GatewayProcess], redis: RedisServer
) -> None:
    """Clients send their next request as soon as `initialize` answers. If the
    record were written after the answer, that request could find no record
    and look like one for a session ended on another replica: a soak saw 4 of
    150 new sessions refused with 404 that way."""
    import redis as redis_client

    a, _ = replicas
    store = redis_client.Redis.from_url(redis.url)
    headers = {**HEADERS, "Authorization": f"Bearer {ALICE}"}
    with httpx2.Client(timeout=30) as http:
        for _ in range(60):
            with http.stream("POST", a.url, json=INITIALIZE, headers=headers) as resp:
                assert resp.status_code == 200
                session = resp.headers["mcp-session-id"]
                # Headers in hand, body not read yet: the record must exist.
                assert store.keys(f"*:mcp-session:{session}"), session
    store.close()


def test_another_credential_cannot_use_or_adopt_a_session(replicas: list[GatewayProcess]) -> None:
    a, b = replicas
    session = _open(a, ALICE)
    for gw in (a, b):
        stolen = _tools(gw, BOB, session)
        assert stolen.status_code == 404, stolen.text
        assert "Session not found" in stolen.text
    assert _adopted(b) == 0
    # Nothing was spoiled for the owner, on either replica.
    assert _tools(b, ALICE, session).status_code == 200
    assert _tools(a, ALICE, session).status_code == 200
    # An id nobody opened is as unknown as a stolen one, and a forged id is no key.
    for forged in ("0" * 32, "../../x", "a" * 500):
        assert _tools(b, ALICE, forged).status_code in (400, 404)
    assert _adopted(b) == 1


def test_delete_on_one_replica_ends_the_session_on_both(replicas: list[GatewayProcess]) -> None:
    a, b = replicas
    session = _open(a, ALICE)
    assert _tools(b, ALICE, session).status_code == 200  # b holds it too now
    headers = {"Authorization": f"Bearer {ALICE}", "Mcp-Session-Id": session, "MCP-Protocol-Version": LEGACY}
    assert httpx2.delete(b.url, headers=headers, timeout=30).status_code == 200
    for gw in (a, b):
        assert _tools(gw, ALICE, session).status_code == 404
    assert _adopted(a) == 0  # a dropped its copy; it did not adopt the dead one back


def test_with_redis_down_each_replica_keeps_its_own_sessions(
    replicas: list[GatewayProcess], redis: RedisServer
) -> None:
    a, b = replicas
    shared = _open(a, ALICE)
    redis.stop()
    local = _open(a, ALICE)
    assert _tools(a, ALICE, local).status_code == 200
    assert _tools(a, ALICE, shared).status_code == 200
    assert _tools(b, ALICE, local).status_code == 404  # not shared: b cannot know it
    redis.start()
    # Redis is back (each replica probes it again after its pause): a shares
    # what it opened meanwhile on its next request, and b can adopt it.
    wait_for(
        lambda: _tools(a, ALICE, local).status_code == 200 and _tools(b, ALICE, local).status_code == 200,
        timeout=60,
        what="the session opened during the outage to be shared",
        interval=0.5,
    )


class Front:
    """A TCP front on 127.0.0.1 that sends each new connection to one replica;
    `point_at` moves it, as a Service does once a pod is gone."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.port = free_port()
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Front:
        self._server = await asyncio.start_server(self._pipe, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    def point_at(self, port: int) -> None:
        self.target = port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ConnectionError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(copy(reader, up_writer), copy(up_reader, writer))


async def test_the_sdk_client_keeps_its_session_when_its_replica_is_killed(
    replicas: list[GatewayProcess],
) -> None:
    a, b = replicas
    async with Front(a.port) as front, mcp_client(front.url, ALICE, mode="legacy") as client:
        first = await client.call_tool("codex-session-info", {"list_active": True})
        assert not first.is_error, first.content
        front.point_at(b.port)
        a.kill()
        # Same client, same session id, no new handshake: the other replica answers.
        second = await client.call_tool("codex-session-info", {"list_active": True})
        assert not second.is_error, second.content
        tools = await client.list_tools()
        assert "codex" in {t.name for t in tools.tools}
    assert _adopted(b) == 1
