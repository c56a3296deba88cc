"""A real node for the test control plane: kubelet + containerd + runc.

`TestNode(work_dir, bin_dir).start(control_plane)` starts a private
containerd (its own config, root, state and socket; Debian's containerd
service is not used) and the kubelet v1.34 built from the Go module proxy
into the control-plane cache. The kubelet registers a Node, runs the pods the
scheduler binds to it as runc containers with their securityContext
enforced, serves logs/exec on NODE_IP (hack/node/node.env), and reports pod
status and termination messages itself.

There is no registry: images are OCI archives imported with
`ctr -n k8s.io images import` (`TestNode.import_image`). Two are built here
from host files, no download: a pause image (a static C binary compiled with
gcc) that containerd uses as the sandbox image, and a busybox image (Debian's
static busybox) for test pods. Pods must use `imagePullPolicy: Never`.

Networking: CNI bridge on `cxbr0`, 10.244.77.0/24, no gateway, no default
route in pods, no NAT (see hack/node/setup-host.sh, which prepares the host
once). Pods route the Service range via the bridge's address, where the
ClusterNetwork (kube-proxy + CoreDNS, codex_devenv.cluster_network) gives them
Services and cluster DNS.

Credentials, all from the harness CA:
  * the kubelet's client certificate: CN=system:node:<name>, O=system:nodes
    (Node authorizer + the system:node rules);
  * the kubelet's serving certificate for NODE_IP and 127.0.0.1;
  * the kube-apiserver's client certificate to the kubelet
    (`kube-apiserver-kubelet-client`, bound to system:kubelet-api-admin), so
    `kubectl logs` works with the kubelet's Webhook authn/authz. The API
    server needs the flags of apiserver_kubelet_flags() for that;
    ControlPlane starts kube-apiserver with them.

By default the node registers with the taint TEST_NODE_TAINT, so only pods
that tolerate it land here and tests that play the node through the API
(FakeNode) on the same control plane are not disturbed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from hashlib import sha256
from io import BytesIO
from pathlib import Path
from typing import Any

import yaml

from .assets import BUILD_SCRIPT, NODE_ENV, REPO_ROOT, read_env_file
from .certs import CertBundle
from .cluster_network import (
    CLUSTER_DNS_IP,
    CLUSTER_DOMAIN,
    COREDNS_IMAGE,
    SERVICE_CIDR,
    ClusterNetwork,
    coredns_path,
)
from .cluster_network import problems as cluster_network_problems
from .controlplane import APISERVER_KUBELET_CLIENT, ControlPlane
from .network_policy import NetworkPolicyEngine
from .network_policy import problems as network_policy_problems
from .process import ManagedProcess, free_port, wait_for
from .stand_in_internet import SUBNET as INTERNET_SUBNET

SETUP_SCRIPT = REPO_ROOT / "hack" / "node" / "setup-host.sh"

PAUSE_IMAGE = "codex.local/pause:3.10"
BUSYBOX_IMAGE = "codex.local/busybox:1.35"
TEST_NODE_TAINT = {"key": "codex.dev/test-node", "value": "true", "effect": "NoSchedule"}
TEST_NODE_TOLERATION = {
    "key": "codex.dev/test-node",
    "operator": "Equal",
    "value": "true",
    "effect": "NoSchedule",
}

CNI_BIN_DIR = Path("/usr/lib/cni")
IPAM_DIR = Path("/run/codex-node/ipam")
CNI_NETWORK = "codex-pods"
NETNS_DIR = Path("/var/run/netns")
HOST_TOOLS = ("containerd", "containerd-shim-runc-v2", "runc", "ctr", "busybox", "gcc", "iptables", "ip")

_PAUSE_C = r"""
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
static void down(int s) { (void)s; _exit(0); }
static void reap(int s) { (void)s; while (waitpid(-1, NULL, WNOHANG) > 0) {} }
int main(void) {
  struct sigaction a = {0}, c = {0};
  a.sa_handler = down; sigaction(SIGINT, &a, NULL); sigaction(SIGTERM, &a, NULL);
  c.sa_handler = reap; c.sa_flags = SA_NOCLDSTOP; sigaction(SIGCHLD, &c, NULL);
  for (;;) pause();
}
"""


def node_env() -> dict[str, str]:
    return read_env_file(NODE_ENV)


def cache_root() -> Path:
    explicit = os.environ.get("CODEX_K8S_CACHE")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "codex-k8s-operator"


def _has_cap_sys_resource() -> bool:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) & (1 << 24))
    return False


def crictl_path() -> Path | None:
    path = cache_root() / "node" / f"crictl-{node_env()['CRICTL_VERSION']}" / "crictl"
    return path if path.is_file() else None


def host_problems(bin_dir: Path | None = None) -> list[str]:
    """Why this host cannot run the test node (empty list: it can)."""
    problems = []
    if os.geteuid() != 0:
        problems.append("not root (containerd, runc and the kubelet need root)")
    for tool in HOST_TOOLS:
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
            problems.append(f"{tool} not installed (run hack/node/setup-host.sh)")
    for plugin in ("bridge", "host-local", "loopback"):
        if not (CNI_BIN_DIR / plugin).exists():
            problems.append(f"CNI plugin {CNI_BIN_DIR / plugin} missing (containernetworking-plugins)")
    if "overlay" not in Path("/proc/filesystems").read_text():
        problems.append("no overlay filesystem")
    if not Path("/sys/fs/cgroup/cpu").is_dir() and not Path("/sys/fs/cgroup/cgroup.controllers").exists():
        problems.append("no usable cgroup hierarchy")
    env = node_env()
    for link in (env["NODE_BRIDGE"], env["NODE_HOST_IF"]):
        if not Path("/sys/class/net", link).exists():
            problems.append(f"network interface {link} missing (run hack/node/setup-host.sh)")
    if bin_dir is not None and not (bin_dir / "kubelet").is_file():
        problems.append(f"no kubelet in {bin_dir} (EXTRA_K8S_BINARIES=kubelet hack/build-control-plane.sh)")
    return problems


def ensure_kubelet(bin_dir: Path) -> Path:
    """Build the kubelet into the control-plane cache if it is missing (35 s with a warm Go cache)."""
    kubelet = bin_dir / "kubelet"
    if not kubelet.is_file():
        subprocess.run(
            ["bash", str(BUILD_SCRIPT)],
            check=True,
            stdout=subprocess.DEVNULL,
            env={**os.environ, "EXTRA_K8S_BINARIES": "kubelet"},
        )
    return kubelet


# -- certificates ----------------------------------------------------------------------


def issue_cert(
    certs: CertBundle, out_dir: Path, name: str, subject: str, sans: str | None, usage: str
) -> tuple[Path, Path]:
    """A CA-signed key pair with an arbitrary subject, reused if it exists."""
    crt, key = out_dir / f"{name}.crt", out_dir / f"{name}.key"
    if crt.exists() and key.exists():
        return crt, key
    return certs.issue(out_dir, name, sans, subject=subject, usage=usage)


# -- images ------------------------------------------------------------------------------


def _tar_add(
    tar: tarfile.TarFile,
    name: str,
    *,
    data: bytes | None = None,
    mode: int = 0o644,
    kind: bytes = tarfile.REGTYPE,
    link: str = "",
) -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = 0
    info.linkname = link
    if data is not None:
        info.size = len(data)
        tar.addfile(info, BytesIO(data))
    else:
        tar.addfile(info)


def _blob(tar: tarfile.TarFile, data: bytes) -> dict[str, Any]:
    digest = "sha256:" + sha256(data).hexdigest()
    _tar_add(tar, f"blobs/sha256/{digest[7:]}", data=data)
    return {"digest": digest, "size": len(data)}


def write_oci_archive(
    out: Path,
    image: str,
    files: dict[str, bytes | tuple[str, str] | None],
    config: dict[str, Any],
) -> Path:
    """An OCI image layout tarball with one uncompressed layer.

    files maps a path to its bytes (a file; executable if it starts with
    b'\\x7fELF' or b'#!'), ("symlink", target), or None (a directory).
    """
    layer_buf = BytesIO()
    with tarfile.open(fileobj=layer_buf, mode="w", format=tarfile.PAX_FORMAT) as layer:
        for path in sorted(files):
            value = files[path]
            if value is None:
                _tar_add(layer, path, kind=tarfile.DIRTYPE, mode=0o1777 if path == "tmp" else 0o755)
            elif isinstance(value, tuple):
                _tar_add(layer, path, kind=tarfile.SYMTYPE, link=value[1], mode=0o777)
            else:
                executable = value.startswith((b"\x7fELF", b"#!"))
                _tar_add(layer, path, data=value, mode=0o755 if executable else 0o644)
    layer_bytes = layer_buf.getvalue()
    diff_id = "sha256:" + sha256(layer_bytes).hexdigest()
    image_config = {
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "codex_devenv.node.write_oci_archive"}],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out, "w") as tar:
        layer_desc = {"mediaType": "application/vnd.oci.image.layer.v1.tar", **_blob(tar, layer_bytes)}
        config_desc = {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            **_blob(tar, json.dumps(image_config, sort_keys=True).encode()),
        }
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config_desc,
            "layers": [layer_desc],
        }
        manifest_desc = {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            **_blob(tar, json.dumps(manifest, sort_keys=True).encode()),
            "annotations": {
                "io.containerd.image.name": image,
                "org.opencontainers.image.ref.name": image.rsplit(":", 1)[1],
            },
            "platform": {"architecture": "amd64", "os": "linux"},
        }
        index = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [manifest_desc],
        }
        _tar_add(tar, "oci-layout", data=b'{"imageLayoutVersion":"1.0.0"}')
        _tar_add(tar, "index.json", data=json.dumps(index).encode())
    return out


def build_pause_archive(out_dir: Path) -> Path:
    """The sandbox image: a static pause binary (reaps zombies, exits on SIGTERM)."""
    with tempfile.TemporaryDirectory() as tmp:
        src, binary = Path(tmp) / "pause.c", Path(tmp) / "pause"
        src.write_text(_PAUSE_C)
        subprocess.run(
            ["gcc", "-static", "-Os", "-s", "-o", str(binary), str(src)], check=True, capture_output=True
        )
        data = binary.read_bytes()
    return write_oci_archive(
        out_dir / "pause.oci.tar",
        PAUSE_IMAGE,
        {"pause": data},
        {"Entrypoint": ["/pause"], "User": "65535:65535"},
    )


def build_coredns_archive(out_dir: Path) -> Path:
    """The cluster DNS image: the static CoreDNS binary of hack/build-coredns.sh, nothing else."""
    return write_oci_archive(
        out_dir / "coredns.oci.tar",
        COREDNS_IMAGE,
        {"coredns": coredns_path().read_bytes()},
        {"Entrypoint": ["/coredns"], "User": "65532:65532"},
    )


def build_busybox_archive(out_dir: Path) -> Path:
    """A tiny image from Debian's static busybox: /bin/busybox and a symlink per applet."""
    busybox = Path("/bin/busybox")
    applets = subprocess.run([str(busybox), "--list-full"], check=True, capture_output=True, text=True).stdout
    files: dict[str, bytes | tuple[str, str] | None] = {
        d: None
        for d in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "tmp", "proc", "sys", "dev", "home")
    }
    files["bin/busybox"] = busybox.read_bytes()
    for applet in applets.split():
        if applet != "bin/busybox":
            files[applet] = ("symlink", "/bin/busybox")
    files["etc/passwd"] = (
        b"root:x:0:0:root:/root:/bin/sh\nrunner:x:1000:1000:runner:/tmp:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
    )
    files["etc/group"] = b"root:x:0:\nrunner:x:1000:\nnogroup:x:65534:\n"
    return write_oci_archive(
        out_dir / "busybox.oci.tar",
        BUSYBOX_IMAGE,
        files,
        {"Cmd": ["/bin/sh"], "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]},
    )


# -- the node ----------------------------------------------------------------------------


@dataclass
class Timings:
    containerd_ready: float = 0.0
    images_imported: float = 0.0
    node_ready: float = 0.0


class TestNode:
    """One kubelet + containerd on this host, registered as Node `name`."""

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        work_dir: Path,
        bin_dir: Path,
        name: str = "codex-node-0",
        *,
        taints: Sequence[dict[str, str]] = (TEST_NODE_TAINT,),
        max_pods: int = 30,
        containerd_root: Path | None = None,
        cluster_network: bool = True,
        network_policy: bool = True,
    ) -> None:
        env = node_env()
        self.work_dir = work_dir
        self.bin_dir = bin_dir
        self.name = name
        self.taints = list(taints)
        self.max_pods = max_pods
        self.bridge = env["NODE_BRIDGE"]
        self.subnet = env["NODE_SUBNET"]
        self.host_if = env["NODE_HOST_IF"]
        self.node_ip = env["NODE_IP"]
        self.bridge_ip = env["NODE_BRIDGE_ADDR"].split("/")[0]
        # Services and cluster DNS (kube-proxy + CoreDNS, codex_devenv.cluster_network).
        self.with_cluster_network = cluster_network
        self.cluster_network: ClusterNetwork | None = None
        self.cluster_network_off: str | None = None  # why a requested one did not start
        # NetworkPolicy enforced (kube-router's firewall, codex_devenv.network_policy),
        # with the cluster network only (one per host, like kube-proxy).
        self.with_network_policy = network_policy
        self.network_policy: NetworkPolicyEngine | None = None
        # containerd's root (images, snapshots). Per node by default; pass a
        # persistent path to keep imported images across runs.
        self.containerd_root = containerd_root or work_dir / "containerd-root"
        # State (sockets, shim bundles) must be on a short path: unix socket paths are <= 107 bytes.
        self.state_dir = Path("/run/codex-node") / name
        self.socket = self.state_dir / "containerd.sock"
        self.kubelet_port = free_port()
        self.healthz_port = free_port()
        self.processes: list[ManagedProcess] = []
        self.control_plane: ControlPlane | None = None
        self.timings = Timings()
        self.restrict_oom_score_adj = not _has_cap_sys_resource()
        self.cgroup_name = f"codex-{name}"

    # -- paths --------------------------------------------------------------------------
    @property
    def logs_dir(self) -> Path:
        return self.work_dir / "logs"

    @property
    def kubelet_root(self) -> Path:
        return self.work_dir / "kubelet"

    @property
    def endpoint(self) -> str:
        return f"unix://{self.socket}"

    # -- lifecycle ------------------------------------------------------------------------
    def start(self, control_plane: ControlPlane, timeout: float = 120.0) -> TestNode:
        problems = host_problems(self.bin_dir)
        if problems:
            raise RuntimeError("host cannot run the test node: " + "; ".join(problems))
        if self.with_cluster_network:
            problems = cluster_network_problems(self.bin_dir, self.bridge)
            if self.with_network_policy:
                problems += network_policy_problems()
            if problems:
                raise RuntimeError("host cannot run the cluster network: " + "; ".join(problems))
        self.control_plane = control_plane
        if self.with_cluster_network:
            self.cluster_network = ClusterNetwork(
                control_plane,
                self.work_dir / "cluster-network",
                bin_dir=self.bin_dir,
                node_name=self.name,
                pod_subnet=self.subnet,
                bridge_ip=self.bridge_ip,
                tolerations=[TEST_NODE_TOLERATION],
            )
            self.cluster_network_off = self.cluster_network.claim_host()
            if self.cluster_network_off:  # decided before the kubelet's clusterDNS is written
                self.with_cluster_network, self.cluster_network = False, None
        t0 = time.monotonic()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._cleanup_stale_state()
        self._start_containerd()
        self.timings.containerd_ready = time.monotonic() - t0
        t1 = time.monotonic()
        self.import_builtin_images()
        self.timings.images_imported = time.monotonic() - t1
        self._grant_apiserver_access()
        self._start_kubelet()
        wait_for(self._node_ready, timeout=timeout, what=f"node {self.name} Ready", interval=0.25)
        if self.cluster_network is not None:
            self.cluster_network.start()
            if self.with_network_policy:
                self.network_policy = NetworkPolicyEngine(
                    control_plane, self.work_dir / "network-policy", node_name=self.name, bridge=self.bridge
                ).start()
        self.timings.node_ready = time.monotonic() - t0
        return self

    def stop(self) -> None:
        """Stop every pod sandbox (CNI teardown included), the kubelet and containerd."""
        if self.network_policy is not None:
            self.network_policy.stop()
            self.network_policy = None
        if self.cluster_network is not None:
            self.cluster_network.stop()
            self.cluster_network = None
        kubelet = next((p for p in self.processes if p.name == "kubelet"), None)
        if kubelet:
            kubelet.stop()
        self._remove_all_pods()
        for proc in reversed(self.processes):
            proc.stop()
        self.processes.clear()
        self._kill_shims()
        self._unmount_under(self.work_dir)
        self._unmount_under(self.state_dir)
        self._remove_cgroups()
        shutil.rmtree(self.state_dir, ignore_errors=True)

    def pids(self) -> dict[str, int | None]:
        return {p.name: p.pid for p in self.processes}

    def check_alive(self) -> None:
        for proc in self.processes:
            proc.check_alive()
        if self.cluster_network is not None:
            self.cluster_network.check_alive()
        if self.network_policy is not None:
            self.network_policy.check_alive()

    # -- images ---------------------------------------------------------------------------
    def ctr(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ctr", "--address", str(self.socket), "-n", "k8s.io", *args],
            check=True,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def import_image(self, archive: Path) -> float:
        """Import an OCI or docker archive (e.g. `podman save --format oci-archive`); returns seconds."""
        t0 = time.monotonic()
        self.ctr("images", "import", str(archive))
        return time.monotonic() - t0

    def import_builtin_images(self) -> None:
        images_dir = self.work_dir / "images"
        self.import_image(build_pause_archive(images_dir))
        self.import_image(build_busybox_archive(images_dir))
        if self.with_cluster_network:
            self.import_image(build_coredns_archive(images_dir))

    def images(self) -> list[str]:
        return self.ctr("images", "ls", "-q").stdout.split()

    # -- internals --------------------------------------------------------------------------
    def _start_containerd(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        cni_conf = self.work_dir / "cni"
        cni_conf.mkdir(parents=True, exist_ok=True)
        (cni_conf / "10-codex.conflist").write_text(json.dumps(self._cni_config(), indent=2))
        config = self.work_dir / "containerd.toml"
        config.write_text(self._containerd_config(cni_conf))
        self._spawn("containerd", ["containerd", "--config", str(config)])
        wait_for(
            lambda: (
                self.socket.exists()
                and subprocess.run(
                    ["ctr", "--address", str(self.socket), "version"], capture_output=True
                ).returncode
                == 0
            ),
            timeout=30,
            what="containerd",
            interval=0.1,
        )

    def _containerd_config(self, cni_conf: Path) -> str:
        return f"""version = 2
root = "{self.containerd_root}"
state = "{self.state_dir / "state"}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{self.socket}"

[ttrpc]
  address = "{self.state_dir / "containerd.ttrpc.sock"}"

[debug]
  level = "info"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  disable_apparmor = true
  # Without CAP_SYS_RESOURCE (as on these VMs) a negative oom_score_adj
  # cannot be set and runc init dies ("can't get final child's PID from
  # pipe: EOF"); clamp every container's score to containerd's own.
  restrict_oom_score_adj = {"true" if self.restrict_oom_score_adj else "false"}
  enable_selinux = false
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "{shutil.which("runc") or "/usr/sbin/runc"}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{cni_conf}"
    max_conf_num = 1

[plugins."io.containerd.internal.v1.opt"]
  path = "{self.containerd_root / "opt"}"
"""

    def _cni_config(self) -> dict[str, Any]:
        return {
            "cniVersion": "0.4.0",
            # One network name for every node on this host: host-local keeps its
            # reservations in IPAM_DIR/<name>, so they are shared too.
            "name": CNI_NETWORK,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.bridge,
                    # No gateway, no default route: a pod reaches its own subnet and,
                    # through the bridge's address, the Service range (kube-proxy), the
                    # node's own address (the kubelet's port, as pods can in any
                    # cluster) and the stand-in internet (codex_devenv.stand_in_internet).
                    "isGateway": False,
                    "isDefaultGateway": False,
                    "ipMasq": False,
                    "hairpinMode": False,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": self.subnet, "rangeStart": self._range_start()}]],
                        "routes": [
                            {"dst": dst, "gw": self.bridge_ip}
                            for dst in (SERVICE_CIDR, f"{self.node_ip}/32", INTERNET_SUBNET)
                        ],
                        # Shared by every node on this host (host-local locks it), so
                        # two nodes on the same bridge never hand out one address twice.
                        "dataDir": str(IPAM_DIR),
                    },
                }
            ],
        }

    def _range_start(self) -> str:
        base = self.subnet.split("/")[0].rsplit(".", 1)[0]
        return f"{base}.10"  # .1 is the bridge's own address

    def _credentials(self) -> dict[str, Path]:
        cp = self.control_plane
        assert cp is not None and cp.certs is not None
        pki = self.work_dir / "pki"
        client_crt, client_key = issue_cert(
            cp.certs, pki, "kubelet-client", f"/O=system:nodes/CN=system:node:{self.name}", None, "clientAuth"
        )
        serving_crt, serving_key = issue_cert(
            cp.certs,
            pki,
            "kubelet-serving",
            f"/CN={self.name}",
            f"IP:{self.node_ip},IP:127.0.0.1",
            "serverAuth",
        )
        return {
            "client_crt": client_crt,
            "client_key": client_key,
            "serving_crt": serving_crt,
            "serving_key": serving_key,
            "ca": cp.certs.ca_cert,
        }

    def _kubelet_kubeconfig(self, creds: dict[str, Path]) -> Path:
        assert self.control_plane is not None
        return self.control_plane.cert_kubeconfig(
            self.work_dir / "kubelet.kubeconfig",
            user="kubelet",
            cert=creds["client_crt"],
            key=creds["client_key"],
        )

    def _kubelet_config(self, creds: dict[str, Path]) -> Path:
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": self.node_ip,
            "port": self.kubelet_port,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": self.healthz_port,
            "tlsCertFile": str(creds["serving_crt"]),
            "tlsPrivateKeyFile": str(creds["serving_key"]),
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True, "cacheTTL": "10s"},
                "x509": {"clientCAFile": str(creds["ca"])},
            },
            "authorization": {"mode": "Webhook", "webhook": {"cacheAuthorizedTTL": "10s"}},
            "cgroupDriver": "cgroupfs",
            # Our own cgroup root, so pod cgroups of two nodes (or of another
            # kubelet) never mix: the kubelet kills processes in cgroups of
            # pods it does not know.
            "cgroupRoot": f"/{self.cgroup_name}",
            "failSwapOn": False,
            "failCgroupV1": False,
            "containerRuntimeEndpoint": self.endpoint,
            "imageServiceEndpoint": self.endpoint,
            "registerWithTaints": self.taints,
            "maxPods": self.max_pods,
            "podLogsDir": str(self.work_dir / "pod-logs"),
            "resolvConf": "",
            "clusterDomain": CLUSTER_DOMAIN,
            "clusterDNS": [CLUSTER_DNS_IP] if self.with_cluster_network else [],
            "staticPodPath": "",
            "rotateCertificates": False,
            "serverTLSBootstrap": False,
            # The host disk is shared with everything else: do not evict test pods for it.
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
                "nodefs.inodesFree": "1%",
            },
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "syncFrequency": "10s",
            "nodeStatusUpdateFrequency": "5s",
            "shutdownGracePeriod": "0s",
            "localStorageCapacityIsolation": True,
            "containerLogMaxSize": "10Mi",
            "containerLogMaxFiles": 2,
        }
        path = self.work_dir / "kubelet-config.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    def _start_kubelet(self) -> None:
        creds = self._credentials()
        kubeconfig = self._kubelet_kubeconfig(creds)
        config = self._kubelet_config(creds)
        self.kubelet_root.mkdir(parents=True, exist_ok=True)
        for hierarchy in self._cgroup_hierarchies():
            (hierarchy / self.cgroup_name).mkdir(exist_ok=True)
        self._spawn(
            "kubelet",
            [
                str(self.bin_dir / "kubelet"),
                f"--config={config}",
                f"--kubeconfig={kubeconfig}",
                f"--root-dir={self.kubelet_root}",
                f"--cert-dir={self.work_dir / 'kubelet-pki'}",
                f"--hostname-override={self.name}",
                f"--node-ip={self.node_ip}",
                "--v=2",
            ],
        )

    def _grant_apiserver_access(self) -> None:
        """Let the API server's kubelet-client user call the kubelet API (logs, exec, ...)."""
        assert self.control_plane is not None
        binding = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "codex-test:kube-apiserver-kubelet-client"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "system:kubelet-api-admin",
            },
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": APISERVER_KUBELET_CLIENT}
            ],
        }
        self.control_plane.kubectl("apply", "-f", "-", input=json.dumps(binding))

    def _node_ready(self) -> bool:
        self.check_alive()
        assert self.control_plane is not None
        out = self.control_plane.kubectl("get", "node", self.name, "-o", "json", check=False)
        if out.returncode != 0:
            return False
        conditions = json.loads(out.stdout).get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def _spawn(self, name: str, argv: list[str]) -> ManagedProcess:
        env = {**os.environ, "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
        proc = ManagedProcess(name, argv, self.logs_dir / f"{name}.log", env=env).start()
        self.processes.append(proc)
        return proc

    def _crictl(self, *args: str) -> subprocess.CompletedProcess[str] | None:
        crictl = crictl_path()
        if crictl is None or not self.socket.exists():
            return None
        return subprocess.run(
            [
                str(crictl),
                "--runtime-endpoint",
                self.endpoint,
                "--image-endpoint",
                self.endpoint,
                "--timeout",
                "20s",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )

    def _remove_all_pods(self) -> None:
        """Stop and remove every sandbox through CRI so CNI releases IPs and veths."""
        containerd = next((p for p in self.processes if p.name == "containerd"), None)
        if containerd is None or not containerd.alive():
            return
        out = self._crictl("pods", "-q")
        if out is not None and out.returncode == 0:
            for pod in out.stdout.split():
                self._crictl("stopp", pod)
                self._crictl("rmp", "-f", pod)
            return
        # No crictl: kill tasks with ctr (netns and veths of sandboxes may leak).
        try:
            for cid in self.ctr("containers", "ls", "-q").stdout.split():
                subprocess.run(
                    [
                        "ctr",
                        "--address",
                        str(self.socket),
                        "-n",
                        "k8s.io",
                        "tasks",
                        "kill",
                        "-s",
                        "SIGKILL",
                        cid,
                    ],
                    capture_output=True,
                    timeout=20,
                )
                subprocess.run(
                    ["ctr", "--address", str(self.socket), "-n", "k8s.io", "tasks", "rm", "-f", cid],
                    capture_output=True,
                    timeout=20,
                )
                subprocess.run(
                    ["ctr", "--address", str(self.socket), "-n", "k8s.io", "containers", "rm", cid],
                    capture_output=True,
                    timeout=20,
                )
        except (subprocess.SubprocessError, OSError):
            pass

    def _kill_shims(self) -> None:
        """containerd-shim-runc-v2 processes outlive containerd; kill ours (by their -address)."""
        marker = str(self.socket).encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"containerd-shim" in cmdline.split(b"\0", 1)[0] and marker in cmdline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(entry.name), signal.SIGKILL)

    @staticmethod
    def _cgroup_hierarchies() -> list[Path]:
        root = Path("/sys/fs/cgroup")
        if (root / "cgroup.controllers").exists():  # cgroup v2
            return [root]
        return [p for p in root.iterdir() if p.is_dir() and not p.is_symlink()]

    def _remove_cgroups(self) -> None:
        """Kill whatever still runs under our cgroup root (containers of a node whose
        harness was SIGKILLed outlive their shims), then remove the cgroups."""
        hierarchies = self._cgroup_hierarchies()
        for _ in range(50):
            pids = {
                int(pid)
                for hierarchy in hierarchies
                for dirpath, _dirs, files in os.walk(hierarchy / self.cgroup_name)
                if "cgroup.procs" in files
                for pid in Path(dirpath, "cgroup.procs").read_text().split()
            }
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        for hierarchy in hierarchies:
            top = hierarchy / self.cgroup_name
            if not top.is_dir():
                continue
            for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda w: len(w[0]), reverse=True):
                with contextlib.suppress(OSError):
                    os.rmdir(dirpath)

    @staticmethod
    def _unmount_under(root: Path) -> None:
        prefix = str(root.resolve()) if root.exists() else str(root)
        mounts = []
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + "/"):
                mounts.append(point)
        for point in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True)

    def _cleanup_stale_state(self) -> None:
        """Leftovers of a node of the same name killed with SIGKILL: shims and mounts."""
        self._kill_shims()
        self._unmount_under(self.state_dir)
        shutil.rmtree(self.state_dir, ignore_errors=True)
        self._remove_cgroups()
        remove_orphaned_pod_netns(self.subnet)


