"""NetworkPolicy enforcement for the test node.

`NetworkPolicyEngine(control_plane, work_dir, node_name=...).start()` runs,
on this host next to the kubelet, **kube-router's network-policy controller
only** (hack/build-netpol.sh; `--run-firewall --run-router=false
--run-service-proxy=false --run-loadbalancer=false`). It watches Pods,
Namespaces and NetworkPolicies and programs the host's netfilter with
iptables (the host's nf_tables variant, through the xt compat layer) and
ipset: one KUBE-POD-FW-* chain per pod on this node that a policy selects,
one KUBE-NWPLCY-* chain per policy, KUBE-SRC-*/KUBE-DST-* ipsets for the
peers, jumped to from KUBE-ROUTER-{INPUT,FORWARD,OUTPUT} at the top of the
filter table's built-in chains. Pods on the bridge are switched, not routed:
br_netfilter (bridge-nf-call-iptables=1, hack/node/setup-host.sh) sends
their frames through FORWARD, where kube-router's `physdev` rules catch them.

Why kube-router and not kube-network-policies (what kind uses): the latter
sends the first packet of each connection to userspace with the nftables
`queue` expression, and this kernel has CONFIG_NFT_QUEUE unset (the xt
NFQUEUE target through nft_compat works, but only in a patched build; docs/
testing.md, "The node", open problems).

Like kube-proxy and CoreDNS (cluster_network.py) it is a host process,
authenticated with a client certificate of the harness CA as
`codex-test:kube-router`, with a ClusterRole of exactly what its informers
read. It listens on nothing: health and metrics servers are off (kube-router
binds them to every interface).

Host state, and how none of it outlives the engine:

* kube-router never removes its rules when it exits, and v2.1.0's own
  `--cleanup-config` does nothing for the firewall (its iptables and ipset
  handlers are nil during cleanup; fixed upstream after v2.1.0). So
  `remove_host_state()` does it here, by name: every rule in another chain
  that jumps to a KUBE-ROUTER-*, KUBE-POD-FW-* or KUBE-NWPLCY-* chain, those
  chains, our guard chain, and every KUBE-SRC-*/KUBE-DST-*/TMP-* ipset. It
  runs before `start()` (a killed harness) and after `stop()`.
* kube-router ends KUBE-ROUTER-FORWARD with an ACCEPT for traffic that
  passed a policy, and puts its jump first in FORWARD: that ACCEPT comes
  before the setup script's two DROP rules that keep pod traffic on the
  bridge. The engine therefore repeats those two rules in the *mangle*
  table's FORWARD (traversed before filter's, never touched by kube-router
  or kube-proxy) in a chain of its own, CODEX-NETPOL-GUARD.
* kube-router rewrites the whole filter table (`iptables-save` then
  `iptables-restore -T filter`) on each sync. kube-proxy writes with
  `--noflush`: a kube-proxy change landing between the two is undone until
  kube-proxy's next sync (30 s). One node per host, as for kube-proxy.
"""

from __future__ import annotations

import calendar
import os
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from .assets import NODE_ENV, REPO_ROOT, read_env_file
from .cluster_network import SERVICE_CIDR
from .controlplane import ControlPlane
from .process import ManagedProcess, wait_for
from .stand_in_internet import forward_exceptions

ENGINE_USER = "codex-test:kube-router"
BUILD_NETPOL = REPO_ROOT / "hack" / "build-netpol.sh"
GUARD_CHAIN = "CODEX-NETPOL-GUARD"

# Names kube-router v2.1.0 gives what it creates (pkg/controllers/netpol).
_OUR_CHAIN = re.compile(r"^(KUBE-ROUTER-(INPUT|FORWARD|OUTPUT)|KUBE-POD-FW-\S+|KUBE-NWPLCY-\S+)$")
# TMP-* sets exist only during kube-router's ipset restore (a killed one may leave them).
_OUR_IPSET = re.compile(r"^(inet6:)?(KUBE-SRC-|KUBE-DST-|TMP-)")
_SYNC_DONE = "sync iptables took"
# klog header: Lmmdd hh:mm:ss.uuuuuu (UTC here) ... "sync iptables took <duration>"
_KLOG_SYNC = re.compile(r"^[IWEF](\d\d)(\d\d) (\d\d:\d\d:\d\d\.\d+) .*sync iptables took", re.M)


def engine_path() -> Path:
    out = subprocess.run(
        ["bash", str(BUILD_NETPOL), "--print-path"], capture_output=True, text=True, check=True
    )
    return Path(out.stdout.strip().splitlines()[-1])


def ensure_engine() -> Path:
    """Build kube-router if it is not in the cache yet (a cache hit takes milliseconds)."""
    out = subprocess.run(
        ["bash", str(BUILD_NETPOL)], capture_output=True, text=True, check=True, timeout=1800
    )
    return Path(out.stdout.strip().splitlines()[-1])


