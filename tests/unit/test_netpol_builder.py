"""The runner egress NetworkPolicy (codex_operator.netpol_builder)."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import pytest

from codex_api import names
from codex_api.config import ModelEndpointConfig
from codex_operator.netpol_builder import (
    BLOCKED_EGRESS_RANGES,
    blocked_within,
    build_network_policy,
)

UID = "0b7e4a1c-1111-4a2b-9c3d-5e6f7a8b9c0d"

V4_BLOCKED = [r for r in BLOCKED_EGRESS_RANGES if ":" not in r]
V6_BLOCKED = [r for r in BLOCKED_EGRESS_RANGES if ":" in r]

DNS_RULE = {
    "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}],
    "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
}
PUBLIC_PEERS = [
    {"ipBlock": {"cidr": "0.0.0.0/0", "except": V4_BLOCKED}},
    {"ipBlock": {"cidr": "::/0", "except": V6_BLOCKED}},
]


def build(sandbox: str = "read-only", endpoint: ModelEndpointConfig | None = None) -> dict[str, Any]:
    return build_network_policy(
        session_name="fix-bug",
        namespace="codex-sessions",
        session_uid=UID,
        conversation="conv-1",
        sandbox=sandbox,
        endpoint=endpoint or ModelEndpointConfig(),
    )


def ip_blocks(policy: dict[str, Any]) -> list[dict[str, Any]]:
    return [peer["ipBlock"] for rule in policy["spec"]["egress"] for peer in rule["to"] if "ipBlock" in peer]


def test_blocked_ranges_cover_what_must_never_be_reached() -> None:
    nets = [ipaddress.ip_network(r) for r in BLOCKED_EGRESS_RANGES]
    must_block = [
        "10.1.2.3",
        "172.20.0.1",
        "192.168.1.1",
        "127.0.0.1",
        "169.254.169.254",
        "169.254.1.1",
        "100.64.0.1",
        "100.100.100.200",
        "192.0.0.192",
        "0.0.0.0",
        "::1",
        "fd00::1",
        "fd00:ec2::254",
        "fe80::1",
    ]
    for address in must_block:
        ip = ipaddress.ip_address(address)
        assert any(ip.version == n.version and ip in n for n in nets), address
    for public in ("8.8.8.8", "104.18.6.192", "2606:4700::6810:1", "64:ff9b::808:808"):
        ip = ipaddress.ip_address(public)
        assert not any(ip.version == n.version and ip in n for n in nets), public
    # Canonical spelling: the API server rejects host bits and odd forms.
    assert all(str(ipaddress.ip_network(r)) == r for r in BLOCKED_EGRESS_RANGES)
    assert "169.254.169.254/32" in BLOCKED_EGRESS_RANGES
    # The API server parses an IPv4-mapped IPv6 range as IPv4 and rejects it under ::/0.
    assert all(n.version == 4 or n.network_address.ipv4_mapped is None for n in nets)


def test_blocked_within_keeps_only_strict_subranges() -> None:
    assert blocked_within("0.0.0.0/0") == V4_BLOCKED
    assert blocked_within("::/0") == V6_BLOCKED
    assert blocked_within("169.254.0.0/16") == ["169.254.169.254/32"]
    assert blocked_within("fc00::/7") == ["fd00:ec2::254/128"]
    assert blocked_within("10.0.0.0/8") == []
    assert blocked_within("10.1.0.0/16") == []
    assert blocked_within("203.0.113.0/24") == []


def test_metadata_and_selector() -> None:
    policy = build()
    assert policy["apiVersion"] == "networking.k8s.io/v1"
    assert policy["kind"] == "NetworkPolicy"
    assert policy["metadata"] == {
        "name": "fix-bug-egress",
        "namespace": "codex-sessions",
        "labels": names.common_labels("fix-bug", "conv-1"),
        "ownerReferences": [names.owner_reference("CodexSession", "fix-bug", UID)],
    }
    assert policy["metadata"]["name"] == names.network_policy("fix-bug")
    assert policy["spec"]["podSelector"] == {"matchLabels": {names.LABEL_POLICY: "fix-bug"}}
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert policy["spec"]["ingress"] == []
    assert build() == build()
    assert json.loads(json.dumps(policy)) == policy


@pytest.mark.parametrize("sandbox", ["read-only", "isolated"])
def test_internet_endpoint_for_confined_sandboxes(sandbox: str) -> None:
    assert build(sandbox)["spec"]["egress"] == [
        DNS_RULE,
        {"to": PUBLIC_PEERS, "ports": [{"protocol": "TCP", "port": 443}]},
    ]


def test_full_access_adds_public_egress_on_all_ports() -> None:
    egress = build("full-access")["spec"]["egress"]
    assert egress == [
        DNS_RULE,
        {"to": PUBLIC_PEERS, "ports": [{"protocol": "TCP", "port": 443}]},
        {"to": PUBLIC_PEERS},
    ]


def test_read_only_and_isolated_get_the_same_egress() -> None:
    endpoint = ModelEndpointConfig(egress_cidrs=["203.0.113.0/24"])
    assert build("read-only", endpoint)["spec"] == build("isolated", endpoint)["spec"]


def test_endpoint_by_cidr() -> None:
    endpoint = ModelEndpointConfig(egress_cidrs=["203.0.113.0/24", "2001:db8::/32"], egress_ports=[443, 8443])
    ports = [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 8443}]
    assert build("isolated", endpoint)["spec"]["egress"] == [
        DNS_RULE,
        {
            "to": [{"ipBlock": {"cidr": "203.0.113.0/24"}}, {"ipBlock": {"cidr": "2001:db8::/32"}}],
            "ports": ports,
        },
    ]
    # With explicit ranges there is no implicit public rule...
    assert not any(b["cidr"] in ("0.0.0.0/0", "::/0") for b in ip_blocks(build("isolated", endpoint)))
    # ...until full-access adds it.
    assert build("full-access", endpoint)["spec"]["egress"][-1] == {"to": PUBLIC_PEERS}


def test_configured_wide_range_still_excludes_blocked_subranges() -> None:
    endpoint = ModelEndpointConfig(egress_cidrs=["0.0.0.0/0", "169.254.0.0/16", "10.0.0.0/8"])
    blocks = {b["cidr"]: b for b in ip_blocks(build("read-only", endpoint))}
    assert blocks["0.0.0.0/0"]["except"] == V4_BLOCKED
    assert blocks["169.254.0.0/16"]["except"] == ["169.254.169.254/32"]
    # A private range the admin chose (an on-premises endpoint) is honoured as is.
    assert "except" not in blocks["10.0.0.0/8"]


def test_endpoint_in_cluster() -> None:
    endpoint = ModelEndpointConfig(
        in_cluster_namespace_labels={"kubernetes.io/metadata.name": "models"},
        in_cluster_pod_labels={"app": "fake-model"},
        egress_ports=[8080],
    )
    assert build("read-only", endpoint)["spec"]["egress"] == [
        DNS_RULE,
        {
            "to": [
                {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "models"}},
                    "podSelector": {"matchLabels": {"app": "fake-model"}},
                }
            ],
            "ports": [{"protocol": "TCP", "port": 8080}],
        },
    ]
    assert ip_blocks(build("read-only", endpoint)) == []


def test_endpoint_in_cluster_by_namespace_only_or_pods_only() -> None:
    by_ns = ModelEndpointConfig(in_cluster_namespace_labels={"team": "ml"})
    assert build("read-only", by_ns)["spec"]["egress"][1]["to"] == [
        {"namespaceSelector": {"matchLabels": {"team": "ml"}}}
    ]
    # Pod labels alone select pods of the sessions namespace itself.
    by_pod = ModelEndpointConfig(in_cluster_pod_labels={"app": "proxy"})
    assert build("read-only", by_pod)["spec"]["egress"][1]["to"] == [
        {"podSelector": {"matchLabels": {"app": "proxy"}}}
    ]


def test_endpoint_by_cidr_and_in_cluster() -> None:
    endpoint = ModelEndpointConfig(egress_cidrs=["198.51.100.7/32"], in_cluster_pod_labels={"app": "proxy"})
    egress = build("isolated", endpoint)["spec"]["egress"]
    assert [rule["to"] for rule in egress[1:]] == [
        [{"ipBlock": {"cidr": "198.51.100.7/32"}}],
        [{"podSelector": {"matchLabels": {"app": "proxy"}}}],
    ]


@pytest.mark.parametrize("sandbox", ["read-only", "isolated", "full-access"])
@pytest.mark.parametrize(
    "endpoint",
    [
        ModelEndpointConfig(),
        ModelEndpointConfig(egress_cidrs=["203.0.113.0/24"]),
        ModelEndpointConfig(in_cluster_namespace_labels={"a": "b"}),
    ],
    ids=["internet", "cidr", "in-cluster"],
)
def test_every_public_ip_block_excludes_every_blocked_range(
    sandbox: str, endpoint: ModelEndpointConfig
) -> None:
    policy = build(sandbox, endpoint)
    for block in ip_blocks(policy):
        if block["cidr"] == "0.0.0.0/0":
            assert block["except"] == V4_BLOCKED
        elif block["cidr"] == "::/0":
            assert block["except"] == V6_BLOCKED
        else:
            assert block.get("except", []) == blocked_within(block["cidr"])
    # Only DNS and the endpoint for confined sandboxes; nothing portless.
    rules = policy["spec"]["egress"]
    portless = [r for r in rules if "ports" not in r]
    assert portless == ([{"to": PUBLIC_PEERS}] if sandbox == "full-access" else [])
    assert rules[0] == DNS_RULE
    assert policy["spec"]["ingress"] == []


def test_unknown_sandbox_is_refused() -> None:
    with pytest.raises(ValueError, match="sandbox must be one of read-only, isolated, full-access"):
        build("danger-full-access")
