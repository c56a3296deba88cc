"""The egress NetworkPolicy of a session's runner pods, as a plain manifest.

Runner pods accept no connections (the runner reports through stdout and its
termination message; a live pod's agent takes turns from the operator alone)
and may reach only DNS and the model endpoint. A
full-access session additionally reaches the public internet on any port,
but never private, loopback, link-local or cloud-metadata addresses: from
there a prompt-injected command could reach the cluster's own services or a
node's credentials.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

from codex_api import names
from codex_api.config import ModelEndpointConfig, WarmRunnersConfig
from codex_api.sandbox import profile

__all__ = [
    "ALL_IPV4",
    "ALL_IPV6",
    "BLOCKED_EGRESS_RANGES",
    "agent_ingress_rule",
    "blocked_within",
    "build_network_policy",
]

ALL_IPV4 = "0.0.0.0/0"
ALL_IPV6 = "::/0"

# Destinations no runner may reach through a "public" rule. Some entries sit
# inside others on purpose: blocked_within() keeps the ones strictly inside a
# configured range, so a metadata address stays blocked even when an admin
# opens the wider range around it.
BLOCKED_EGRESS_RANGES: tuple[str, ...] = (
    # IPv4
    "0.0.0.0/8",  # "this network"
    "10.0.0.0/8",  # RFC 1918 private
    "100.64.0.0/10",  # CGNAT, also used for pod/service ranges and Alibaba's metadata (100.100.100.200)
    "127.0.0.0/8",  # loopback
    "169.254.0.0/16",  # link-local
    "169.254.169.254/32",  # cloud metadata (AWS, GCP, Azure, ...)
    "172.16.0.0/12",  # RFC 1918 private
    "192.0.0.0/24",  # IETF protocol assignments, Oracle Cloud metadata (192.0.0.192)
    "192.168.0.0/16",  # RFC 1918 private
    "198.18.0.0/15",  # benchmarking, used as internal space by some networks
    "224.0.0.0/4",  # multicast
    "240.0.0.0/4",  # reserved, broadcast
    # IPv6
    "::1/128",  # loopback
    # Not ::ffff:0:0/96 (IPv4-mapped): the API server parses it as IPv4
    # 0.0.0.0/0 and rejects it under ::/0; mapped addresses never reach the
    # wire anyway, the IPv4 entries above govern them.
    "fc00::/7",  # unique local (private)
    "fd00:ec2::254/128",  # AWS metadata over IPv6
    "fe80::/10",  # link-local
    "ff00::/8",  # multicast
)

DNS_NAMESPACE = "kube-system"
_NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


def blocked_within(cidr: str) -> list[str]:
    """The blocked ranges strictly inside ``cidr``, for its ipBlock ``except``.

    The API server rejects an ``except`` entry that is not strictly inside
    its ``cidr``, so each ipBlock gets only the entries that apply to it.
    """
    outer = ipaddress.ip_network(cidr)
    inside = []
    for entry in BLOCKED_EGRESS_RANGES:
        net = ipaddress.ip_network(entry)
        if net.version == outer.version and net != outer and net.subnet_of(outer):  # type: ignore[arg-type]
            inside.append(entry)
    return inside


def _ip_block(cidr: str) -> dict[str, Any]:
    block: dict[str, Any] = {"cidr": cidr}
    excluded = blocked_within(cidr)
    if excluded:
        block["except"] = excluded
    return block


def _public_peers() -> list[dict[str, Any]]:
    return [{"ipBlock": _ip_block(ALL_IPV4)}, {"ipBlock": _ip_block(ALL_IPV6)}]


def _tcp_ports(ports: list[int]) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": port} for port in ports]


def _model_endpoint_rules(endpoint: ModelEndpointConfig) -> list[dict[str, Any]]:
    ports = _tcp_ports(endpoint.egress_ports)
    rules: list[dict[str, Any]] = []
    if endpoint.egress_cidrs:
        # Configured ranges are the admin's explicit choice (an on-premises
        # endpoint may well be private); only blocked ranges strictly inside
        # them, such as a metadata address, are still cut out.
        rules.append({"to": [{"ipBlock": _ip_block(cidr)} for cidr in endpoint.egress_cidrs], "ports": ports})
    if endpoint.in_cluster_namespace_labels or endpoint.in_cluster_pod_labels:
        # A peer with a podSelector alone means pods of the policy's own
        # namespace, which is what pod labels without namespace labels say.
        peer: dict[str, Any] = {}
        if endpoint.in_cluster_namespace_labels:
            peer["namespaceSelector"] = {"matchLabels": dict(endpoint.in_cluster_namespace_labels)}
        if endpoint.in_cluster_pod_labels:
            peer["podSelector"] = {"matchLabels": dict(endpoint.in_cluster_pod_labels)}
        rules.append({"to": [peer], "ports": ports})
    if not rules:
        # No address given: the endpoint is somewhere on the internet, and
        # its addresses are not known in advance (CDNs rotate them).
        rules.append({"to": _public_peers(), "ports": ports})
    return rules


def agent_ingress_rule(warm: WarmRunnersConfig) -> dict[str, Any]:
    """The one way into a live runner pod: its agent's port, from the operator."""
    peers: list[dict[str, Any]] = [{"ipBlock": {"cidr": cidr}} for cidr in warm.operator_cidrs]
    if warm.operator_namespace_labels or warm.operator_pod_labels:
        peer: dict[str, Any] = {}
        if warm.operator_namespace_labels:
            peer["namespaceSelector"] = {"matchLabels": dict(warm.operator_namespace_labels)}
        if warm.operator_pod_labels:
            peer["podSelector"] = {"matchLabels": dict(warm.operator_pod_labels)}
        peers.append(peer)
    return {"from": peers, "ports": _tcp_ports([warm.agent_port])}


def build_network_policy(
    *,
    session_name: str,
    namespace: str,
    session_uid: str,
    conversation: str,
    sandbox: str,
    endpoint: ModelEndpointConfig,
    extra_endpoints: Sequence[ModelEndpointConfig] = (),
    ingress: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """The NetworkPolicy that confines every runner pod of ``session_name``.

    ``extra_endpoints`` are further model endpoints the runner calls (the
    providers of a wall-bounce session), each allowed like ``endpoint``.
    ``ingress``: the rules that let something in (a live pod's agent port,
    agent_ingress_rule); none, and nothing may connect to the runner.
    """
    level = profile(sandbox)  # a clear ValueError for anything else
    dns = {
        "to": [{"namespaceSelector": {"matchLabels": {_NAMESPACE_NAME_LABEL: DNS_NAMESPACE}}}],
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
    }
    egress = [dns]
    for rule in (r for ep in (endpoint, *extra_endpoints) for r in _model_endpoint_rules(ep)):
        # Providers on the same addresses and ports need the rule only once.
        if rule not in egress:
            egress.append(rule)
    if level.egress == "public":
        # No "ports": every port and protocol, to public addresses only.
        egress.append({"to": _public_peers()})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": names.network_policy(session_name),
            "namespace": namespace,
            "labels": names.common_labels(session_name, conversation),
            "ownerReferences": [names.owner_reference("CodexSession", session_name, session_uid)],
        },
        "spec": {
            "podSelector": {"matchLabels": {names.LABEL_POLICY: session_name}},
            "policyTypes": ["Ingress", "Egress"],
            # Ingress listed with no rules: nothing may connect to a runner.
            "ingress": [dict(rule) for rule in ingress],
            "egress": egress,
        },
    }
