"""A real Kubernetes control plane: etcd, kube-apiserver,
kube-controller-manager and kube-scheduler, started from the cached binaries.

The API server listens on 127.0.0.1, or on the test node's pod bridge
(`address=`, codex_devenv.cluster_network.api_server_address()) when pods
must reach it as in a real cluster: it then advertises that address and keeps
the `kubernetes` Service's endpoints (lease reconciler), so 10.96.0.1 leads
to it through kube-proxy. Either way it never listens on an interface that
leaves the machine; etcd and the other components stay on 127.0.0.1.

Authentication is a static token file: an admin in system:masters plus a few
ordinary users, so tests can act as distinct people (a requester, approvers,
an outsider). RBAC and the default admission plugins (PodSecurity included)
are on, as in a real cluster.
"""

from __future__ import annotations

import json
import secrets
import shutil
import ssl
import subprocess
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .certs import CertBundle, make_certs
from .process import ManagedProcess, free_port, wait_for

APPROVERS_GROUP = "codex-approvers"
APISERVER_KUBELET_CLIENT = "kube-apiserver-kubelet-client"  # the user kube-apiserver is to kubelets
ADMINS_GROUP = "codex-admins"


@dataclass(frozen=True)
class User:
    name: str
    groups: tuple[str, ...] = ()
    token: str = field(default_factory=lambda: secrets.token_hex(16))


def default_users() -> dict[str, User]:
    return {
        "admin": User("admin", ("system:masters",)),
        "alice": User("alice", (APPROVERS_GROUP,)),  # approver
        "bob": User("bob", (APPROVERS_GROUP,)),  # approver
        "carol": User("carol", ()),  # ordinary requester, no approval rights
        "dave": User("dave", (ADMINS_GROUP,)),
        "mallory": User("mallory", ()),  # outsider
    }


