"""Watches the sessions created through MCP (a periodic list: the gateway
may list and watch them) and turns what it sees into metrics and budget
charges. A turn that finishes after its tool call returned, or while no
gateway replica was waiting for it, is still counted and charged; charges
are idempotent per session (the guard's marker), so replicas and restarts
never charge twice."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from codex_api.session import TERMINAL_PHASES
from codex_api.status import phase_of, session_status

from .guard import Guard
from .kube import KubeError, SessionApi
from .metrics import GatewayMetrics
from .session_cache import SessionCache
from .sessions import GATEWAY, owner

log = logging.getLogger("codex_gateway.observer")

CREATED_BY_GATEWAY = f"app.kubernetes.io/created-by={GATEWAY}"


def cost_of(obj: dict[str, Any]) -> float:
    """What a finished turn is charged: the actual figure from the model's usage;
    for a turn that ran but left none (timed out, killed), its estimate, since the
    model may well have been paid; nothing for one that never ran (Denied,
    refused, cancelled while waiting), whose estimate bought nothing."""
    status = session_status(obj)
    if status.cost is None:
        return 0.0
    if status.cost.actual_usd is not None:
        return status.cost.actual_usd
    ran = status.timings is not None and status.timings.started_at is not None
    return (status.cost.estimated_usd or 0.0) if ran else 0.0


class SessionObserver:
    def __init__(
        self,
        sessions: SessionApi,
        metrics: GatewayMetrics,
        guard: Guard | None,
        interval: float = 5.0,
        cache: SessionCache | None = None,
    ) -> None:
        self.sessions = sessions
        self.cache = cache
        self.metrics = metrics
        self.guard = guard
        self.interval = interval
        self._seen: set[str] = set()
        self._primed = False
        self.active: dict[str, int] = {}
        self.finished_seen = 0
        self.last_ok: float | None = None
        self.last_error: str | None = None

    async def run(self) -> None:
        while True:
            await self.tick()
            await asyncio.sleep(self.interval)

    async def tick(self) -> None:
        before = set(self._seen)
        # From the cache: the phases only, and a finished session unpacked
        # once, when it is first seen. Without it: one LIST.
        listed: dict[str, dict[str, Any]] | None = None
        try:
            if self.cache is not None and self.cache.ready:
                phases = self.cache.phases(GATEWAY)
            else:
                items = await self.sessions.list_by_label(CREATED_BY_GATEWAY)
                listed = {o["metadata"]["name"]: o for o in items}
                phases = {name: phase_of(o) for name, o in listed.items()}
        except (TimeoutError, KubeError, OSError) as err:
            if self.last_error is None:
                log.warning("cannot list sessions for metrics: %s", err)
            self.last_error = str(err)
            return
        self.last_error, self.last_ok = None, time.time()
        active: dict[str, int] = {}
        present: set[str] = set()
        for name, phase in phases.items():
            phase = phase or "Pending"
            if phase not in TERMINAL_PHASES:
                active[phase] = active.get(phase, 0) + 1
                continue
            present.add(name)
            if name in self._seen:
                continue
            obj = listed[name] if listed is not None else self.cache.get(name) if self.cache else None
            if obj is not None:  # else deleted since
                await self.finished(obj, count=self._primed)
        self.active = active
        self.metrics.set_active(active)
        # Forget deleted sessions; on the first pass, what had already finished
        # is remembered without counting (a restart must not replay counters).
        # (Names a tool call marked during the list stay marked.)
        self._seen = present | (self._seen - before)
        self._primed = True

    async def finished(self, obj: dict[str, Any], count: bool = True) -> None:
        """A terminal session seen for the first time (also called by a tool
        call that saw the result itself, so the charge does not wait a tick)."""
        name = obj["metadata"]["name"]
        if name in self._seen:
            return
        self._seen.add(name)
        status = session_status(obj)
        usd = cost_of(obj)
        user = owner(obj)
        if self.guard is not None and user and usd > 0:
            await self.guard.add_cost(user, name, usd)
        if count:
            self.finished_seen += 1
            self.metrics.turn_finished(
                status.phase or "",
                status.timings.duration_seconds if status.timings else None,
                status.model or (obj.get("spec") or {}).get("model") or "",
                usd,
                status.usage.by_kind() if status.usage else {},
                wall_bounce=bool((obj.get("spec") or {}).get("wallBounce")),
            )
