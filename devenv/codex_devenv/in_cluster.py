"""The chart installed into the test cluster the way a user installs it.

`InClusterInstall(cp, node, work).install()` does what `make e2e-kind` does
on kind, on the test node instead: the project's images (runner, operator,
gateway, and the redis and fake-model stand-ins for images a registry would
serve) imported into the node's containerd, `helm upgrade --install` of
charts/codex-k8s-operator with values-kind.yaml and hack/kind/e2e-values.yaml,
the gateway's tokens and the model key as Secrets, the fake model of
hack/kind/fake-model.yaml, then every Deployment rolled out. The operator,
the webhook, the gateway and Redis then run as pods under Pod Security
`restricted`, with in-cluster config and the chart's own certificate; the
model proxy too, the only holder of the model key (runner pods get a
per-session credential).

What differs from kind, and why (`overrides()`):
- tolerations of the test node's taint (the chart's pods, the fake model and
  the runners through [[kubernetes.runner_tolerations]]);
- the API server's port in the chart's egress policy (the control plane
  listens on a free port, not 6443);
- the gateway's Host allowlist and URL: the NodePort on the pod bridge's
  address (kube-proxy's nodePortAddresses) instead of kind's port mapping.

The control plane is shared with the rest of the test session, whose
fixtures made codex-system and its ServiceAccounts already (their tokens are
in use). So the install takes existing objects over (`--take-ownership`) and
`uninstall()` deletes only what the install created, plus helm's release
record: objects that existed before stay, with their uid.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from . import helm
from .assets import REPO_ROOT
from .gateway_process import mcp_client
from .images import load_into
from .node import TEST_NODE_TOLERATION, node_env
from .process import wait_for

if TYPE_CHECKING:
    from mcp import Client

    from .controlplane import ControlPlane
    from .node import TestNode

SYSTEM, SESSIONS = "codex-system", "codex-sessions"
IMAGES = ("runner", "operator", "gateway", "redis", "fake-model")
E2E_VALUES = REPO_ROOT / "hack" / "kind" / "e2e-values.yaml"
FAKE_MODEL = REPO_ROOT / "hack" / "kind" / "fake-model.yaml"
DEPLOYMENTS = ("codex-redis", "codex-model-proxy", "codex-operator", "codex-gateway")
NODE_PORT = 30080  # values-kind.yaml
HELM_NAMESPACE = "default"
LEASE = f"codex-operator.{SESSIONS}"  # the operators' leader election (codex_operator.leader)


def bridge_address() -> str:
    return node_env()["NODE_BRIDGE_ADDR"].split("/")[0]


@dataclass
class InClusterInstall:
    control_plane: ControlPlane
    node: TestNode
    work: Path
    # token -> user, as in the gateway's tokens Secret
    tokens: dict[str, str] = field(default_factory=lambda: {secrets.token_hex(24): "alice"})
    model_key: str = field(default_factory=lambda: "sk-in-cluster-" + secrets.token_hex(8))
    release: str = helm.RELEASE
    created: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def gateway_url(self) -> str:
        return f"http://{bridge_address()}:{NODE_PORT}"

    def client(self, user: str = "alice", mode: str = "auto") -> AbstractAsyncContextManager[Client]:
        """An MCP client of the gateway, through its NodePort, as `user` (a token of theirs);
        `mode` as codex_devenv.gateway_process.mcp_client takes it."""
        token = next(t for t, u in self.tokens.items() if u == user)
        return mcp_client(f"{self.gateway_url}/mcp", token, mode)

    def pods_of(self, component: str) -> list[dict[str, Any]]:
        """The running pods of a component (operator, gateway, redis, model-proxy) or of the fake model."""
        found = []
        for pod in self.pods():
            labels = pod["metadata"]["labels"]
            named = component in (
                labels.get("app.kubernetes.io/component"),
                labels.get("app.kubernetes.io/name"),
            )
            live = (
                pod["metadata"].get("deletionTimestamp") is None and pod["status"].get("phase") == "Running"
            )
            if named and live:
                found.append(pod)
        return found

    def pod_of(self, component: str) -> dict[str, Any]:
        """A running pod of a component (operator, gateway, redis) or of the fake model."""
        pods = self.pods_of(component)
        if not pods:
            raise LookupError(f"no running {component} pod")
        return pods[0]

    def metric(self, pod: str, name: str, having: str = "") -> float:
        """The sum of a pod's own /metrics series `name` (port 9090, read inside the
        pod) whose labels contain `having` (e.g. 'outcome="metered"'); 0 when none."""
        script = (
            "import urllib.request;"
            "print(urllib.request.urlopen('http://127.0.0.1:9090/metrics', timeout=5).read().decode())"
        )
        out = self.control_plane.kubectl("-n", SYSTEM, "exec", pod, "--", "python3", "-c", script)
        total = 0.0
        for line in out.stdout.splitlines():
            series, _, value = line.rpartition(" ")
            if series == name or (series.startswith(name + "{") and having in series):
                if series == name and having:
                    continue
                total += float(value)
        return total

    def endpoints(self, service: str) -> set[str]:
        """The ready addresses behind a Service (its EndpointSlices)."""
        out = self.control_plane.kubectl(
            "-n", SYSTEM, "get", "endpointslices", "-l", f"kubernetes.io/service-name={service}", "-o", "json"
        )
        return {
            address
            for item in json.loads(out.stdout)["items"]
            for endpoint in item.get("endpoints") or []
            if (endpoint.get("conditions") or {}).get("ready")
            for address in endpoint.get("addresses", [])
        }

    def operator_leader(self) -> str | None:
        """The pod holding the operator's Lease (its identity is the pod name)."""
        out = self.control_plane.kubectl(
            "-n", SYSTEM, "get", "lease", LEASE, "-o", "jsonpath={.spec.holderIdentity}", check=False
        )
        return out.stdout.strip() or None

    def replaced(self, component: str, old: str) -> bool:
        """Whether a running pod other than `old` serves the component now."""
        try:
            return self.pod_of(component)["metadata"]["name"] != old
        except LookupError:
            return False

    def rollout(self, deployment: str, timeout: int = 110) -> None:
        out = self.control_plane.kubectl(
            "-n",
            SYSTEM,
            "rollout",
            "status",
            f"deployment/{deployment}",
            f"--timeout={timeout}s",
            check=False,
        )
        if out.returncode != 0:
            raise RuntimeError(f"deployment {deployment} did not roll out: {out.stderr}\n{self.diagnose()}")

    def overrides(self) -> dict[str, Any]:
        toleration = dict(TEST_NODE_TOLERATION)
        return {
            "operator": {"tolerations": [toleration]},
            "gateway": {"tolerations": [toleration], "allowedHosts": [f"{bridge_address()}:*"]},
            "redis": {"tolerations": [toleration]},
            "modelProxy": {"tolerations": [toleration]},
            "networkPolicy": {"apiServer": {"ports": [443, self.control_plane.api_port]}},
            "config": {
                "kubernetes": {
                    "runner_tolerations": [toleration],
                    # The test node has 2 CPUs: the install's pods plus a few runner
                    # pods. Fewer idle warm pods leave room for a replaced gateway,
                    # operator or Redis pod (idle pods keep their CPU requests).
                    "warm_runners": {"max_idle_pods": 2},
                },
            },
        }

    def values_files(self) -> list[Path]:
        file = self.work / "in-cluster-values.yaml"
        file.write_text(yaml.safe_dump(self.overrides()))
        return [helm.KIND_VALUES, E2E_VALUES, file]

    def fake_model_docs(self) -> list[dict[str, Any]]:
        docs = [d for d in yaml.safe_load_all(FAKE_MODEL.read_text()) if d]
        for doc in docs:
            if doc["kind"] == "Deployment":
                doc["spec"]["template"]["spec"]["tolerations"] = [dict(TEST_NODE_TOLERATION)]
        return docs

    def install(self, timeout: float = 300) -> InClusterInstall:
        import time

        cp = self.control_plane
        t0 = time.monotonic()
        load_into(self.node, IMAGES)
        self.timings["images"] = time.monotonic() - t0

        rendered = helm.template(values_files=self.values_files(), release=self.release)
        extra = [*self._secrets(), *self.fake_model_docs()]
        existing = self._existing([*rendered, *extra])
        self.created = [d for d in [*rendered, *extra] if _ref(d) not in existing]

        t0 = time.monotonic()
        args = ["upgrade", "--install", self.release, str(helm.CHART_DIR), "--namespace", HELM_NAMESPACE]
        args += ["--take-ownership", "--skip-crds"]
        for path in self.values_files():
            args += ["-f", str(path)]
        helm.run(*args, kubeconfig=cp.kubeconfig("admin"))
        cp.apply(extra)
        self.timings["helm"] = time.monotonic() - t0

        t0 = time.monotonic()
        for name in (*DEPLOYMENTS, "codex-fake-model"):
            self.rollout(name, min(int(timeout), 110))
        wait_for(self._gateway_answers, timeout=60, what="the gateway's /health through its NodePort")
        self.timings["ready"] = time.monotonic() - t0
        return self

    def upgrade(self, extra: dict[str, Any] | None = None) -> None:
        """`helm upgrade` the release with its values plus `extra` (None: back to the
        install's own values), then wait for the operator to roll out."""
        args = ["upgrade", self.release, str(helm.CHART_DIR), "--namespace", HELM_NAMESPACE, "--skip-crds"]
        for path in self.values_files():
            args += ["-f", str(path)]
        if extra:
            file = self.work / "in-cluster-extra-values.yaml"
            file.write_text(yaml.safe_dump(extra))
            args += ["-f", str(file)]
        helm.run(*args, kubeconfig=self.control_plane.kubeconfig("admin"))
        self.rollout("codex-operator")

        # `rollout status` returns while the old replicas still terminate, and the
        # old leader reconciles with the old configuration until it lets go.
        def new_leader() -> bool:
            current = {p["metadata"]["name"] for p in self.pods_of("operator")}
            everyone = {
                p["metadata"]["name"]
                for p in self.pods()
                if (p["metadata"].get("labels") or {}).get("app.kubernetes.io/component") == "operator"
            }
            return everyone == current and self.operator_leader() in current

        wait_for(new_leader, timeout=90, what="a new operator replica to lead, the old ones gone")

    def uninstall(self) -> None:
        """Delete the sessions first (the operator removes their finalizers),
        then what the install created, then helm's release record."""
        cp = self.control_plane
        cp.kubectl("-n", SESSIONS, "delete", "codexsessions", "--all", "--timeout=90s", check=False)
        for doc in reversed(self.created):
            meta = doc["metadata"]
            ns = ["-n", meta["namespace"]] if meta.get("namespace") else []
            cp.kubectl(
                "delete", doc["kind"], meta["name"], *ns, "--ignore-not-found", "--wait=false", check=False
            )
        cp.kubectl(
            "-n", HELM_NAMESPACE, "delete", "secret", "-l", f"owner=helm,name={self.release}", check=False
        )
        cp.kubectl("-n", SYSTEM, "delete", "lease", LEASE, "--ignore-not-found", check=False)

    def pods(self) -> list[dict[str, Any]]:
        out = self.control_plane.kubectl("-n", SYSTEM, "get", "pods", "-o", "json")
        return list(json.loads(out.stdout)["items"])

    def logs(self, deployment: str, tail: int = 200) -> str:
        out = self.control_plane.kubectl(
            "-n",
            SYSTEM,
            "logs",
            f"deployment/{deployment}",
            f"--tail={tail}",
            "--all-containers",
            check=False,
        )
        return str(out.stdout) + str(out.stderr)

    def diagnose(self) -> str:
        """Pods, events and logs of both namespaces and the sessions' status: what
        a failed test prints."""
        cp = self.control_plane
        parts = []
        for ns in (SYSTEM, SESSIONS):
            parts.append(
                cp.kubectl("-n", ns, "get", "pods,events,networkpolicies", "-o", "wide", check=False).stdout
            )
        for name in (*DEPLOYMENTS, "codex-fake-model"):
            parts.append(f"--- logs {name}\n{self.logs(name, 40)}")
        pods = cp.kubectl("-n", SESSIONS, "get", "pods", "-o", "name", check=False).stdout.split()
        for pod in pods[:6]:
            out = cp.kubectl("-n", SESSIONS, "logs", pod, "--tail=40", "--all-containers", check=False)
            parts.append(f"--- logs {pod}\n{out.stdout}{out.stderr}")
        sessions = cp.kubectl("-n", SESSIONS, "get", "codexsessions", "-o", "json", check=False).stdout
        if sessions:
            for item in json.loads(sessions).get("items", []):
                parts.append(
                    f"--- session {item['metadata']['name']}: {json.dumps(item.get('status'))[:1500]}"
                )
        return "\n".join(str(p) for p in parts)

    def _secrets(self) -> list[dict[str, Any]]:
        tokens = "".join(f"{token}: {user}\n" for token, user in self.tokens.items())
        return [
            _secret(SYSTEM, "codex-gateway-tokens", {"tokens.yaml": tokens}),
            # The model proxy's, in its own namespace: no runner pod can name it.
            _secret(SYSTEM, "codex-model-api-key", {"api-key": self.model_key}),
        ]

    def _existing(self, docs: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
        found: set[tuple[str, str, str]] = set()
        for doc in docs:
            meta = doc["metadata"]
            ns = ["-n", meta["namespace"]] if meta.get("namespace") else []
            out = self.control_plane.kubectl(
                "get", doc["kind"], meta["name"], *ns, "--ignore-not-found", "-o", "name", check=False
            )
            if out.stdout.strip():
                found.add(_ref(doc))
        return found

    def _gateway_answers(self) -> bool:
        import urllib.request

        try:
            with urllib.request.urlopen(f"{self.gateway_url}/health", timeout=5) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False


def _ref(doc: dict[str, Any]) -> tuple[str, str, str]:
    meta = doc["metadata"]
    return doc["kind"], meta.get("namespace") or "", meta["name"]


def _secret(namespace: str, name: str, data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": "Opaque",
        "stringData": data,
    }


def smoke(
    install: InClusterInstall, *, requester: str, approver: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """hack/kind/smoke.py against this install, as `make e2e-kind` runs it; kubectl
    as the requester (the token's user) and as the approver, each with their own
    credentials."""
    import sys

    cp = install.control_plane
    token = next(t for t, user in install.tokens.items() if user == requester)

    def kubectl(user: str) -> str:
        return f"{cp.bin_dir / 'kubectl'} --kubeconfig {cp.kubeconfig(user)}"

    return subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "hack" / "kind" / "smoke.py"),
            "--url",
            install.gateway_url,
            "--token",
            token,
            "--requester-kubectl",
            kubectl(requester),
            "--approver-kubectl",
            kubectl(approver),
            "--timeout",
            str(int(timeout)),
        ],
        capture_output=True,
        text=True,
        timeout=timeout + 60,
    )
