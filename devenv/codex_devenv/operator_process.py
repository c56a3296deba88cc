"""Run the real operator process against a control plane, as its own
ServiceAccount (with a token minted for it), the way `make dev` and the
integration tests do."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from .assets import REPO_ROOT as REPO
from .process import ManagedProcess, free_port, wait_for

OPERATOR_RBAC = REPO / "manifests" / "base" / "rbac-operator.yaml"
OPERATOR_BINDING = REPO / "manifests" / "base" / "rolebinding-operator.yaml"
RUNNER_ACCOUNT = REPO / "manifests" / "base" / "serviceaccount-runner.yaml"

BASE_CONFIG = """
[mcp]
max_concurrent_sessions = {limit}
max_concurrent_sessions_per_user = {per_user}
session_timeout_ms = {timeout_ms}

[kubernetes]
cleanup_interval_seconds = {cleanup}
default_ttl_seconds_after_finished = {ttl}
approval_timeout_seconds = {approval_timeout}
max_pod_attempts = {attempts}
{kubernetes_extra}
"""


# The operator's ServiceAccount user: the admission policies' "operators" param.
OPERATOR_USER = "system:serviceaccount:codex-system:codex-operator"


class OperatorProcess:
    def __init__(self, proc: ManagedProcess, metrics_port: int, health_port: int = 0) -> None:
        self.proc = proc
        self.metrics_port = metrics_port
        self.health_port = health_port

    def role(self) -> str | None:
        """ "leader" or "follower" from /readyz (None: no answer)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/readyz", timeout=2) as resp:
                return str(json.load(resp).get("role"))
        except urllib.error.HTTPError as err:
            return str(json.load(err).get("role"))
        except OSError:
            return None

    def probe(self, path: str) -> int:
        """The HTTP status of /healthz or /readyz (0: no answer)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}{path}", timeout=2) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as err:
            return int(err.code)
        except OSError:
            return 0

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2) as resp:
            return str(resp.read().decode())

    def metric(self, name: str, labels: str = "") -> float | None:
        prefix = f"{name}{{{labels}}}" if labels else name
        for line in self.metrics().splitlines():
            if line.startswith(prefix + " "):
                return float(line.split()[-1])
        return None

    def wait_ready(self, timeout: float = 60) -> None:
        def ready() -> bool:
            self.proc.check_alive()
            return self.metric("codex_operator_ready") == 1.0

        try:
            wait_for(ready, timeout=timeout, what="the operator to become ready", interval=0.1)
        except (TimeoutError, RuntimeError) as err:
            raise RuntimeError(f"{err}\n--- operator log ---\n{self.proc.tail(40)}") from err

    def kill(self) -> None:
        self.proc.kill()

    def stop(self) -> None:
        self.proc.stop()

    def log(self) -> str:
        return self.proc.log_path.read_text(errors="replace")


def operator_kubeconfig(control_plane: Any, work: Path) -> Path:
    """Install the operator's RBAC and write a kubeconfig with a token for its ServiceAccount."""
    control_plane.kubectl("apply", "--server-side", "-f", str(OPERATOR_RBAC))
    return Path(
        control_plane.service_account_kubeconfig(
            "codex-operator", "codex-system", work / "operator.kubeconfig"
        )
    )


def bind_operator(control_plane: Any, namespace: str) -> None:
    """What an install puts into a sessions namespace: the operator's RoleBinding, the runner's account."""
    docs = []
    for path in (OPERATOR_BINDING, RUNNER_ACCOUNT):
        doc = yaml.safe_load(path.read_text())
        doc["metadata"]["namespace"] = namespace
        docs.append(doc)
    control_plane.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(docs))


def start_operator(
    control_plane: Any,
    kubeconfig: Path,
    namespace: str,
    work: Path,
    *,
    limit: int = 10,
    per_user: int | None = None,
    timeout_ms: int = 300_000,
    cleanup: int = 60,
    ttl: int = 86400,
    approval_timeout: int = 3600,
    attempts: int = 2,
    extra_config: str = "",
    kubernetes_extra: str = "",
    webhook_port: int = 0,
    webhook_cert: Path | None = None,
    webhook_key: Path | None = None,
    webhook_host: str = "127.0.0.1",
    trusted_requesters: Sequence[str] | None = None,
    config_file: Path | None = None,
    leader_identity: str | None = None,
    lease_seconds: float = 15.0,
    wait_ready: bool = True,
    env: dict[str, str] | None = None,
) -> OperatorProcess:
    """The operator for `namespace`, ready; with `webhook_port` (and a serving
    cert/key) it also serves its identity-stamping webhook on `webhook_host`.
    With `leader_identity` it takes part in leader election under that name
    (a follower never becomes ready: pass wait_ready=False)."""
    config = config_file or work / f"operator-{namespace}.toml"
    if config_file is None:
        config.write_text(
            BASE_CONFIG.format(
                limit=limit,
                # Most tests play one requester and measure the global limit;
                # the per-user share is set where a test is about it.
                per_user=per_user or limit,
                timeout_ms=timeout_ms,
                cleanup=cleanup,
                ttl=ttl,
                approval_timeout=approval_timeout,
                attempts=attempts,
                kubernetes_extra=kubernetes_extra,
            )
            + extra_config
        )
    metrics_port = free_port()
    webhook_args: list[str] = []
    if webhook_port:
        if webhook_cert is None or webhook_key is None:
            raise ValueError("webhook_port needs webhook_cert and webhook_key")
        webhook_args += ["--webhook-port", str(webhook_port), "--webhook-host", webhook_host]
        webhook_args += ["--webhook-cert", str(webhook_cert), "--webhook-key", str(webhook_key)]
    for user in trusted_requesters or ():
        webhook_args += ["--trusted-requester", user]
    if leader_identity:
        webhook_args += ["--leader-election", "--leader-identity", leader_identity]
        webhook_args += ["--lease-seconds", str(lease_seconds)]
    health_port = free_port()
    proc = ManagedProcess(
        "codex-operator",
        [
            str(REPO / ".venv" / "bin" / "codex-operator"),
            "run",
            "--config",
            str(config),
            "--namespace",
            namespace,
            "--kubeconfig",
            str(kubeconfig),
            "--metrics-port",
            str(metrics_port),
            "--health-port",
            str(health_port),
            *webhook_args,
        ],
        work / f"operator-{namespace}.log",
        env={**os.environ, **env} if env else None,
    ).start()
    op = OperatorProcess(proc, metrics_port, health_port)
    if wait_ready:
        op.wait_ready()
    return op
