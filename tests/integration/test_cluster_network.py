"""Services and cluster DNS on the test node (codex_devenv.cluster_network):
kube-proxy programs the host for the control plane's Services and CoreDNS
answers cluster.local behind the kube-dns Service, so pods on the node see
what pods in a real cluster see. Everything stays on this machine: pods route
only their subnet and the Service range, both via the pod bridge."""

from __future__ import annotations

import json
import re
import subprocess
import time
from typing import Any

import pytest

from codex_devenv.cluster_network import CLUSTER_DNS_IP, SERVICE_CIDR
from codex_devenv.node import BUSYBOX_IMAGE, hardened_test_pod

pytestmark = pytest.mark.timeout(300)

UID = 1000


def _pod(name: str, script: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    pod = hardened_test_pod(name, BUSYBOX_IMAGE, script, uid=UID, memory_limit="64Mi")
    if labels:
        pod["metadata"]["labels"] = labels
    return pod


def _create(cp: Any, ns: str, doc: dict[str, Any]) -> None:
    cp.kubectl("create", "-n", ns, "-f", "-", input=json.dumps(doc))


def _wait(cp: Any, ns: str, name: str, phases: set[str], timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    pod: dict[str, Any] = {}
    while time.monotonic() < deadline:
        pod = json.loads(cp.kubectl("get", "pod", name, "-n", ns, "-o", "json").stdout)
        if pod.get("status", {}).get("phase") in phases:
            return pod
        time.sleep(0.2)
    raise AssertionError(f"pod {ns}/{name} not in {phases}: {json.dumps(pod.get('status'))}")


def _run(cp: Any, ns: str, name: str, script: str) -> str:
    _create(cp, ns, _pod(name, script))
    _wait(cp, ns, name, {"Succeeded", "Failed"})
    return str(cp.kubectl("logs", "-n", ns, name).stdout)


def _service(name: str, selector: dict[str, str], port: int, target: int, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": selector, "ports": [{"port": port, "targetPort": target}], **spec},
    }


def test_pods_resolve_cluster_names_through_the_kube_dns_service(node_cluster: Any, node_ns: str) -> None:
    cp, node, _ = node_cluster
    _create(cp, node_ns, _service("named", {"app": "nobody"}, 80, 8080))
    cluster_ip = json.loads(cp.kubectl("get", "svc", "named", "-n", node_ns, "-o", "json").stdout)["spec"][
        "clusterIP"
    ]
    kubernetes_ip = json.loads(cp.kubectl("get", "svc", "kubernetes", "-n", "default", "-o", "json").stdout)[
        "spec"
    ]["clusterIP"]
    logs = _run(
        cp,
        node_ns,
        "resolver",
        f"""
cat /etc/resolv.conf
echo "== short"; nslookup named 2>&1
echo "== full"; nslookup named.{node_ns}.svc.cluster.local 2>&1
echo "== api"; nslookup kubernetes.default 2>&1
echo "== outside"; nslookup example.com. 2>&1 && echo OUTSIDE-RESOLVED || echo outside-unresolved
echo "routes: $(ip route | tr '\\n' ';')"
""",
    )
    print(logs)
    assert f"nameserver {CLUSTER_DNS_IP}" in logs
    # Answered by CoreDNS in a kube-system pod, as a runner's DNS egress rule expects.
    slices = json.loads(
        cp.kubectl(
            "get",
            "endpointslices",
            "-n",
            "kube-system",
            "-l",
            "kubernetes.io/service-name=kube-dns",
            "-o",
            "json",
        ).stdout
    )["items"]
    dns_ips = [a for s in slices for e in s["endpoints"] for a in e["addresses"]]
    assert dns_ips and all(ip.startswith(node.subnet.rsplit(".", 1)[0] + ".") for ip in dns_ips), dns_ips
    assert f"search {node_ns}.svc.cluster.local svc.cluster.local cluster.local" in logs
    short, full = logs.split("== short")[1].split("== full")
    full, api = full.split("== api")
    api = api.split("== outside")[0]
    assert cluster_ip in short and cluster_ip in full
    assert kubernetes_ip in api
    # No upstream resolver: a pod learns nothing about the world outside the cluster.
    assert "outside-unresolved" in logs and "OUTSIDE-RESOLVED" not in logs
    routes = next(line for line in logs.splitlines() if line.startswith("routes:"))
    assert "default" not in routes
    assert re.search(rf"{re.escape(SERVICE_CIDR)} via \S+ dev eth0", routes), routes


def test_a_pod_reaches_another_pod_through_its_service_by_name(node_cluster: Any, node_ns: str) -> None:
    cp, _, _ = node_cluster
    token = f"served-by-{node_ns}"
    _create(
        cp,
        node_ns,
        _pod(
            "echo-server",
            f"mkdir -p /tmp/www && echo {token} > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www",
            labels={"app": "echo"},
        ),
    )
    _create(cp, node_ns, _service("echo", {"app": "echo"}, 80, 8080))
    _wait(cp, node_ns, "echo-server", {"Running"})
    logs = _run(
        cp,
        node_ns,
        "echo-client",
        # Debian's static busybox: its wget crashes (the static glibc cannot load
        # NSS), its nslookup asks the pod's nameserver itself, its nc needs no NSS.
        r"""
ip=$(nslookup echo | awk '/^Address/ {a=$NF} END {print a}')
echo "echo is $ip"
for i in $(seq 1 40); do
  if out=$(printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 2 "$ip" 80 2>&1) && [ -n "$out" ]; then
    echo "got: $(echo "$out" | tail -1)"; exit 0
  fi
  sleep 0.5
done
echo "never reached: $out"; exit 1
""",
    )
    assert f"got: {token}" in logs, logs


def test_a_service_without_endpoints_is_not_reachable(node_cluster: Any, node_ns: str) -> None:
    """The negative of the test above, so a pod that reaches everything cannot pass it."""
    cp, _, _ = node_cluster
    _create(cp, node_ns, _service("empty", {"app": "nobody"}, 80, 8080))
    logs = _run(
        cp, node_ns, "empty-client", "wget -q -T 3 -O - http://empty/ && echo REACHED || echo refused"
    )
    assert "refused" in logs and "REACHED" not in logs


def test_node_ports_open_only_on_the_pod_bridge(node_cluster: Any, node_ns: str) -> None:
    """Checked in the rules kube-proxy wrote, not by sending traffic."""
    cp, node, _ = node_cluster
    _create(cp, node_ns, _service("exposed", {"app": "nobody"}, 80, 8080, type="NodePort"))
    deadline = time.monotonic() + 30
    nat = ""
    while time.monotonic() < deadline:
        nat = subprocess.run(
            ["iptables-save", "-t", "nat"], capture_output=True, text=True, check=True
        ).stdout
        if f"{node_ns}/exposed" in nat:
            break
        time.sleep(0.5)
    jumps = [line for line in nat.splitlines() if "-j KUBE-NODEPORTS" in line]
    assert jumps, "kube-proxy wrote no NodePort rules"
    assert all(f"-d {node.bridge_ip}/32" in line for line in jumps), jumps


def test_pods_reach_the_api_server_through_the_kubernetes_service(node_cluster: Any, node_ns: str) -> None:
    """As in a real cluster: 10.96.0.1:443 leads to the API server (here on the
    pod bridge). The positive control for every "the API server is unreachable
    from a runner" check: without it, a server nothing can reach would pass."""
    cp, node, _ = node_cluster
    assert cp.address == node.bridge_ip, "the session's API server listens on the pod bridge"
    slices = json.loads(
        cp.kubectl(
            "get",
            "endpointslices",
            "-n",
            "default",
            "-l",
            "kubernetes.io/service-name=kubernetes",
            "-o",
            "json",
        ).stdout
    )["items"]
    assert [e["addresses"] for s in slices for e in s["endpoints"]] == [[node.bridge_ip]]
    logs = _run(
        cp,
        node_ns,
        "api-client",
        "nslookup kubernetes.default.svc.cluster.local; "
        "nc -w 3 10.96.0.1 443 </dev/null && echo API-CONNECTED || echo api-refused",
    )
    assert "10.96.0.1" in logs and "API-CONNECTED" in logs, logs
