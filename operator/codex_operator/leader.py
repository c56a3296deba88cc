"""One active operator: leader election on a coordination.k8s.io Lease.

Every replica runs this before kopf starts; only the holder of the Lease
reconciles. It is client-go's algorithm (leaderelection.LeaderElector):

- the holder renews ``spec.renewTime`` every ``retry_seconds``; if it cannot
  renew for ``renew_deadline_seconds`` it stops leading (the caller exits,
  the pod restarts as a follower), always before the Lease can expire for
  the others (``renew_deadline_seconds < lease_seconds``);
- a follower takes over when the record it observed has not changed for
  ``lease_seconds`` *by its own monotonic clock* (so clock skew between
  nodes does not matter), with the resourceVersion it read: two followers
  racing for an expired Lease cannot both win (the API server refuses the
  stale write with 409);
- a holder that shuts down gracefully releases the Lease (empty holder), so
  a rolling update hands over at once instead of after ``lease_seconds``.

Why not kopf's peering: it only pauses the other operators while one is
active. A paused replica still watches and caches every object (twice the
memory for nothing), needs kopf's own peering CRDs, and takes over only
after the active peer's record times out. Why not the ``leaderelection``
module of the sync ``kubernetes`` client: it is thread-based and this
operator is asyncio end to end.

The identity is the pod's name (``$HOSTNAME``): a container that restarts
in the same pod gets its Lease back at once; a new pod waits for expiry.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException

log = logging.getLogger("codex_operator.leader")


@dataclass(frozen=True)
class LeaseSettings:
    namespace: str
    name: str
    identity: str
    lease_seconds: float = 15.0
    renew_deadline_seconds: float = 10.0
    retry_seconds: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.retry_seconds < self.renew_deadline_seconds < self.lease_seconds:
            raise ValueError("leader election needs 0 < retry < renew deadline < lease duration")


def lease_name(sessions_namespaces: list[str]) -> str:
    """One Lease per set of watched namespaces: operators of other namespaces
    (another install, a test) never contend with this one."""
    return "codex-operator." + sorted(sessions_namespaces)[0]


def default_identity() -> str:
    return os.environ.get("HOSTNAME") or socket.gethostname()


def _micro_time(moment: dt.datetime) -> str:
    # MicroTime wants exactly six fraction digits.
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class LeaderElector:
    def __init__(self, api: k8s.ApiClient, settings: LeaseSettings) -> None:
        self.api = k8s.CoordinationV1Api(api)
        self.settings = settings
        self.leading = False
        self.transitions = 0
        # The last record we saw and when (monotonic): expiry by our own clock.
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self._last_renew = 0.0

    # -- one attempt ------------------------------------------------------------------
    async def try_acquire_or_renew(self) -> bool:
        s = self.settings
        now = _now()
        try:
            lease = await self.api.read_namespaced_lease(s.name, s.namespace)
        except ApiException as err:
            if err.status != 404:
                log.warning("cannot read the lease", extra={"lease": s.name, "status": err.status})
                return False
            return await self._create(now)
        spec = lease.spec
        record = (spec.holder_identity, spec.renew_time, spec.acquire_time, spec.lease_transitions)
        if record != self._observed:
            self._observed, self._observed_at = record, time.monotonic()
        holder = spec.holder_identity or ""
        mine = holder == s.identity
        expired = not holder or time.monotonic() - self._observed_at >= float(
            spec.lease_duration_seconds or s.lease_seconds
        )
        if not mine and not expired:
            return False
        transitions = int(spec.lease_transitions or 0) + (0 if mine else 1)
        acquired = spec.acquire_time if mine and spec.acquire_time else now
        body: Any = self._body(now, acquired, transitions, lease.metadata.resource_version)
        try:
            await self.api.replace_namespaced_lease(s.name, s.namespace, body)
        except ApiException as err:
            if err.status != 409:
                log.warning("cannot write the lease", extra={"lease": s.name, "status": err.status})
            return False
        if not mine:
            log.info("took over the lease", extra={"lease": s.name, "from": holder or None})
        self.transitions = transitions
        return True

    async def _create(self, now: dt.datetime) -> bool:
        try:
            body: Any = self._body(now, now, 0, None)  # a dict: MicroTime wants six fraction digits
            await self.api.create_namespaced_lease(self.settings.namespace, body)
        except ApiException as err:
            if err.status != 409:
                log.warning("cannot create the lease", extra={"status": err.status})
            return False
        return True

    def _body(
        self, now: dt.datetime, acquired: dt.datetime | str, transitions: int, resource_version: str | None
    ) -> dict[str, Any]:
        s = self.settings
        metadata: dict[str, Any] = {"name": s.name, "namespace": s.namespace}
        if resource_version:
            metadata["resourceVersion"] = resource_version
        acquire = acquired if isinstance(acquired, str) else _micro_time(acquired)
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": metadata,
            "spec": {
                "holderIdentity": s.identity,
                "leaseDurationSeconds": int(s.lease_seconds),
                "acquireTime": acquire,
                "renewTime": _micro_time(now),
                "leaseTransitions": transitions,
            },
        }

    # -- the loops ----------------------------------------------------------------------
    async def acquire(self) -> None:
        """Return once this replica holds the Lease."""
        waiting_since = time.monotonic()
        while not await self.try_acquire_or_renew():
            await asyncio.sleep(self.settings.retry_seconds)
        self.leading = True
        self._last_renew = time.monotonic()
        log.info(
            "leading",
            extra={
                "lease": self.settings.name,
                "identity": self.settings.identity,
                "waited_seconds": round(time.monotonic() - waiting_since, 2),
            },
        )

    async def hold(self) -> None:
        """Renew until a renewal deadline is missed; return when leadership is lost."""
        s = self.settings
        while True:
            await asyncio.sleep(s.retry_seconds)
            try:
                async with asyncio.timeout(s.retry_seconds):
                    renewed = await self.try_acquire_or_renew()
            except TimeoutError:
                renewed = False
            if renewed:
                self._last_renew = time.monotonic()
            elif time.monotonic() - self._last_renew >= s.renew_deadline_seconds:
                self.leading = False
                log.error("lost the lease", extra={"lease": s.name, "identity": s.identity})
                return

    async def release(self) -> None:
        """Give the Lease up (graceful shutdown): the next replica takes over at once."""
        if not self.leading:
            return
        s = self.settings
        self.leading = False
        try:
            lease = await self.api.read_namespaced_lease(s.name, s.namespace)
            if lease.spec.holder_identity != s.identity:
                return
            body: Any = self._body(
                _now(),
                lease.spec.acquire_time or _now(),
                int(lease.spec.lease_transitions or 0),
                lease.metadata.resource_version,
            )
            body["spec"]["holderIdentity"] = None
            body["spec"]["leaseDurationSeconds"] = 1
            await self.api.replace_namespaced_lease(s.name, s.namespace, body)
            log.info("released the lease", extra={"lease": s.name})
        except ApiException as err:
            log.warning("cannot release the lease", extra={"status": err.status})