class ControlPlane:
    def __init__(
        self,
        work_dir: Path,
        bin_dir: Path,
        users: dict[str, User] | None = None,
        *,
        run_scheduler: bool = True,
        address: str = "127.0.0.1",
    ) -> None:
        self.run_scheduler = run_scheduler
        self.address = address
        self.work_dir = work_dir
        self.bin_dir = bin_dir
        self.users = users or default_users()
        self.etcd_port = free_port()
        self.etcd_peer_port = free_port()
        self.api_port = free_port()
        self.cm_port = free_port()
        self.sched_port = free_port()
        self.processes: list[ManagedProcess] = []
        self.certs: CertBundle | None = None

    # -- addresses and credentials -------------------------------------------------
    @property
    def server(self) -> str:
        return f"https://{self.address}:{self.api_port}"

    @property
    def logs_dir(self) -> Path:
        return self.work_dir / "logs"

    def kubeconfig(self, user: str = "admin") -> Path:
        """A kubeconfig file that authenticates as `user` with its static token."""
        path = self.work_dir / "kubeconfigs" / f"{user}.yaml"
        if not path.exists():
            assert self.certs is not None
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(self.kubeconfig_text(user=user, token=self.users[user].token))
            path.chmod(0o600)
        return path

    def service_account_kubeconfig(self, name: str, namespace: str, path: Path) -> Path:
        """A kubeconfig at `path` holding a fresh token of ServiceAccount
        `namespace/name`: a component then has exactly its install's rights."""
        token = self.kubectl("create", "token", name, "-n", namespace, "--duration=6h").stdout.strip()
        path.write_text(self.kubeconfig_text(user=name, token=token))
        path.chmod(0o600)
        return path

    def component_kubeconfig(self, out_dir: Path, name: str, *, user: str) -> Path:
        """`out_dir/<name>.kubeconfig` for a node component that authenticates as
        `user` with a client certificate of the harness CA (issued next to it)."""
        assert self.certs is not None
        cert, key = self.certs.issue(out_dir, name, None, subject=f"/CN={user}", usage="clientAuth")
        return self.cert_kubeconfig(out_dir / f"{name}.kubeconfig", user=name, cert=cert, key=key)

    def cert_kubeconfig(self, path: Path, *, user: str, cert: Path, key: Path) -> Path:
        """A kubeconfig at `path` that authenticates with a client certificate (node components)."""
        path.write_text(
            self.kubeconfig_text(
                user=user, credentials={"client-certificate": str(cert), "client-key": str(key)}
            )
        )
        path.chmod(0o600)
        return path

    def kubeconfig_text(
        self, *, user: str, token: str | None = None, credentials: dict[str, str] | None = None
    ) -> str:
        assert self.certs is not None
        assert (token is None) != (credentials is None), "a token or client credentials"
        auth: dict[str, str] = credentials if credentials is not None else {"token": str(token)}
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "codex-test",
                    "cluster": {"server": self.server, "certificate-authority": str(self.certs.ca_cert)},
                }
            ],
            "users": [{"name": user, "user": auth}],
            "contexts": [{"name": user, "context": {"cluster": "codex-test", "user": user}}],
            "current-context": user,
        }
        return yaml.safe_dump(doc)

    def kubectl(
        self, *args: str, user: str = "admin", check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin_dir / "kubectl"), "--kubeconfig", str(self.kubeconfig(user)), *args],
            check=check,
            capture_output=True,
            text=True,
            input=input,
            timeout=120,
        )

    def apply(self, docs: list[dict[str, Any]], field_manager: str = "codex-devenv") -> None:
        """Server-side apply of `docs` as admin (the harness's own objects)."""
        self.kubectl(
            "apply",
            "--server-side",
            "--force-conflicts",
            f"--field-manager={field_manager}",
            "-f",
            "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}),
        )

    def version(self) -> str:
        out = self.kubectl("version", "-o", "json")
        return str(json.loads(out.stdout)["serverVersion"]["gitVersion"])

    # -- lifecycle -----------------------------------------------------------------
    def start(self, timeout: float = 120.0) -> ControlPlane:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.certs = certs = make_certs(self.work_dir / "pki", address=self.address)
        tokens = self.work_dir / "tokens.csv"
        tokens.write_text(
            "".join(f'{u.token},{u.name},{u.name},"{",".join(u.groups)}"\n' for u in self.users.values())
        )
        tokens.chmod(0o600)
        self._start_etcd()
        # The API server reaches kubelets (logs, exec) with its own client cert,
        # verifies their serving certs, and dials their InternalIP only: never
        # a hostname, which would send a DNS query off this machine.
        kubelet_client_crt, kubelet_client_key = certs.issue(
            self.work_dir / "pki", APISERVER_KUBELET_CLIENT, f"DNS:{APISERVER_KUBELET_CLIENT}"
        )
        self._start(
            "kube-apiserver",
            f"--kubelet-client-certificate={kubelet_client_crt}",
            f"--kubelet-client-key={kubelet_client_key}",
            f"--kubelet-certificate-authority={certs.ca_cert}",
            "--kubelet-preferred-address-types=InternalIP",
            f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            f"--bind-address={self.address}",
            f"--advertise-address={self.address}",
            f"--secure-port={self.api_port}",
            f"--tls-cert-file={certs.serving_cert}",
            f"--tls-private-key-file={certs.serving_key}",
            f"--client-ca-file={certs.ca_cert}",
            f"--token-auth-file={tokens}",
            "--authorization-mode=Node,RBAC",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={certs.sa_pub}",
            f"--service-account-signing-key-file={certs.sa_key}",
            "--service-cluster-ip-range=10.96.0.0/16",
            # An EndpointSlice refuses a loopback address: on 127.0.0.1 the
            # `kubernetes` Service has no endpoints at all.
            f"--endpoint-reconciler-type={'none' if self.address == '127.0.0.1' else 'lease'}",
            "--allow-privileged=true",
            "--enable-priority-and-fairness=false",
            "--profiling=false",
            f"--cert-dir={self.work_dir / 'apiserver-certs'}",
        )
        wait_for(self._apiserver_ready, timeout=timeout, what="kube-apiserver /readyz")
        admin_kubeconfig = self.kubeconfig("admin")
        self._start(
            "kube-controller-manager",
            f"--kubeconfig={admin_kubeconfig}",
            f"--authentication-kubeconfig={admin_kubeconfig}",
            f"--authorization-kubeconfig={admin_kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.cm_port}",
            f"--cert-dir={self.work_dir / 'cm-certs'}",
            "--leader-elect=false",
            f"--service-account-private-key-file={certs.sa_key}",
            f"--root-ca-file={certs.ca_cert}",
            "--use-service-account-credentials=false",
            "--concurrent-gc-syncs=5",
        )
        if self.run_scheduler:
            self._start_scheduler(admin_kubeconfig)
        # The controller-manager is up once it creates the default ServiceAccount.
        wait_for(
            lambda: (
                self.kubectl("get", "serviceaccount", "default", "-n", "default", check=False).returncode == 0
            ),
            timeout=timeout,
            what="kube-controller-manager (default ServiceAccount)",
            interval=0.25,
        )
        return self

    def stop(self) -> None:
        for proc in reversed(self.processes):
            proc.stop()
        self.processes.clear()

    def process(self, name: str) -> ManagedProcess:
        return next(p for p in self.processes if p.name == name)

    def pids(self) -> dict[str, int | None]:
        return {p.name: p.pid for p in self.processes}

    def check_alive(self) -> None:
        for proc in self.processes:
            proc.check_alive()

    def install_crds(self, crd_dir: Path, timeout: float = 60) -> list[str]:
        out = self.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd_dir), "-o", "name")
        names = [line.split("/", 1)[1] for line in out.stdout.split() if line]
        self.kubectl(
            "wait", "--for=condition=Established", f"--timeout={int(timeout)}s", *[f"crd/{n}" for n in names]
        )
        return names

    def cleanup_files(self) -> None:
        shutil.rmtree(self.work_dir, ignore_errors=True)

    # -- internals -----------------------------------------------------------------
    def _start(self, name: str, *args: str) -> ManagedProcess:
        proc = ManagedProcess(name, [str(self.bin_dir / name), *args], self.logs_dir / f"{name}.log").start()
        self.processes.append(proc)
        return proc

    def _start_scheduler(self, admin_kubeconfig: Path) -> None:
        self._start(
            "kube-scheduler",
            f"--kubeconfig={admin_kubeconfig}",
            f"--authentication-kubeconfig={admin_kubeconfig}",
            f"--authorization-kubeconfig={admin_kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.sched_port}",
            f"--cert-dir={self.work_dir / 'sched-certs'}",
            "--leader-elect=false",
        )

    def _start_etcd(self) -> None:
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        client = f"http://127.0.0.1:{self.etcd_port}"
        self._start(
            "etcd",
            "--name=default",
            f"--data-dir={self.work_dir / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=default={peer}",
            "--unsafe-no-fsync",
            "--log-level=warn",
        )

    def _apiserver_ready(self) -> bool:
        for proc in self.processes:
            proc.check_alive()
        assert self.certs is not None
        ctx = ssl.create_default_context(cafile=str(self.certs.ca_cert))
        req = urllib.request.Request(
            f"{self.server}/readyz", headers={"Authorization": f"Bearer {self.users['admin'].token}"}
        )
        with urllib.request.urlopen(req, context=ctx, timeout=2) as resp:
            return bool(resp.status == 200)
