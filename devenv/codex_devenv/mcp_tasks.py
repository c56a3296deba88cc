"""The client side of MCP tasks for tests (SDK 2.3 ships none of it): the
Tasks extension (`io.modelcontextprotocol/tasks`, 2026-07-28): declaring it,
taking a task handle from `tools/call`, `tasks/get|update|cancel`; and the
2025-11-25 protocol's own tasks: a task-augmented `tools/call`,
`tasks/get|result|list|cancel`, each result checked against that era's
schema."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from mcp.client import ClaimContext, Client, ClientExtension, ResultClaim
from mcp_types import CallToolResult, Request, RequestParams, Result
from pydantic import ConfigDict, Field

TASKS = "io.modelcontextprotocol/tasks"


class CreateTaskResult(Result):
    model_config = ConfigDict(extra="allow")

    result_type: Literal["task"] = "task"
    task_id: str
    status: str


class AnyResult(Result):
    """A result as sent (the task's fields are extras)."""

    model_config = ConfigDict(extra="allow")


class TaskIdParams(RequestParams):
    task_id: str


class UpdateParams(TaskIdParams):
    input_responses: dict[str, Any] = Field(default_factory=dict)


class GetTask(Request[TaskIdParams, Literal["tasks/get"]]):
    method: Literal["tasks/get"] = "tasks/get"
    params: TaskIdParams
    name_param = "taskId"


class CancelTask(Request[TaskIdParams, Literal["tasks/cancel"]]):
    method: Literal["tasks/cancel"] = "tasks/cancel"
    params: TaskIdParams
    name_param = "taskId"


class UpdateTask(Request[UpdateParams, Literal["tasks/update"]]):
    method: Literal["tasks/update"] = "tasks/update"
    params: UpdateParams
    name_param = "taskId"


class CursorParams(RequestParams):
    cursor: str | None = None


class ListTasks(Request[CursorParams, Literal["tasks/list"]]):
    """The 2025-11-25 protocol's tasks/list (no such method on 2026-07-28)."""

    method: Literal["tasks/list"] = "tasks/list"
    params: CursorParams = Field(default_factory=CursorParams)


async def _unresolved(task: CreateTaskResult, ctx: ClaimContext) -> CallToolResult:
    raise AssertionError("call tools with allow_claimed=True to get the task handle")


class TasksClient(ClientExtension):
    """Declares the extension on every request and takes `resultType: task`."""

    identifier = TASKS

    def claims(self) -> Sequence[ResultClaim[Any]]:
        return [ResultClaim(result_type="task", model=CreateTaskResult, resolve=_unresolved)]


async def call_tool_raw(client: Client, name: str, arguments: dict[str, Any]) -> Any:
    """The tool's answer as sent: a CreateTaskResult or a CallToolResult."""
    return await client.session.call_tool(name, arguments, allow_claimed=True)


async def _send(client: Client, request: Any) -> dict[str, Any]:
    answer = await client.session.send_request(request, AnyResult)
    return answer.model_dump(by_alias=True, exclude_none=False)


async def get_task(client: Client, task_id: str) -> dict[str, Any]:
    return await _send(client, GetTask(params=TaskIdParams(task_id=task_id)))


async def cancel_task(client: Client, task_id: str) -> dict[str, Any]:
    return await _send(client, CancelTask(params=TaskIdParams(task_id=task_id)))


async def list_tasks(client: Client) -> dict[str, Any]:
    return await _send(client, ListTasks())


async def update_task(client: Client, task_id: str, responses: dict[str, Any]) -> dict[str, Any]:
    return await _send(client, UpdateTask(params=UpdateParams(task_id=task_id, input_responses=responses)))


# -- 2025-11-25 -------------------------------------------------------------------------
async def legacy_request(client: Client, method: str, params: dict[str, Any]) -> dict[str, Any]:
    """A request on a 2025-11-25 connection, its result checked against that era's
    schema for `method` (raises if it does not conform)."""
    from mcp_types import _v2025_11_25 as v2025

    models: dict[str, Any] = {
        "tools/call": v2025.CreateTaskResult,
        "tasks/get": v2025.GetTaskResult,
        "tasks/list": v2025.ListTasksResult,
        "tasks/cancel": v2025.CancelTaskResult,
        "tasks/result": v2025.CallToolResult,
        "tools/list": v2025.ListToolsResult,
    }
    raw: dict[str, Any] = await client.session._dispatcher.send_raw_request(method, params, {})
    models[method].model_validate(raw, by_name=False)
    return raw
