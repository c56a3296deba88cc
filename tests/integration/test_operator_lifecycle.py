"""The CodexSession lifecycle on the real control plane, with the real
operator process running as its own ServiceAccount. The tests play the node:
they set the runner pod's status the way a kubelet would."""

from __future__ import annotations

from typing import Any

from kubernetes import client

from codex_api import names
from codex_api.result import RunnerResult
from codex_api.session import Usage
from codex_devenv.testkit import create_session, finish_pod, phase_is, set_pod_running, wait_session


def _result(**kw: Any) -> RunnerResult:
    base = {
        "outcome": "completed",
        "thread_id": "thread-123",
        "final_message": "def factorial(n): ...",
        "usage": Usage(input_tokens=1200, cached_input_tokens=200, output_tokens=300, reasoning_tokens=50),
        "commands": 2,
        "file_changes": 1,
    }
    return RunnerResult(**{**base, **kw})


def test_read_only_session_runs_to_success(kube_client: Any, namespace: str, run_operator: Any) -> None:
    op = run_operator()
    create_session(kube_client, namespace, "s1", sandbox="read-only")
    s = wait_session(kube_client, namespace, "s1", phase_is("Running"))
    status = s["status"]
    assert status["riskLevel"] == "low"
    assert status["model"] == "gpt-5-codex"
    assert status["podName"] == names.runner_pod("s1", 1)
    assert status["conversationId"] == "s1"
    assert status["cost"]["estimatedUsd"] > 0
    assert {c["type"]: c["status"] for c in status["conditions"]} == {"Approved": "True", "Scheduled": "True"}
    assert status["observedGeneration"] == s["metadata"]["generation"]

    core = client.CoreV1Api(kube_client)
    pod = core.read_namespaced_pod(status["podName"], namespace)
    assert pod.metadata.owner_references[0].name == "s1" and pod.metadata.owner_references[0].controller
    policies = client.NetworkingV1Api(kube_client).list_namespaced_network_policy(namespace).items
    assert [p.metadata.name for p in policies] == [names.network_policy("s1")]

    set_pod_running(kube_client, namespace, status["podName"])
    finish_pod(kube_client, namespace, status["podName"], _result())
    s = wait_session(kube_client, namespace, "s1", phase_is("Succeeded"))
    status = s["status"]
    assert status["response"] == "def factorial(n): ..."
    assert status["threadId"] == "thread-123"
    assert status["usage"] == {
        "inputTokens": 1200,
        "cachedInputTokens": 200,
        "outputTokens": 300,
        "reasoningTokens": 50,
    }
    # 1000 uncached input at 1.25/M + 200 cached at 0.125/M + 300 output at 10/M
    assert abs(status["cost"]["actualUsd"] - (1000 * 1.25 + 200 * 0.125 + 300 * 10) / 1e6) < 1e-9
    assert status["cost"]["providers"][0]["provider"] == "openai"
    assert status["timings"]["completedAt"] and status["timings"]["durationSeconds"] >= 0
    assert status["reason"] == "Completed"
    events = core.list_namespaced_event(namespace, field_selector="involvedObject.name=s1").items
    assert [e.reason for e in sorted(events, key=lambda e: e.metadata.creation_timestamp)] == [
        "Started",
        "Succeeded",
    ]
    assert op.metric("codex_mcp_tokens_consumed_total", 'type="output"') == 300.0
