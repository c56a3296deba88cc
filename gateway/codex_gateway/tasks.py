"""The MCP Tasks extension (`io.modelcontextprotocol/tasks`, SEP-2663, protocol
2026-07-28) for `codex` and `codex-reply`: a turn that outlives the call's
wait comes back as a task handle instead of a 'running' answer, and the
client polls `tasks/get` and may `tasks/cancel` it.

**The task is the CodexSession.** `taskId` is the session's name; `tasks/get`
reads the session (from the watch-fed cache when it is in sync), so a task
is as durable as the session, the same on every gateway replica, and the
same truth `kubectl codex` shows; nothing is kept here. Only the session's
requester sees or cancels it: anyone else's id, like an unknown one, is
"not found" (-32602).

| session                                   | task                                      |
|-------------------------------------------|-------------------------------------------|
| Pending, AwaitingApproval, Queued, Running | working (statusMessage: the phase's message, e.g. which ApprovalRequest the turn waits on) |
| Succeeded, Failed, TimedOut, Denied, ...   | completed, `result` = what the blocking call returns |
| Cancelled                                 | cancelled                                 |

A failed turn is a completed task whose result says so, as the blocking
call's result does (the spec keeps `failed` for protocol errors). The
extension applies only to requests of the 2026-07-28 protocol that declare
it; everyone else keeps the blocking call (the SDK checks 2025-era results
against the core schema, where a task handle does not exist).

**A per-action turn asks its caller.** While actions of the turn wait for a
person (codex_gateway.task_inputs), the task is `input_required` with one
`elicitation/create` form per action, keyed by its ApprovalRequest's name.
`tasks/update` answers them: the gateway writes the decision on that same
ApprovalRequest, as the requester (`decidedBy`); the
`approval-decision` admission policy admits such a relay only for what the
requester may decide (deny, or approve up to
`[security.action_approvals].requester_decides_up_to`), and the operator
honours it under the same rule. An approver's `kubectl codex approve` lands
on the same object; whichever comes first decides.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pydantic_core
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.extension import Extension, MethodBinding
from mcp.server.mcpserver import require_client_extension
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolRequestParams, RequestParams
from mcp_types.jsonrpc import INVALID_PARAMS
from pydantic import BaseModel, ConfigDict, Field

from codex_api import names
from codex_api.common import RequesterDecides
from codex_api.session import TERMINAL_PHASES
from codex_api.status import session_status

from .calls import call_record
from .kube import KubeError
from .service import CallError, Gateway
from .sessions import phase_of, session_result
from .task_inputs import InputError, elicitation, read_answer, waiting_actions

log = logging.getLogger("codex_gateway.tasks")

TASKS = "io.modelcontextprotocol/tasks"
PROTOCOL = "2026-07-28"
TASK_TOOLS = ("codex", "codex-reply")
POLL_INTERVAL_MS = 2000


class TaskIdParams(RequestParams):
    model_config = ConfigDict(extra="ignore")

    task_id: str = Field(alias="taskId", min_length=1, max_length=253)


class UpdateParams(TaskIdParams):
    input_responses: dict[str, Any] = Field(default_factory=dict, alias="inputResponses")


def tool_result(session: dict[str, Any]) -> dict[str, Any]:
    """The CallToolResult the blocking call returns for this session, as JSON."""
    result = session_result(session)
    structured = result.model_dump(mode="json")
    text = pydantic_core.to_json(result, fallback=str, indent=2).decode()  # as MCPServer writes it
    return {"content": [{"type": "text", "text": text}], "structuredContent": structured, "isError": False}


def task_of(session: dict[str, Any], *, ttl_seconds: int) -> dict[str, Any]:
    """The Task (with its result when completed) that this session is."""
    meta = session["metadata"]
    status = session_status(session)
    phase = phase_of(session)
    created = meta.get("creationTimestamp")
    stamps = [c.last_transition_time for c in status.conditions if c.last_transition_time]
    updated = max(stamps).strftime("%Y-%m-%dT%H:%M:%SZ") if stamps else created
    ttl = session.get("spec", {}).get("ttlSecondsAfterFinished", ttl_seconds)
    task: dict[str, Any] = {
        "taskId": meta["name"],
        "createdAt": created,
        "lastUpdatedAt": updated,
        # The session (and so the task) is removed this long after its turn ends.
        "ttlMs": int(ttl) * 1000,
        "pollIntervalMs": POLL_INTERVAL_MS,
    }
    if phase == "Cancelled":
        task.update(status="cancelled", statusMessage=status.message or "cancelled")
    elif phase in TERMINAL_PHASES:
        task.update(status="completed", statusMessage=f"{phase}: {status.message or ''}".strip(": "))
        task["result"] = tool_result(session)
    else:
        task.update(status="working", statusMessage=status.message or phase)
    return task


class TasksExtension(Extension):
    identifier = TASKS

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def methods(self) -> Sequence[MethodBinding]:
        era = frozenset({PROTOCOL})
        return (
            MethodBinding("tasks/get", TaskIdParams, self.get, era),
            MethodBinding("tasks/update", UpdateParams, self.update, era),
            MethodBinding("tasks/cancel", TaskIdParams, self.cancel, era),
        )

    # -- tools/call ------------------------------------------------------------------
    async def intercept_tool_call(
        self, params: CallToolRequestParams, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        result = await call_next(ctx)
        if params.name not in TASK_TOOLS or not _declared(ctx):
            return result
        structured = structured_of(result)
        if not structured or structured.get("done") or not structured.get("session_id"):
            return result  # answered within the wait: a plain result is allowed
        task = await self.task(await self.own(str(structured["session_id"])))
        task.pop("result", None)
        log.info("tools/call %s: task %s (%s)", params.name, task["taskId"], task["status"])
        return {"resultType": "task", **task}

    # -- tasks/* ---------------------------------------------------------------------
    async def get(self, ctx: ServerRequestContext[Any, Any], params: TaskIdParams) -> HandlerResult:
        require_client_extension(ctx, TASKS)
        return await self.task(await self.own(params.task_id))

    async def update(self, ctx: ServerRequestContext[Any, Any], params: UpdateParams) -> HandlerResult:
        require_client_extension(ctx, TASKS)
        session = await self.own(params.task_id)
        if params.input_responses:
            await self.answer(session, params.input_responses)
        return {}

    async def cancel(self, ctx: ServerRequestContext[Any, Any], params: TaskIdParams) -> HandlerResult:
        require_client_extension(ctx, TASKS)
        session = await self.own(params.task_id)
        if phase_of(session) not in TERMINAL_PHASES:  # else idempotent: nothing left to cancel
            await self.cancel_turn(params.task_id)
        return {}

    # -- shared with the 2025-11-25 tasks (legacy_tasks) ------------------------------
    async def answer(self, session: dict[str, Any], responses: dict[str, Any]) -> None:
        """Decide the waiting actions `responses` answers (keyed by request name), as
        the caller. Every answer is read before any is written: one bad answer
        refuses them all."""
        task_id = session["metadata"]["name"]
        user = self.gateway.user()
        waiting = {a["metadata"]["name"]: a for a in await self.waiting(session)}
        decisions = []
        for key, response in responses.items():
            approval = waiting.get(key)
            if approval is None:
                raise _invalid(
                    f"task {task_id} does not wait on {key!r}: it was decided or expired, or it "
                    f"is not this task's (waiting: {', '.join(waiting) or 'nothing'})"
                )
            try:
                decision = read_answer(key, response, approval, user, self.up_to())
            except InputError as err:
                raise _invalid(str(err)) from None
            if decision is not None:
                decisions.append(decision)
        for done, decision in enumerate(decisions):
            try:
                await self.gateway.sessions.decide(decision.name, decision.spec(user))
            except KubeError as err:
                written = ", ".join(d.name for d in decisions[:done]) or "none"
                raise _invalid(
                    f"cannot decide {decision.name}: {err} (decided before it: {written})"
                ) from None
            call_record().extra.setdefault("decisions", []).append(
                {"request": decision.name, "decision": decision.decision, "scope": decision.scope or "turn"}
            )
            log.info(
                "task answer: user=%s task=%s request=%s decision=%s scope=%s",
                user,
                task_id,
                decision.name,
                decision.decision,
                decision.scope or "turn",
            )

    async def cancel_turn(self, task_id: str) -> None:
        user = self.gateway.user()
        try:
            await self.gateway.sessions.annotate(task_id, {names.ANNOTATION_CANCEL: user})
        except Exception as err:  # the API server's refusal, as a protocol error
            raise _invalid(f"cannot cancel task {task_id}: {err}") from None
        log.info("task cancel: user=%s task=%s", user, task_id)

    async def task(self, session: dict[str, Any]) -> dict[str, Any]:
        task = task_of(session, ttl_seconds=self.ttl())
        if task["status"] != "working":
            return task
        waiting = await self.waiting(session)
        if waiting:
            task["status"] = "input_required"
            task["inputRequests"] = {a["metadata"]["name"]: elicitation(a, self.up_to()) for a in waiting}
            task["statusMessage"] = f"waiting for a decision on {len(waiting)} action(s) Codex asks to take"
        return task

    async def waiting(self, session: dict[str, Any]) -> list[dict[str, Any]]:
        """The turn's actions waiting for a person (none for a per-turn session: no read)."""
        if session_status(session).approvals != "per-action":
            return []
        try:
            approvals = await self.gateway.sessions.approvals_of(session["metadata"]["name"])
        except KubeError as err:
            raise _invalid(f"cannot read the actions of task {session['metadata']['name']}: {err}") from None
        return waiting_actions(session, approvals)

    # -- helpers ---------------------------------------------------------------------
    def up_to(self) -> RequesterDecides:
        return self.gateway.config.security.action_approvals.requester_decides_up_to

    async def own(self, task_id: str) -> dict[str, Any]:
        try:
            return await self.gateway.own(self.gateway.user(), task_id, fresh=True)
        except CallError:
            raise MCPError(code=INVALID_PARAMS, message="Failed to retrieve task: Task not found") from None

    def ttl(self) -> int:
        return self.gateway.config.kubernetes.default_ttl_seconds_after_finished


def _invalid(message: str) -> MCPError:
    return MCPError(code=INVALID_PARAMS, message=message[:1000])


def _declared(ctx: ServerRequestContext[Any, Any]) -> bool:
    """This request is of the 2026-07-28 protocol and declares the extension."""
    if ctx.protocol_version != PROTOCOL:
        return False
    capabilities = ctx.session.client_capabilities
    extensions = getattr(capabilities, "extensions", None) or {}
    return TASKS in extensions


def structured_of(result: HandlerResult) -> dict[str, Any] | None:
    if isinstance(result, BaseModel):
        result = result.model_dump(by_alias=True, mode="json")
    if not isinstance(result, dict) or result.get("isError"):
        return None
    found = result.get("structuredContent")
    return found if isinstance(found, dict) else None
