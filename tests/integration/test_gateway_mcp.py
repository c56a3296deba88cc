"""The MCP gateway end to end: the real `codex-gateway` process, the real
operator, the real control plane, and the SDK's MCP client over streamable
HTTP. The tests play the node (finish_pod), as the operator tests do."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from kubernetes import client

from codex_api.common import GROUP, VERSION
from codex_api.result import RunnerResult
from codex_api.session import MAX_PROMPT, Usage
from codex_devenv.gateway_process import GatewayProcess
from codex_devenv.gateway_process import start_gateway as launch
from codex_devenv.process import wait_for
from codex_devenv.testkit import get_session, list_sessions, play_next_session

REPO = Path(__file__).resolve().parents[2]
ALICE = "alice-token-" + secrets.token_hex(8)
BOB = "bob-token-" + secrets.token_hex(8)


Gateway = GatewayProcess


@pytest.fixture
def start_gateway(
    control_plane: Any, namespace: str, run_operator: Any, tmp_path: Path
) -> Iterator[Callable[..., Gateway]]:
    started: list[Gateway] = []

    def start(wait_seconds: float = 20) -> Gateway:
        run_operator()
        gateway = launch(
            control_plane, namespace, tmp_path, {ALICE: "alice", BOB: "bob"}, wait_seconds=wait_seconds
        )
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.stop()


def _result(message: str = "def factorial(n): ...", thread: str = "thread-abc") -> RunnerResult:
    return RunnerResult(
        outcome="completed",
        thread_id=thread,
        final_message=message,
        usage=Usage(input_tokens=1000, cached_input_tokens=100, output_tokens=200, reasoning_tokens=10),
    )


def _sessions(kube_client: Any, namespace: str) -> list[dict[str, Any]]:
    return list_sessions(kube_client, namespace)


async def _play_node(
    kube_client: Any, namespace: str, known: set[str], result: RunnerResult, timeout: float = 30
) -> str:
    return await asyncio.to_thread(play_next_session, kube_client, namespace, known, result, timeout)


def _structured(result: Any) -> dict[str, Any]:
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return dict(result.structured_content)


async def test_codex_reply_and_session_info_through_mcp(
    start_gateway: Callable[..., Gateway], kube_client: Any, namespace: str
) -> None:
    gw = start_gateway()
    updates: list[tuple[float, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        updates.append((progress, message))

    async with gw.client(ALICE) as mcp_client:
        tools = {t.name: t for t in (await mcp_client.list_tools()).tools}
        assert {"codex", "codex-reply", "codex-session-info"} <= set(tools)
        assert tools["codex"].output_schema is not None
        assert set(tools["codex"].input_schema["properties"]["sandbox"]["anyOf"][0]["enum"]) == {
            "read-only",
            "isolated",
            "full-access",
        }

        call = asyncio.create_task(
            mcp_client.call_tool(
                "codex", {"prompt": "Write a factorial function"}, progress_callback=on_progress
            )
        )
        first = await _play_node(kube_client, namespace, set(), _result())
        out = _structured(await call)
        assert out["session_id"] == first and out["conversation_id"] == first
        assert out["phase"] == "Succeeded" and out["status"] == "completed" and out["done"]
        assert out["response"] == "def factorial(n): ..."
        assert out["thread_id"] == "thread-abc"
        assert out["usage"]["input_tokens"] == 1000 and out["usage"]["output_tokens"] == 200
        assert out["cost"]["actual_usd"] > 0 and out["timings"]["completed_at"]
        assert (
            out["requested_by"] == "alice" and out["model"] == "gpt-5-codex" and out["sandbox"] == "read-only"
        )
        assert updates and any("Running" in (m or "") for _, m in updates), updates

        obj = get_session(kube_client, namespace, first)
        assert obj["spec"]["requestedBy"] == "alice"
        assert obj["spec"]["workspace"]["type"] == "persistent"

        # codex-reply by session id: a new turn resuming from the first, same conversation
        call = asyncio.create_task(
            mcp_client.call_tool("codex-reply", {"prompt": "Now add memoization", "session_id": first})
        )
        second = await _play_node(kube_client, namespace, {first}, _result("memoized"))
        out2 = _structured(await call)
        assert out2["session_id"] == second != first
        assert out2["conversation_id"] == first and out2["response"] == "memoized"
        assert get_session(kube_client, namespace, second)["spec"]["resumeFrom"] == first

        # by conversation id: resumes from the conversation's LATEST turn
        call = asyncio.create_task(
            mcp_client.call_tool("codex-reply", {"prompt": "And tests", "conversation_id": first})
        )
        third = await _play_node(kube_client, namespace, {first, second}, _result("tests"))
        out3 = _structured(await call)
        assert out3["conversation_id"] == first
        assert get_session(kube_client, namespace, third)["spec"]["resumeFrom"] == second

        info = _structured(await mcp_client.call_tool("codex-session-info", {"session_id": first}))
        assert (
            info["session"]["phase"] == "Succeeded" and info["session"]["response"] == "def factorial(n): ..."
        )
        active = _structured(await mcp_client.call_tool("codex-session-info", {"list_active": True}))
        assert active["sessions"] == []

    # another user cannot read or continue alice's session
    async with gw.client(BOB) as bob:
        denied = await bob.call_tool("codex-session-info", {"session_id": first})
        assert denied.is_error and "unknown session" in denied.content[0].text  # type: ignore[union-attr]
        before = len(_sessions(kube_client, namespace))
        denied = await bob.call_tool("codex-reply", {"prompt": "hijack", "session_id": first})
        assert denied.is_error
        denied = await bob.call_tool("codex-reply", {"prompt": "hijack", "conversation_id": first})
        assert denied.is_error
        assert len(_sessions(kube_client, namespace)) == before


async def test_long_turn_returns_running_then_session_info_has_the_result(
    start_gateway: Callable[..., Gateway], kube_client: Any, namespace: str
) -> None:
    gw = start_gateway(wait_seconds=2)
    async with gw.client(ALICE) as mcp_client:
        started = time.monotonic()
        out = _structured(await mcp_client.call_tool("codex", {"prompt": "a long job"}))
        assert time.monotonic() - started < 15
        assert out["status"] == "running" and not out["done"]
        assert out["session_id"] and out["conversation_id"] == out["session_id"]
        assert "codex-session-info" in out["next_step"]
        active = _structured(await mcp_client.call_tool("codex-session-info", {"list_active": True}))
        assert [s["session_id"] for s in active["sessions"]] == [out["session_id"]]

        await _play_node(kube_client, namespace, set(), _result("late answer"))

        def finished() -> bool:
            return (get_session(kube_client, namespace, out["session_id"]).get("status") or {}).get(
                "phase"
            ) == "Succeeded"

        await asyncio.to_thread(wait_for, finished, timeout=30, what="the session to succeed")
        info = _structured(
            await mcp_client.call_tool("codex-session-info", {"session_id": out["session_id"]})
        )
        assert info["session"]["response"] == "late answer" and info["session"]["status"] == "completed"


async def test_full_access_returns_awaiting_approval_at_once(
    start_gateway: Callable[..., Gateway], kube_client: Any, namespace: str
) -> None:
    gw = start_gateway(wait_seconds=20)
    async with gw.client(ALICE) as mcp_client:
        started = time.monotonic()
        out = _structured(
            await mcp_client.call_tool("codex", {"prompt": "deploy the hotfix", "sandbox": "full-access"})
        )
        assert time.monotonic() - started < 10
        assert out["phase"] == "AwaitingApproval" and out["status"] == "awaiting_approval"
        assert out["risk_level"] == "high"
        approval = out["approval"]
        assert approval["approval_request"] == out["session_id"] + "-approval"
        assert approval["command"].startswith(
            f"kubectl patch cxar {approval['approval_request']} -n {namespace}"
        )
        ar: Any = client.CustomObjectsApi(kube_client).get_namespaced_custom_object(
            GROUP, VERSION, namespace, "approvalrequests", approval["approval_request"]
        )
        assert ar["spec"]["requestedBy"] == "alice" and ar["spec"]["toolName"] == "codex"


def test_requests_without_a_valid_token_get_401(
    start_gateway: Callable[..., Gateway], namespace: str
) -> None:
    gw = start_gateway()
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"},
        },
    }
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    for extra in ({}, {"Authorization": "Bearer not-a-known-token-at-all"}, {"Authorization": "Basic abc"}):
        resp = httpx2.post(gw.url, json=body, headers={**headers, **extra}, timeout=10)
        assert resp.status_code == 401, (extra, resp.status_code, resp.text)
    assert httpx2.get(f"http://127.0.0.1:{gw.port}/health", timeout=10).status_code == 200


BAD_CALLS: list[tuple[str, dict[str, Any]]] = [
    ("codex", {}),  # missing prompt
    ("codex", {"prompt": ""}),
    ("codex", {"prompt": "x" * (MAX_PROMPT + 1)}),  # oversized
    ("codex", {"prompt": 42}),  # wrong type
    ("codex", {"prompt": ["a"]}),
    ("codex", {"prompt": "p", "sandbox": "root"}),  # unknown enum
    ("codex", {"prompt": "p", "mode": "batch"}),
    ("codex", {"prompt": "p", "full_auto": "yes"}),
    ("codex", {"prompt": "p", "reasoning_effort": "extreme"}),
    ("codex", {"prompt": "p", "verbosity": "loud"}),
    ("codex", {"prompt": "p", "model": "no spaces allowed"}),
    ("codex-reply", {"prompt": "p"}),  # neither id
    ("codex-reply", {"prompt": "p", "session_id": "cx-doesnotexist"}),  # unknown session
    ("codex-reply", {"prompt": "p", "conversation_id": "cx-doesnotexist"}),
    ("codex-reply", {"prompt": "p", "session_id": "a", "conversation_id": "b"}),
    ("codex-reply", {"prompt": "p", "session_id": "Not_A_Name"}),
    ("codex-reply", {"session_id": "cx-1"}),
    ("codex-session-info", {}),
    ("codex-session-info", {"session_id": "cx-doesnotexist"}),
    ("codex-session-info", {"session_id": 7}),
    ("codex-session-info", {"list_active": "yes"}),
    ("no-such-tool", {"prompt": "p"}),
    ("codex", {"prompt": "p", "sandbox": None, "extra": "field"}),  # unknown argument
    ("codex", {"prompt": "p", "model": "m" * 200}),  # oversized model
    ("codex", {"prompt": "p", "sandbox": "READ-ONLY"}),  # enum values are exact
    ("codex", {"prompt": {"text": "p"}}),
    ("codex-reply", {"prompt": "p", "session_id": "x" * 300}),  # oversized id
    ("codex-reply", {"prompt": "p", "session_id": "../etc/passwd"}),  # hostile id
    ("codex-reply", {"prompt": "", "session_id": "cx-1"}),
    ("codex-session-info", {"session_id": "cx-1", "list_active": True}),  # both
    ("codex-session-info", {"session_id": "cx-1;drop"}),
    ("codex-cleanup", {"force": "true"}),
    ("codex-cleanup", {"force": 1}),
    ("codex-cleanup", {"everyone": True}),
]
BAD_PROMPTS: list[tuple[str, dict[str, str]]] = [
    ("no-such-prompt", {"code": "x"}),
    ("code-review", {}),  # missing code
    ("debug-helper", {"code": "x"}),  # missing error_message
    ("refactor-code", {"code": "x" * 300_000, "goal": "g"}),  # oversized
]
BAD_RESOURCES = ["codex://nothing/here", "file:///etc/passwd", "codex://sessions/../../secrets"]


async def test_bad_inputs_are_mcp_errors_and_create_nothing(
    start_gateway: Callable[..., Gateway], kube_client: Any, namespace: str
) -> None:
    gw = start_gateway()
    async with gw.client(ALICE) as mcp_client:
        for tool, args in BAD_CALLS:
            try:
                result = await mcp_client.call_tool(tool, args)
            except Exception as err:  # a JSON-RPC error is a proper MCP error too
                assert "rror" in type(err).__name__, (tool, args, err)
                continue
            assert result.is_error, (tool, args, result)
            assert result.content and result.content[0].text, (tool, args)  # type: ignore[union-attr]
        for prompt, prompt_args in BAD_PROMPTS:
            with pytest.raises(Exception) as err:
                await mcp_client.get_prompt(prompt, prompt_args)
            assert str(err.value), prompt
        for uri in BAD_RESOURCES:
            with pytest.raises(Exception) as err:
                await mcp_client.read_resource(uri)
            assert str(err.value), uri
        assert _sessions(kube_client, namespace) == []
        # and the server keeps serving
        assert len((await mcp_client.list_tools()).tools) >= 3


MALFORMED: list[tuple[str, bytes | str]] = [
    ("not json", b"{this is not json"),
    ("empty body", b""),
    ("a JSON string", b'"hello"'),
    ("wrong jsonrpc version", json.dumps({"jsonrpc": "1.0", "id": 1, "method": "ping"})),
    ("no method", json.dumps({"jsonrpc": "2.0", "id": 1})),
    ("params not an object", json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": 5})),
    ("unknown method", json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/explode"})),
    ("invalid UTF-8", b'{"jsonrpc":"2.0","id":1,"method":"\xff\xfe"}' + bytes([0xFF, 0xFE])),
    (
        "tool call without a name",
        json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"arguments": {}}}),
    ),
    ("oversized body", json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping", "pad": "x" * 5_000_000})),
]


def test_malformed_json_rpc_gets_errors_and_creates_nothing(
    start_gateway: Callable[..., Gateway], kube_client: Any, namespace: str
) -> None:
    gw = start_gateway()
    headers = {
        "Authorization": f"Bearer {ALICE}",
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "MCP-Protocol-Version": "2026-07-28",
    }
    for what, body in MALFORMED:
        resp = httpx2.post(gw.url, content=body, headers=headers, timeout=30)
        if resp.status_code == 200:
            # a JSON-RPC error object in a 200 answer is a proper error too
            text = resp.text
            assert '"error"' in text and '"code"' in text, (what, text[:300])
        else:
            assert 400 <= resp.status_code < 500, (what, resp.status_code, resp.text[:300])
    assert _sessions(kube_client, namespace) == []
    # a well-formed stateless (2026-07-28) request still works
    envelope = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    ok = httpx2.post(
        gw.url,
        json={"jsonrpc": "2.0", "id": 9, "method": "tools/list", "params": {"_meta": envelope}},
        headers={**headers, "Mcp-Method": "tools/list"},
        timeout=30,
    )
    assert ok.status_code == 200 and '"error"' not in ok.text and "codex-cleanup" in ok.text, ok.text
