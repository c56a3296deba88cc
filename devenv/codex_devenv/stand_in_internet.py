"""A stand-in "internet" host for the test node: public-looking addresses that
never leave this machine.

`StandInInternet().start()` creates a network namespace (NETNS) joined to the
host by a veth pair: the host's end has HOST_IP, the namespace's end
SERVER_IP, both in 203.0.113.0/24 (TEST-NET-3, a documentation range that is
routed nowhere). Inside it, busybox httpd answers on every port in `ports`.
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

import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from .assets import NODE_ENV, read_env_file

NETNS = "codex-inet"
HOST_IF, PEER_IF = "cxinet0", "cxinet1"
SUBNET = "203.0.113.0/24"
HOST_IP = "203.0.113.1"
SERVER_IP = "203.0.113.20"
PORTS = (80, 443)


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


def remove_leftovers() -> None:
    """What a killed run left behind: the namespace (its veth end goes with it),
    the host's veth end, the FORWARD exceptions."""
    env = read_env_file(NODE_ENV)
    for pid in _run("ip", "netns", "pids", NETNS, check=False).stdout.split():
        _run("kill", "-9", pid, check=False)
    _run("ip", "netns", "delete", NETNS, check=False)
    _run("ip", "link", "delete", HOST_IF, check=False)
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
        _run("ip", "netns", "add", NETNS)
        _run("ip", "link", "add", HOST_IF, "type", "veth", "peer", "name", PEER_IF)
        _run("ip", "link", "set", PEER_IF, "netns", NETNS)
        _run("ip", "addr", "add", f"{HOST_IP}/24", "dev", HOST_IF)
        _run("ip", "link", "set", HOST_IF, "up")
        _run("ip", "-n", NETNS, "link", "set", "lo", "up")
        _run("ip", "-n", NETNS, "addr", "add", f"{SERVER_IP}/24", "dev", PEER_IF)
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
        remove_leftovers()

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
