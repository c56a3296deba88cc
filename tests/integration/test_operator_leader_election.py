"""Two operators, one reconciler: leader election on a coordination.k8s.io
Lease (codex_operator.leader), each replica a real `codex-operator run
--leader-election` on the real API server, as its own ServiceAccount.

The follower is alive and ready (it serves the identity webhook, see
test_admission_webhook.py) and creates nothing. The leader is SIGKILLed in the middle of a burst: the follower takes
the Lease once it has seen it unrenewed for the lease duration (measured),
and every session finishes exactly once: one runner pod each, one attempt,
and never more sessions running than the limit. Runner pods are played the
way a kubelet would (no node needed)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from kubernetes import client

from codex_api import names
from codex_api.result import RunnerResult
from codex_devenv.process import wait_for
from codex_devenv.testkit import create_session, finish_pod, list_sessions, set_pod_running

pytestmark = pytest.mark.timeout(300)

LEASE_SECONDS = 3.0
LIMIT = 4
SESSIONS = 12
SYSTEM = "codex-system"


def _holder(kube_client: Any, namespace: str) -> str | None:
    try:
        lease = client.CoordinationV1Api(kube_client).read_namespaced_lease(
            f"codex-operator.{namespace}", SYSTEM
        )
    except client.ApiException as err:
        if err.status == 404:
            return None
        raise
    return lease.spec.holder_identity


def _wait(check: Any, timeout: float, what: str) -> None:
    wait_for(check, timeout=timeout, what=what, interval=0.1)


def _result(name: str) -> RunnerResult:
    return RunnerResult(outcome="completed", thread_id=f"t-{name}", final_message=f"done {name}")


def test_one_replica_leads_the_other_stands_by(kube_client: Any, namespace: str, run_operator: Any) -> None:
    a = run_operator(leader_identity="replica-a", lease_seconds=LEASE_SECONDS)
    b = run_operator(leader_identity="replica-b", lease_seconds=LEASE_SECONDS, wait_ready=False)
    assert _holder(kube_client, namespace) == "replica-a"
    assert (a.probe("/healthz"), a.probe("/readyz")) == (200, 200)
    _wait(lambda: b.probe("/readyz") == 200, 30, "the follower's readiness")
    assert (a.role(), b.role()) == ("leader", "follower")
    create_session(kube_client, namespace, "s1", prompt="hello")
    _wait(lambda: (list_sessions(kube_client, namespace)[0].get("status") or {}).get("podName"), 30, "a pod")
    # the follower never reconciled: its metrics show no reconcile at all
    assert not b.metric("codex_operator_ready")
    # a graceful stop hands the Lease over at once, not after its duration
    a.stop()
    t0 = time.monotonic()
    _wait(lambda: _holder(kube_client, namespace) == "replica-b", 2 * LEASE_SECONDS, "the follower to lead")
    handover = time.monotonic() - t0
    _wait(lambda: b.role() == "leader" and b.probe("/readyz") == 200, 30, "the new leader to be ready")
    print(f"\n[leader] graceful handover in {handover:.2f}s")
    assert handover < LEASE_SECONDS


def test_the_leader_killed_mid_burst_loses_and_duplicates_nothing(
    kube_client: Any, namespace: str, run_operator: Any
) -> None:
    a = run_operator(limit=LIMIT, leader_identity="replica-a", lease_seconds=LEASE_SECONDS)
    b = run_operator(limit=LIMIT, leader_identity="replica-b", lease_seconds=LEASE_SECONDS, wait_ready=False)
    for i in range(SESSIONS):
        create_session(kube_client, namespace, f"s{i:02d}", prompt=f"job {i}")
    finished: set[str] = set()
    most_running = 0
    killed_at: float | None = None
    takeover: float | None = None
    deadline = time.monotonic() + 180
    while len(finished) < SESSIONS:
        assert time.monotonic() < deadline, f"finished {sorted(finished)}"
        sessions = list_sessions(kube_client, namespace)
        running = [s for s in sessions if (s.get("status") or {}).get("phase") == "Running"]
        most_running = max(most_running, len(running))
        for s in running:
            name, pod = s["metadata"]["name"], s["status"].get("podName")
            if pod and name not in finished:
                set_pod_running(kube_client, namespace, pod)
                finish_pod(kube_client, namespace, pod, _result(name))
                finished.add(name)
        if killed_at is None and len(finished) >= LIMIT:
            a.kill()  # SIGKILL: no release of the Lease, no goodbye
            killed_at = time.monotonic()
        if killed_at is not None and takeover is None and _holder(kube_client, namespace) == "replica-b":
            takeover = time.monotonic() - killed_at
        time.sleep(0.05)
    _wait(
        lambda: all(
            (s.get("status") or {}).get("phase") == "Succeeded" for s in list_sessions(kube_client, namespace)
        ),
        60,
        "every session to succeed",
    )
    assert takeover is not None
    print(
        f"\n[leader] takeover after SIGKILL in {takeover:.2f}s (lease {LEASE_SECONDS}s); most running {most_running}"
    )
    assert LEASE_SECONDS * 0.8 <= takeover <= LEASE_SECONDS * 3
    assert most_running <= LIMIT
    pods = client.CoreV1Api(kube_client).list_namespaced_pod(namespace).items
    by_session: dict[str, list[str]] = {}
    for pod in pods:
        by_session.setdefault(pod.metadata.labels.get(names.LABEL_SESSION, ""), []).append(pod.metadata.name)
    for s in list_sessions(kube_client, namespace):
        name = s["metadata"]["name"]
        assert s["status"]["attempts"] == 1, s["status"]
        assert by_session.get(name) == [names.runner_pod(name, 1)], by_session.get(name)
        assert s["status"]["response"] == f"done {name}"
    assert b.metric("codex_operator_ready") == 1.0
