"""Is the session a credential names live, and is the caller its runner pod?

A credential proves only which CodexSession (namespace, name, UID) the
operator issued it for. Each request is also checked against the API
server: the session still exists with that UID and has not reached a
terminal phase, and (with `check_source_address`) the request comes from the
address of a runner pod of that session. Answers are reused for
`session_check_seconds`, so a turn's requests cost one lookup, and an ended
session is refused at most that late. The answer also carries what the meter
checks before each request: the requester (whose monthly budget) and the
session's own cost cap (`spec.maxCostUsd`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException

from codex_api import names
from codex_api.common import GROUP, VERSION
from codex_api.config import CodexMCPConfig
from codex_api.model_credential import SessionRef
from codex_api.session import TERMINAL_PHASES

SESSIONS = "codexsessions"
LIVE_POD_PHASES = frozenset({"Pending", "Running"})
POD_ADDRESS_GRACE_SECONDS = 5.0
POD_ADDRESS_POLL_SECONDS = 0.25


class Refused(Exception):
    """The credential's session may not use the model now (the reason is safe to show)."""


@dataclass(frozen=True)
class LiveSession:
    ref: SessionRef
    user: str
    providers: frozenset[str]
    pod_ips: frozenset[str]
    # spec.maxCostUsd: the most this session may spend (None: no cap of its own).
    max_cost_usd: float | None = None


def cost_cap(spec: dict[str, Any]) -> float | None:
    """spec.maxCostUsd when it is a usable cap (the CRD refuses anything else)."""
    value = spec.get("maxCostUsd")
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        return None
    return float(value)


def allowed_providers(spec: dict[str, Any], config: CodexMCPConfig) -> frozenset[str]:
    """The main provider; for a wall-bounce session, also the ones it consults
    (those it lists, else every configured one)."""
    allowed = {config.kubernetes.model_endpoint.provider_id}
    wall_bounce = spec.get("wallBounce")
    if isinstance(wall_bounce, dict):
        listed = wall_bounce.get("providers") or []
        configured = {p.provider_id for p in config.kubernetes.wall_bounce_providers}
        allowed |= {p for p in listed if p in configured} if listed else configured
    return frozenset(allowed)


class SessionChecker:
    def __init__(
        self,
        api_client: k8s.ApiClient,
        config: CodexMCPConfig,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._custom = k8s.CustomObjectsApi(api_client)
        self._core = k8s.CoreV1Api(api_client)
        self._config = config
        self._ttl = config.model_proxy.session_check_seconds
        self._monotonic = monotonic
        self._answers: dict[SessionRef, tuple[float, LiveSession | Refused]] = {}
        self._inflight: dict[SessionRef, asyncio.Future[LiveSession | Refused]] = {}

    async def check(self, ref: SessionRef, peer: str | None, provider: str) -> LiveSession:
        live = await self._lookup(ref)
        if self._config.model_proxy.check_source_address and peer not in live.pod_ips:
            live = await self._await_address(ref, peer, live)
        if self._config.model_proxy.check_source_address and peer not in live.pod_ips:
            raise Refused("the credential is not used from its session's runner pod")
        if provider not in live.providers:
            raise Refused(f"provider {provider!r} is not one this session may use")
        return live

    async def _await_address(self, ref: SessionRef, peer: str | None, live: LiveSession) -> LiveSession:
        """A pod's address reaches the API server after its containers may
        already run (the kubelet reports status asynchronously, later under
        load): a runner's first request can beat it. Ask again for a few
        seconds before refusing; a caller from elsewhere only waits longer."""
        deadline = self._monotonic() + POD_ADDRESS_GRACE_SECONDS
        while peer not in live.pod_ips and self._monotonic() < deadline:
            await asyncio.sleep(POD_ADDRESS_POLL_SECONDS)
            live = await self._lookup(ref, fresh=True)
        return live

    async def _lookup(self, ref: SessionRef, *, fresh: bool = False) -> LiveSession:
        now = self._monotonic()
        cached = None if fresh else self._answers.get(ref)
        if cached is not None and now - cached[0] < self._ttl:
            answer = cached[1]
        else:
            # Concurrent requests of one session share one lookup.
            pending = self._inflight.get(ref)
            if pending is None:
                pending = asyncio.ensure_future(self._ask(ref))
                self._inflight[ref] = pending
                try:
                    answer = await pending
                finally:
                    self._inflight.pop(ref, None)
                self._answers[ref] = (self._monotonic(), answer)
                if len(self._answers) > 10_000:
                    self._forget_old()
            else:
                answer = await pending
        if isinstance(answer, Refused):
            raise answer
        return answer

    def _forget_old(self) -> None:
        now = self._monotonic()
        for key in [k for k, (at, _) in self._answers.items() if now - at >= self._ttl]:
            del self._answers[key]

    async def _ask(self, ref: SessionRef) -> LiveSession | Refused:
        try:
            obj = await self._custom.get_namespaced_custom_object(
                GROUP, VERSION, ref.namespace, SESSIONS, ref.name
            )
        except ApiException as err:
            if err.status in (403, 404):
                return Refused("the session does not exist")
            raise
        meta = obj.get("metadata") or {}
        if meta.get("uid") != ref.uid:
            return Refused("the session does not exist")  # same name, another object
        if meta.get("deletionTimestamp"):
            return Refused("the session is being deleted")
        phase = (obj.get("status") or {}).get("phase")
        if phase in TERMINAL_PHASES:
            return Refused(f"the session has ended ({phase})")
        spec = obj.get("spec") or {}
        pod_ips: set[str] = set()
        if self._config.model_proxy.check_source_address:
            pods = await self._core.list_namespaced_pod(
                ref.namespace,
                label_selector=f"{names.LABEL_SESSION}={ref.name},{names.LABEL_MANAGED_BY}={names.MANAGED_BY}",
            )
            for pod in pods.items:
                if pod.status is None or pod.status.phase not in LIVE_POD_PHASES:
                    continue
                owners = pod.metadata.owner_references or []
                if not any(o.uid == ref.uid and o.controller for o in owners):
                    continue  # a label is not enough: the session must own the pod
                pod_ips.update(ip.ip for ip in pod.status.pod_ips or [] if ip.ip)
                if pod.status.pod_ip:
                    pod_ips.add(pod.status.pod_ip)
        return LiveSession(
            ref=ref,
            user=str(spec.get("requestedBy") or ""),
            providers=allowed_providers(spec, self._config),
            pod_ips=frozenset(pod_ips),
            max_cost_usd=cost_cap(spec),
        )
