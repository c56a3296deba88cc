"""The operator's view of the cluster: the latest version of every session,
approval request and runner pod, fed by kopf's watch events (and by the
responses of our own writes, which are newer than any event still in flight).

Objects are kept slim (`slim`): what no reconciler reads is dropped on the
way in. `metadata.managedFields` is about half of a session's JSON and
`kubectl apply`'s last-applied annotation repeats its spec; a runner pod's
spec is its largest part and only `restartPolicy` of it is read. Approval
requests keep their managedFields: the decision's server-side time is read
from them (admission.decision_time). With 5,000 sessions this is the
difference docs/benchmarks.md (P5) shows.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from codex_api.names import LABEL_SESSION

Key = tuple[str, str]  # (namespace, name)

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
POD_SPEC_READ = ("restartPolicy",)


def slim(obj: dict[str, Any], *, keep_managed_fields: bool = False, pod: bool = False) -> dict[str, Any]:
    """`obj` without what the operator never reads (a new dict; `obj` is not changed)."""
    meta = obj.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    drop_fields = not keep_managed_fields and "managedFields" in meta
    if not (drop_fields or LAST_APPLIED in annotations or pod):
        return obj
    meta = {k: v for k, v in meta.items() if not (drop_fields and k == "managedFields")}
    if LAST_APPLIED in annotations:
        meta["annotations"] = {k: v for k, v in annotations.items() if k != LAST_APPLIED}
    out = {**obj, "metadata": meta}
    if pod:
        spec = obj.get("spec") or {}
        out["spec"] = {k: spec[k] for k in POD_SPEC_READ if k in spec}
    return out


def key_of(obj: dict[str, Any]) -> Key:
    meta = obj["metadata"]
    return meta["namespace"], meta["name"]


class Store:
    def __init__(self) -> None:
        self.sessions: dict[Key, dict[str, Any]] = {}
        self.approvals: dict[Key, dict[str, Any]] = {}
        self.pods: dict[Key, dict[str, Any]] = {}

    def upsert(self, table: dict[Key, dict[str, Any]], obj: dict[str, Any]) -> None:
        table[key_of(obj)] = slim(obj, keep_managed_fields=table is self.approvals, pod=table is self.pods)

    def remove(self, table: dict[Key, dict[str, Any]], obj: dict[str, Any]) -> None:
        table.pop(key_of(obj), None)

    def pods_of(self, namespace: str, session: str) -> Iterator[dict[str, Any]]:
        for (ns, _), pod in self.pods.items():
            if ns == namespace and pod["metadata"].get("labels", {}).get(LABEL_SESSION) == session:
                yield pod

    def replies_to(self, namespace: str, session: str) -> list[Key]:
        return [
            key
            for key, body in self.sessions.items()
            if key[0] == namespace and body.get("spec", {}).get("resumeFrom") == session
        ]