def _netns_in_use() -> set[int]:
    inodes = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                inodes.add(os.stat(entry / "ns" / "net").st_ino)
    return inodes


def remove_orphaned_pod_netns(subnet: str) -> list[str]:
    """Pod network namespaces of our subnet that no process uses any more (left by a
    node whose harness was SIGKILLed): delete them (their veth goes with them) and
    free their IP reservation."""
    if not NETNS_DIR.is_dir():
        return []
    prefix = subnet.split("/")[0].rsplit(".", 1)[0] + "."
    in_use = _netns_in_use()
    removed = []
    for ns in NETNS_DIR.glob("cni-*"):
        try:
            if os.stat(ns).st_ino in in_use:
                continue
        except OSError:
            continue
        out = subprocess.run(
            ["ip", "netns", "exec", ns.name, "ip", "-4", "-o", "addr", "show"], capture_output=True, text=True
        )
        ips = [w.split("/")[0] for w in out.stdout.split() if w.startswith(prefix)]
        if not ips:
            continue
        subprocess.run(["ip", "netns", "delete", ns.name], capture_output=True)
        for ip in ips:
            (IPAM_DIR / CNI_NETWORK / ip).unlink(missing_ok=True)
        removed.append(ns.name)
    return removed


def start_node(control_plane: ControlPlane, work_dir: Path, bin_dir: Path, **kwargs: Any) -> TestNode:
    node = TestNode(work_dir, bin_dir, **kwargs)
    try:
        return node.start(control_plane)
    except BaseException:
        node.stop()
        raise


