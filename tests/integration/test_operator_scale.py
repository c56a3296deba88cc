"""The concurrency limit under parallel load, and crash safety: the operator
SIGKILLed at random points while 100+ sessions are in flight."""

from __future__ import annotations

import random
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kubernetes import client

from codex_api import names
from codex_api.common import GROUP, VERSION
from codex_devenv.fake_node import FakeNode, PhaseRecorder
from codex_devenv.testkit import create_session, finish_pod

TERMINAL = {"Succeeded", "Failed", "Denied", "TimedOut", "Cancelled"}


def _sessions(kube_client: Any, namespace: str) -> list[dict[str, Any]]:
    return list(
        client.CustomObjectsApi(kube_client).list_namespaced_custom_object(
            GROUP, VERSION, namespace, "codexsessions"
        )["items"]
    )


def _wait_all(
    kube_client: Any, namespace: str, predicate: Any, timeout: float, what: str
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        items = _sessions(kube_client, namespace)
        if predicate(items):
            return items
        time.sleep(0.25)
    phases: dict[str, int] = {}
    for s in _sessions(kube_client, namespace):
        phase = (s.get("status") or {}).get("phase") or "none"
        phases[phase] = phases.get(phase, 0) + 1
    raise AssertionError(f"timed out waiting for {what}; phases: {phases}")


def test_limit_holds_exactly_with_50_parallel_creates(
    kube_client: Any, namespace: str, run_operator: Any
) -> None:
    run_operator(limit=10)
    recorder = PhaseRecorder(kube_client, namespace).start()
    with ThreadPoolExecutor(max_workers=50) as pool:
        list(pool.map(lambda i: create_session(kube_client, namespace, f"p{i:02d}"), range(50)))

    def settled(items: list[dict[str, Any]]) -> bool:
        phases = [(s.get("status") or {}).get("phase") for s in items]
        return phases.count("Running") == 10 and phases.count("Queued") == 40

    _wait_all(kube_client, namespace, settled, 60, "10 Running and 40 Queued")
    assert len(client.CoreV1Api(kube_client).list_namespaced_pod(namespace).items) == 10
    # Now drain: finish whatever runs, until all 50 are done, never more than 10 at once.
    done: set[str] = set()
    deadline = time.monotonic() + 120
    while len(done) < 50 and time.monotonic() < deadline:
        for s in _sessions(kube_client, namespace):
            status = s.get("status") or {}
            if status.get("phase") == "Running" and s["metadata"]["name"] not in done:
                finish_pod(kube_client, namespace, status["podName"], _result(s["metadata"]["name"]))
                done.add(s["metadata"]["name"])
        time.sleep(0.1)
    items = _wait_all(
        kube_client,
        namespace,
        lambda xs: all((s.get("status") or {}).get("phase") == "Succeeded" for s in xs) and len(xs) == 50,
        60,
        "all Succeeded",
    )
    recorder.stop()
    assert len(items) == 50
    assert recorder.max_running == 10, f"at most 10 may run at once, saw {recorder.max_running}"
    assert len(client.CoreV1Api(kube_client).list_namespaced_pod(namespace).items) == 50


def _result(name: str) -> Any:
    from codex_api.result import RunnerResult

    return RunnerResult(outcome="completed", thread_id=f"t-{name}", final_message="ok")


def test_operator_killed_at_random_points_loses_and_duplicates_nothing(
    kube_client: Any, namespace: str, run_operator: Any
) -> None:
    total, limit = 200, 20
    rng = random.Random(1234)
    op = run_operator(limit=limit)
    recorder = PhaseRecorder(kube_client, namespace).start()
    node = FakeNode(kube_client, namespace, max_delay=1.0).start()
    kills = 0
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            futures = [pool.submit(create_session, kube_client, namespace, f"c{i:03d}") for i in range(total)]
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline:
                time.sleep(rng.uniform(0.2, 1.0))
                items = _sessions(kube_client, namespace)
                if len(items) == total and all(
                    (s.get("status") or {}).get("phase") in TERMINAL for s in items
                ):
                    break
                if kills < 8:
                    op.kill()  # SIGKILL: no cleanup, mid-reconcile
                    kills += 1
                    time.sleep(rng.uniform(0, 0.5))
                    op = run_operator(limit=limit)
            for f in futures:
                f.result()
        items = _wait_all(
            kube_client,
            namespace,
            lambda xs: len(xs) == total and all((s.get("status") or {}).get("phase") in TERMINAL for s in xs),
            120,
            "every session to reach a terminal phase",
        )
    finally:
        node.stop()
        recorder.stop()
    assert kills >= 4
    phases = {(s.get("status") or {}).get("phase") for s in items}
    assert phases == {"Succeeded"}, phases
    pods = client.CoreV1Api(kube_client).list_namespaced_pod(namespace).items
    per_session: dict[str, list[str]] = {}
    for pod in pods:
        per_session.setdefault(pod.metadata.labels[names.LABEL_SESSION], []).append(pod.metadata.name)
    assert len(per_session) == total
    assert all(v == [names.runner_pod(k, 1)] for k, v in per_session.items()), {
        k: v for k, v in per_session.items() if len(v) != 1
    }
    policies = client.NetworkingV1Api(kube_client).list_namespaced_network_policy(namespace).items
    assert sorted(p.metadata.name for p in policies) == sorted(
        names.network_policy(f"c{i:03d}") for i in range(total)
    )
    assert recorder.max_running <= limit, f"limit {limit} exceeded across restarts: {recorder.max_running}"
    for s in items:
        assert s["status"]["response"] == f"done: {s['metadata']['name']}"
