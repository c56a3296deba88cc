"""NetworkPolicy enforced on the test node (codex_devenv.network_policy:
kube-router's firewall controller as a host process).

Every test starts with a positive control (the client reaches the server with
no policy in the way), so a node where nothing connects cannot pass a
"blocked" check. Traffic stays on the pod bridge: pods talk only to pods of
10.244.77.0/24; the CIDRs that policies allow elsewhere receive nothing.

Latency: from the API server's answer to `kubectl create` of a policy to the
first probe (kubectl exec + nc, ~0.3 s each) that sees the new state. Printed
with -s; an upper bound on the engine's own reaction time, which is also
printed (its next finished sync after the create).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from codex_devenv.node import BUSYBOX_IMAGE, hardened_test_pod

pytestmark = pytest.mark.timeout(300)

UID = 1000
PORT, OTHER_PORT = 8080, 8081
SUBNET = "10.244.77.0/24"
ENFORCE_TIMEOUT = 30.0
LATENCIES: list[tuple[str, float, float | None]] = []
PROBES: list[str] = []  # per wait: start:result(duration) of each probe


@pytest.fixture(scope="module")
def engine(netpol_engine: Any) -> Iterator[Any]:
    yield netpol_engine
    for what, client_s, engine_s in LATENCIES:
        engine_text = f"{engine_s:.2f}s" if engine_s is not None else "-"
        print(f"[netpol] {what}: seen by the client after {client_s:.2f}s, engine synced after {engine_text}")


# -- helpers -----------------------------------------------------------------------------


def _create(cp: Any, ns: str, doc: dict[str, Any]) -> None:
    cp.kubectl("create", "-n", ns, "-f", "-", input=json.dumps(doc))


def _pod(name: str, script: str, labels: dict[str, str]) -> dict[str, Any]:
    pod = hardened_test_pod(name, BUSYBOX_IMAGE, script, uid=UID, memory_limit="64Mi")
    pod["metadata"]["labels"] = labels
    return pod


def _wait_running(cp: Any, ns: str, name: str, timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    pod: dict[str, Any] = {}
    while time.monotonic() < deadline:
        pod = json.loads(cp.kubectl("get", "pod", name, "-n", ns, "-o", "json").stdout)
        status = pod.get("status", {})
        if status.get("phase") == "Running" and status.get("podIP"):
            return pod
        time.sleep(0.2)
    raise AssertionError(f"pod {ns}/{name} not Running: {json.dumps(pod.get('status'))}")


def _pair(cp: Any, ns: str) -> str:
    """A server (httpd on PORT and OTHER_PORT) and an idle client; returns the server's IP."""
    serve = (
        "mkdir -p /tmp/www && echo served > /tmp/www/index.html && "
        f"httpd -p {OTHER_PORT} -h /tmp/www && exec httpd -f -p {PORT} -h /tmp/www"
    )
    _create(cp, ns, _pod("server", serve, {"role": "server"}))
    _create(cp, ns, _pod("client", "exec sleep 3600", {"role": "client"}))
    ip = str(_wait_running(cp, ns, "server")["status"]["podIP"])
    _wait_running(cp, ns, "client")
    return ip


def _reaches(cp: Any, ns: str, ip: str, port: int = PORT) -> bool:
    """One HTTP request from the client pod (busybox nc: its wget crashes, see test_cluster_network)."""
    out = cp.kubectl(
        "exec",
        "-n",
        ns,
        "client",
        "--",
        "sh",
        "-c",
        f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {ip} {port} 2>&1; echo nc-exit=$?",
        check=False,
    ).stdout
    return "served" in out


def _until(cp: Any, ns: str, ip: str, reachable: bool, port: int = PORT) -> float:
    t0 = time.monotonic()
    probes: list[str] = []
    while time.monotonic() - t0 < ENFORCE_TIMEOUT:
        start = time.monotonic()
        result = _reaches(cp, ns, ip, port)
        probes.append(f"{start - t0:.2f}s:{'open' if result else 'closed'}({time.monotonic() - start:.2f}s)")
        if result == reachable:
            PROBES.append(" ".join(probes))
            return time.monotonic() - t0
        time.sleep(0.1)
    raise AssertionError(f"{ip}:{port} still {'un' if reachable else ''}reachable after {ENFORCE_TIMEOUT}s")


