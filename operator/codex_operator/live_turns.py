"""Handing turns to live runner pods (warm runners) and collecting their reports.

The operator signs every request to a pod's agent (codex_api.turn_request)
with an Ed25519 key only it holds; the pod has the public half. One task per
turn delivers the order and waits for the report; when it has one (or gives
up) it wakes the session, whose reconcile reads the outcome here.

Level-triggered like the rest: an operator that restarted mid-turn asks the
agent for the session's report before it orders anything, and an order for
a session whose turn runs or ran gets that turn's report back. A turn is
never run twice because somebody asked twice.

A turn with per-action approvals has a second task: it watches the agent's
waiting actions (`GET /v1/actions`) and wakes the session when a new one
waits; the session's reconcile decides it (codex_operator.action_gate) and
answers here (`POST /v1/actions/<seq>`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

import aiohttp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from codex_api.actions import Action, Answer
from codex_api.config import WarmRunnersConfig
from codex_api.turn_request import (
    TurnOrder,
    TurnReport,
    generate_private_key,
    load_private_key,
    public_key_pem,
    sign,
)

from .pod_builder import LivePod

log = logging.getLogger("codex_operator.live_turns")

RETRY_SECONDS = 0.1
# How long one look at a turn's waiting actions waits for a new one.
ACTIONS_POLL_SECONDS = 20.0
# How long past its own timeout a turn's report may take to arrive.
REPORT_GRACE_SECONDS = 30.0


@dataclass(frozen=True)
class WaitingAction:
    """An action the turn's Codex waits to hear about, as its agent numbered it."""

    seq: int
    action: Action


@dataclass(frozen=True)
class Undelivered:
    """No report: why, and whether another pod may run the turn (`retry`)."""

    reason: str
    message: str
    retry: bool


Outcome: TypeAlias = TurnReport | Undelivered


