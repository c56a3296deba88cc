"""The runner NetworkPolicy of every sandbox level, enforced on the test node
(codex_devenv.network_policy), checked by traffic from a pod the policy selects.

The policy is the operator's own (codex_operator.netpol_builder), for a
"model" pod on the bridge as the model endpoint (wall-bounce: a second
provider pod too). Every "unreachable" has its positive control in the same
test: the same target reached from a pod no policy selects, so a target
nothing can reach cannot make a test pass. All traffic stays on this
machine: the pod bridge, the node's own addresses, and the stand-in internet
(codex_devenv.stand_in_internet: SERVER_IP in a network namespace of its
own). Link-local and metadata addresses get no traffic: their exclusion is
checked on the policy objects. The chart's own components (gateway, Redis,
operator) as targets: test_in_cluster_install.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from codex_api import names
from codex_api.config import ModelEndpointConfig
from codex_devenv.netprobe import connects, eventually, pod_ip, probe_pod, reaches, resolves, serve
from codex_devenv.stand_in_internet import PORTS as INTERNET_PORTS
from codex_devenv.stand_in_internet import SERVER_IP, StandInInternet
from codex_operator.netpol_builder import build_network_policy

pytestmark = pytest.mark.timeout(600)

MODEL_PORT, OTHER_PORT = 8080, 9090
LEVELS = ("read-only", "isolated", "full-access", "wall-bounce")


@pytest.fixture(scope="module")
def world(node_cluster: Any, netpol_engine: Any, internet: StandInInternet) -> Iterator[Any]:
    """A namespace with two model pods (providers), a bystander pod, and a free
    (unselected) prober."""
    cp, _, _ = node_cluster
    ns = f"runner-net-{int(time.time() * 1000) % 10**8}"
    cp.kubectl("create", "namespace", ns)
    cp.kubectl("label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted")
    both = f"{serve(MODEL_PORT)} & {serve(OTHER_PORT)}"
    pods = (
        ("model", serve(MODEL_PORT)),
        ("model2", serve(MODEL_PORT)),
        ("bystander", both),
        ("free", both),
    )
    for name, script in pods:
        cp.kubectl("create", "-n", ns, "-f", "-", input=json.dumps(probe_pod(name, script, {"role": name})))
    ips = {name: pod_ip(cp, ns, name) for name, _ in pods}
    yield cp, ns, ips
    cp.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def _endpoint(ip: str) -> ModelEndpointConfig:
    return ModelEndpointConfig(
        provider_id="fake",
        base_url=f"http://{ip}:{MODEL_PORT}/v1",
        egress_cidrs=[f"{ip}/32"],
        egress_ports=[MODEL_PORT],
    )


def _policy(level: str, ns: str, session: str, ips: dict[str, str]) -> dict[str, Any]:
    """The operator's policy at `level`; wall-bounce is read-only with a second provider."""
    return build_network_policy(
        session_name=session,
        namespace=ns,
        session_uid="00000000-0000-0000-0000-000000000000",
        conversation=session,
        sandbox="read-only" if level == "wall-bounce" else level,
        endpoint=_endpoint(ips["model"]),
        extra_endpoints=[_endpoint(ips["model2"])] if level == "wall-bounce" else [],
    )


def _runner(world: Any, level: str, session: str) -> tuple[str, str]:
    """The operator's policy for `session` at `level`, and a pod it selects: (name, ip)."""
    cp, ns, ips = world
    policy = _policy(level, ns, session, ips)
    del policy["metadata"]["ownerReferences"]  # no CodexSession object here; the rules are what count
    cp.kubectl("create", "-n", ns, "-f", "-", input=json.dumps(policy))
    labels = {names.LABEL_SESSION: session, names.LABEL_POLICY: session, "role": "runner"}
    name = f"runner-{session}"
    cp.kubectl("create", "-n", ns, "-f", "-", input=json.dumps(probe_pod(name, serve(OTHER_PORT), labels)))
    return name, pod_ip(cp, ns, name)


@pytest.mark.parametrize("level", LEVELS)
def test_a_runner_reaches_dns_and_the_model_and_no_other_pod(world: Any, level: str) -> None:
    cp, ns, ips = world
    runner, runner_ip = _runner(world, level, f"s-{level}")

    # Positive controls: every target is up, and reachable from a pod no policy selects.
    assert reaches(cp, ns, "free", ips["bystander"], OTHER_PORT)
    assert reaches(cp, ns, runner, "127.0.0.1", OTHER_PORT), "the runner's own listener is up"

    # Allowed for every level: cluster DNS and the model endpoint.
    assert eventually(lambda: resolves(cp, ns, runner), True), "DNS through kube-dns"
    assert eventually(lambda: connects(cp, ns, runner, ips["model"], MODEL_PORT), True), "the model"
    if level == "wall-bounce":
        assert reaches(cp, ns, runner, ips["model2"], MODEL_PORT), "the second provider"
    else:
        assert reaches(cp, ns, "free", ips["model2"], MODEL_PORT), "positive control: a model not its own"
        assert eventually(lambda: connects(cp, ns, runner, ips["model2"], MODEL_PORT), False), (
            "another provider than its own"
        )

    # No other pod, at any level (full-access's public rule leaves out private ranges).
    assert eventually(lambda: connects(cp, ns, runner, ips["bystander"], OTHER_PORT), False), "another pod"
    # And nothing may connect to a runner.
    assert eventually(lambda: connects(cp, ns, "free", runner_ip, OTHER_PORT), False), "ingress to the runner"


