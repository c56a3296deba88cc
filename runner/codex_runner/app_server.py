"""A client of Codex's `app-server`: one long-lived Codex process that takes
turn after turn on a thread over JSON-RPC, instead of one `codex exec` per turn.

This is the building block of warm runners (issue 14): a runner pod keeps
one app-server between turns, so a reply costs a `turn/start`, not a process
start and a reload of the thread from disk (measured in bench/warm_turn_bench.py).

The protocol is newline-delimited JSON-RPC on the process's stdin/stdout
(pinned CLI 0.171.0; tests/integration/test_app_server.py checks the methods
used here against its generated schema):

- `initialize` {clientInfo} then the notification `initialized`;
- `thread/start` {cwd, sandbox, approvalPolicy, ...} -> {thread: {id}};
  `thread/resume` {threadId, ...} for a thread on disk (a pod restarted on
  its persistent workspace);
- `turn/start` {threadId, input} -> {turn: {id}} at once; the turn then
  reports `item/completed` (the answer is an `agentMessage` item),
  `thread/tokenUsage/updated` (`last` is this turn's usage) and ends with
  `turn/completed` {turn: {id, status, error}};
- `turn/interrupt` {threadId, turnId}: the turn ends `interrupted`.

Requests from the server (approvals: `item/*/requestApproval`) go to
`on_request`; without one they are declined, so nothing runs that no one
approved.

One turn at a time per client: Codex runs the turns of a thread in order,
and a runner serves one conversation.

Stdio is not private inside a container: a process of the same uid can
write to `/proc/<pid>/fd/0` of a dumpable process. In a runner pod both ends
of this pipe are non-dumpable (codex_runner.hardening), so the model's
commands cannot write into it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from codex_api.actions import refusal_payload
from codex_api.session import Usage

log = logging.getLogger("codex_runner.app_server")

# What a turn may end as (turn/completed's turn.status, besides inProgress).
TurnStatus = Literal["completed", "interrupted", "failed"]
ServerRequestHandler = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]
# Lines of a long tool output can be large; a turn's item holds the whole of it.
LINE_LIMIT = 64 * 1024 * 1024
CLIENT_NAME = "codex-k8s-runner"


class AppServerError(RuntimeError):
    """The app-server answered a request with an error, or went away."""


@dataclass(frozen=True)
class TurnOutcome:
    turn_id: str
    status: TurnStatus
    final_message: str | None
    usage: Usage
    error: str | None = None
    commands: int = 0
    file_changes: int = 0


@dataclass
class _Turn:
    turn_id: str
    done: asyncio.Future[dict[str, Any]]
    final_message: str | None = None
    usage: Usage = field(default_factory=Usage)
    commands: int = 0
    file_changes: int = 0
    # File change items as announced (item/started): their approval request
    # names only the item, the diff is here.
    announced: dict[str, dict[str, Any]] = field(default_factory=dict)


# Announced items kept per turn (a turn with more file changes is still served;
# the oldest are dropped and their late approvals are refused as unreviewable).
MAX_ANNOUNCED = 256


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


async def _decline(method: str, params: dict[str, Any]) -> dict[str, Any]:
    log.warning("declined %s: no one to ask", method)
    return refusal_payload(method)


class AppServer:
    """`codex app-server` as a child process; `start()` returns it initialized."""

    def __init__(self, proc: asyncio.subprocess.Process, on_request: ServerRequestHandler) -> None:
        self._proc = proc
        self._on_request = on_request
        self._next_id = 0
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._turn: _Turn | None = None
        self._closed: BaseException | None = None
        self._answering: set[asyncio.Task[None]] = set()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(
        cls,
        binary: str | Path,
        *,
        env: Mapping[str, str],
        cwd: str | Path,
        on_request: ServerRequestHandler = _decline,
        stderr: int | None = asyncio.subprocess.DEVNULL,
        timeout: float = 30,
    ) -> AppServer:
        proc = await asyncio.create_subprocess_exec(
            str(binary),
            "app-server",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
            env=dict(env),
            cwd=str(cwd),
            limit=LINE_LIMIT,
        )
        server = cls(proc, on_request)
        try:
            await server.request("initialize", {"clientInfo": {"name": CLIENT_NAME, "version": "1"}}, timeout)
            await server._send({"method": "initialized"})
        except BaseException:
            await server.close()
            raise
        return server

    @property
    def announced_items(self) -> Mapping[str, dict[str, Any]]:
        """The running turn's file change items by id, as `item/started` announced them."""
        return dict(self._turn.announced) if self._turn is not None else {}

    @property
    def pid(self) -> int:
        return self._proc.pid

    async def start_thread(
        self,
        *,
        cwd: str | Path,
        sandbox: str,
        approval_policy: str = "never",
        model: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> str:
        params: dict[str, Any] = {"cwd": str(cwd), "sandbox": sandbox, "approvalPolicy": approval_policy}
        if model:
            params["model"] = model
        result = await self.request("thread/start", {**params, **(extra or {})})
        return str(result["thread"]["id"])

    async def resume_thread(self, thread_id: str, *, sandbox: str, approval_policy: str = "never") -> str:
        params = {"threadId": thread_id, "sandbox": sandbox, "approvalPolicy": approval_policy}
        result = await self.request("thread/resume", {**params, "excludeTurns": True})
        return str(result["thread"]["id"])

    async def begin_turn(self, thread_id: str, prompt: str, *, approval_policy: str | None = None) -> str:
        """`approval_policy`: for this turn and the thread's next ones (else the thread's)."""
        if self._turn is not None and not self._turn.done.done():
            raise AppServerError(f"turn {self._turn.turn_id} is still running")
        done: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        # Registered before the request: turn/completed may follow its answer at once.
        self._turn = _Turn("", done)
        params: dict[str, Any] = {"threadId": thread_id, "input": [{"type": "text", "text": prompt}]}
        if approval_policy is not None:
            params["approvalPolicy"] = approval_policy
        result = await self.request("turn/start", params)
        self._turn.turn_id = str(result["turn"]["id"])
        return self._turn.turn_id

    async def wait_turn(self, timeout: float | None = None) -> TurnOutcome:
        turn = self._turn
        if turn is None:
            raise AppServerError("no turn was started")
        completed = await asyncio.wait_for(asyncio.shield(turn.done), timeout)
        raw = completed.get("status")
        status: TurnStatus = raw if raw in ("completed", "interrupted") else "failed"
        error = _dict(completed.get("error"))
        return TurnOutcome(
            turn_id=turn.turn_id,
            status=status,
            final_message=turn.final_message,
            usage=turn.usage,
            error=str(error.get("message")) if error else None,
            commands=turn.commands,
            file_changes=turn.file_changes,
        )

    async def run_turn(self, thread_id: str, prompt: str, timeout: float | None = None) -> TurnOutcome:
        await self.begin_turn(thread_id, prompt)
        return await self.wait_turn(timeout)

    async def interrupt(self, thread_id: str, turn_id: str) -> None:
        await self.request("turn/interrupt", {"threadId": thread_id, "turnId": turn_id})

    async def request(self, method: str, params: dict[str, Any], timeout: float | None = 30) -> Any:
        if self._closed is not None:
            raise AppServerError(f"the app-server is gone: {self._closed}")
        self._next_id += 1
        request_id = self._next_id
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = answer
        try:
            await self._send({"id": request_id, "method": method, "params": params})
            return await asyncio.wait_for(answer, timeout)
        finally:
            self._pending.pop(request_id, None)

    async def close(self, timeout: float = 5) -> None:
        if self._proc.stdin is not None and not self._proc.stdin.is_closing():
            self._proc.stdin.close()
        try:
            await asyncio.wait_for(self._proc.wait(), timeout)
        except TimeoutError:
            self._proc.kill()
            await self._proc.wait()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader

    async def _send(self, message: dict[str, Any]) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps(message).encode() + b"\n")
        await self._proc.stdin.drain()

    async def _read(self) -> None:
        assert self._proc.stdout is not None
        why: BaseException = AppServerError("the app-server closed its output")
        try:
            while line := await self._proc.stdout.readline():
                try:
                    message = json.loads(line)
                except ValueError:
                    log.warning("app-server wrote a line that is not JSON: %.200r", line)
                    continue
                if isinstance(message, dict):
                    await self._dispatch(message)
        except (OSError, ValueError) as err:  # ValueError: a line over LINE_LIMIT
            why = AppServerError(f"reading the app-server failed: {err}")
        self._fail_all(why)

    def _fail_all(self, why: BaseException) -> None:
        self._closed = why
        for answer in self._pending.values():
            if not answer.done():
                answer.set_exception(why)
        if self._turn is not None and not self._turn.done.done():
            self._turn.done.set_exception(why)

    async def _dispatch(self, message: dict[str, Any]) -> None:
        method = message.get("method")
        if method is None:
            answer = self._pending.get(message.get("id"))  # type: ignore[arg-type]
            if answer is not None and not answer.done():
                if "error" in message:
                    answer.set_exception(AppServerError(f"{message['error']}"))
                else:
                    answer.set_result(message.get("result"))
            return
        params = _dict(message.get("params"))
        if "id" in message:
            # The server asks (an approval): answer without holding up the reader.
            task = asyncio.create_task(self._answer(message["id"], str(method), params))
            self._answering.add(task)
            task.add_done_callback(self._answering.discard)
            return
        self._observe(str(method), params)

    async def _answer(self, request_id: Any, method: str, params: dict[str, Any]) -> None:
        try:
            result = await self._on_request(method, params)
            await self._send({"id": request_id, "result": result})
        except Exception as err:  # the server must get an answer, whatever went wrong
            log.warning("answering %s failed: %s", method, err)
            await self._send({"id": request_id, "error": {"code": -32000, "message": "refused"}})

    def _observe(self, method: str, params: dict[str, Any]) -> None:
        turn = self._turn
        if turn is None or turn.done.done():
            return
        if method == "item/started":
            item = _dict(params.get("item"))
            if item.get("type") == "fileChange" and isinstance(item.get("id"), str):
                if len(turn.announced) >= MAX_ANNOUNCED:
                    turn.announced.pop(next(iter(turn.announced)))
                turn.announced[item["id"]] = item
        elif method == "item/completed":
            item = _dict(params.get("item"))
            kind = item.get("type")
            if kind == "agentMessage" and isinstance(item.get("text"), str):
                turn.final_message = item["text"]
            elif kind == "commandExecution":
                turn.commands += 1
            elif kind == "fileChange":
                turn.file_changes += 1
        elif method == "thread/tokenUsage/updated":
            usage = _dict(params.get("tokenUsage"))
            turn.usage = Usage.from_app_server(usage.get("last"))
        elif method == "turn/completed":
            completed = _dict(params.get("turn"))
            if not turn.turn_id or completed.get("id") == turn.turn_id:
                turn.done.set_result(completed)
