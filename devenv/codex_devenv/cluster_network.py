"""Services and cluster DNS for the test node, as a real cluster has them.

`ClusterNetwork(node).start()` runs, on this host, next to the kubelet:

* **kube-proxy** (the control plane's Kubernetes version, built into the same
  cache by hack/build-control-plane.sh) in iptables mode, authenticated as
  `system:kube-proxy` (the bootstrap `system:node-proxier` binding gives it
  its rights). It programs the host's netfilter for every Service of the
  control plane, so a pod reaches a ClusterIP as in any cluster. Pods route
  the Service range (SERVICE_CIDR) via the bridge's own address (the CNI
  config of the node), nothing else: still no default route, no NAT off the
  machine. NodePorts open only on the bridge address, never on another
  interface of the host.
* **CoreDNS** (hack/build-coredns.sh: a build from its Go module with only the
  plugins a cluster resolver needs), serving `cluster.local` from the
  control plane's Services and EndpointSlices with its `kubernetes` plugin.
  It listens on the bridge's address; the `kube-dns` Service in
  `kube-system` (CLUSTER_DNS_IP, the kubelet's clusterDNS) points at it
  through an EndpointSlice of its own. There is no upstream resolver: a name
  outside the cluster does not resolve (pods have no way off the machine).

Both are host processes, like the kubelet: one kube-proxy per host (it owns
the host's KUBE-* chains), so the harness runs one ClusterNetwork at a time
(the test node's lock) and `stop()` removes every rule it made
(`kube-proxy --cleanup`).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from .assets import NODE_ENV, REPO_ROOT, read_env_file
from .controlplane import ControlPlane
from .process import ManagedProcess, free_port, wait_for

SERVICE_CIDR = "10.96.0.0/16"  # the control plane's --service-cluster-ip-range
CLUSTER_DNS_IP = "10.96.0.10"
CLUSTER_DOMAIN = "cluster.local"
DNS_NAMESPACE = "kube-system"
DNS_SERVICE = "kube-dns"
COREDNS_USER = "codex-test:coredns"
KUBE_PROXY_USER = "system:kube-proxy"
BUILD_COREDNS = REPO_ROOT / "hack" / "build-coredns.sh"


def api_server_address() -> str:
    """Where the API server should listen: on the test node's pod bridge when this
    host has one (pods reach it as in a real cluster), else on 127.0.0.1."""
    env = read_env_file(NODE_ENV)
    bridge, address = env["NODE_BRIDGE"], env["NODE_BRIDGE_ADDR"]
    try:
        shown = subprocess.run(
            ["ip", "-4", "-o", "addr", "show", "dev", bridge], capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "127.0.0.1"
    return address.split("/")[0] if f"inet {address} " in shown else "127.0.0.1"


def coredns_path() -> Path:
    out = subprocess.run(
        ["bash", str(BUILD_COREDNS), "--print-path"], capture_output=True, text=True, check=True
    )
    return Path(out.stdout.strip().splitlines()[-1])


def problems(bin_dir: Path, bridge: str) -> list[str]:
    """Why this host cannot run the cluster network (empty: it can)."""
    found = []
    forwarding = Path("/proc/sys/net/ipv4/conf", bridge, "forwarding")
    if not forwarding.is_file() or forwarding.read_text().strip() != "1":
        found.append(
            f"forwarding off on {bridge} (a Service between two pods needs it; hack/node/setup-host.sh)"
        )
    if not (bin_dir / "kube-proxy").is_file():
        found.append(f"kube-proxy missing in {bin_dir} (make node-host)")
    if not coredns_path().is_file():
        found.append("CoreDNS not built (make node-host: hack/build-coredns.sh)")
    return found


class ClusterNetwork:
    """kube-proxy + CoreDNS for one node (by name) and its control plane."""

    def __init__(
        self,
        control_plane: ControlPlane,
        work_dir: Path,
        *,
        bin_dir: Path,
        node_name: str,
        pod_subnet: str,
        bridge_ip: str,
    ) -> None:
        self.control_plane = control_plane
        self.work_dir = work_dir
        self.bin_dir = bin_dir
        self.node_name = node_name
        self.pod_subnet = pod_subnet
        self.bridge_ip = bridge_ip
        self.processes: list[ManagedProcess] = []
        self.proxy_config: Path | None = None

    # -- lifecycle ------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> ClusterNetwork:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._cleanup_rules()  # of a kube-proxy that a killed harness left behind
        self._apply(self._dns_objects())
        self._start_coredns()
        self._start_kube_proxy()
        wait_for(self._ready, timeout=timeout, what="kube-proxy and CoreDNS ready", interval=0.25)
        return self

    def stop(self) -> None:
        for proc in reversed(self.processes):
            proc.stop()
        self.processes.clear()
        # Leave the host's netfilter as it was: no Service rule outlives the node.
        self._cleanup_rules()

    def _cleanup_rules(self) -> None:
        subprocess.run([str(self.bin_dir / "kube-proxy"), "--cleanup"], capture_output=True, timeout=60)

    def check_alive(self) -> None:
        for proc in self.processes:
            proc.check_alive()

    # -- kube-proxy -----------------------------------------------------------------
    def _start_kube_proxy(self) -> None:
        kubeconfig = self.control_plane.component_kubeconfig(
            self.work_dir, "kube-proxy", user=KUBE_PROXY_USER
        )
        self.healthz_port, self.metrics_port = free_port(), free_port()
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(kubeconfig)},
            "hostnameOverride": self.node_name,
            "mode": "iptables",
            "clusterCIDR": self.pod_subnet,
            "healthzBindAddress": f"127.0.0.1:{self.healthz_port}",
            "metricsBindAddress": f"127.0.0.1:{self.metrics_port}",
            # NodePorts only on the pod bridge, never on an interface that leaves the machine.
            "nodePortAddresses": [f"{self.bridge_ip}/32"],
            # The host is shared: leave its conntrack sysctls alone.
            "conntrack": {"maxPerCore": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
            "iptables": {"masqueradeAll": False, "syncPeriod": "30s", "minSyncPeriod": "0s"},
        }
        self.proxy_config = self.work_dir / "kube-proxy.yaml"
        self.proxy_config.write_text(yaml.safe_dump(config))
        self._spawn(
            "kube-proxy", [str(self.bin_dir / "kube-proxy"), f"--config={self.proxy_config}", "--v=2"]
        )

    # -- CoreDNS --------------------------------------------------------------------
    def _start_coredns(self) -> None:
        kubeconfig = self.control_plane.component_kubeconfig(self.work_dir, "coredns", user=COREDNS_USER)
        self.dns_health_port, self.dns_ready_port = free_port(), free_port()
        corefile = self.work_dir / "Corefile"
        corefile.write_text(
            f""".:53 {{
    bind {self.bridge_ip}
    errors
    health 127.0.0.1:{self.dns_health_port}
    ready 127.0.0.1:{self.dns_ready_port}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }}
    cache 5
}}
"""
        )
        self._spawn("coredns", [str(coredns_path()), "-conf", str(corefile)])

    def _dns_objects(self) -> list[dict[str, Any]]:
        """CoreDNS's read rights, and the kube-dns Service pointing at it (on the bridge address)."""
        ports = [
            {"name": "dns", "port": 53, "protocol": "UDP"},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
        ]
        return [
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": {"name": COREDNS_USER},
                "rules": [
                    {
                        "apiGroups": [""],
                        "resources": ["endpoints", "services", "pods", "namespaces"],
                        "verbs": ["list", "watch"],
                    },
                    {
                        "apiGroups": ["discovery.k8s.io"],
                        "resources": ["endpointslices"],
                        "verbs": ["list", "watch"],
                    },
                ],
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": COREDNS_USER},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": COREDNS_USER,
                },
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": COREDNS_USER}],
            },
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {
                    "name": DNS_SERVICE,
                    "namespace": DNS_NAMESPACE,
                    "labels": {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"},
                },
                # No selector: CoreDNS is a host process, its endpoint is written below.
                "spec": {"clusterIP": CLUSTER_DNS_IP, "ports": ports},
            },
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": f"{DNS_SERVICE}-host",
                    "namespace": DNS_NAMESPACE,
                    "labels": {
                        "kubernetes.io/service-name": DNS_SERVICE,
                        "endpointslice.kubernetes.io/managed-by": "codex-devenv",
                    },
                },
                "addressType": "IPv4",
                "endpoints": [{"addresses": [self.bridge_ip], "conditions": {"ready": True}}],
                "ports": ports,
            },
        ]

    # -- helpers --------------------------------------------------------------------
    def _apply(self, docs: list[dict[str, Any]]) -> None:
        self.control_plane.kubectl(
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=codex-devenv",
            "-f",
            "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}),
        )

    def _spawn(self, name: str, argv: list[str]) -> None:
        proc = ManagedProcess(name, argv, self.work_dir / "logs" / f"{name}.log").start()
        self.processes.append(proc)

    def _ready(self) -> bool:
        import urllib.request

        self.check_alive()
        for url in (
            f"http://127.0.0.1:{self.healthz_port}/healthz",
            f"http://127.0.0.1:{self.dns_ready_port}/ready",
        ):
            try:
                with urllib.request.urlopen(url, timeout=2) as answer:
                    if answer.status != 200:
                        return False
            except OSError:
                return False
        return True
