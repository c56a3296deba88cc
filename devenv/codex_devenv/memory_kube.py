"""An in-memory stand-in for the operator's KubeApi, for unit tests of the
reconcilers: the same calls, the same 409/Conflict semantics, and every write
delivered to the operator's Store at once (as a watch would, without delay).

The integration tests run the real API server; this is for walking the state
machine table-driven in milliseconds. It plays the world too: pods finishing,
people deciding, time passing (through object timestamps).
"""

from __future__ import annotations

import copy
import itertools
import uuid
from collections.abc import Hashable
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from codex_api.approval import ApprovalRequestStatus
from codex_api.common import API_VERSION, KubeModel
from codex_api.config import CodexMCPConfig
from codex_api.result import RunnerResult
from codex_api.session import CodexSessionStatus
from codex_operator.context import Context
from codex_operator.events import EventRecorder
from codex_operator.gate import ConcurrencyGate
from codex_operator.kube import APPROVALS, SESSIONS, Conflict, KubeApi
from codex_operator.metrics import OperatorMetrics
from codex_operator.store import Store
from codex_operator.workqueue import WorkQueue

PODS, POLICIES, CLAIMS = "pods", "networkpolicies", "persistentvolumeclaims"


def _stamp(at: datetime | None = None) -> str:
    return (at or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """JSON merge patch (RFC 7386): None deletes, dicts merge, anything else replaces."""
    out = dict(base)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


class RecordingQueue:
    """The work queue as the reconcilers see it: keys added, nothing run."""

    def __init__(self) -> None:
        self.keys: list[Hashable] = []

    def add(self, key: Hashable, delay: float = 0.0) -> None:
        self.keys.append(key)

    def __len__(self) -> int:
        return len(self.keys)


class MemoryKubeApi:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.deleted: list[tuple[str, str, str]] = []
        self._versions = itertools.count(1)

    # -- bookkeeping -----------------------------------------------------------------
    def _table(self, plural: str) -> dict[Any, dict[str, Any]] | None:
        return {
            SESSIONS: self.store.sessions,
            APPROVALS: self.store.approvals,
            PODS: self.store.pods,
        }.get(plural)

    def _save(self, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        meta["resourceVersion"] = str(next(self._versions))
        self.objects[(plural, meta["namespace"], meta["name"])] = obj
        table = self._table(plural)
        if table is not None:
            self.store.upsert(table, copy.deepcopy(obj))
        return copy.deepcopy(obj)

    def _create(self, plural: str, namespace: str, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        key = (plural, namespace, body["metadata"]["name"])
        if key in self.objects:
            return copy.deepcopy(self.objects[key]), False
        obj = copy.deepcopy(body)
        meta = obj["metadata"]
        meta.update(namespace=namespace, uid=str(uuid.uuid4()), generation=1)
        meta.setdefault("creationTimestamp", _stamp())
        return self._save(plural, obj), True

    def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        obj = self.objects.get((plural, namespace, name))
        return copy.deepcopy(obj) if obj else None

    def of_kind(self, plural: str) -> list[dict[str, Any]]:
        return [copy.deepcopy(o) for (p, _, _), o in self.objects.items() if p == plural]

    # -- the KubeApi calls the reconcilers make ------------------------------------------
    async def create_custom(self, plural: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._create(plural, namespace, body)[0]

    async def patch_status(
        self, plural: str, namespace: str, name: str, status: dict[str, Any], resource_version: str
    ) -> dict[str, Any]:
        current = self.objects.get((plural, namespace, name))
        if current is None or current["metadata"]["resourceVersion"] != resource_version:
            raise Conflict(f"{plural}/{name}")
        merged = _merge(current.get("status") or {}, status)
        # Stricter than the API server, which would prune an unknown key without a
        # word: here the whole status must be what the CRD's model describes.
        models: dict[str, type[KubeModel]] = {SESSIONS: CodexSessionStatus, APPROVALS: ApprovalRequestStatus}
        model = models.get(plural)
        if model is not None:
            model.model_validate(merged)
        current["status"] = merged
        return self._save(plural, current)

    async def delete_custom(self, plural: str, namespace: str, name: str) -> None:
        obj = self.objects.pop((plural, namespace, name), None)
        if obj is not None:
            self.deleted.append((plural, namespace, name))
            table = self._table(plural)
            if table is not None:
                self.store.remove(table, obj)

    async def create_pod(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        pod, created = self._create(PODS, namespace, body)
        if created:
            stored = self.objects[(PODS, namespace, pod["metadata"]["name"])]
            stored["status"] = {"phase": "Pending"}
            pod = self._save(PODS, stored)
        return pod

    async def delete_pod(self, namespace: str, name: str, grace_seconds: int = 5) -> None:
        await self.delete_custom(PODS, namespace, name)

    async def pod_log_tail(self, namespace: str, name: str, container: str, lines: int = 20) -> str | None:
        return None

    async def ensure_network_policy(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._create(POLICIES, namespace, body)[0]

    async def ensure_claim(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._create(CLAIMS, namespace, body)[0]

    async def add_claim_owner(self, namespace: str, claim: dict[str, Any], owner: dict[str, Any]) -> None:
        stored = self.objects[(CLAIMS, namespace, claim["metadata"]["name"])]
        owners = stored["metadata"].setdefault("ownerReferences", [])
        if all(o.get("uid") != owner["uid"] for o in owners):
            owners.append(dict(owner))
            self._save(CLAIMS, stored)

    async def create_event(self, namespace: str, body: dict[str, Any]) -> None:
        self.events.append(body)

    async def close(self) -> None:
        return None

    # -- the world -------------------------------------------------------------------------
    def put(self, plural: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """An object someone else made (a person, a leftover), as it would be stored."""
        return self._create(plural, namespace, body)[0]

    def session(
        self, namespace: str, name: str, spec: dict[str, Any], *, age: timedelta = timedelta(0)
    ) -> dict[str, Any]:
        body = {
            "apiVersion": API_VERSION,
            "kind": "CodexSession",
            "metadata": {"name": name, "creationTimestamp": _stamp(datetime.now(UTC) - age)},
            "spec": {
                "prompt": "hello",
                "sandbox": "read-only",
                "mode": "interactive",
                "fullAuto": False,
                **spec,
            },
        }
        return self.put(SESSIONS, namespace, body)

    def change(self, plural: str, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """A write by someone other than the operator (merge patch, spec changes bump generation)."""
        obj = self.objects[(plural, namespace, name)]
        if "spec" in patch:
            obj["metadata"]["generation"] = int(obj["metadata"].get("generation", 1)) + 1
        merged = _merge(obj, patch)
        self.objects[(plural, namespace, name)] = merged
        return self._save(plural, merged)

    def finish_pod(
        self, namespace: str, name: str, result: RunnerResult | None, *, exit_code: int = 0, reason: str = ""
    ) -> None:
        phase = "Succeeded" if exit_code == 0 else "Failed"
        term = {
            "exitCode": exit_code,
            "reason": "Completed" if exit_code == 0 else "Error",
            "message": result.bounded_frame() if result else "",
        }
        status: dict[str, Any] = {
            "phase": phase,
            "containerStatuses": [{"name": "runner", "state": {"terminated": term}}],
        }
        if reason:
            status["reason"] = reason
        self.change(PODS, namespace, name, {"status": status})


def memory_context(config: CodexMCPConfig) -> tuple[Context, MemoryKubeApi]:
    """A reconciler Context over the in-memory API, with the real gate, store and metrics."""
    store = Store()
    api = MemoryKubeApi(store)
    gate = ConcurrencyGate(config.mcp.max_concurrent_sessions, config.mcp.max_concurrent_sessions_per_user)
    # Duck-typed stand-ins for KubeApi and WorkQueue: the calls the reconcilers make.
    kube = cast(KubeApi, api)
    ctx = Context(
        kube, store, config, gate, cast(WorkQueue, RecordingQueue()), EventRecorder(kube), OperatorMetrics()
    )
    return ctx, api
