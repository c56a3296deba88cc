"""The operator process: kopf watches, the store and work queue, the
reconcilers, metrics. kopf handlers only feed the store and the queue."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Hashable
from typing import Any, cast

from codex_api import names
from codex_api.config import CodexMCPConfig
from codex_api.session import TERMINAL_PHASES
from codex_api.status import phase_of

from . import approval_reconciler, session_reconciler
from .context import APPROVAL, SESSION, Context, approval_key, session_key
from .events import EventRecorder
from .gate import ConcurrencyGate
from .kube import APPROVALS, SESSIONS, Conflict, KubeApi, load_client
from .live_turns import LiveTurns
from .metrics import OperatorMetrics
from .pod_outcome import pod_outcome
from .store import Store, key_of
from .warm_pool import WarmPool
from .workqueue import WorkQueue

log = logging.getLogger("codex_operator.runtime")

RUNNER_SELECTOR = (
    f"{names.LABEL_MANAGED_BY}={names.MANAGED_BY},{names.LABEL_COMPONENT}={names.COMPONENT_RUNNER}"
)


class Runtime:
    def __init__(
        self,
        config: CodexMCPConfig,
        namespaces: list[str],
        *,
        kubeconfig: str | None = None,
        workers: int = 16,
        credential_key: bytes | None = None,
    ) -> None:
        self.config = config
        self.credential_key = credential_key
        self.namespaces = namespaces
        self.kubeconfig = kubeconfig
        self.workers = workers
        self.metrics = OperatorMetrics()
        self.store = Store()
        self.ctx: Context | None = None
        self.pool: WarmPool | None = None
        self.running = False  # set once the first sync is done and reconciles flow
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        api = KubeApi(await load_client(self.kubeconfig))
        gate = ConcurrencyGate(
            self.config.mcp.max_concurrent_sessions, self.config.mcp.max_concurrent_sessions_per_user
        )
        queue = WorkQueue(self._reconcile, workers=self.workers)
        queue.on_processed = self._observe
        self.ctx = ctx = Context(
            api, self.store, self.config, gate, queue, EventRecorder(api), self.metrics, self.credential_key
        )
        warm = self.config.kubernetes.warm_runners
        if warm.enabled:
            ctx.turns = LiveTurns.from_config(warm, queue.add)
            if warm.pool_size:
                self.pool = ctx.pool = WarmPool(ctx, self.namespaces)
        await self._sync()
        queue.start()
        for key in list(self.store.sessions):
            queue.add(session_key(*key))
        for key in list(self.store.approvals):
            queue.add(approval_key(*key))
        self._tasks = [
            asyncio.create_task(self._sweep(), name="sweep"),
            asyncio.create_task(self._gauges(), name="gauges"),
        ]
        if self.pool is not None:
            self._tasks.append(asyncio.create_task(self.pool.run(), name="warm-pool"))
        self.metrics.ready.set(1)
        self.running = True
        log.info("operator ready", extra={"namespaces": self.namespaces, "gate": ctx.gate.snapshot()})

    async def stop(self) -> None:
        self.running = False
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.ctx:
            if self.ctx.turns is not None:
                await self.ctx.turns.close()
            await self.ctx.queue.stop()
            await self.ctx.api.close()

    async def _sync(self) -> None:
        """List everything once before the first reconcile, so the gate starts exact."""
        assert self.ctx is not None
        api = self.ctx.api
        for ns in self.namespaces:
            for obj in await api.list_custom(SESSIONS, ns):
                self.store.upsert(self.store.sessions, obj)
            for obj in await api.list_custom(APPROVALS, ns):
                self.store.upsert(self.store.approvals, obj)
            for obj in await api.list_pods(ns, RUNNER_SELECTOR):
                self.store.upsert(self.store.pods, obj)
        holders: dict[Hashable, str] = {}
        for key, body in self.store.sessions.items():
            phase = phase_of(body)
            if phase in TERMINAL_PHASES:
                continue
            has_live_pod = any(not pod_outcome(p).finished for p in self.store.pods_of(*key))
            if phase == "Running" or has_live_pod:
                holders[session_key(*key)] = (body.get("spec") or {}).get("requestedBy") or ""
        self.ctx.gate.seed(holders)

    # -- events from kopf --------------------------------------------------------------
    def session_event(self, event_type: str | None, obj: dict[str, Any]) -> None:
        if self._apply(self.store.sessions, event_type, obj) and self.ctx:
            self.ctx.queue.add(session_key(*key_of(obj)))

    def approval_event(self, event_type: str | None, obj: dict[str, Any]) -> None:
        if self._apply(self.store.approvals, event_type, obj) and self.ctx:
            self.ctx.queue.add(approval_key(*key_of(obj)))

    def pod_event(self, event_type: str | None, obj: dict[str, Any]) -> None:
        labels = obj["metadata"].get("labels") or {}
        session = labels.get(names.LABEL_SESSION)
        if not self._apply(self.store.pods, event_type, obj) or not self.ctx:
            return
        if session:
            self.ctx.queue.add(session_key(obj["metadata"]["namespace"], session))
        if labels.get(names.LABEL_POOL) and self.ctx.pool is not None:
            self.ctx.pool.wake()

    def _apply(self, table: dict[Any, dict[str, Any]], event_type: str | None, obj: dict[str, Any]) -> bool:
        """Update the store; False when the event only echoes what we already hold
        (the response of our own write), so there is nothing new to reconcile."""
        if event_type == "DELETED":
            self.store.remove(table, obj)
            return True
        known = table.get(key_of(obj))
        if known and known["metadata"].get("resourceVersion") == obj["metadata"].get("resourceVersion"):
            return False
        self.store.upsert(table, obj)
        return True

    # -- reconcile ----------------------------------------------------------------------
    async def _reconcile(self, key: Hashable) -> float | None:
        assert self.ctx is not None
        kind, namespace, name = cast(tuple[str, str, str], key)
        try:
            if kind == SESSION:
                return await session_reconciler.reconcile(self.ctx, namespace, name)
            if kind == APPROVAL:
                return await approval_reconciler.reconcile(self.ctx, namespace, name)
        except Conflict:
            # Our view was stale; the watch event with the newer version re-queues us too.
            return 0.05
        return None

    def _observe(self, key: Hashable, seconds: float, ok: bool) -> None:
        kind = key[0]  # type: ignore[index]
        self.metrics.reconcile_seconds.labels(kind, "ok" if ok else "error").observe(seconds)

    async def _sweep(self) -> None:
        """Periodic cleanup: finished sessions past their TTL, expired approvals."""
        assert self.ctx is not None
        while True:
            await asyncio.sleep(self.config.kubernetes.cleanup_interval_seconds)
            for key, body in list(self.store.sessions.items()):
                if phase_of(body) in TERMINAL_PHASES:
                    self.ctx.queue.add(session_key(*key))
            for key, body in list(self.store.approvals.items()):
                if phase_of(body) in (None, "Pending"):
                    self.ctx.queue.add(approval_key(*key))

    async def _gauges(self) -> None:
        assert self.ctx is not None
        while True:
            phases = Counter(phase_of(b) or "Pending" for b in self.store.sessions.values())
            self.metrics.set_phases(dict(phases))
            self.metrics.active_sessions.set(len(self.ctx.gate.holders))
            self.metrics.queue_depth.set(len(self.ctx.queue))
            self.metrics.approvals_pending.set(
                sum(phase_of(b) in (None, "Pending") for b in self.store.approvals.values())
            )
            await asyncio.sleep(2)
