"""The runner NetworkPolicy of every sandbox level, enforced on the test node
(codex_devenv.network_policy), checked by traffic from a pod the policy selects.

The policy is the operator's own (codex_operator.netpol_builder), for a
"model" pod on the bridge as the model endpoint. Every "unreachable" has its
positive control in the same test: the same target reached from a pod no
policy selects, so a target nothing can reach cannot make a test pass. All
traffic stays on the pod bridge and the host's bridge address; the stand-in
internet host (203.0.113.0/24 in a netns of its own) is the next step.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from codex_api import names
from codex_api.config import ModelEndpointConfig
from codex_devenv.node import BUSYBOX_IMAGE, hardened_test_pod
from codex_operator.netpol_builder import build_network_policy

pytestmark = pytest.mark.timeout(600)

UID = 1000
MODEL_PORT, OTHER_PORT = 8080, 9090
LEVELS = ("read-only", "isolated", "full-access")


def _pod(name: str, script: str, labels: dict[str, str]) -> dict[str, Any]:
    pod = hardened_test_pod(name, BUSYBOX_IMAGE, script, uid=UID, memory_limit="64Mi")
    pod["metadata"]["labels"] = labels
    pod["spec"]["restartPolicy"] = "Always"
    return pod


def _serve(port: int) -> str:
    return f"mkdir -p /tmp/www && echo up > /tmp/www/index.html && exec httpd -f -p {port} -h /tmp/www"


def _ip(cp: Any, ns: str, name: str, timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pod = json.loads(cp.kubectl("get", "pod", name, "-n", ns, "-o", "json").stdout)
        ready = any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in pod.get("status", {}).get("conditions", [])
        )
        if ready and pod["status"].get("podIP"):
            return str(pod["status"]["podIP"])
        time.sleep(0.2)
    raise AssertionError(f"pod {ns}/{name} not ready")


def _exec(cp: Any, ns: str, pod: str, script: str) -> str:
    return str(cp.kubectl("exec", "-n", ns, pod, "--", "sh", "-c", script, check=False).stdout)


def _connects(cp: Any, ns: str, pod: str, ip: str, port: int) -> bool:
    out = _exec(cp, ns, pod, f"nc -w 2 {ip} {port} </dev/null >/dev/null 2>&1 && echo OPEN || echo CLOSED")
    return "OPEN" in out


def _resolves(cp: Any, ns: str, pod: str) -> bool:
    out = _exec(cp, ns, pod, "timeout 5 nslookup kubernetes.default.svc.cluster.local 2>&1")
    return any(line.split()[-1:] == ["10.96.0.1"] for line in out.splitlines() if line.startswith("Address"))


def _eventually(check: Any, expected: bool, timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if check() == expected:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.3)


@pytest.fixture(scope="module")
def world(node_cluster: Any, netpol_engine: Any) -> Iterator[Any]:
    """A namespace with a model pod, a bystander pod, and a free (unselected) prober."""
    cp, _, _ = node_cluster
    ns = f"runner-net-{int(time.time() * 1000) % 10**8}"
    cp.kubectl("create", "namespace", ns)
    cp.kubectl("label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted")
    both = f"{_serve(MODEL_PORT)} & {_serve(OTHER_PORT)}"
    for name, script in (("model", _serve(MODEL_PORT)), ("bystander", both), ("free", both)):
        cp.kubectl("create", "-n", ns, "-f", "-", input=json.dumps(_pod(name, script, {"role": name})))
    ips = {name: _ip(cp, ns, name) for name in ("model", "bystander", "free")}
    yield cp, ns, ips
    cp.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def _runner(world: Any, level: str, session: str) -> tuple[str, str]:
    """The operator's policy for `session` at `level`, and a pod it selects: (name, ip)."""
    cp, ns, ips = world
    endpoint = ModelEndpointConfig(
        provider_id="fake",
        base_url=f"http://{ips['model']}:{MODEL_PORT}/v1",
        egress_cidrs=[f"{ips['model']}/32"],
        egress_ports=[MODEL_PORT],
    )
    policy = build_network_policy(
        session_name=session,
        namespace=ns,
        session_uid="00000000-0000-0000-0000-000000000000",
        conversation=session,
        sandbox=level,
        endpoint=endpoint,
    )
    del policy["metadata"]["ownerReferences"]  # no CodexSession object here; the rules are what count
    cp.kubectl("create", "-n", ns, "-f", "-", input=json.dumps(policy))
    labels = {names.LABEL_SESSION: session, "role": "runner"}
    name = f"runner-{session}"
    cp.kubectl("create", "-n", ns, "-f", "-", input=json.dumps(_pod(name, _serve(OTHER_PORT), labels)))
    return name, _ip(cp, ns, name)


@pytest.mark.parametrize("level", LEVELS)
def test_a_runner_reaches_dns_and_the_model_and_no_other_pod(world: Any, level: str) -> None:
    cp, ns, ips = world
    runner, runner_ip = _runner(world, level, f"s-{level}")

    # Positive controls: every target is up, and reachable from a pod no policy selects.
    assert _connects(cp, ns, "free", ips["bystander"], OTHER_PORT)
    assert _connects(cp, ns, runner, "127.0.0.1", OTHER_PORT), "the runner's own listener is up"

    # Allowed for every level: cluster DNS and the model endpoint.
    assert _eventually(lambda: _resolves(cp, ns, runner), True), "DNS through kube-dns"
    assert _eventually(lambda: _connects(cp, ns, runner, ips["model"], MODEL_PORT), True), "the model"

    # No other pod, at any level (full-access's public rule leaves out private ranges).
    assert _eventually(lambda: _connects(cp, ns, runner, ips["bystander"], OTHER_PORT), False), "another pod"
    # And nothing may connect to a runner.
    assert _eventually(lambda: _connects(cp, ns, "free", runner_ip, OTHER_PORT), False), (
        "ingress to the runner"
    )


@pytest.mark.parametrize("level", LEVELS)
def test_a_runner_cannot_reach_the_api_server(world: Any, level: str) -> None:
    """Here the API server listens on the node itself (the pod bridge), the case
    where a policy engine might let pod-to-node traffic through; it must not."""
    cp, ns, _ = world
    runner, _ = _runner(world, level, f"api-{level}")
    assert _connects(cp, ns, "free", "10.96.0.1", 443), "positive control: the kubernetes Service"
    assert _connects(cp, ns, "free", cp.address, cp.api_port), "positive control: the node address"
    # The engine programs a new pod's firewall on its next sync: blocked from then on.
    assert _eventually(lambda: _connects(cp, ns, runner, "10.96.0.1", 443), False), (
        "the API server (Service IP)"
    )
    assert not _connects(cp, ns, runner, cp.address, cp.api_port), "the API server (node address)"
