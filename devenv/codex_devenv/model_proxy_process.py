"""The model proxy (`codex-model-proxy`) as a host process for tests and benches."""

from __future__ import annotations

import os
import secrets
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codex_api.model_credential import SessionRef

from .assets import REPO_ROOT
from .process import ManagedProcess, free_port, wait_for
from .testkit import create_session


@dataclass
class ModelProxyProcess:
    proc: ManagedProcess
    port: int
    signing_key: bytes
    host: str = "127.0.0.1"
    metrics_port: int | None = None  # None: /metrics on `port`

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def operator_env(self) -> dict[str, str]:
        """What the operator needs to mint credentials this proxy accepts (the default
        `[model_proxy].signing_key_env`)."""
        return {"CODEX_PROXY_SIGNING_KEY": self.signing_key.decode()}

    def base_url(self, provider: str) -> str:
        """What a runner's Codex gets as the provider's base_url."""
        return f"{self.base}/v1/{provider}"

    def metrics(self) -> str:
        port = self.metrics_port or self.port
        with urllib.request.urlopen(f"http://{self.host}:{port}/metrics", timeout=5) as resp:
            return str(resp.read().decode())

    def stop(self) -> None:
        self.proc.stop()


def start_model_proxy(
    control_plane: Any,
    work: Path,
    config_text: str,
    *,
    provider_keys: dict[str, str],
    redis_url: str | None = None,
    signing_key: bytes | None = None,
    name: str = "model-proxy",
    host: str = "127.0.0.1",
    metrics_port: int | None = None,
) -> ModelProxyProcess:
    """The proxy with `config_text` as its TOML and `provider_keys` ({env var: key}) in its environment."""
    config = work / f"{name}.toml"
    config.write_text(config_text)
    key = signing_key or secrets.token_urlsafe(48).encode()
    port = free_port()
    argv = [
        str(REPO_ROOT / ".venv" / "bin" / "codex-model-proxy"),
        "--config",
        str(config),
        "--kubeconfig",
        str(control_plane.kubeconfig("admin")),
        "--host",
        host,
        "--port",
        str(port),
    ]
    if metrics_port is not None:
        argv += ["--metrics-port", str(metrics_port)]
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(provider_keys)
    env["CODEX_PROXY_SIGNING_KEY"] = key.decode()
    if redis_url:
        env["REDIS_URL"] = redis_url
    proc = ManagedProcess("codex-model-proxy", argv, work / f"{name}.log", env=env).start()

    def healthy() -> bool:
        proc.check_alive()
        try:
            with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=1) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    try:
        wait_for(healthy, timeout=30, what="the model proxy /healthz")
    except (TimeoutError, RuntimeError):
        proc.stop()
        raise
    return ModelProxyProcess(proc, port, key, host, metrics_port)


def live_session(
    kube_client: Any, namespace: str, name: str, *, ip: str | None = "127.0.0.1", **spec: Any
) -> SessionRef:
    """A CodexSession of alice's and a runner Pod it controls whose status says
    it runs at `ip`, as the proxy sees a session with a running turn. Without a
    node the pod never runs: its status is the admin's, so 127.0.0.1 can stand
    for the runner pod's address of a caller on this host."""
    from kubernetes import client

    spec.setdefault("requestedBy", "alice")
    uid = create_session(kube_client, namespace, name, **spec)["metadata"]["uid"]
    owner = {"apiVersion": "codex.techsapo.io/v1alpha1", "kind": "CodexSession", "name": name, "uid": uid}
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{name}-runner",
            "labels": {"codex.techsapo.io/session": name, "app.kubernetes.io/managed-by": "codex-operator"},
            "ownerReferences": [{**owner, "controller": True}],
        },
        "spec": {"containers": [{"name": "runner", "image": "runner:test"}]},
    }
    core = client.CoreV1Api(kube_client)
    core.create_namespaced_pod(namespace, pod)  # type: ignore[arg-type]
    # None: a pod whose address the kubelet has not reported yet.
    status = {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]} if ip else {"phase": "Pending"}
    core.patch_namespaced_pod_status(f"{name}-runner", namespace, {"status": status})
    return SessionRef(namespace, name, uid)
