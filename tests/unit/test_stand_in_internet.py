"""codex_devenv.stand_in_internet.address_conflicts: the stand-in internet
refuses to claim an address range this machine already uses."""

from __future__ import annotations

import ipaddress

from codex_devenv.stand_in_internet import HOST_IP, SERVER_IP, SUBNET, address_conflicts

ROUTES = [
    "default via 192.0.2.1 dev eth0",
    "10.244.77.0/24 dev cxbr0 proto kernel scope link src 10.244.77.1",
    "192.0.2.0/24 dev eth0 proto kernel scope link src 192.0.2.2",
]


def test_free_range_has_no_conflicts() -> None:
    assert (
        address_conflicts(SUBNET, {"registry": {"203.0.113.80"}, "the resolver": {"10.255.255.53"}}, ROUTES)
        == []
    )


def test_a_registry_inside_the_range_is_a_conflict() -> None:
    # What happened: the registries answer on 203.0.113.80 and the stand-in took 203.0.113.0/24.
    reasons = address_conflicts("203.0.113.0/24", {"registry": {"203.0.113.80"}}, ROUTES)
    assert reasons == ["registry resolves to 203.0.113.80, inside 203.0.113.0/24"]


def test_an_overlapping_route_is_a_conflict_but_default_and_its_own_veth_are_not() -> None:
    routes = [*ROUTES, "198.51.100.0/24 via 192.0.2.9 dev eth0", f"{SUBNET} dev cxinet0 proto kernel"]
    assert address_conflicts(SUBNET, {}, routes) == [
        f"the route '198.51.100.0/24 via 192.0.2.9 dev eth0' overlaps {SUBNET}"
    ]


def test_the_claim_is_small_and_holds_both_ends() -> None:
    network = ipaddress.ip_network(SUBNET)
    assert network.num_addresses <= 4
    assert ipaddress.ip_address(HOST_IP) in network and ipaddress.ip_address(SERVER_IP) in network
    assert network.subnet_of(ipaddress.ip_network("198.51.100.0/24"))  # TEST-NET-2
