"""The runner's agent: a warm runner pod's door for turns (issue 14).

A warm pod keeps one Codex app-server (codex_runner.app_server) between turns;
the agent takes each turn from the operator over HTTP and answers with how
it ended. Only the operator can hand it a turn: every request carries the
operator's Ed25519 signature over this pod's UID, the time, a nonce and the
body (codex_api.turn_request), and the pod holds only the public key. A
model that reads every file and variable of the pod still cannot order a
turn, replay one, or aim one at another pod.

- `POST /v1/turns` (a signed TurnOrder): runs the turn, answers a TurnReport;
  409 while another session's turn runs (one turn at a time: a pod serves one
  conversation); a turn past its timeout is interrupted. An order for a
  session whose turn already ran, or is running, gets that turn's report:
  a turn never runs twice, whoever asks again (an operator that restarted).
- `POST /v1/interrupt` (signed, empty body): interrupts the running turn.
- `GET /v1/turns/<session uid>[?wait=SECONDS]` (signed): the report of a turn
  that ended, waiting up to SECONDS for it.
- `GET /v1/actions[?wait=SECONDS&after=SEQ]` (signed): what the running turn's
  Codex asks to do and waits for (a turn ordered with `approvals: per-action`),
  each as a numbered Action (codex_api.actions), waiting up to SECONDS for one
  numbered above SEQ. The turn's timeout stops while an action waits: it
  bounds Codex's work, not the people deciding (each decision has its own
  expiry).
- `POST /v1/actions/<seq>` (signed, `{"answer": ...}`): the answer to one, once,
  from the answers Codex offers; Codex then goes on. A request that cannot be
  shown as it is (too large, malformed) is declined without asking, and one
  still waiting when its turn ends is cancelled.
- `GET /healthz`.

Unsigned, forged, replayed, stale or another pod's requests get 401 and run
nothing; malformed orders 400.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import ValidationError

from codex_api.actions import (
    ANSWERS,
    Action,
    Answer,
    UnreviewableAction,
    action_from_request,
    answer_payload,
    refusal_payload,
)
from codex_api.turn_request import NonceWindow, Rejected, TurnOrder, TurnReport, verify

from .app_server import AppServer, AppServerError, ServerRequestHandler, TurnOutcome
from .invocation import CODEX_SANDBOX

log = logging.getLogger("codex_runner.agent")

MAX_ORDER_BYTES = 1024 * 1024
KEPT_REPORTS = 16
MAX_WAIT_SECONDS = 60.0
APPROVAL_POLICY = {"never": "never", "per-action": "untrusted"}
# How long a resumed thread may still be held by a lost pod's Codex.
WRITER_WAIT_SECONDS = 60.0


class _Pending:
    def __init__(self, seq: int, session_uid: str, action: Action) -> None:
        self.seq = seq
        self.session_uid = session_uid
        self.action = action
        self.answer: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()

    def view(self) -> dict[str, object]:
        return {
            "seq": self.seq,
            "session_uid": self.session_uid,
            "action": self.action.model_dump(mode="json"),
        }


class Agent:
    def __init__(
        self,
        *,
        public_key: Ed25519PublicKey,
        pod_uid: str,
        workspace: Path,
        start_app_server: Callable[[ServerRequestHandler], Awaitable[AppServer]],
        credential_file: Path | None = None,
        sandbox: str | None = None,
        inner_sandbox: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`credential_file`: where each order's credential goes before its turn (the
        provider's `auth.command` reads it: codex_runner.invocation.build_config).
        `sandbox`: the pod's level; an order for another level is refused (the
        pod's mounts and policy were made for this one). `inner_sandbox`:
        whether Codex's own sandbox works here (else the pod alone confines it,
        as codex_runner.invocation.codex_sandbox says)."""
        self._key = public_key
        self._pod_uid = pod_uid
        self._workspace = workspace
        self._start_app_server = start_app_server
        self._credential_file = credential_file
        self._sandbox = sandbox
        self._inner_sandbox = inner_sandbox
        self._clock = clock
        self._nonces = NonceWindow()
        self._server: AppServer | None = None
        self._loaded: set[str] = set()  # threads this app-server has (started or resumed)
        self._running: tuple[str, str] | None = None  # (thread, turn)
        self._busy = asyncio.Lock()
        self._reports: OrderedDict[str, TurnReport] = OrderedDict()
        self._current: str | None = None  # the session uid whose turn runs
        self._changed = asyncio.Condition()  # a turn started or ended
        self.last_activity = clock()
        # The idle clock starts with the first order: a warm pool pod waits
        # for its conversation as long as the pool keeps it.
        self._ordered = False
        self._starting = asyncio.Lock()
        self._approvals = "never"  # the running turn's TurnOrder.approvals
        self._pending: dict[int, _Pending] = {}
        self._seq = 0
        self._paused = 0.0  # seconds the running turn spent with an action waiting
        self._paused_since: float | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_ORDER_BYTES)
        app.router.add_post("/v1/turns", self.turn)
        app.router.add_post("/v1/interrupt", self.interrupt)
        app.router.add_get("/v1/turns/{uid}", self.report)
        app.router.add_get("/v1/actions", self.actions)
        app.router.add_post("/v1/actions/{seq}", self.answer)
        app.router.add_get("/healthz", self.healthz)
        app.on_cleanup.append(self._close)
        return app

    async def _verified(self, request: web.Request) -> bytes:
        body = await request.read()
        try:
            verify(
                self._key,
                request.headers,
                method=request.method,
                path=request.path,
                pod_uid=self._pod_uid,
                body=body,
                nonces=self._nonces,
                now=self._clock(),
            )
        except Rejected as err:
            log.warning("refused %s %s from %s: %s", request.method, request.path, request.remote, err)
            raise web.HTTPUnauthorized(text=str(err)) from None
        return body

    async def turn(self, request: web.Request) -> web.Response:
        body = await self._verified(request)
        try:
            order = TurnOrder.model_validate_json(body)
        except ValidationError as err:
            raise web.HTTPBadRequest(text=f"not a turn order: {err.error_count()} problem(s)") from None
        if self._sandbox is not None and order.sandbox != self._sandbox:
            raise web.HTTPBadRequest(text=f"this pod runs {self._sandbox} turns, not {order.sandbox}")
        kept = self._reports.get(order.session_uid)
        if kept is None and self._current == order.session_uid:
            kept = await self._wait_report(order.session_uid, order.timeout_seconds + 30)
        if kept is not None:
            return web.json_response(kept.model_dump(mode="json"))
        if self._busy.locked():
            raise web.HTTPConflict(text="a turn is running in this pod")
        async with self._busy:
            await self._set_current(order.session_uid)
            self._ordered = True
            self.last_activity = self._clock()
            try:
                report = await self._run(order)
            except AppServerError as err:
                # A dead or confused app-server: the next turn starts a new one
                # (and resumes its thread from disk).
                await self._drop_app_server()
                raise web.HTTPBadGateway(text=f"codex app-server: {err}") from None
            finally:
                self._running = None
                self.last_activity = self._clock()
            self._reports[order.session_uid] = report
            while len(self._reports) > KEPT_REPORTS:
                self._reports.popitem(last=False)
            await self._set_current(None)
        return web.json_response(report.model_dump(mode="json"))

    async def _set_current(self, uid: str | None) -> None:
        async with self._changed:
            self._current = uid
            self._changed.notify_all()

    async def _wait_report(self, uid: str, seconds: float) -> TurnReport | None:
        """The report of `uid`'s turn once it ends (None: not within `seconds`, or it
        failed without one)."""
        try:
            async with asyncio.timeout(seconds), self._changed:
                await self._changed.wait_for(lambda: uid in self._reports or self._current != uid)
        except TimeoutError:
            pass
        return self._reports.get(uid)

    def last_report(self) -> TurnReport | None:
        return next(reversed(self._reports.values()), None)

    def idle_for(self) -> float:
        """Seconds since the last turn ended (0 while one runs)."""
        if not self._ordered or self._busy.locked():
            return 0.0
        return self._clock() - self.last_activity

    async def _run(self, order: TurnOrder) -> TurnReport:
        if order.credential is not None and self._credential_file is not None:
            self._write_credential(order.credential)
        server = await self._app_server()
        sandbox = CODEX_SANDBOX[order.sandbox] if self._inner_sandbox else "danger-full-access"
        if order.thread_id is None:
            thread = await server.start_thread(cwd=self._workspace, sandbox=sandbox)
        else:
            thread = order.thread_id
            if thread not in self._loaded:
                await self._resume(server, thread, sandbox)
        self._loaded.add(thread)
        self._approvals = order.approvals
        self._paused, self._paused_since = 0.0, None
        turn = await server.begin_turn(thread, order.prompt, approval_policy=APPROVAL_POLICY[order.approvals])
        self._running = (thread, turn)
        try:
            outcome = await self._wait_turn(server, order.timeout_seconds)
            error = outcome.error
        except TimeoutError:
            await self._interrupt(server, thread, turn)
            await self._cancel_pending()
            outcome = await server.wait_turn(10)
            error = f"the turn exceeded {order.timeout_seconds:g}s and was interrupted"
        finally:
            await self._cancel_pending()
        return TurnReport(
            session_uid=order.session_uid,
            thread_id=thread,
            turn_id=outcome.turn_id,
            status=outcome.status,
            final_message=outcome.final_message,
            error=error,
            usage=outcome.usage,
            commands=outcome.commands,
            file_changes=outcome.file_changes,
        )

    async def _resume(self, server: AppServer, thread: str, sandbox: str) -> None:
        """Resume the conversation's thread. A pod that was lost without its
        containers being stopped first (a force delete, a node gone) may still
        run Codex on the same workspace for a moment, holding the thread
        ("already has an active writer"): wait for it to go rather than fail
        the turn."""
        deadline = time.monotonic() + WRITER_WAIT_SECONDS
        while True:
            try:
                await server.resume_thread(thread, sandbox=sandbox)
                return
            except AppServerError as err:
                if "active writer" not in str(err) or time.monotonic() > deadline:
                    raise
                log.info("thread %s still has another writer; waiting for it to stop", thread)
                await asyncio.sleep(1.0)

    async def _wait_turn(self, server: AppServer, timeout: float) -> TurnOutcome:
        """The turn's outcome within `timeout` seconds of Codex working: time an
        action spends waiting for its answer does not count."""
        started = time.monotonic()
        while True:
            waiting = self._paused + (time.monotonic() - self._paused_since if self._paused_since else 0.0)
            left = timeout - (time.monotonic() - started - waiting)
            if left <= 0 and self._paused_since is None:
                raise TimeoutError
            try:
                return await server.wait_turn(1.0 if self._paused_since is not None else left)
            except TimeoutError:
                continue

    def _write_credential(self, credential: str) -> None:
        assert self._credential_file is not None
        staged = self._credential_file.with_name(self._credential_file.name + ".new")
        staged.touch(mode=0o600)
        staged.write_text(credential)
        staged.replace(self._credential_file)  # whole, never half-written

    async def _app_server(self) -> AppServer:
        async with self._starting:  # a turn and warm_up() must not start two
            if self._server is None:
                self._server = await self._start_app_server(self._on_request)
                self._loaded.clear()
            return self._server

    async def warm_up(self) -> None:
        """Start Codex's app-server before the first order, so the first turn
        does not wait for it. A failure here is only logged: the first turn
        starts it again and reports what goes wrong."""
        try:
            await self._app_server()
        except (AppServerError, OSError) as err:
            log.warning("app-server did not start ahead of the first turn: %s", err)
            await self._drop_app_server()

    async def _drop_app_server(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.close(timeout=2)

    async def interrupt(self, request: web.Request) -> web.Response:
        await self._verified(request)
        running = self._running
        if running is None or self._server is None:
            return web.json_response({"interrupted": False})
        try:
            await self._interrupt(self._server, *running)
        except AppServerError as err:
            raise web.HTTPServiceUnavailable(text=str(err)) from None
        return web.json_response({"interrupted": True})

    @staticmethod
    async def _interrupt(server: AppServer, thread: str, turn: str, attempts: int = 10) -> None:
        """Interrupt a running turn. Right after `turn/start` answers, the app-server
        may not take the interrupt yet: ask again for a moment."""
        for attempt in range(attempts):
            try:
                await server.interrupt(thread, turn)
                return
            except AppServerError:
                if attempt == attempts - 1:
                    raise
                await asyncio.sleep(0.1)

    async def report(self, request: web.Request) -> web.Response:
        await self._verified(request)
        uid = request.match_info["uid"]
        wait = _wait_seconds(request)
        found = self._reports.get(uid)
        if found is None and wait and self._current == uid:
            found = await self._wait_report(uid, wait)
        if found is None:
            raise web.HTTPNotFound(text="no finished turn of that session here")
        return web.json_response(found.model_dump(mode="json"))

    async def _on_request(self, method: str, params: dict[str, object]) -> dict[str, object]:
        """Codex asks before an action: hold it for the operator's answer."""
        server, session_uid = self._server, self._current
        try:
            action = action_from_request(method, params, server.announced_items if server else {})
        except UnreviewableAction as err:
            log.warning("declined %s without asking: %s", method, err)
            return refusal_payload(method)
        if self._approvals != "per-action" or session_uid is None:
            log.warning("declined %s: the turn was not ordered with per-action approvals", method)
            return answer_payload(action, "decline")
        self._seq += 1
        pending = _Pending(self._seq, session_uid, action)
        await self._pending_changed(lambda: self._pending.__setitem__(pending.seq, pending))
        try:
            answer = await pending.answer
        finally:
            await self._pending_changed(lambda: self._pending.pop(pending.seq, None))
        return answer_payload(action, answer)

    async def _pending_changed(self, change: Callable[[], object]) -> None:
        async with self._changed:
            change()
            if self._pending and self._paused_since is None:
                self._paused_since = time.monotonic()
            elif not self._pending and self._paused_since is not None:
                self._paused += time.monotonic() - self._paused_since
                self._paused_since = None
            self._changed.notify_all()

    async def _cancel_pending(self) -> None:
        """The turn ended or timed out: what still waits is cancelled, not left hanging."""
        for pending in list(self._pending.values()):
            if not pending.answer.done():
                pending.answer.set_result("cancel" if "cancel" in pending.action.offered else "decline")

    async def actions(self, request: web.Request) -> web.Response:
        await self._verified(request)
        wait = _wait_seconds(request)
        try:
            after = int(request.query.get("after", "0"))
        except ValueError:
            raise web.HTTPBadRequest(text="after must be an action number") from None
        if wait and not any(seq > after for seq in self._pending):
            try:
                async with asyncio.timeout(wait), self._changed:
                    await self._changed.wait_for(lambda: any(seq > after for seq in self._pending))
            except TimeoutError:
                pass
        return web.json_response({"pending": [p.view() for p in self._pending.values()]})

    async def answer(self, request: web.Request) -> web.Response:
        body = await self._verified(request)
        try:
            seq = int(request.match_info["seq"])
            answer = json.loads(body)["answer"]
        except (ValueError, KeyError, TypeError):
            raise web.HTTPBadRequest(text='expected POST /v1/actions/<number> with {"answer": ...}') from None
        pending = self._pending.get(seq)
        if pending is None or pending.answer.done():
            raise web.HTTPNotFound(text=f"no action {seq} waits for an answer")
        if answer not in ANSWERS or answer not in pending.action.offered:
            raise web.HTTPBadRequest(
                text=f"{str(answer)[:40]!r} is not offered: {', '.join(pending.action.offered)}"
            )
        pending.answer.set_result(answer)
        return web.json_response({"seq": seq, "answer": answer})

    async def healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "busy": self._busy.locked()})

    async def _close(self, _app: web.Application) -> None:
        if self._server is not None:
            await self._server.close()


def _wait_seconds(request: web.Request) -> float:
    try:
        wait = float(request.query.get("wait", "0"))
    except ValueError:
        wait = math.nan
    if not math.isfinite(wait) or wait < 0:
        raise web.HTTPBadRequest(text="wait must be a number of seconds")
    return min(wait, MAX_WAIT_SECONDS)
