"""A real node: kubelet v1.34 + containerd + runc run pods for the test
control plane, so a runner-like pod runs as a real container with its
securityContext enforced, `kubectl logs`/`exec` work through the API server,
and the kubelet itself reports the phase and the termination message.

The node registers with a taint (codex_devenv.node.TEST_NODE_TAINT): only
pods that tolerate it land here, so tests that play the node through the API
(FakeNode) on the shared control plane are not disturbed.

The shared control plane starts kube-apiserver with the kubelet-client
flags (ControlPlane.start), so logs and exec reach the kubelet.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from codex_devenv.assets import pinned_versions
from codex_devenv.node import BUSYBOX_IMAGE, hardened_test_pod

pytestmark = pytest.mark.timeout(300)

RUNNER_UID = 1000


def _pod(name: str, script: str, **container: Any) -> dict[str, Any]:
    return hardened_test_pod(name, BUSYBOX_IMAGE, script, uid=RUNNER_UID, memory_limit="64Mi", **container)


def get_pod(cp: Any, ns: str, name: str) -> dict[str, Any]:
    return dict(json.loads(cp.kubectl("get", "pod", name, "-n", ns, "-o", "json").stdout))


def wait_phase(cp: Any, ns: str, name: str, phases: set[str], timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pod = get_pod(cp, ns, name)
        if pod.get("status", {}).get("phase") in phases:
            return pod
        time.sleep(0.1)
    raise AssertionError(f"pod {ns}/{name} not in {phases} after {timeout}s: {json.dumps(pod.get('status'))}")


def create(cp: Any, ns: str, pod: dict[str, Any]) -> float:
    t0 = time.monotonic()
    cp.kubectl("create", "-n", ns, "-f", "-", input=json.dumps(pod))
    return t0


def test_node_is_a_real_kubelet_of_the_pinned_release(node_cluster: Any) -> None:
    cp, node, _ = node_cluster
    info = json.loads(cp.kubectl("get", "node", node.name, "-o", "json").stdout)
    assert info["status"]["nodeInfo"]["kubeletVersion"] == pinned_versions()["KUBERNETES_VERSION"]
    assert info["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")
    assert {"type": "InternalIP", "address": node.node_ip} in info["status"]["addresses"]
    assert info["spec"]["taints"][0]["key"] == "codex.dev/test-node"
    node.check_alive()


def test_runner_like_pod_runs_with_its_security_context_enforced(node_cluster: Any, node_ns: str) -> None:
    cp, node, _ = node_cluster
    script = r"""
