"""The operator's view of the cluster: the latest version of every session,
approval request and runner pod, fed by kopf's watch events (and by the
responses of our own writes, which are newer than any event still in flight).

Objects are kept slim and compact (codex_api.kept): what no reconciler reads
is dropped on the way in, and keys and short values are shared. Approval
requests keep their managedFields: the decision's server-side time is read
from them (admission.decision_time).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from codex_api.kept import keep
from codex_api.names import LABEL_SESSION

Key = tuple[str, str]  # (namespace, name)


def key_of(obj: dict[str, Any]) -> Key:
    meta = obj["metadata"]
    return meta["namespace"], meta["name"]


class Store:
    def __init__(self) -> None:
        self.sessions: dict[Key, dict[str, Any]] = {}
        self.approvals: dict[Key, dict[str, Any]] = {}
        self.pods: dict[Key, dict[str, Any]] = {}

    def upsert(self, table: dict[Key, dict[str, Any]], obj: dict[str, Any]) -> None:
        table[key_of(obj)] = keep(obj, keep_managed_fields=table is self.approvals, pod=table is self.pods)

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
