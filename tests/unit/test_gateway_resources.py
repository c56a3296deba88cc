"""The gateway's MCP resources: builders, the log ring, the stats recorder,
and the wiring (in process, with a fake SessionApi)."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from mcp import Client

from codex_api.config import parse_config
from codex_gateway.logs import bind_caller, unbind_caller
from codex_gateway.resources import (
    URI_CONFIG,
    URI_LOGS,
    URI_SESSIONS,
    URI_STATS,
    LogRing,
    ToolStats,
    active_sessions,
    attach_log_ring,
    current_config,
    percentile,
    recent_logs,
)
from codex_gateway.server import build_server
from codex_gateway.service import Gateway, GatewaySettings

SECRET = "sk-proj-abcdefghijklmnopqrstuvwxyz012345"
CONFIG = parse_config('[codex]\nmodel = "gpt-test"\nsandbox = "isolated"\n')


def _session(name: str, phase: str | None, user: str = "alice", created: str = "2026-01-01T00:00:00Z") -> Any:
    obj: dict[str, Any] = {
        "metadata": {"name": name, "namespace": "ns", "creationTimestamp": created},
        "spec": {"requestedBy": user, "model": "gpt-test", "sandbox": "read-only", "prompt": SECRET},
    }
    if phase:
        obj["status"] = {"phase": phase, "riskLevel": "low", "threadId": f"t-{name}"}
    return obj


def test_active_sessions_keeps_the_non_terminal_ones_oldest_first() -> None:
    items = [
        _session("cx-b", "Running", created="2026-01-01T00:00:02Z"),
        _session("cx-a", "AwaitingApproval", created="2026-01-01T00:00:01Z"),
        _session("cx-done", "Succeeded"),
        _session("cx-failed", "Failed"),
        _session("cx-new", None, created="2026-01-01T00:00:03Z"),
    ]
    out = active_sessions("alice", items)
    assert out["user"] == "alice" and out["count"] == 3
    assert [s["session_id"] for s in out["sessions"]] == ["cx-a", "cx-b", "cx-new"]
    assert out["by_phase"] == {"AwaitingApproval": 1, "Running": 1, "Pending": 1}
    first = out["sessions"][0]
    assert first["phase"] == "AwaitingApproval" and first["risk_level"] == "low"
    assert first["model"] == "gpt-test" and first["thread_id"] == "t-cx-a"
    assert first["approval_request"] == "cx-a-approval"
    assert SECRET not in json.dumps(out)  # the prompt is not part of the resource
    assert active_sessions("alice", [])["sessions"] == []


def test_active_sessions_with_timings_is_plain_json() -> None:
    """Typed status holds datetimes: the resource must still be JSON, timestamps as written."""
    running = _session("cx-run", "Running")
    running["status"]["timings"] = {"queuedAt": "2026-01-01T00:00:01Z", "startedAt": "2026-01-01T00:00:02Z"}
    out = active_sessions("alice", [running])
    (row,) = out["sessions"]
    assert (row["queued_at"], row["started_at"]) == ("2026-01-01T00:00:01Z", "2026-01-01T00:00:02Z")
    assert json.loads(json.dumps(out)) == out


def test_current_config_is_the_redacted_config() -> None:
    out = current_config(CONFIG, "ns", 20.0)
    assert out["config"]["codex"]["model"] == "gpt-test"
    assert out["gateway"] == {"namespace": "ns", "wait_seconds": 20.0, "auth": "bearer tokens"}
    json.dumps(out)  # JSON-ready


def test_log_ring_keeps_the_last_lines_structured_and_redacted() -> None:
    logger = logging.getLogger("test.gateway.ring")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    ring = LogRing(capacity=3)
    logger.addHandler(ring)
    try:
        logger.debug("not kept")
        for i in range(5):
            logger.info("line %d key=%s", i, SECRET)
        logger.warning("Authorization: Bearer abcdefghijklmnopqrstuvwxyz")
    finally:
        logger.removeHandler(ring)
    lines = ring.lines()
    assert len(lines) == 3
    records = [json.loads(line) for line in lines]
    assert [r["message"].split()[:2] for r in records[:2]] == [["line", "3"], ["line", "4"]]
    assert records[-1]["level"] == "WARNING" and records[-1]["logger"] == "test.gateway.ring"
    text = recent_logs(ring)
    assert SECRET not in text and "abcdefghijklmnopqrstuvwxyz" not in text and "[REDACTED]" in text
    assert text.endswith("\n") and len(ring.lines(1)) == 1 and ring.lines(0) == []
    assert recent_logs(LogRing()) == ""


def _log_as(logger: logging.Logger, user: str | None, message: str, *args: Any) -> None:
    token = bind_caller(user)
    try:
        logger.info(message, *args)
    finally:
        unbind_caller(token)


@pytest.fixture
def ring_logger() -> Any:
    logger = logging.getLogger("test.gateway.ring.users")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger
    logger.handlers[:] = []


def test_log_ring_files_each_line_under_its_user(ring_logger: logging.Logger) -> None:
    ring = LogRing()
    ring_logger.addHandler(ring)
    _log_as(ring_logger, "alice", "codex: user=alice session=cx-alice-1 prompt=%r", "alice's plan")
    _log_as(ring_logger, "mallory", "codex: user=mallory session=cx-mallory-1")
    _log_as(ring_logger, None, "session-cache: resynced (the gateway's own line)")
    # An audit event names its user itself (also for calls refused before any tool
    # code ran), whatever the request context says.
    token = bind_caller("mallory")
    try:
        ring_logger.info(
            "audit codex allowed by alice", extra={"audit": {"user": "alice", "session": "cx-a"}}
        )
        ring_logger.info("audit unknown refused", extra={"audit": {"user": None}})
    finally:
        unbind_caller(token)

    alice, mallory = recent_logs(ring, user="alice"), recent_logs(ring, user="mallory")
    assert "cx-alice-1" in alice and "alice's plan" in alice and "cx-a" in alice
    assert "mallory" not in alice and "resynced" not in alice
    assert "cx-mallory-1" in mallory
    assert "alice" not in mallory and "cx-a" not in mallory and "resynced" not in mallory
    assert "unknown refused" not in alice + mallory  # nobody's: administrators only
    assert recent_logs(ring, user="nobody") == ""
    everyone = recent_logs(ring)
    for text in ("cx-alice-1", "cx-mallory-1", "resynced", "cx-a", "unknown refused"):
        assert text in everyone


def test_log_ring_per_user_state_is_bounded(ring_logger: logging.Logger) -> None:
    ring = LogRing(capacity=10, per_user=3, max_users=4)
    ring_logger.addHandler(ring)
    _log_as(ring_logger, "alice", "alice's first line")
    # A hostile caller with many identities (or one user with many lines) cannot grow it.
    for i in range(50):
        _log_as(ring_logger, f"sock-{i}", "line %d", i)
        _log_as(ring_logger, "alice", "alice keeps working %d", i)  # recently active: kept
    assert len(ring.users()) == 4
    assert "alice" in ring.users() and "sock-0" not in ring.users() and "sock-49" in ring.users()
    assert len(ring.lines(user="alice")) == 3 and len(ring.lines()) == 10
    assert ring.lines(user="alice")[-1].count("alice keeps working 49") == 1
    assert "alice's first line" not in recent_logs(ring, user="alice")  # its ring holds 3 lines
    assert ring.lines(user="sock-0") == []


def test_log_ring_is_attached_once() -> None:
    ring = attach_log_ring("test.gateway.attach")
    assert attach_log_ring("test.gateway.attach") is ring
    assert sum(isinstance(h, LogRing) for h in logging.getLogger("test.gateway.attach").handlers) == 1


def test_percentile() -> None:
    assert percentile([], 50) is None
    assert percentile([5.0], 95) == 5.0
    values = [float(i) for i in range(1, 101)]
    assert percentile(values, 50) == 50.0 and percentile(values, 95) == 95.0


def test_tool_stats_counts_calls_errors_and_latency() -> None:
    now = [0.0]
    stats = ToolStats(clock=lambda: now[0])
    for ms in (10, 20, 30, 40):
        with stats.timed("codex"):
            now[0] += ms / 1000
    with pytest.raises(RuntimeError), stats.timed("codex-reply"):
        now[0] += 0.5
        raise RuntimeError("boom")
    snap = stats.snapshot()
    assert snap["total_calls"] == 5 and snap["total_errors"] == 1
    codex = snap["tools"]["codex"]
    assert codex["calls"] == 4 and codex["errors"] == 0
    assert codex["latency_ms"]["p50"] == pytest.approx(20.0)
    assert codex["latency_ms"]["p95"] == pytest.approx(40.0)
    assert codex["latency_ms"]["samples"] == 4
    assert snap["tools"]["codex-reply"] == {
        "calls": 1,
        "errors": 1,
        "latency_ms": {"p50": 500.0, "p95": 500.0, "max": 500.0, "samples": 1},
    }
    assert ToolStats().snapshot()["tools"] == {}


def test_tool_stats_per_user_and_for_administrators() -> None:
    stats = ToolStats(clock=lambda: 0.0)
    stats.record("codex", 0.1, False, "alice")
    stats.record("codex", 0.2, False, "alice")
    stats.record("codex-session-info", 0.3, True, "mallory")
    stats.record("codex", 0.4, True, None)  # unauthenticated: the gateway's figures only
    alice = stats.snapshot("alice")
    assert alice["scope"] == "mine" and alice["user"] == "alice"
    assert alice["total_calls"] == 2 and alice["total_errors"] == 0
    assert set(alice["tools"]) == {"codex"} and alice["tools"]["codex"]["latency_ms"]["max"] == 200.0
    assert "users" not in alice and "mallory" not in json.dumps(alice)
    mallory = stats.snapshot("mallory")
    assert set(mallory["tools"]) == {"codex-session-info"} and mallory["total_errors"] == 1
    assert "alice" not in json.dumps(mallory)
    assert stats.snapshot("nobody")["tools"] == {} and stats.snapshot("nobody")["total_calls"] == 0
    everyone = stats.snapshot()
    assert everyone["scope"] == "all" and everyone["total_calls"] == 4 and everyone["total_errors"] == 2
    assert everyone["tools"]["codex"]["calls"] == 3
    assert everyone["users"] == {
        "alice": {"calls": 2, "errors": 0},
        "mallory": {"calls": 1, "errors": 1},
    }


def test_tool_stats_per_user_state_is_bounded() -> None:
    stats = ToolStats(clock=lambda: 0.0, max_users=5, user_window=4)
    stats.record("codex", 0.01, False, "alice")
    for i in range(1000):
        stats.record("codex", 0.01, False, f"minted-{i}")
        stats.record("codex", 0.02, False, "alice")
    assert len(stats.users()) == 5 and "alice" in stats.users() and "minted-0" not in stats.users()
    alice = stats.snapshot("alice")["tools"]["codex"]
    assert alice["calls"] == 1001 and alice["latency_ms"]["samples"] == 4
    everyone = stats.snapshot()
    assert len(everyone["users"]) == 5 and everyone["tools"]["codex"]["calls"] == 2001
    assert everyone["tools"]["codex"]["latency_ms"]["samples"] == 1000  # the global window
    assert stats.snapshot("minted-0")["total_calls"] == 0  # forgotten: starts again from zero


class FakeSessions:
    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items

    async def list_for(self, user: str, conversation: str | None = None) -> list[dict[str, Any]]:
        return [o for o in self.items if o["spec"]["requestedBy"] == user]


async def test_resources_in_process() -> None:
    items = [
        _session("cx-run", "Running"),
        _session("cx-old", "Succeeded"),
        _session("cx-bob", "Running", "bob"),
    ]
    gateway = Gateway(
        FakeSessions(items),
        CONFIG,
        GatewaySettings(namespace="ns", default_user="alice"),
    )
    mcp = build_server(gateway)
    server_log = logging.getLogger("codex_gateway.server")
    for user, text in (("alice", "a warning with %s"), ("bob", "bob's own warning %s")):
        token = bind_caller(user)
        try:
            server_log.warning(text, SECRET)
        finally:
            unbind_caller(token)
    async with Client(mcp) as client:
        listed = {str(r.uri): r for r in (await client.list_resources()).resources}
        assert set(listed) == {URI_SESSIONS, URI_CONFIG, URI_LOGS, URI_STATS}
        assert listed[URI_LOGS].mime_type == "text/plain"
        assert all(listed[u].mime_type == "application/json" for u in (URI_SESSIONS, URI_CONFIG, URI_STATS))

        await client.call_tool("codex-session-info", {"list_active": True})
        await client.call_tool("codex-session-info", {})  # an error

        async def read(uri: str) -> tuple[str, str | None]:
            contents = (await client.read_resource(uri)).contents
            assert len(contents) == 1
            return contents[0].text, contents[0].mime_type  # type: ignore[union-attr]

        text, mime = await read(URI_SESSIONS)
        active = json.loads(text)
        assert mime == "application/json"
        assert [s["session_id"] for s in active["sessions"]] == ["cx-run"] and active["user"] == "alice"

        text, _ = await read(URI_CONFIG)
        assert json.loads(text)["config"]["codex"]["sandbox"] == "isolated"

        text, _ = await read(URI_STATS)
        info = json.loads(text)["tools"]["codex-session-info"]
        assert info["calls"] == 2 and info["errors"] == 1 and info["latency_ms"]["p50"] is not None

        text, mime = await read(URI_LOGS)
        assert mime == "text/plain" and SECRET not in text and "a warning with [REDACTED]" in text
        assert "bob's own warning" not in text  # another user's line

    # An administrator (config [kubernetes] admin_groups) reads everyone's.
    admin = Gateway(
        FakeSessions(items),
        CONFIG,
        GatewaySettings(namespace="ns", default_user="dave", default_groups=("codex-admins",)),
    )
    async with Client(build_server(admin)) as client:
        contents = (await client.read_resource(URI_LOGS)).contents
        text = contents[0].text  # type: ignore[union-attr]
        assert "a warning with [REDACTED]" in text and "bob's own warning [REDACTED]" in text
        stats = json.loads((await client.read_resource(URI_STATS)).contents[0].text)  # type: ignore[union-attr]
        assert stats["scope"] == "all" and "users" in stats
