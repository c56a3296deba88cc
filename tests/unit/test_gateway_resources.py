"""The gateway's MCP resources: builders, the log ring, the stats recorder,
and the wiring (in process, with a fake SessionApi)."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from mcp import Client

from codex_api.config import parse_config
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
from codex_gateway.server import Gateway, GatewaySettings, build_server

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
    logging.getLogger("codex_gateway.server").warning("a warning with %s", SECRET)
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