def problems() -> list[str]:
    """Why this host cannot run the engine (empty: it can)."""
    found = []
    for tool in ("iptables", "iptables-save", "iptables-restore", "ipset"):
        if shutil.which(tool) is None:
            found.append(f"{tool} missing (apt-get install iptables ipset)")
    if shutil.which("ipset") and subprocess.run(["ipset", "list", "-n"], capture_output=True).returncode != 0:
        found.append("ipset cannot talk to the kernel (CONFIG_IP_SET)")
    bridge_nf = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")
    if not bridge_nf.is_file() or bridge_nf.read_text().strip() != "1":
        found.append("bridge-nf-call-iptables is not 1: bridged pod traffic would bypass iptables")
    if not engine_path().is_file():
        found.append("kube-router not built (hack/build-netpol.sh)")
    return found


# -- host state ----------------------------------------------------------------------------


def _iptables_save(table: str) -> str:
    return subprocess.run(
        ["iptables-save", "-t", table], capture_output=True, text=True, check=True, timeout=60
    ).stdout


def _restore(table: str, lines: list[str]) -> None:
    script = "\n".join([f"*{table}", *lines, "COMMIT", ""])
    subprocess.run(
        ["iptables-restore", "--noflush", "--wait"],
        input=script,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )


def _removal(saved: str, ours: re.Pattern[str]) -> list[str]:
    """iptables-restore lines that delete every chain matching `ours` and every
    rule elsewhere that jumps to one of them."""
    chains = [m.group(1) for m in re.finditer(r"^:(\S+) ", saved, re.M) if ours.match(m.group(1))]
    if not chains:
        return []
    lines = []
    for rule in saved.splitlines():
        if not rule.startswith("-A "):
            continue
        words = shlex.split(rule)
        chain = words[1]
        target = words[words.index("-j") + 1] if "-j" in words else None
        if not ours.match(chain) and target is not None and ours.match(target):
            lines.append("-D " + rule[3:])
    lines += [f"-F {chain}" for chain in chains]
    lines += [f"-X {chain}" for chain in chains]
    return lines


def host_state() -> dict[str, list[str]]:
    """What of ours is on the host now: chains in filter and mangle, ipsets."""
    filter_chains = re.findall(r"^:(\S+) ", _iptables_save("filter"), re.M)
    mangle_chains = re.findall(r"^:(\S+) ", _iptables_save("mangle"), re.M)
    sets = subprocess.run(["ipset", "list", "-n"], capture_output=True, text=True, check=True).stdout.split()
    return {
        "filter": [c for c in filter_chains if _OUR_CHAIN.match(c)],
        "mangle": [c for c in mangle_chains if c == GUARD_CHAIN],
        "ipsets": [s for s in sets if _OUR_IPSET.match(s)],
    }


def remove_host_state() -> dict[str, list[str]]:
    """Remove every rule, chain and ipset kube-router or the guard made; returns what was there."""
    before = host_state()
    lines = _removal(_iptables_save("filter"), _OUR_CHAIN)
    if lines:
        _restore("filter", lines)
    lines = _removal(_iptables_save("mangle"), re.compile(rf"^{GUARD_CHAIN}$"))
    if lines:
        _restore("mangle", lines)
    # Sets only after the rules that reference them are gone (the kernel refuses otherwise).
    for name in before["ipsets"]:
        subprocess.run(["ipset", "destroy", name], capture_output=True, timeout=30)
    left = host_state()
    if any(left.values()):
        raise RuntimeError(f"could not remove the NetworkPolicy engine's host state: {left}")
    return before


def _install_guard(bridge: str, subnet: str) -> None:
    """The setup script's two FORWARD DROP rules again, in mangle (before any filter
    ACCEPT), with the same exceptions for the stand-in internet (its veth only)."""
    exceptions = [
        f"-A {GUARD_CHAIN} {' '.join(match)} -m comment --comment codex-netpol -j RETURN"
        for match in forward_exceptions(bridge, subnet)
    ]
    _restore(
        "mangle",
        [
            f":{GUARD_CHAIN} - [0:0]",
            *exceptions,
            f"-A {GUARD_CHAIN} -i {bridge} ! -o {bridge} -m comment --comment codex-netpol -j DROP",
            f"-A {GUARD_CHAIN} ! -i {bridge} -o {bridge} -m comment --comment codex-netpol -j DROP",
            f"-I FORWARD 1 -j {GUARD_CHAIN}",
        ],
    )


# -- the engine ---------------------------------------------------------------------------