@pytest.mark.parametrize("level", LEVELS)
def test_a_runner_cannot_reach_the_api_server(world: Any, level: str) -> None:
    """Here the API server listens on the node itself (the pod bridge), the case
    where a policy engine might let pod-to-node traffic through; it must not."""
    cp, ns, _ = world
    runner, _ = _runner(world, level, f"api-{level}")
    assert reaches(cp, ns, "free", "10.96.0.1", 443), "positive control: the kubernetes Service"
    assert reaches(cp, ns, "free", cp.address, cp.api_port), "positive control: the node address"
    # The engine programs a new pod's firewall on its next sync: blocked from then on.
    assert eventually(lambda: connects(cp, ns, runner, "10.96.0.1", 443), False), (
        "the API server (Service IP)"
    )
    assert not connects(cp, ns, runner, cp.address, cp.api_port), "the API server (node address)"


@pytest.mark.parametrize("level", LEVELS)
def test_only_full_access_reaches_the_internet(world: Any, level: str) -> None:
    cp, ns, _ = world
    runner, _ = _runner(world, level, f"net-{level}")
    for port in INTERNET_PORTS:
        assert reaches(cp, ns, "free", SERVER_IP, port), f"positive control: the stand-in internet :{port}"
    eventually(lambda: resolves(cp, ns, runner), True)  # the runner's policy is in force by now
    for port in INTERNET_PORTS:
        reached = eventually(lambda p=port: connects(cp, ns, runner, SERVER_IP, p), level == "full-access")
        assert reached, (
            f"{level}: the internet on {port} should be {'open' if level == 'full-access' else 'closed'}"
        )


@pytest.mark.parametrize("level", LEVELS)
def test_no_runner_reaches_the_kubelet(world: Any, level: str, node_cluster: Any) -> None:
    cp, ns, _ = world
    node = node_cluster[1]
    runner, _ = _runner(world, level, f"kubelet-{level}")
    assert reaches(cp, ns, "free", node.node_ip, node.kubelet_port), "positive control: the kubelet's port"
    assert eventually(lambda: connects(cp, ns, runner, node.node_ip, node.kubelet_port), False), "the kubelet"


@pytest.mark.parametrize("level", LEVELS)
def test_no_rule_opens_link_local_or_metadata_addresses(world: Any, level: str) -> None:
    """Checked on the policy objects, without sending a packet: every rule that
    names addresses either names the configured model endpoints or is the
    public rule, which cuts out link-local and every metadata address."""
    import ipaddress

    _, ns, ips = world
    forbidden = [
        ipaddress.ip_network(n)
        for n in (
            "169.254.0.0/16",
            "169.254.169.254/32",
            "fd00:ec2::254/128",
            "fe80::/10",
            "100.100.100.200/32",
            "192.0.0.192/32",
        )
    ]
    models = {f"{ips['model']}/32", f"{ips['model2']}/32"}
    for rule in _policy(level, ns, f"static-{level}", ips)["spec"]["egress"]:
        for peer in rule.get("to", []):
            if "ipBlock" not in peer:
                continue
            block = peer["ipBlock"]
            if block["cidr"] in models:
                continue
            assert block["cidr"] in ("0.0.0.0/0", "::/0"), block
            excluded = [ipaddress.ip_network(e) for e in block.get("except", [])]
            for net in forbidden:
                if net.version != ipaddress.ip_network(block["cidr"]).version:
                    continue
                assert any(net.subnet_of(e) for e in excluded), f"{level}: {net} is not excluded from {block}"  # type: ignore[arg-type]


def test_stand_in_internet_takes_no_address_this_machine_uses(internet: StandInInternet) -> None:
    """While it is up, every package registry and the resolver are still routed
    the way they were (not into its veth): a stand-in that claimed the
    registries' range once cut the next CI run off from pip."""
    import subprocess

    from codex_devenv.stand_in_internet import HOST_IF, LEFTOVERS_SCRIPT, registry_addresses

    routed = {
        address: subprocess.run(
            ["ip", "-4", "route", "get", address], capture_output=True, text=True, check=True
        ).stdout
        for addresses in registry_addresses().values()
        for address in addresses
    }
    assert routed, "no registry address resolved: the check would prove nothing"
    assert {a: r for a, r in routed.items() if f"dev {HOST_IF}" in r} == {}
    # `make deps` (run by `make dev`, e.g. from a test) removes leftovers of
    # killed runs, not the stand-in of this running one.
    subprocess.run(["bash", str(LEFTOVERS_SCRIPT)], capture_output=True, text=True, check=True)
    # Positive control: the stand-in's own server is routed into the veth.
    server = subprocess.run(
        ["ip", "-4", "route", "get", SERVER_IP], capture_output=True, text=True, check=True
    )
    assert f"dev {HOST_IF}" in server.stdout