echo "uid=$(id -u) gid=$(id -g)"
grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status
touch /written-to-rootfs 2>/dev/null && echo "rootfs writable" || echo "rootfs read-only"
mkdir -p "$HOME" && echo ok > "$HOME/probe" && echo "tmp writable"
echo "routes: $(ip route | tr '\n' ';')"
printf '%s' '{"frame":"result","ok":true}' > /dev/termination-log
"""
    t0 = create(cp, node_ns, _pod("runner-ok", script))
    pod = wait_phase(cp, node_ns, "runner-ok", {"Succeeded", "Failed"})
    latency = time.monotonic() - t0
    print(f"\n[node] create -> Succeeded in {latency:.2f}s")

    assert pod["spec"]["nodeName"] == node.name
    assert pod["status"]["phase"] == "Succeeded"
    # Reported by the kubelet, from a real container.
    (status,) = pod["status"]["containerStatuses"]
    assert status["containerID"].startswith("containerd://")
    terminated = status["state"]["terminated"]
    assert terminated["exitCode"] == 0
    assert terminated["message"] == '{"frame":"result","ok":true}'
    assert pod["status"]["podIP"].startswith(node.subnet.rsplit(".", 1)[0] + ".")

    logs = cp.kubectl("logs", "-n", node_ns, "runner-ok").stdout
    assert f"uid={RUNNER_UID} gid={RUNNER_UID}" in logs
    assert "CapEff:\t0000000000000000" in logs
    assert "CapBnd:\t0000000000000000" in logs
    assert "NoNewPrivs:\t1" in logs
    assert "Seccomp:\t2" in logs  # filter mode: RuntimeDefault is loaded
    assert "rootfs read-only" in logs
    assert "tmp writable" in logs
    routes = next(line for line in logs.splitlines() if line.startswith("routes:"))
    assert "default" not in routes  # the pod network reaches only its own subnet


def test_failed_container_reports_log_tail_as_termination_message(node_cluster: Any, node_ns: str) -> None:
    cp, _, _ = node_cluster
    create(cp, node_ns, _pod("runner-fails", "echo 'runner crashed: boom' >&2; exit 3"))
    pod = wait_phase(cp, node_ns, "runner-fails", {"Succeeded", "Failed"})
    assert pod["status"]["phase"] == "Failed"
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 3
    assert terminated["reason"] == "Error"
    assert "runner crashed: boom" in terminated["message"]  # FallbackToLogsOnError


def test_root_image_user_is_refused_by_the_kubelet(node_cluster: Any, node_ns: str) -> None:
    """runAsNonRoot is enforced on the node too (PodSecurity only sees the spec)."""
    cp, _, _ = node_cluster
    pod = _pod("runner-root", "id")
    # PodSecurity restricted needs runAsNonRoot; runAsUser absent -> the image's user (root) is checked.
    del pod["spec"]["securityContext"]["runAsUser"]
    del pod["spec"]["securityContext"]["runAsGroup"]
    create(cp, node_ns, pod)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        statuses = get_pod(cp, node_ns, "runner-root").get("status", {}).get("containerStatuses") or []
        waiting = statuses[0]["state"].get("waiting", {}) if statuses else {}
        if waiting.get("reason") == "CreateContainerConfigError":
            assert "runAsNonRoot and image will run as root" in waiting.get("message", "")
            return
        time.sleep(0.2)
    raise AssertionError("the kubelet did not refuse a root container with runAsNonRoot")


def test_exec_and_graceful_delete(node_cluster: Any, node_ns: str) -> None:
    cp, _, _ = node_cluster
    create(
        cp,
        node_ns,
        _pod("runner-long", "echo started; trap 'echo bye; exit 0' TERM; while :; do sleep 1; done"),
    )
    wait_phase(cp, node_ns, "runner-long", {"Running"})
    out = cp.kubectl("exec", "-n", node_ns, "runner-long", "--", "id", "-u")
    assert out.stdout.strip() == str(RUNNER_UID)
    t0 = time.monotonic()
    cp.kubectl("delete", "pod", "-n", node_ns, "runner-long", "--timeout=60s")
    print(f"\n[node] graceful delete took {time.monotonic() - t0:.2f}s")
    assert cp.kubectl("get", "pod", "-n", node_ns, "runner-long", check=False).returncode != 0


def test_untolerating_pods_are_not_scheduled_on_the_test_node(node_cluster: Any, node_ns: str) -> None:
    cp, _, _ = node_cluster
    pod = _pod("no-toleration", "true")
    del pod["spec"]["tolerations"]
    create(cp, node_ns, pod)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        conds = get_pod(cp, node_ns, "no-toleration").get("status", {}).get("conditions") or []
        sched = next((c for c in conds if c["type"] == "PodScheduled"), None)
        if sched and sched["status"] == "False":
            assert "untolerated taint" in sched.get("message", "")
            return
        time.sleep(0.2)
    raise AssertionError("pod without the toleration was not reported unschedulable")


def test_imported_image_is_listed(node_cluster: Any, tmp_path: Path) -> None:
    from codex_devenv.node import write_oci_archive

    _, node, _ = node_cluster
    archive = write_oci_archive(
        tmp_path / "extra.oci.tar", "codex.local/extra:test", {"hello.txt": b"hi\n"}, {"Cmd": ["/hello.txt"]}
    )
    seconds = node.import_image(archive)
    assert "codex.local/extra:test" in node.images()
    assert seconds < 30