def pod_tolerating_test_node(pod: dict[str, Any], extra: Iterable[dict[str, str]] = ()) -> dict[str, Any]:
    """Add the test node's toleration to a pod manifest (a copy)."""
    pod = json.loads(json.dumps(pod))
    tolerations = pod["spec"].setdefault("tolerations", [])
    tolerations.extend([TEST_NODE_TOLERATION, *extra])
    return pod


def hardened_test_pod(
    name: str,
    image: str,
    script: str,
    *,
    uid: int,
    container_name: str = "runner",
    memory_limit: str = "512Mi",
    **container: Any,
) -> dict[str, Any]:
    """A pod with the runner's security context (operator/codex_operator/pod_builder.py)
    around a shell script, tolerating the test node: for probing the node and the images."""
    seccomp = {"type": "RuntimeDefault"}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "tolerations": [TEST_NODE_TOLERATION],
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": uid,
                "runAsGroup": uid,
                "fsGroup": uid,
                "fsGroupChangePolicy": "OnRootMismatch",
                "seccompProfile": seccomp,
            },
            "containers": [
                {
                    "name": container_name,
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": ["/bin/sh", "-c", script],
                    "env": [{"name": "HOME", "value": "/tmp/home"}, {"name": "TMPDIR", "value": "/tmp"}],
                    "resources": {
                        "requests": {"cpu": "50m", "memory": "32Mi", "ephemeral-storage": "64Mi"},
                        "limits": {"cpu": "1", "memory": memory_limit, "ephemeral-storage": "256Mi"},
                    },
                    "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "privileged": False,
                        "capabilities": {"drop": ["ALL"]},
                        "readOnlyRootFilesystem": True,
                        "runAsNonRoot": True,
                        "seccompProfile": seccomp,
                    },
                    "terminationMessagePath": "/dev/termination-log",
                    "terminationMessagePolicy": "FallbackToLogsOnError",
                    **container,
                }
            ],
            "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
        },
    }