def _apply_policy(
    engine: Any, cp: Any, ns: str, what: str, policy: dict[str, Any], ip: str, *, reachable: bool
) -> float:
    """Create (or replace) a policy, wait until the client sees `reachable`, record the latency."""
    exists = (
        cp.kubectl("get", "networkpolicy", policy["metadata"]["name"], "-n", ns, check=False).returncode == 0
    )
    cp.kubectl("replace" if exists else "create", "-n", ns, "-f", "-", input=json.dumps(policy))
    created, t0 = time.time(), time.monotonic()
    _until(cp, ns, ip, reachable)
    seen = time.monotonic() - t0
    LATENCIES.append((what, seen, engine.first_sync_after(created)))
    print(f"\n[netpol] {what}: probes {PROBES[-1]}")
    return seen


def _policy(name: str, selector: dict[str, str], types: list[str], **rules: Any) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name},
        "spec": {"podSelector": {"matchLabels": selector}, "policyTypes": types, **rules},
    }


def _tcp(port: int) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": port}]


# -- tests -------------------------------------------------------------------------------


def test_without_policy_the_client_reaches_the_server(engine: Any, node_cluster: Any, node_ns: str) -> None:
    cp = node_cluster[0]
    ip = _pair(cp, node_ns)
    assert _until(cp, node_ns, ip, True) < ENFORCE_TIMEOUT
    assert _reaches(cp, node_ns, ip, OTHER_PORT)


def test_default_deny_egress_blocks_and_an_allow_rule_reopens_only_its_port(
    engine: Any, node_cluster: Any, node_ns: str
) -> None:
    cp = node_cluster[0]
    ip = _pair(cp, node_ns)
    _until(cp, node_ns, ip, True)  # positive control
    deny = _policy("client-deny-egress", {"role": "client"}, ["Egress"])
    _apply_policy(engine, cp, node_ns, "egress default-deny", deny, ip, reachable=False)
    assert not _reaches(cp, node_ns, ip, OTHER_PORT)

    allow = _policy(
        "client-to-server",
        {"role": "client"},
        ["Egress"],
        egress=[{"to": [{"podSelector": {"matchLabels": {"role": "server"}}}], "ports": _tcp(PORT)}],
    )
    _apply_policy(engine, cp, node_ns, "egress allow server:8080", allow, ip, reachable=True)
    # Only the allowed port: the server's other port stays closed to the client.
    assert not _reaches(cp, node_ns, ip, OTHER_PORT)


def test_ingress_default_deny_on_the_server_blocks_the_client(
    engine: Any, node_cluster: Any, node_ns: str
) -> None:
    cp = node_cluster[0]
    ip = _pair(cp, node_ns)
    _until(cp, node_ns, ip, True)
    deny = _policy("server-deny-ingress", {"role": "server"}, ["Ingress"])
    _apply_policy(engine, cp, node_ns, "ingress default-deny", deny, ip, reachable=False)

    allow = _policy(
        "server-from-client",
        {"role": "server"},
        ["Ingress"],
        ingress=[{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}], "ports": _tcp(PORT)}],
    )
    _apply_policy(engine, cp, node_ns, "ingress allow client:8080", allow, ip, reachable=True)
    assert not _reaches(cp, node_ns, ip, OTHER_PORT)


def test_an_ip_block_that_does_not_contain_the_server_blocks_it(
    engine: Any, node_cluster: Any, node_ns: str
) -> None:
    cp = node_cluster[0]
    ip = _pair(cp, node_ns)
    _until(cp, node_ns, ip, True)
    name = "client-ipblock"

    # The node's own /24, outside the pod subnet: nothing is ever sent there.
    elsewhere = _policy(
        name, {"role": "client"}, ["Egress"], egress=[{"to": [{"ipBlock": {"cidr": "10.244.78.0/24"}}]}]
    )
    _apply_policy(engine, cp, node_ns, "egress ipBlock elsewhere", elsewhere, ip, reachable=False)

    # Positive control for ipBlock matching itself: the server's /32 opens it ...
    exact = _policy(
        name, {"role": "client"}, ["Egress"], egress=[{"to": [{"ipBlock": {"cidr": f"{ip}/32"}}]}]
    )
    _apply_policy(engine, cp, node_ns, "egress ipBlock server/32", exact, ip, reachable=True)

    # ... and the subnet with the server in `except` closes it (the runner policies' form).
    excepted = _policy(
        name,
        {"role": "client"},
        ["Egress"],
        egress=[{"to": [{"ipBlock": {"cidr": SUBNET, "except": [f"{ip}/32"]}}]}],
    )
    _apply_policy(engine, cp, node_ns, "egress ipBlock subnet except server", excepted, ip, reachable=False)


