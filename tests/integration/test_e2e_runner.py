"""End to end without MCP: `kubectl apply` a CodexSession -> the real operator
-> a runner pod from the project's image on the real kubelet -> the real
Codex CLI in a container -> the scripted fake model on the pod bridge ->
CodexSession status. Nothing here is faked but the model."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from codex_api import names
from codex_devenv import fake_model as fm
from codex_devenv.operator_process import start_operator
from codex_devenv.system import fake_endpoint, operator_config, prepare_sessions_namespace
from codex_devenv.testkit import apply_session, phase_is, wait_session

REPO = Path(__file__).resolve().parents[2]
API_KEY = "sk-e2e-" + secrets.token_hex(16)
RUNNER_UID = 10001


@pytest.fixture
def system(
    node_cluster: Any,
    node_ns: str,
    model: fm.FakeModelServer,
    volumes: Path,
    operator_kubeconfig: Path,
    tmp_path: Path,
    kube_client: Any,
) -> Iterator[dict[str, Any]]:
    cp, _node, refs = node_cluster
    model.reset()
    prepare_sessions_namespace(cp, kube_client, node_ns, API_KEY)
    kubernetes_extra, extra = operator_config(
        fake_endpoint(model.host, model.port), refs["runner"], tolerate_test_node=True, auto_approve=True
    )
    op = start_operator(
        cp,
        operator_kubeconfig,
        node_ns,
        tmp_path,
        limit=4,
        kubernetes_extra=kubernetes_extra,
        extra_config=extra,
    )
    yield {"cp": cp, "ns": node_ns, "model": model, "op": op, "node": _node}
    op.stop()
    assert model.errors == []


def logs(cp: Any, ns: str, pod: str) -> str:
    return str(cp.kubectl("logs", "-n", ns, pod, "-c", "runner").stdout)


def finished(kube_client: Any, ns: str, name: str, timeout: float = 90) -> dict[str, Any]:
    return wait_session(kube_client, ns, name, phase_is("Succeeded", "Failed", "TimedOut"), timeout=timeout)


def test_example_session_runs_in_a_real_container(system: dict[str, Any], kube_client: Any) -> None:
    cp, ns, model = system["cp"], system["ns"], system["model"]
    model.set_script(
        fm.say(
            "Hello from the fake model, via a real runner pod.",
            usage=fm.Usage(input_tokens=321, output_tokens=12, cached_tokens=21),
        )
    )
    cp.kubectl("apply", "-n", ns, "-f", str(REPO / "examples" / "session-read-only.yaml"))
    s = finished(kube_client, ns, "hello-codex")
    status = s["status"]
    assert status["phase"] == "Succeeded", status
    assert status["response"] == "Hello from the fake model, via a real runner pod."
    assert (
        status["threadId"]
        and status["usage"]["inputTokens"] == 321
        and status["usage"]["cachedInputTokens"] == 21
    )
    assert status["cost"]["actualUsd"] > 0
    pod_logs = logs(cp, ns, status["podName"])
    events = [json.loads(line) for line in pod_logs.splitlines() if line.startswith("{")]
    assert {"thread.started", "turn.started", "turn.completed"} <= {e.get("type") for e in events}
    fence = next(e for e in events if e.get("message") == "network fence")
    # The runner waited for its NetworkPolicy (kube-router rejects: one refused probe, or a few).
    assert fence["fenced"] is True and fence["target"] == "10.96.0.1:443", fence
    start = next(e for e in events if e.get("message") == "starting codex")
    assert events.index(fence) < events.index(start)
    # Whether Codex's own bubblewrap sandbox works in the pod; the pod is the boundary either way.
    print(f"\n[runner] inner sandbox in a restricted pod: {start['inner_sandbox']}")
    assert start["sandbox"] == "read-only" and isinstance(start["inner_sandbox"], bool)
    assert model.responses_requests[0].authorization == f"Bearer {API_KEY}"  # the key from the Secret


def test_container_is_non_root_read_only_and_without_capabilities(
    system: dict[str, Any], kube_client: Any
) -> None:
    cp, ns, model = system["cp"], system["ns"], system["model"]
    probe = (
        "id -u; grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status; "
        "touch /usr/local/x 2>&1 || echo rootfs-read-only"
    )
    model.set_script(fm.exec_command(probe), fm.computed(lambda req: f"probe: {req.last_tool_output()}"))
    apply_session(cp, ns, "probe", sandbox="full-access", prompt="probe the container")
    s = finished(kube_client, ns, "probe")
    assert s["status"]["phase"] == "Succeeded", s["status"]
    out = model.responses_requests[-1].last_tool_output() or ""
    assert f"\n{RUNNER_UID}\n" in f"\n{out}" or out.split("Output:\n", 1)[-1].startswith(str(RUNNER_UID))
    assert "CapEff:\t0000000000000000" in out and "CapBnd:\t0000000000000000" in out
    assert "NoNewPrivs:\t1" in out and "rootfs-read-only" in out


def test_isolated_writes_the_conversation_volume_and_a_reply_sees_it(
    system: dict[str, Any], kube_client: Any, volumes: Path
) -> None:
    cp, ns, model = system["cp"], system["ns"], system["model"]
    model.set_script(
        fm.apply_patch(
            "*** Begin Patch\n*** Add File: factorial.py\n+def factorial(n):\n+    return 1 if n < 2 else n * factorial(n - 1)\n*** End Patch\n"
        ),
        fm.say("Wrote factorial.py"),
    )
    apply_session(
        cp, ns, "turn1", sandbox="isolated", workspace={"type": "persistent"}, prompt="write factorial.py"
    )
    first = finished(kube_client, ns, "turn1")
    assert first["status"]["phase"] == "Succeeded", first["status"]
    on_volume = volumes / ns / names.workspace_claim("turn1") / "workspace" / "factorial.py"
    assert on_volume.read_text().startswith("def factorial(n):")
    history = model.responses_requests[-1].input

    model.set_script(
        fm.exec_command("cat factorial.py"), fm.computed(lambda req: f"It contains: {req.last_tool_output()}")
    )
    apply_session(
        cp,
        ns,
        "turn2",
        sandbox="isolated",
        workspace={"type": "persistent"},
        resumeFrom="turn1",
        prompt="what is in factorial.py?",
    )
    second = finished(kube_client, ns, "turn2")
    assert second["status"]["phase"] == "Succeeded", second["status"]
    assert second["status"]["podName"] != first["status"]["podName"]  # a new pod
    assert second["status"]["threadId"] == first["status"]["threadId"]
    resumed = model.responses_requests[-2].input
    assert resumed[: len(history)] == history  # the whole earlier conversation
    assert "def factorial(n)" in second["status"]["response"]  # the file written in turn one


def test_read_only_session_cannot_write_and_the_turn_completes(
    system: dict[str, Any], kube_client: Any
) -> None:
    cp, ns, model = system["cp"], system["ns"], system["model"]
    model.set_script(
        fm.exec_command("echo data > notes.txt; echo status=$?"),
        fm.computed(lambda req: f"result: {req.last_tool_output()}"),
    )
    apply_session(cp, ns, "ro", sandbox="read-only", prompt="write notes.txt")
    s = finished(kube_client, ns, "ro")
    assert s["status"]["phase"] == "Succeeded", s["status"]
    assert "Read-only file system" in s["status"]["response"]


def test_model_commands_cannot_see_the_api_key(system: dict[str, Any], kube_client: Any) -> None:
    cp, ns, model = system["cp"], system["ns"], system["model"]
    model.set_script(fm.exec_command("env"), fm.computed(lambda req: "done"))
    apply_session(cp, ns, "env", sandbox="isolated", prompt="print env")
    assert finished(kube_client, ns, "env")["status"]["phase"] == "Succeeded"
    out = model.responses_requests[-1].last_tool_output() or ""
    assert "PATH=" in out and API_KEY not in out and "CODEX_MODEL_API_KEY" not in out


@pytest.mark.parametrize(
    ("steps", "reason"),
    [
        ((fm.http_error(500), fm.http_error(500)), "TurnFailed"),
        (
            (fm.cut_stream(fm.message_item("partial")), fm.cut_stream(fm.message_item("partial"))),
            "TurnFailed",
        ),
        ((fm.fail("the model gave up"),), "TurnFailed"),
    ],
    ids=["http-500", "cut-stream", "response-failed"],
)
def test_model_failures_end_failed_with_a_reason(
    system: dict[str, Any], kube_client: Any, steps: tuple[Any, ...], reason: str
) -> None:
    cp, ns, model = system["cp"], system["ns"], system["model"]
    model.set_script(*steps, then=fm.http_error(500))
    apply_session(cp, ns, "fails", prompt="anything")
    s = finished(kube_client, ns, "fails")
    assert s["status"]["phase"] == "Failed" and s["status"]["reason"] == reason, s["status"]
    assert s["status"]["message"]
    model.errors.clear()


def test_slow_model_times_out(system: dict[str, Any], kube_client: Any) -> None:
    cp, ns, model = system["cp"], system["ns"], system["model"]
    model.set_script(fm.say("too late", delay=8.0), then=fm.say("too late", delay=8.0))
    apply_session(cp, ns, "slow", prompt="take your time", timeoutSeconds=10)
    s = wait_session(kube_client, ns, "slow", phase_is("TimedOut", "Succeeded", "Failed"), timeout=60)
    assert s["status"]["phase"] == "TimedOut", s["status"]


def test_killed_container_fails_with_the_reason(system: dict[str, Any], kube_client: Any) -> None:
    cp, ns, model = system["cp"], system["ns"], system["model"]
    model.set_script(fm.exec_command("sleep 300"), then=fm.say("done"))
    apply_session(cp, ns, "killed", prompt="sleep", sandbox="full-access")
    s = wait_session(kube_client, ns, "killed", phase_is("Running"), timeout=60)
    pod = s["status"]["podName"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not model.responses_requests:
        time.sleep(0.2)
    # SIGKILL the container from the runtime, as the OOM killer or a node problem would
    container = None
    while time.monotonic() < deadline and not container:  # the kubelet reports it a moment later
        statuses = client.CoreV1Api(kube_client).read_namespaced_pod(pod, ns).status.container_statuses or []
        container = statuses[0].container_id if statuses else None
        time.sleep(0.1)
    assert container, "the kubelet never reported the runner container"
    node = system["node"]
    node.ctr("tasks", "kill", "-s", "SIGKILL", container.split("://", 1)[1])
    s = finished(kube_client, ns, "killed", timeout=60)
    assert s["status"]["phase"] == "Failed", s["status"]
    assert s["status"]["reason"] == "NoResult", s["status"]
    assert "exit code 137" in s["status"]["message"]


def test_a_pod_its_policy_does_not_fence_never_runs_codex(system: dict[str, Any], kube_client: Any) -> None:
    """NetworkPolicies add up: one more policy that allows all egress (a
    mistake, or a tenant's own) undoes the sandbox level's rules. The runner
    sees the API server answer, and the turn fails before the model is asked."""
    cp, ns, model = system["cp"], system["ns"], system["model"]
    model.set_script(fm.say("must not be asked"))
    allow_all = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "allow-all-egress"},
        "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]},
    }
    cp.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(allow_all))
    try:
        apply_session(cp, ns, "unfenced", sandbox="read-only")
        s = finished(kube_client, ns, "unfenced", timeout=120)
    finally:
        cp.kubectl("delete", "networkpolicy", "allow-all-egress", "-n", ns, "--wait=false")
    status = s["status"]
    assert status["phase"] == "Failed" and status["reason"] == "NetworkNotEnforced", status
    assert "the API server (10.96.0.1:443) was still reachable after 10 s" in status["message"]
    assert model.responses_requests == [] and "response" not in status
