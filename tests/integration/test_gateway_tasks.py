"""The MCP Tasks extension in the gateway (issue 15; codex_gateway.tasks): the
real `codex-gateway` process, the real operator and control plane, the SDK's
client over streamable HTTP declaring `io.modelcontextprotocol/tasks` on the
2026-07-28 protocol. The tests play the node (finish_pod). A task is the
CodexSession: polled to its result, cancelled, seen by its requester only;
clients without the extension keep the blocking call."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp.shared.exceptions import MCPError

from codex_api import names
from codex_api.result import RunnerResult
from codex_api.session import Usage
from codex_devenv.gateway_process import GatewayProcess
from codex_devenv.gateway_process import start_gateway as launch
from codex_devenv.mcp_tasks import (
    CreateTaskResult,
    TasksClient,
    call_tool_raw,
    cancel_task,
    get_task,
    legacy_request,
    list_tasks,
    update_task,
)
from codex_devenv.testkit import get_session, play_next_session

ALICE, BOB = "alice-tasks-token-" + secrets.token_hex(8), "bob-tasks-token-" + secrets.token_hex(8)
MODERN = "2026-07-28"


@pytest.fixture
def gateway(
    control_plane: Any, namespace: str, run_operator: Any, tmp_path: Path
) -> Iterator[GatewayProcess]:
    run_operator()
    gw = launch(control_plane, namespace, tmp_path, {ALICE: "alice", BOB: "bob"}, wait_seconds=1)
    yield gw
    gw.stop()


def _result(message: str) -> RunnerResult:
    usage = Usage(input_tokens=10, cached_input_tokens=0, output_tokens=2, reasoning_tokens=0)
    return RunnerResult(outcome="completed", thread_id="thread-t", final_message=message, usage=usage)


async def _poll(
    fetch: Callable[[], Any], until: Callable[[dict[str, Any]], bool], timeout: float = 30
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = await fetch()
        if until(found) or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.3)


async def test_a_turn_that_outlives_the_wait_is_a_task_polled_to_its_result(
    gateway: GatewayProcess, kube_client: Any, namespace: str
) -> None:
    async with gateway.client(ALICE, MODERN, [TasksClient()]) as mcp:
        handle = await call_tool_raw(mcp, "codex", {"prompt": "a long job"})
        assert isinstance(handle, CreateTaskResult), handle
        extra = handle.model_extra or {}
        assert handle.status == "working" and extra["ttlMs"] > 0 and extra["createdAt"]
        assert "result" not in extra and "inputRequests" not in extra
        session = get_session(kube_client, namespace, handle.task_id)  # the task is the session
        assert session["spec"]["requestedBy"] == "alice"
        first = await get_task(mcp, handle.task_id)
        assert first["status"] == "working" and first["taskId"] == handle.task_id
        assert first["resultType"] == "complete"

        await asyncio.to_thread(play_next_session, kube_client, namespace, set(), _result("late answer"), 30)
        done = await _poll(lambda: get_task(mcp, handle.task_id), lambda t: t["status"] != "working")
        assert done["status"] == "completed", done
        result = done["result"]
        assert result["isError"] is False
        assert result["structuredContent"]["response"] == "late answer"
        assert result["structuredContent"]["session_id"] == handle.task_id
        assert "late answer" in result["content"][0]["text"]
        assert (await cancel_task(mcp, handle.task_id))["resultType"] == "complete"  # idempotent when done


async def test_tasks_cancel_cancels_the_turn(
    gateway: GatewayProcess, kube_client: Any, namespace: str
) -> None:
    async with gateway.client(ALICE, MODERN, [TasksClient()]) as mcp:
        handle = await call_tool_raw(mcp, "codex", {"prompt": "never mind"})
        assert isinstance(handle, CreateTaskResult), handle
        assert (await cancel_task(mcp, handle.task_id))["resultType"] == "complete"
        annotations = get_session(kube_client, namespace, handle.task_id)["metadata"]["annotations"]
        assert annotations[names.ANNOTATION_CANCEL] == "alice"
        done = await _poll(lambda: get_task(mcp, handle.task_id), lambda t: t["status"] != "working")
        assert done["status"] == "cancelled" and "result" not in done, done


async def test_only_the_requester_sees_or_cancels_a_task(
    gateway: GatewayProcess, kube_client: Any, namespace: str
) -> None:
    async with gateway.client(ALICE, MODERN, [TasksClient()]) as alice:
        handle = await call_tool_raw(alice, "codex", {"prompt": "alice's job"})
        assert isinstance(handle, CreateTaskResult), handle
    async with gateway.client(BOB, MODERN, [TasksClient()]) as bob:
        for attempt in (get_task, cancel_task):
            with pytest.raises(MCPError) as refused:
                await attempt(bob, handle.task_id)
            assert refused.value.error.code == -32602 and "not found" in refused.value.error.message
        with pytest.raises(MCPError) as unknown:
            await get_task(bob, "no-such-task")
        assert unknown.value.error.code == -32602
    session = get_session(kube_client, namespace, handle.task_id)
    assert names.ANNOTATION_CANCEL not in (session["metadata"].get("annotations") or {})
    assert (session.get("status") or {}).get("phase") != "Cancelled"


async def test_input_for_a_request_the_task_does_not_wait_on_is_refused(gateway: GatewayProcess) -> None:
    async with gateway.client(ALICE, MODERN, [TasksClient()]) as mcp:
        handle = await call_tool_raw(mcp, "codex", {"prompt": "a job", "sandbox": "full-access"})
        assert isinstance(handle, CreateTaskResult), handle
        task = await get_task(mcp, handle.task_id)
        assert task["status"] == "working" and "kubectl patch cxar" in task["statusMessage"], task
        assert (await update_task(mcp, handle.task_id, {}))["resultType"] == "complete"
        with pytest.raises(MCPError) as refused:
            await update_task(
                mcp, handle.task_id, {"x": {"action": "accept", "content": {"decision": "approve"}}}
            )
        assert refused.value.error.code == -32602 and "does not wait on 'x'" in refused.value.error.message


async def test_clients_without_the_extension_keep_the_blocking_call(gateway: GatewayProcess) -> None:
    async with gateway.client(ALICE, MODERN) as modern:
        out = await modern.call_tool("codex", {"prompt": "no tasks here"})
        assert out.structured_content and out.structured_content["status"] == "running"
        with pytest.raises(MCPError) as missing:
            await get_task(modern, out.structured_content["session_id"])
        assert missing.value.error.code == -32021
    async with gateway.client(ALICE, "legacy", [TasksClient()]) as legacy:
        out = await legacy.call_tool("codex", {"prompt": "an older client"})
        assert out.structured_content and out.structured_content["status"] == "running"
        # The 2025 protocol's own tasks/get knows the session as a task, in that era's words.
        task = await legacy_request(legacy, "tasks/get", {"taskId": out.structured_content["session_id"]})
        assert task["status"] == "working" and "ttl" in task and "ttlMs" not in task


# -- the 2025-11-25 protocol's own tasks (codex_gateway.legacy_tasks) ----------------------
def _legacy_call(prompt: str) -> dict[str, Any]:
    return {"name": "codex", "arguments": {"prompt": prompt}, "task": {"ttl": 60_000}}


async def test_a_2025_client_gets_the_same_task_in_its_era_s_words(
    gateway: GatewayProcess, kube_client: Any, namespace: str
) -> None:
    """On the handshake era the gateway declares the `tasks` capability and
    `taskSupport` on codex/codex-reply; a task-augmented call answers a
    CreateTaskResult; tasks/get, tasks/list, tasks/result (blocking until the
    turn ends, the blocking call's result, related-task _meta) and
    tasks/cancel follow that era's schema (checked on every answer)."""
    async with gateway.client(ALICE, "legacy") as mcp:
        capabilities = mcp.server_capabilities.model_dump(by_alias=True, exclude_none=True)
        assert capabilities["tasks"] == {"list": {}, "cancel": {}, "requests": {"tools": {"call": {}}}}
        tools = {t["name"]: t for t in (await legacy_request(mcp, "tools/list", {}))["tools"]}
        assert tools["codex"]["execution"] == {"taskSupport": "optional"}
        assert tools["codex-reply"]["execution"] == {"taskSupport": "optional"}
        assert "execution" not in tools["codex-cleanup"]

        created = await legacy_request(mcp, "tools/call", _legacy_call("a long job"))
        task = created["task"]
        assert task["status"] == "working" and task["ttl"] > 0 and task["pollInterval"] > 0
        task_id = task["taskId"]
        assert get_session(kube_client, namespace, task_id)["spec"]["requestedBy"] == "alice"
        assert (await legacy_request(mcp, "tasks/get", {"taskId": task_id}))["status"] == "working"
        listed = await legacy_request(mcp, "tasks/list", {})
        assert task_id in [t["taskId"] for t in listed["tasks"]]

        waiting = asyncio.create_task(legacy_request(mcp, "tasks/result", {"taskId": task_id}))
        await asyncio.to_thread(
            play_next_session, kube_client, namespace, set(), _result("in 2025 words"), 30
        )
        result = await asyncio.wait_for(waiting, 60)
        assert result["structuredContent"]["response"] == "in 2025 words" and result["isError"] is False
        assert result["_meta"]["io.modelcontextprotocol/related-task"] == {"taskId": task_id}
        done = await legacy_request(mcp, "tasks/get", {"taskId": task_id})
        assert done["status"] == "completed"
        with pytest.raises(MCPError) as ended:
            await legacy_request(mcp, "tasks/cancel", {"taskId": task_id})
        assert ended.value.error.code == -32602 and "terminal" in ended.value.error.message

        second = (await legacy_request(mcp, "tools/call", _legacy_call("never mind")))["task"]["taskId"]
        cancelled = await legacy_request(mcp, "tasks/cancel", {"taskId": second})
        assert cancelled["status"] == "cancelled", cancelled
        assert (
            get_session(kube_client, namespace, second)["metadata"]["annotations"][names.ANNOTATION_CANCEL]
            == "alice"
        )


async def test_a_2025_client_sees_and_cancels_only_its_own_tasks(
    gateway: GatewayProcess, kube_client: Any, namespace: str
) -> None:
    async with gateway.client(ALICE, "legacy") as alice:
        task_id = (await legacy_request(alice, "tools/call", _legacy_call("alice's job")))["task"]["taskId"]
    async with gateway.client(BOB, "legacy") as bob:
        for method in ("tasks/get", "tasks/result", "tasks/cancel"):
            with pytest.raises(MCPError) as refused:
                await legacy_request(bob, method, {"taskId": task_id})
            assert refused.value.error.code == -32602 and "not found" in refused.value.error.message
        assert task_id not in [t["taskId"] for t in (await legacy_request(bob, "tasks/list", {}))["tasks"]]
        for bad in ({}, {"taskId": ""}, {"taskId": "x" * 300}, {"taskId": 7}):
            with pytest.raises(MCPError) as malformed:
                await legacy_request(bob, "tasks/get", bad)
            assert malformed.value.error.code == -32602
        with pytest.raises(MCPError) as not_a_task:
            await legacy_request(bob, "tools/call", {"name": "codex-cleanup", "arguments": {}, "task": {}})
        assert not_a_task.value.error.code == -32602 and "run as tasks" in not_a_task.value.error.message
        with pytest.raises(MCPError) as bad_cursor:
            await legacy_request(bob, "tasks/list", {"cursor": "../etc"})
        assert bad_cursor.value.error.code == -32602
    session = get_session(kube_client, namespace, task_id)
    assert names.ANNOTATION_CANCEL not in (session["metadata"].get("annotations") or {})


async def test_a_2026_connection_does_not_speak_2025_tasks(gateway: GatewayProcess) -> None:
    async with gateway.client(ALICE, MODERN) as modern:
        with pytest.raises(MCPError) as unknown:
            await list_tasks(modern)
        assert unknown.value.error.code == -32601
