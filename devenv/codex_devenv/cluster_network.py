"""Services and cluster DNS for the test node, as a real cluster has them.

`ClusterNetwork(control_plane, work_dir, node_name=..., ...).start()` gives the
node (TestNode.start does it):

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
  plugins a cluster resolver needs, in an image of that one binary), run as a
  cluster runs it: a Deployment in `kube-system` behind the `kube-dns`
  Service (CLUSTER_DNS_IP, the kubelet's clusterDNS), reading Services and
  EndpointSlices through its ServiceAccount and the `kubernetes` Service (the
  API server listens on the pod bridge, ControlPlane(address=...)). So a
  runner's NetworkPolicy rule "DNS to kube-system pods" means what it says.
  There is no upstream resolver: a name outside the cluster does not resolve
  (pods have no way off the machine).

kube-proxy is a host process, like the kubelet: one per host (it owns the
host's KUBE-* chains), so the harness runs one ClusterNetwork at a time (the
test node's lock) and `stop()` removes every rule it made (`kube-proxy
--cleanup`), as does the next `start()` after a killed harness.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import yaml

from .assets import NODE_ENV, REPO_ROOT, read_env_file
from .controlplane import ControlPlane
from .process import ManagedProcess, free_port, wait_for

LOCK_PATH = Path("/run/codex-node/cluster-network.lock")  # one kube-proxy per host
SERVICE_CIDR = "10.96.0.0/16"  # the control plane's --service-cluster-ip-range
CLUSTER_DNS_IP = "10.96.0.10"
CLUSTER_DOMAIN = "cluster.local"
DNS_NAMESPACE = "kube-system"
DNS_SERVICE = "kube-dns"
COREDNS_ROLE = "codex-test:coredns"
COREDNS_IMAGE = "codex.local/coredns:test"
COREDNS_PORT, COREDNS_HEALTH_PORT, COREDNS_READY_PORT = 53, 8080, 8181
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
        tolerations: Sequence[dict[str, str]] = (),
    ) -> None:
        self.control_plane = control_plane
        self.work_dir = work_dir
        self.bin_dir = bin_dir
        self.node_name = node_name
        self.pod_subnet = pod_subnet
        self.bridge_ip = bridge_ip
        self.tolerations = list(tolerations)
        self.processes: list[ManagedProcess] = []
        self.proxy_config: Path | None = None
        self._host_lock: TextIO | None = None

    # -- lifecycle ------------------------------------------------------------------
    def claim_host(self) -> str | None:
        """Take this host's one kube-proxy slot; None when taken, else why it is not.

        Two kube-proxies on one host rewrite the same KUBE-* chains for two
        control planes, and both map 10.96.0.1 and 10.96.0.10: each breaks the
        other's Services. So a second node on the host (`make dev` while the
        test suite's node runs) goes without Services and DNS, and says so."""
        LOCK_PATH.parent.mkdir(parents=True, exist_ok=True)
        handle = open(LOCK_PATH, "a+")  # noqa: SIM115 -- held until stop()
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            return f"another test node on this host runs kube-proxy ({holder})"
        handle.seek(0)
        handle.truncate()
        handle.write(f"node {self.node_name}, pid {os.getpid()}\n")
        handle.flush()
        self._host_lock = handle
        return None

    def start(self, timeout: float = 90.0) -> ClusterNetwork:
        if self._host_lock is None:
            refused = self.claim_host()
            if refused:
                raise RuntimeError(refused)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._cleanup_rules()  # of a kube-proxy that a killed harness left behind
        self._start_kube_proxy()
        self.control_plane.apply(self._dns_objects())
        wait_for(self._ready, timeout=timeout, what="kube-proxy and CoreDNS ready", interval=0.25)
        return self

    def stop(self) -> None:
        for proc in reversed(self.processes):
            proc.stop()
        self.processes.clear()
        # Leave the host's netfilter as it was: no Service rule outlives the node.
        if self._host_lock is not None:
            self._cleanup_rules()
            self._host_lock.close()
            self._host_lock = None

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
    def _dns_objects(self) -> list[dict[str, Any]]:
        """CoreDNS as a cluster runs it: a Deployment in kube-system behind the
        kube-dns Service, reading Services through its ServiceAccount."""
        labels = {"k8s-app": "kube-dns"}
        meta = {"namespace": DNS_NAMESPACE, "labels": labels}
        corefile = f""".:{COREDNS_PORT} {{
    errors
    health :{COREDNS_HEALTH_PORT}
    ready :{COREDNS_READY_PORT}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }}
    cache 5
}}
"""
        container = {
            "name": "coredns",
            "image": COREDNS_IMAGE,
            "imagePullPolicy": "Never",
            "args": ["-conf", "/etc/coredns/Corefile"],
            # Port 53 in the pod, as in a real cluster: a NetworkPolicy's port is
            # the pod's (after the Service's DNAT), and runner policies allow 53.
            "ports": [
                {"name": "dns", "containerPort": COREDNS_PORT, "protocol": "UDP"},
                {"name": "dns-tcp", "containerPort": COREDNS_PORT, "protocol": "TCP"},
            ],
            "readinessProbe": {"httpGet": {"path": "/ready", "port": COREDNS_READY_PORT}, "periodSeconds": 1},
            "resources": {"requests": {"cpu": "20m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}},
            "securityContext": {
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]},
                "readOnlyRootFilesystem": True,
                "runAsNonRoot": True,
                "runAsUser": 65532,
                "runAsGroup": 65532,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "volumeMounts": [{"name": "config", "mountPath": "/etc/coredns", "readOnly": True}],
        }
        return [
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "coredns", **meta}},
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": {"name": COREDNS_ROLE},
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
                "metadata": {"name": COREDNS_ROLE},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": COREDNS_ROLE,
                },
                "subjects": [{"kind": "ServiceAccount", "name": "coredns", "namespace": DNS_NAMESPACE}],
            },
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "coredns", **meta},
                "data": {"Corefile": corefile},
            },
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "coredns", **meta},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {
                            "serviceAccountName": "coredns",
                            # No upstream: names outside the cluster do not resolve.
                            "dnsPolicy": "Default",
                            "nodeSelector": {"kubernetes.io/hostname": self.node_name},
                            "tolerations": self.tolerations,
                            "terminationGracePeriodSeconds": 1,
                            # 53 without a capability: a namespaced, "safe" sysctl.
                            "securityContext": {
                                "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "53"}]
                            },
                            "containers": [container],
                            "volumes": [{"name": "config", "configMap": {"name": "coredns"}}],
                        },
                    },
                },
            },
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {
                    "name": DNS_SERVICE,
                    **meta,
                    "labels": {**labels, "kubernetes.io/name": "CoreDNS"},
                },
                "spec": {
                    "clusterIP": CLUSTER_DNS_IP,
                    "selector": labels,
                    "ports": [
                        {"name": "dns", "port": 53, "targetPort": COREDNS_PORT, "protocol": "UDP"},
                        {"name": "dns-tcp", "port": 53, "targetPort": COREDNS_PORT, "protocol": "TCP"},
                    ],
                },
            },
        ]

    # -- helpers --------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str]) -> None:
        proc = ManagedProcess(name, argv, self.work_dir / "logs" / f"{name}.log").start()
        self.processes.append(proc)

    def _ready(self) -> bool:
        self.check_alive()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.healthz_port}/healthz", timeout=2) as answer:
                if answer.status != 200:
                    return False
        except OSError:
            return False
        out = self.control_plane.kubectl(
            "get", "deployment", "coredns", "-n", DNS_NAMESPACE, "-o", "json", check=False
        )
        return out.returncode == 0 and json.loads(out.stdout).get("status", {}).get("availableReplicas") == 1
