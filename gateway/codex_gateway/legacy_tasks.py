"""MCP tasks on the 2025-11-25 protocol (the spec's own, experimental tasks):
the same tasks as codex_gateway.tasks serves on 2026-07-28, spoken in the
older era's words, for clients of the handshake era.

The two eras' tasks are not wire-compatible (2025: `params.task` on the
call, a `CreateTaskResult` wrapping `task`, `ttl`/`pollInterval`,
`tasks/result`, `tasks/list`; input asked by elicitation requests sent
during `tasks/result`. 2026: an extension declared per request, a flat
handle, `ttlMs`/`pollIntervalMs`, `tasks/update` with `inputRequests`), and
SDK 2.3 serves neither: the 2025 methods are spec methods an extension may
not bind. So this is a server middleware, active only on 2025-11-25
connections, that answers those methods itself (a middleware that does not
call on owns its result) and otherwise adds what the era needs: the
`tasks` capability in `initialize`, `execution.taskSupport: optional` on
`codex` and `codex-reply` in `tools/list`.

Everything else is codex_gateway.tasks: the task is the CodexSession, only
its requester sees it, the same status mapping, the same answers to a
per-action turn's actions (`TasksExtension.answer`, bounded by the same
rule and admission policy).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from mcp.server.context import CallNext, ServerRequestContext
from mcp.shared.exceptions import MCPError
from mcp_types.jsonrpc import INVALID_PARAMS
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from codex_api.session import TERMINAL_PHASES

from .sessions import phase_of
from .task_inputs import elicitation, problems
from .tasks import TASK_TOOLS, TasksExtension, structured_of, tool_result

log = logging.getLogger("codex_gateway.legacy_tasks")

LEGACY = "2025-11-25"
RELATED_TASK = "io.modelcontextprotocol/related-task"
CAPABILITY: dict[str, Any] = {"list": {}, "cancel": {}, "requests": {"tools": {"call": {}}}}
METHODS = ("tasks/get", "tasks/result", "tasks/list", "tasks/cancel")
PAGE = 50
POLL_SECONDS = 1.0
CANCEL_WAIT_SECONDS = 10.0


class _TaskId(BaseModel):
    model_config = ConfigDict(extra="ignore")

    task_id: str = Field(alias="taskId", min_length=1, max_length=253)


class _Cursor(BaseModel):
    model_config = ConfigDict(extra="ignore")

    cursor: str | None = Field(default=None, max_length=16, pattern=r"^[0-9]+$")


def legacy_task(task: dict[str, Any]) -> dict[str, Any]:
    """A 2026 task (codex_gateway.tasks.task_of) in 2025-11-25's `Task` words."""
    out = {
        "taskId": task["taskId"],
        "status": task["status"],
        "createdAt": task["createdAt"],
        "lastUpdatedAt": task["lastUpdatedAt"],
        "ttl": task["ttlMs"],
        "pollInterval": task["pollIntervalMs"],
    }
    if task.get("statusMessage"):
        out["statusMessage"] = task["statusMessage"]
    return out


def _related(task_id: str) -> dict[str, Any]:
    return {RELATED_TASK: {"taskId": task_id}}


def _params(model: type[BaseModel], params: Mapping[str, Any] | None) -> Any:
    try:
        return model.model_validate(dict(params or {}))
    except ValidationError as err:
        raise MCPError(code=INVALID_PARAMS, message=f"invalid params: {problems(err)}") from None


