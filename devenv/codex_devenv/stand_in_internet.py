"""A stand-in "internet" host for the test node: public-looking addresses that
never leave this machine.

`StandInInternet().start()` creates a network namespace (NETNS) joined to the
host by a veth pair: the host's end has HOST_IP, the namespace's end
SERVER_IP, both in SUBNET, four addresses of 198.51.100.0/24 (TEST-NET-2, a
documentation range). The claim is kept that small, and checked before it is
made (`address_conflicts`), because documentation ranges are not unused on
every machine: here the package registries answer on an address of
TEST-NET-3, and a stand-in that claimed that /24 cut `pip` off for as long as
a killed run left its veth behind. Inside it, busybox httpd answers on every port in `ports`.
Pods reach it through the bridge's address (the node's CNI config routes
SUBNET there, see node.TestNode), and the host forwards between the bridge
and the veth only: setup-host.sh's FORWARD guard still drops anything else
that comes from the bridge, and the NetworkPolicy engine's mangle guard lets
exactly this pair of interfaces through (network_policy.guard_rules), so a
NetworkPolicy still decides whether a pod may reach it.

It is what "the public internet" means to a runner's NetworkPolicy: not a
private, loopback, link-local or metadata range. Nothing here sends a packet
to an address outside this machine: with the namespace gone, the host's
route to SUBNET is gone too and the guard drops what pods send there.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from .assets import NODE_ENV, read_env_file

NETNS = "codex-inet"
HOST_IF, PEER_IF = "cxinet0", "cxinet1"
SUBNET = "198.51.100.0/30"
HOST_IP = "198.51.100.1"
SERVER_IP = "198.51.100.2"
PORTS = (80, 443)
LEFTOVERS_SCRIPT = Path(__file__).resolve().parents[2] / "hack" / "node" / "remove-leftovers.sh"
# The pid of the process whose stand-in is up: remove-leftovers.sh (`make deps`,
# e.g. `make dev` run by a test) leaves a live one alone.
OWNER_FILE = Path("/run/codex-inet.owner")


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=30, check=check)


def forward_exceptions(bridge: str, subnet: str) -> list[list[str]]:
    """The matches of the two exceptions to the bridge guard (setup-host.sh's
    FORWARD rules, the NetworkPolicy engine's mangle chain): pods to the
    stand-in host, and its answers back (established connections only)."""
    return [
        ["-i", bridge, "-o", HOST_IF, "-s", subnet, "-d", SUBNET],
        [
            "-i",
            HOST_IF,
            "-o",
            bridge,
            "-s",
            SUBNET,
            "-d",
            subnet,
            "-m",
            "conntrack",
            "--ctstate",
            "ESTABLISHED,RELATED",
        ],
    ]


def _forward_rules(bridge: str, subnet: str) -> list[list[str]]:
    return [[*match, "-j", "ACCEPT"] for match in forward_exceptions(bridge, subnet)]


def registry_addresses() -> dict[str, set[str]]:
    """The addresses this machine's package clients reach their registries at
    (pip's index, npm's registry, the Go proxy, apt's sources), by host name,
    as the resolver answers now. Read from the clients' own configuration, so
    nothing here names a registry."""
    urls: list[str] = []
    try:
        from pip._internal.models.index import PyPI

        urls += [PyPI.simple_url, PyPI.file_storage_domain]
    except ImportError:  # pragma: no cover - pip is in every venv
        pass
    urls += os.environ.get("PIP_INDEX_URL", "").split()
    for cmd in (("npm", "config", "get", "registry"), ("go", "env", "GOPROXY")):
        if shutil.which(cmd[0]):
            out = _run(*cmd, check=False).stdout
            urls += re.split(r"[,|\s]+", out.strip())
    for source in [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*")]:
        if source.is_file():
            urls += re.findall(r"https?://[^\s]+", source.read_text(errors="replace"))
    found: dict[str, set[str]] = {}
    for url in urls:
        host = urlsplit(url if "//" in url else f"//{url}").hostname
        if not host or host in found:
            continue
        try:
            found[host] = {str(info[4][0]) for info in socket.getaddrinfo(host, None, socket.AF_INET)}
        except OSError:
            found[host] = set()
    return found


def address_conflicts(subnet: str, taken: dict[str, set[str]], routes: list[str]) -> list[str]:
    """Why claiming `subnet` would take something this machine already uses:
    an address in `taken` (what/-> addresses) inside it, or a route (`ip -4
    route` lines) that overlaps it. Empty when it is free."""
    network = ipaddress.ip_network(subnet)
    reasons = [
        f"{what} resolves to {address}, inside {subnet}"
        for what, addresses in sorted(taken.items())
        for address in sorted(addresses)
        if ipaddress.ip_address(address) in network
    ]
    for line in routes:
        dst = line.split()[0] if line.strip() else ""
        if dst in ("", "default") or HOST_IF in line.split():
            continue
        if ipaddress.ip_network(dst, strict=False).overlaps(network):
            reasons.append(f"the route '{line.strip()}' overlaps {subnet}")
    return reasons


def check_free() -> None:
    resolvers = {
        "the resolver": set(re.findall(r"^nameserver\s+(\S+)", Path("/etc/resolv.conf").read_text(), re.M))
    }
    taken = {**registry_addresses(), **resolvers}
    taken = {k: {a for a in v if ":" not in a} for k, v in taken.items()}
    reasons = address_conflicts(SUBNET, taken, _run("ip", "-4", "route").stdout.splitlines())
    if reasons:
        raise RuntimeError(
            f"the stand-in internet would take addresses this machine uses ({'; '.join(reasons)}); "
            "move SUBNET/HOST_IP/SERVER_IP in codex_devenv/stand_in_internet.py to a free documentation range"
        )


def live_owner() -> int | None:
    """The pid of another running process whose stand-in is up, if any."""
    try:
        pid = int(OWNER_FILE.read_text())
    except (OSError, ValueError):
        return None
    if pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except OSError:
        return None
    return pid


def remove_leftovers(*, force: bool = False) -> None:
    """What a killed run left behind: the namespace and its processes, the host's
    veth end (hack/node/remove-leftovers.sh, which `make deps` runs first), the
    FORWARD exceptions. Refuses to take away another running process's stand-in
    unless `force`."""
    owner = None if force else live_owner()
    if owner is not None:
        raise RuntimeError(f"the stand-in internet ({NETNS}) is in use by the running process {owner}")
    env = read_env_file(NODE_ENV)
    _run("bash", str(LEFTOVERS_SCRIPT), "--force", check=False)
    for rule in _forward_rules(env["NODE_BRIDGE"], env["NODE_SUBNET"]):
        while _run("iptables", "-C", "FORWARD", *rule, check=False).returncode == 0:
            _run("iptables", "-D", "FORWARD", *rule, check=False)


@dataclass
class StandInInternet:
    work_dir: Path
    ports: tuple[int, ...] = PORTS
    servers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{SERVER_IP}:{self.ports[0]}/"

    def start(self) -> StandInInternet:
        env = read_env_file(NODE_ENV)
        bridge, subnet = env["NODE_BRIDGE"], env["NODE_SUBNET"]
        remove_leftovers()
        check_free()
        _run("ip", "netns", "add", NETNS)
        OWNER_FILE.write_text(f"{os.getpid()}\n")
        _run("ip", "link", "add", HOST_IF, "type", "veth", "peer", "name", PEER_IF)
        _run("ip", "link", "set", PEER_IF, "netns", NETNS)
        prefix = SUBNET.split("/")[1]
        _run("ip", "addr", "add", f"{HOST_IP}/{prefix}", "dev", HOST_IF)
        _run("ip", "link", "set", HOST_IF, "up")
        _run("ip", "-n", NETNS, "link", "set", "lo", "up")
        _run("ip", "-n", NETNS, "addr", "add", f"{SERVER_IP}/{prefix}", "dev", PEER_IF)
        _run("ip", "-n", NETNS, "link", "set", PEER_IF, "up")
        # Answers to pods go back through the host; nothing else is routed.
        _run("ip", "-n", NETNS, "route", "add", subnet, "via", HOST_IP)
        # IPv4 forwarding is decided by the incoming interface: the bridge has it
        # (setup-host.sh), the veth's host end gets it for the answers.
        _run("sysctl", "-qw", f"net.ipv4.conf.{HOST_IF}.forwarding=1")
        # Right before setup-host.sh's DROP guard, after any NetworkPolicy engine's jump.
        for rule in _forward_rules(bridge, subnet):
            position = self._guard_position(bridge)
            _run("iptables", "-I", "FORWARD", str(position), *rule)
        www = self.work_dir / "www"
        www.mkdir(parents=True, exist_ok=True)
        (www / "index.html").write_text("stand-in internet\n")
        busybox = shutil.which("busybox") or "busybox"
        for port in self.ports:
            self.servers.append(
                subprocess.Popen(
                    [
                        "ip",
                        "netns",
                        "exec",
                        NETNS,
                        busybox,
                        "httpd",
                        "-f",
                        "-p",
                        f"{SERVER_IP}:{port}",
                        "-h",
                        str(www),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        self._wait_listening()
        return self

    def stop(self) -> None:
        for proc in self.servers:
            proc.kill()
            proc.wait(timeout=10)
        self.servers.clear()
        remove_leftovers(force=True)

    def _guard_position(self, bridge: str) -> int:
        """1-based position of the first of setup-host.sh's DROP rules in FORWARD."""
        lines = _run("iptables", "-S", "FORWARD").stdout.splitlines()[1:]  # [0] is the policy
        for index, line in enumerate(lines, start=1):
            if line.endswith("-j DROP") and f" {bridge} " in f"{line} " and "-s " not in line:
                return index
        return len(lines) + 1

    def _wait_listening(self, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while True:
            out = _run("ip", "netns", "exec", NETNS, "ss", "-ltnH", check=False).stdout
            if all(f"{SERVER_IP}:{port} " in out for port in self.ports):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the stand-in internet's servers did not listen: {out}")
            time.sleep(0.1)