class LiveTurns:
    def __init__(self, key: Ed25519PrivateKey, config: WarmRunnersConfig, wake: Callable[[Hashable], None]):
        self._key = key
        self.config = config
        self._wake = wake
        self.public_pem = public_key_pem(key).decode()
        self.fingerprint = hashlib.sha256(self.public_pem.encode()).hexdigest()[:32]
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._outcomes: dict[str, Outcome] = {}
        # Session uid -> (address, uid) of the pod its turn went to.
        self._pods: dict[str, tuple[str, str]] = {}
        self._http: aiohttp.ClientSession | None = None
        # Per-action approvals, by session uid: what waits in its pod.
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._waiting: dict[str, dict[int, Action]] = {}
        self._answered: dict[str, set[int]] = {}

    @classmethod
    def from_config(cls, config: WarmRunnersConfig, wake: Callable[[Hashable], None]) -> LiveTurns:
        """With the configured key file, else a key of this process's own (pods
        started by another process are then never handed a turn)."""
        if config.signing_key_file:
            key = load_private_key(Path(config.signing_key_file).read_bytes())
        else:
            key = generate_private_key()
        return cls(key, config, wake)

    def live_pod(self) -> LivePod:
        return LivePod(
            public_key_pem=self.public_pem,
            key_fingerprint=self.fingerprint,
            port=self.config.agent_port,
            idle_seconds=self.config.idle_seconds,
            lifetime_seconds=self.config.max_pod_lifetime_seconds,
        )

    # -- what the reconciler asks ---------------------------------------------------
    def outcome(self, session_uid: str) -> Outcome | None:
        return self._outcomes.get(session_uid)

    def forget(self, session_uid: str) -> None:
        """Drop a turn's outcome and stop waiting for it (the turn has ended)."""
        self._outcomes.pop(session_uid, None)
        self._pods.pop(session_uid, None)
        task = self._tasks.pop(session_uid, None)
        if task is not None:
            task.cancel()
        self._stop_watching(session_uid)

    def deliver(self, key: Hashable, order: TurnOrder, *, pod_ip: str, pod_uid: str) -> None:
        """Make sure `order` reaches the pod and its report comes back (once)."""
        uid = order.session_uid
        if self._pods.get(uid, (pod_ip, pod_uid))[1] != pod_uid:
            self.forget(uid)  # an earlier attempt's pod: its delivery is over
        if uid in self._tasks or uid in self._outcomes:
            return
        self._pods[uid] = (pod_ip, pod_uid)
        self._tasks[uid] = asyncio.create_task(
            self._deliver(key, order, pod_ip, pod_uid), name=f"turn {order.namespace}/{order.session}"
        )
        if order.approvals == "per-action":
            self._watchers[uid] = asyncio.create_task(
                self._watch_actions(key, uid, pod_ip, pod_uid),
                name=f"actions {order.namespace}/{order.session}",
            )

    def waiting_actions(self, session_uid: str) -> list[WaitingAction]:
        """The session's actions that wait for an answer from this operator."""
        answered = self._answered.get(session_uid, set())
        return [
            WaitingAction(seq, action)
            for seq, action in sorted(self._waiting.get(session_uid, {}).items())
            if seq not in answered
        ]

    async def answer(self, session_uid: str, seq: int, answer: Answer) -> bool:
        """Give the waiting action `seq` its answer; False when the agent would not
        take it (then it stays waiting, and the next reconcile tries again)."""
        pod = self._pods.get(session_uid)
        if pod is None:
            return False
        pod_ip, pod_uid = pod
        path = f"/v1/actions/{seq}"
        body = json.dumps({"answer": answer}).encode()
        try:
            async with self._session().post(
                self._url(pod_ip, path),
                data=body,
                headers={"Content-Type": "application/json", **self._signed("POST", path, pod_uid, body)},
                timeout=aiohttp.ClientTimeout(total=10),
            ) as resp:
                text = (await resp.read()).decode(errors="replace")[:300]
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as err:
            log.warning("answering action %s failed: %r", seq, err)
            return False
        if status in (200, 404):  # 404: answered already, or its turn ended
            self._answered.setdefault(session_uid, set()).add(seq)
            return True
        log.warning("the agent refused answer %s to action %s (%s): %s", answer, seq, status, text)
        return False

    def _stop_watching(self, session_uid: str) -> None:
        watcher = self._watchers.pop(session_uid, None)
        if watcher is not None:
            watcher.cancel()
        for kept in (self._waiting, self._answered):
            kept.pop(session_uid, None)

    async def close(self) -> None:
        tasks = [*self._tasks.values(), *self._watchers.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.close()

    # -- delivery -------------------------------------------------------------------
    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        return self._http

    def _url(self, pod_ip: str, path: str) -> str:
        host = f"[{pod_ip}]" if ":" in pod_ip else pod_ip
        return f"http://{host}:{self.config.agent_port}{path}"

    def _signed(self, method: str, path: str, pod_uid: str, body: bytes) -> dict[str, str]:
        return sign(self._key, method=method, path=path, pod_uid=pod_uid, body=body)

    async def _deliver(self, key: Hashable, order: TurnOrder, pod_ip: str, pod_uid: str) -> None:
        outcome: Outcome
        try:
            outcome = await self._until_reported(order, pod_ip, pod_uid)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # never leave a session waiting on a dead task
            log.exception("delivering a turn failed")
            outcome = Undelivered("AgentError", f"delivering the turn failed: {err!r}"[:500], True)
        self._outcomes[order.session_uid] = outcome
        self._tasks.pop(order.session_uid, None)
        self._stop_watching(order.session_uid)  # what waited was cancelled with the turn
        self._wake(key)

    async def _watch_actions(self, key: Hashable, uid: str, pod_ip: str, pod_uid: str) -> None:
        """Keep `_waiting[uid]` to what the agent holds for this turn; wake the
        session when a new action waits."""
        path = "/v1/actions"
        seen = 0
        while True:
            try:
                async with self._session().get(
                    self._url(pod_ip, f"{path}?after={seen}&wait={ACTIONS_POLL_SECONDS:g}"),
                    headers=self._signed("GET", path, pod_uid, b""),
                    timeout=aiohttp.ClientTimeout(total=ACTIONS_POLL_SECONDS + 10),
                ) as resp:
                    if resp.status != 200:
                        raise ValueError(f"the agent answered {resp.status}")
                    listed = (await resp.json()).get("pending")
                found = {
                    int(item["seq"]): Action.model_validate(item["action"])
                    for item in listed or []
                    if item.get("session_uid") == uid
                }
            except asyncio.CancelledError:
                raise
            except Exception as err:  # the agent restarts, is busy, or says nonsense: ask again
                log.info("reading the waiting actions of %s: %r", uid, err)
                await asyncio.sleep(RETRY_SECONDS * 5)
                continue
            seen = max([seen, *found])
            if found.keys() != self._waiting.get(uid, {}).keys():
                self._waiting[uid] = found
                self._wake(key)

    async def _until_reported(self, order: TurnOrder, pod_ip: str, pod_uid: str) -> Outcome:
        deadline = time.monotonic() + order.timeout_seconds + REPORT_GRACE_SECONDS
        body = order.model_dump_json().encode()
        report_path = f"/v1/turns/{order.session_uid}"
        last = "the agent did not answer"
        while time.monotonic() < deadline:
            try:
                # First whether it ran already: an operator that restarted mid-turn.
                async with self._session().get(
                    self._url(pod_ip, report_path),
                    headers=self._signed("GET", report_path, pod_uid, b""),
                    timeout=aiohttp.ClientTimeout(total=10),
                ) as resp:
                    if resp.status == 200:
                        return TurnReport.model_validate_json(await resp.read())
                # A turn whose actions wait for people has no fixed end: the session's
                # reconcile bounds it (its timeout stops while an action waits).
                total = None if order.approvals == "per-action" else max(deadline - time.monotonic(), 1.0)
                async with self._session().post(
                    self._url(pod_ip, "/v1/turns"),
                    data=body,
                    headers={
                        "Content-Type": "application/json",
                        **self._signed("POST", "/v1/turns", pod_uid, body),
                    },
                    timeout=aiohttp.ClientTimeout(total=total, sock_connect=10),
                ) as resp:
                    text = await resp.read()
                    if resp.status == 200:
                        return TurnReport.model_validate_json(text)
                    message = text.decode(errors="replace")[:500]
                    if resp.status == 409:  # another turn still runs there: not ours to wait for
                        return Undelivered(
                            "PodBusy", f"the live pod is running another turn: {message}", True
                        )
                    if resp.status == 502:
                        return Undelivered("AgentError", f"the pod's agent failed the turn: {message}", True)
                    return Undelivered(
                        "AgentRefused", f"the pod's agent refused the turn ({resp.status}): {message}", False
                    )
            except aiohttp.ClientConnectorError as err:
                last = f"the agent does not answer yet: {err.strerror or err}"  # still starting
            except (aiohttp.ClientError, TimeoutError) as err:
                last = f"lost the agent mid-turn: {err!r}"[:300]
            except ValidationError as err:
                return Undelivered("AgentRefused", f"the agent's report is malformed: {err}"[:500], False)
            await asyncio.sleep(RETRY_SECONDS)
        return Undelivered("AgentUnreachable", last, True)