class LegacyTasks:
    """Server middleware: the 2025-11-25 tasks for `codex` and `codex-reply`."""

    def __init__(self, tasks: TasksExtension) -> None:
        self.tasks = tasks

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> Any:
        method = ctx.method
        if method == "initialize":
            result = await call_next(ctx)
            if isinstance(result, dict) and result.get("protocolVersion") == LEGACY:
                result.setdefault("capabilities", {})["tasks"] = CAPABILITY
            return result
        if ctx.protocol_version != LEGACY:
            return await call_next(ctx)
        if method == "tools/list":
            result = await call_next(ctx)
            for tool in result.get("tools") or [] if isinstance(result, dict) else []:
                if tool.get("name") in TASK_TOOLS:
                    tool["execution"] = {"taskSupport": "optional"}
            return result
        params = ctx.params if isinstance(ctx.params, Mapping) else {}
        if method == "tools/call" and params.get("task") is not None:
            if params.get("name") not in TASK_TOOLS:
                raise MCPError(
                    code=INVALID_PARAMS,
                    message=f"only {' and '.join(TASK_TOOLS)} run as tasks (taskSupport), not this tool",
                )
            return await self._call(ctx, call_next)
        if method in METHODS:
            if method == "tasks/list":
                return await self._list(_params(_Cursor, params))
            task_id = _params(_TaskId, params).task_id
            if method == "tasks/get":
                return legacy_task(await self.tasks.task(await self.tasks.own(task_id)))
            if method == "tasks/cancel":
                return await self._cancel(task_id)
            return await self._result(ctx, task_id)
        return await call_next(ctx)

    async def _call(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> dict[str, Any]:
        """A task-augmented call: the call as usual (bounded by the gateway's wait),
        answered with its task, done or not; `tasks/result` has the result."""
        result = await call_next(ctx)
        structured = structured_of(result)
        if not structured or not structured.get("session_id"):
            # Refused before any session existed (invalid, rate limit, budget): no task to give.
            content = result.get("content") if isinstance(result, dict) else None
            text = " ".join(str(c.get("text", "")) for c in content or [] if isinstance(c, dict))
            raise MCPError(code=INVALID_PARAMS, message=(text or "the call made no session")[:1000])
        task = await self.tasks.task(await self.tasks.own(str(structured["session_id"])))
        log.info("tools/call (2025 task): task %s (%s)", task["taskId"], task["status"])
        return {"task": legacy_task(task)}

    async def _list(self, params: _Cursor) -> dict[str, Any]:
        mine = await self.tasks.gateway.mine(self.tasks.gateway.user())
        mine.sort(
            key=lambda s: (s["metadata"].get("creationTimestamp") or "", s["metadata"]["name"]), reverse=True
        )
        start = int(params.cursor or 0)
        page = mine[start : start + PAGE]
        out: dict[str, Any] = {"tasks": [legacy_task(await self.tasks.task(s)) for s in page]}
        if start + PAGE < len(mine):
            out["nextCursor"] = str(start + PAGE)
        return out

    async def _cancel(self, task_id: str) -> dict[str, Any]:
        session = await self.tasks.own(task_id)
        phase = phase_of(session)
        if phase in TERMINAL_PHASES:
            raise MCPError(
                code=INVALID_PARAMS, message=f"Cannot cancel task: already in terminal status ({phase})"
            )
        await self.tasks.cancel_turn(task_id)
        # The era's result is the task after cancelling: wait for the operator to end it.
        deadline = asyncio.get_running_loop().time() + CANCEL_WAIT_SECONDS
        while True:
            task = legacy_task(await self.tasks.task(await self.tasks.own(task_id)))
            if task["status"] == "cancelled" or asyncio.get_running_loop().time() >= deadline:
                return task
            await asyncio.sleep(0.2)

    async def _result(self, ctx: ServerRequestContext[Any, Any], task_id: str) -> dict[str, Any]:
        """Block until the turn ends; meanwhile ask the caller, by elicitation, about
        each action its turn waits on (once per action per call), if it can answer."""
        asked: set[str] = set()
        can_ask = _elicits(ctx)
        while True:
            session = await self.tasks.own(task_id)
            if phase_of(session) in TERMINAL_PHASES:
                result = tool_result(session)
                result["_meta"] = _related(task_id)
                return result
            for approval in await self.tasks.waiting(session) if can_ask else []:
                name = approval["metadata"]["name"]
                if name in asked:
                    continue
                asked.add(name)
                form = elicitation(approval, self.tasks.up_to())["params"]
                answer = await ctx.session.elicit_form(
                    form["message"], form["requestedSchema"], related_request_id=ctx.request_id
                )
                try:
                    await self.tasks.answer(
                        session, {name: answer.model_dump(mode="json", exclude_none=True)}
                    )
                except MCPError as err:  # not theirs to give: the action waits for someone who may
                    log.info("tasks/result: task %s: answer for %s not taken: %s", task_id, name, err)
            await asyncio.sleep(POLL_SECONDS)


def _elicits(ctx: ServerRequestContext[Any, Any]) -> bool:
    capabilities = ctx.session.client_capabilities
    return getattr(capabilities, "elicitation", None) is not None
