"""codex_operator.store: the operator keeps what its reconcilers read, not whole objects."""

from __future__ import annotations

import copy
import zlib
from typing import Any

import pytest

from codex_api.kept import LAST_APPLIED, Packer, keep
from codex_operator.pod_outcome import pod_outcome
from codex_operator.store import Store

MANAGED = [{"manager": "kubectl", "operation": "Update", "fieldsV1": {"f:spec": {"f:decision": {}}}}]


def _obj(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "ns",
            "resourceVersion": "7",
            "managedFields": copy.deepcopy(MANAGED),
            "annotations": {LAST_APPLIED: '{"spec": "a copy"}', "codex.techsapo.io/cancel": "true"},
        },
        "spec": {"prompt": "p", "restartPolicy": "Never", "containers": [{"name": "runner", "env": []}]},
        "status": {"phase": "Running"},
        **extra,
    }


def test_sessions_lose_managed_fields_and_the_last_applied_copy_only() -> None:
    store, obj = Store(), _obj("s")
    store.upsert(store.sessions, obj)
    kept = store.sessions[("ns", "s")]
    assert "managedFields" not in kept["metadata"]
    assert kept["metadata"]["annotations"] == {"codex.techsapo.io/cancel": "true"}
    assert kept["spec"] == obj["spec"] and kept["status"] == obj["status"]
    assert kept["metadata"]["resourceVersion"] == "7"
    assert obj["metadata"]["managedFields"] == MANAGED  # the caller's object is not changed


def test_approvals_keep_managed_fields_for_the_decision_time() -> None:
    store = Store()
    store.upsert(store.approvals, _obj("a"))
    assert store.approvals[("ns", "a")]["metadata"]["managedFields"] == MANAGED


def test_pods_keep_status_and_restart_policy_and_read_the_same() -> None:
    store = Store()
    pod = _obj("p", status={"phase": "Failed", "reason": "Evicted", "message": "node pressure"})
    store.upsert(store.pods, pod)
    kept = store.pods[("ns", "p")]
    assert kept["spec"] == {"restartPolicy": "Never"}
    assert pod_outcome(kept) == pod_outcome(pod)


def test_kept_objects_share_their_keys_and_short_values() -> None:
    import json

    store = Store()
    long = "x" * 500
    for name in ("a", "b"):
        # Decoded separately, as watch events are: equal strings, distinct objects.
        body = json.loads(
            json.dumps(
                {
                    "metadata": {"name": name, "namespace": "ns"},
                    "status": {"phase": "Queued", "message": long},
                }
            )
        )
        store.upsert(store.sessions, body)
    a, b = store.sessions[("ns", "a")], store.sessions[("ns", "b")]
    assert a["status"]["phase"] is b["status"]["phase"]
    assert next(iter(a["metadata"])) is next(iter(b["metadata"]))
    assert a["status"]["message"] == b["status"]["message"] == long  # long values are kept, not interned
    assert a == {"metadata": {"name": "a", "namespace": "ns"}, "status": {"phase": "Queued", "message": long}}


def test_unread_status_fields_are_dropped_and_the_rest_kept() -> None:
    obj = _obj("s", status={"phase": "Running", "conditions": [{"type": "Ready"}], "podName": "p"})
    kept = keep(obj, unread_status=("conditions",))
    assert kept["status"] == {"phase": "Running", "podName": "p"}
    assert obj["status"]["conditions"] == [{"type": "Ready"}]  # the input is not changed
    assert keep({"metadata": {"name": "x"}}, unread_status=("conditions",)) == {"metadata": {"name": "x"}}


def _session(i: int, *, prompt: str = "Write a factorial function") -> dict[str, Any]:
    return {
        "apiVersion": "codex.techsapo.io/v1alpha1",
        "kind": "CodexSession",
        "metadata": {
            "name": f"s-{i:05d}",
            "namespace": "team-a",
            "uid": f"{i:08x}-0000-4000-8000-{i * 7919:012x}",
            "resourceVersion": str(100000 + i),
            "labels": {
                "codex.techsapo.io/requester": "alice",
                "app.kubernetes.io/created-by": "codex-gateway",
            },
        },
        "spec": {"prompt": prompt, "requestedBy": "alice", "sandbox": "read-only"},
        "status": {"phase": "Pending", "reason": "QueuedForCapacity", "cost": {"estimatedUsd": 0.0123}},
    }


def test_packed_objects_read_back_equal_and_small() -> None:
    packer = Packer()
    objects = [_session(i) for i in range(200)]
    objects.append(_session(200, prompt="ünïcödé ✓ " * 2000 + '"quoted" \\ \n'))  # long, non-ASCII
    blobs = [packer.pack(o) for o in objects]
    assert [packer.unpack(b) for b in blobs] == objects
    # Later sessions are mostly back-references to the first (the preset dictionary).
    assert sum(len(b) for b in blobs[1:200]) / 199 < 200
    # Each read is a new copy.
    first = packer.unpack(blobs[1])
    first["status"]["phase"] = "Changed"
    assert packer.unpack(blobs[1])["status"]["phase"] == "Pending"


def test_a_packer_reads_only_what_it_packed() -> None:
    one, other = Packer(), Packer()
    blob = one.pack(_session(1))
    other.pack(_session(2, prompt="something else entirely"))
    with pytest.raises(zlib.error):
        other.unpack(blob)