class NetworkPolicyEngine:
    """kube-router's firewall controller for one node (by name) of a control plane."""

    def __init__(
        self,
        control_plane: ControlPlane,
        work_dir: Path,
        *,
        node_name: str,
        bridge: str | None = None,
        service_cidr: str = SERVICE_CIDR,
        sync_period: str = "1m",
        verbosity: int = 2,
    ) -> None:
        self.control_plane = control_plane
        self.work_dir = work_dir
        self.node_name = node_name
        self.bridge = bridge or read_env_file(NODE_ENV)["NODE_BRIDGE"]
        self.service_cidr = service_cidr
        self.sync_period = sync_period
        self.verbosity = verbosity
        self.process: ManagedProcess | None = None
        self.removed_at_start: dict[str, list[str]] = {}
        self.started_in = 0.0

    @property
    def log_path(self) -> Path:
        return self.work_dir / "logs" / "kube-router.log"

    # -- lifecycle ----------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> NetworkPolicyEngine:
        t0 = time.monotonic()
        found = problems()
        if found:
            raise RuntimeError("host cannot run the NetworkPolicy engine: " + "; ".join(found))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        # Rules of an engine that a killed harness left behind.
        self.removed_at_start = remove_host_state()
        self.control_plane.apply(self._rbac_objects())
        _install_guard(self.bridge, read_env_file(NODE_ENV)["NODE_SUBNET"])
        kubeconfig = self.control_plane.component_kubeconfig(self.work_dir, "kube-router", user=ENGINE_USER)
        argv = [
            str(engine_path()),
            f"--kubeconfig={kubeconfig}",
            "--run-firewall=true",
            "--run-router=false",
            "--run-service-proxy=false",
            "--run-loadbalancer=false",
            f"--hostname-override={self.node_name}",
            f"--service-cluster-ip-range={self.service_cidr}",
            "--enable-ipv4=true",
            "--enable-ipv6=false",
            "--health-port=0",  # its server would listen on every interface
            "--metrics-port=0",
            f"--iptables-sync-period={self.sync_period}",
            f"--v={self.verbosity}",
        ]
        # NODE_NAME: kube-router looks the Node up by it first (then by the host's name).
        env = {**os.environ, "NODE_NAME": self.node_name}
        self.process = ManagedProcess("kube-router", argv, self.log_path, env=env).start()
        wait_for(self._synced, timeout=timeout, what="kube-router's first policy sync", interval=0.1)
        self.started_in = time.monotonic() - t0
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None
        # Leave the host's netfilter as it was: no pod firewall outlives the engine.
        remove_host_state()

    def check_alive(self) -> None:
        if self.process is not None:
            self.process.check_alive()

    def syncs(self) -> int:
        """How many full policy syncs kube-router has finished (from its log)."""
        try:
            return self.log_path.read_text(errors="replace").count(_SYNC_DONE)
        except FileNotFoundError:
            return 0

    def sync_times(self) -> list[float]:
        """When each finished full sync ended (epoch seconds, from klog's line headers)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return []
        year = time.gmtime().tm_year
        ends = []
        for m in _KLOG_SYNC.finditer(text):
            month, day, clock = m.group(1), m.group(2), m.group(3)
            stamp = time.strptime(f"{year}-{month}-{day} {clock.split('.')[0]}", "%Y-%m-%d %H:%M:%S")
            ends.append(calendar.timegm(stamp) + float("0." + clock.split(".")[1]))
        return ends

    def first_sync_after(self, epoch: float, timeout: float = 10.0) -> float | None:
        """Seconds from `epoch` to the end of the first full sync that ended after it
        (None if none did within `timeout`)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            later = [t for t in self.sync_times() if t >= epoch]
            if later:
                return later[0] - epoch
            time.sleep(0.05)
        return None

    # -- internals ----------------------------------------------------------------------
    def _synced(self) -> bool:
        self.check_alive()
        if self.syncs() < 1:
            return False
        saved = _iptables_save("filter")
        return (
            ":KUBE-ROUTER-FORWARD " in saved
            and '-A FORWARD -m comment --comment "kube-router netpol' in saved
        )

    def _rbac_objects(self) -> list[dict[str, Any]]:
        """What kube-router's informers read. It starts one informer factory for
        all its controllers, so with only the firewall running it still lists
        and watches Services, Endpoints, EndpointSlices and Nodes (its cache
        sync waits for them); it gets its own Node once. It writes nothing."""
        read = ["list", "watch"]
        return [
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": {"name": ENGINE_USER},
                "rules": [
                    {
                        "apiGroups": [""],
                        "resources": ["pods", "namespaces", "services", "endpoints"],
                        "verbs": read,
                    },
                    {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", *read]},
                    {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": read},
                    {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": read},
                ],
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": ENGINE_USER},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": ENGINE_USER,
                },
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": ENGINE_USER}],
            },
        ]