def _resolves(cp: Any, ns: str) -> bool:
    out = cp.kubectl(
        "exec",
        "-n",
        ns,
        "client",
        "--",
        "sh",
        "-c",
        "timeout 5 nslookup kubernetes.default.svc.cluster.local 2>&1",
        check=False,
    ).stdout
    # The answer's address line, not the server's ("10.96.0.10" contains "10.96.0.1").
    return re.search(r"^Address:\s*10\.96\.0\.1\s*$", out, re.M) is not None


def test_the_runner_policys_dns_rule_lets_a_pod_resolve(engine: Any, node_cluster: Any, node_ns: str) -> None:
    """The DNS rule of operator/codex_operator/netpol_builder.py, alone: CoreDNS is a
    kube-system pod listening on 53, so the rule matches it after the Service's DNAT."""
    cp = node_cluster[0]
    _pair(cp, node_ns)
    if not _resolves(cp, node_ns):  # positive control: an error, not the expected failure
        raise RuntimeError("the client cannot resolve even without a policy")
    dns = _policy(
        "client-dns-only",
        {"role": "client"},
        ["Egress"],
        egress=[
            {
                "to": [
                    {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}
                ],
                "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
            }
        ],
    )
    created = time.time()
    cp.kubectl("create", "-n", node_ns, "-f", "-", input=json.dumps(dns))
    assert engine.first_sync_after(created) is not None
    time.sleep(0.5)
    assert _resolves(cp, node_ns), "DNS blocked by the runner policy's DNS rule"


def test_pod_traffic_cannot_leave_the_bridge_through_kube_routers_accept(engine: Any) -> None:
    """Read from the rules, no traffic: kube-router ACCEPTs policy-compliant pod
    traffic at the top of filter FORWARD, ahead of the setup script's DROP rules
    that keep pod traffic on the bridge; the engine's guard repeats those in
    mangle FORWARD, which netfilter runs first."""
    from codex_devenv.network_policy import GUARD_CHAIN

    def save(table: str) -> list[str]:
        out = subprocess.run(["iptables-save", "-t", table], capture_output=True, text=True, check=True)
        return out.stdout.splitlines()

    filter_forward = [r for r in save("filter") if r.startswith("-A FORWARD ")]
    assert "KUBE-ROUTER-FORWARD" in filter_forward[0], filter_forward
    mangle = save("mangle")
    assert next(r for r in mangle if r.startswith("-A FORWARD ")) == f"-A FORWARD -j {GUARD_CHAIN}"
    guard = [r for r in mangle if r.startswith(f"-A {GUARD_CHAIN} ")]
    bridge = engine.bridge
    assert any(f"-i {bridge} ! -o {bridge}" in r and r.endswith("-j DROP") for r in guard), guard
    assert any(f"! -i {bridge} -o {bridge}" in r and r.endswith("-j DROP") for r in guard), guard


def test_the_engine_opens_the_node_port_range_on_the_node_so_no_server_of_ours_is_there(
    engine: Any, node_cluster: Any, node_ns: str
) -> None:
    """kube-router's KUBE-ROUTER-INPUT returns "LOCAL TCP traffic to node ports"
    (30000-32767) ahead of every pod's firewall: a pod under egress default-deny
    still reaches a host server in that range, and not one below it. So the API
    server and the kubelet must listen outside it (codex_devenv.process.free_port),
    as 6443 and 10250 do in a real cluster; a CI run whose API server drew a port
    in the range saw every runner reach it."""
    import http.server
    import threading

    from codex_devenv.cluster_network import api_server_address
    from codex_devenv.process import NODE_PORT_RANGE, free_port

    cp, node = node_cluster[0], node_cluster[1]
    for what, port in (("API server", cp.api_port), ("kubelet", node.kubelet_port)):
        assert not NODE_PORT_RANGE[0] <= port <= NODE_PORT_RANGE[1], (
            f"the {what} listens in the NodePort range"
        )

    class Served(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"served\n")

        def log_message(self, *args: Any) -> None:
            pass

    host = api_server_address()
    servers = []
    for port in (free_port(), NODE_PORT_RANGE[0] + 1234):
        server = http.server.ThreadingHTTPServer((host, port), Served)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    below, inside = (s.server_address[1] for s in servers)
    try:
        _pair(cp, node_ns)
        _until(cp, node_ns, host, True, below)  # positive control, and
        _until(cp, node_ns, host, True, inside)  # the same for the port in the range
        deny = _policy("client-deny-all-egress", {"role": "client"}, ["Egress"])
        _create(cp, node_ns, deny)
        _until(cp, node_ns, host, False, below)
        assert _reaches(cp, node_ns, host, inside), "kube-router no longer opens the NodePort range"
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
