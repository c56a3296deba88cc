"""Run the real `codex-gateway` process against a control plane, and talk to
it with the MCP SDK's client over streamable HTTP."""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
import yaml
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from .assets import REPO_ROOT
from .process import ManagedProcess, free_port, wait_for

GATEWAY_RBAC = REPO_ROOT / "manifests" / "base" / "rbac-gateway.yaml"
GATEWAY_USER = "system:serviceaccount:codex-system:codex-gateway"


def _gateway_docs() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(GATEWAY_RBAC.read_text()) if d]


def gateway_kubeconfig(control_plane: Any, work: Path) -> Path:
    """Install the gateway's ServiceAccount and ClusterRole (manifests/base) and
    write a kubeconfig with a token for that ServiceAccount: the gateway then
    has exactly the rights an install gives it."""
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "codex-system"}}
    cluster_wide = [d for d in _gateway_docs() if d["kind"] != "RoleBinding"]
    control_plane.kubectl(
        "apply", "--server-side", "-f", "-", input=yaml.safe_dump_all([namespace, *cluster_wide])
    )
    return Path(
        control_plane.service_account_kubeconfig("codex-gateway", "codex-system", work / "gateway.kubeconfig")
    )


def bind_gateway(control_plane: Any, namespace: str) -> None:
    """The gateway's RoleBinding in a sessions namespace, as an install creates it."""
    docs = [d for d in _gateway_docs() if d["kind"] == "RoleBinding"]
    for doc in docs:
        doc["metadata"]["namespace"] = namespace
    control_plane.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(docs))


class GatewayProcess:
    def __init__(
        self, proc: ManagedProcess, port: int, namespace: str, tokens_file: Path, metrics_port: int
    ) -> None:
        self.proc = proc
        self.port = port
        self.namespace = namespace
        self.tokens_file = tokens_file
        self.metrics_port = metrics_port
        self.url = f"http://127.0.0.1:{port}/mcp"
        self.base = f"http://127.0.0.1:{port}"

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as resp:
            return str(resp.read().decode())

    def metric(self, name: str, labels: str = "") -> float | None:
        """The value of one sample, e.g. metric("codex_mcp_cost_usd_total", 'model="m"')."""
        wanted = f"{name}{{{labels}}}" if labels else name
        for line in self.metrics().splitlines():
            if line.startswith(wanted + " "):
                return float(line.rsplit(" ", 1)[1])
        return None

    def log(self) -> str:
        return self.proc.log_path.read_text(errors="replace")

    def audit_events(self) -> list[dict[str, Any]]:
        """The audit records of its JSON log, in order."""
        events = []
        for line in self.log().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and "audit" in record:
                events.append(record["audit"])
        return events

    def kill(self) -> None:
        """SIGKILL: no shutdown, no goodbye (crash tests)."""
        self.proc.kill()

    def client(
        self, token: str, mode: str = "auto", extensions: Sequence[Any] = (), elicitation: Any = None
    ) -> AbstractAsyncContextManager[Client]:
        return mcp_client(self.url, token, mode, extensions, elicitation)

    def stop(self) -> None:
        self.proc.stop()


@asynccontextmanager
async def mcp_client(
    url: str, token: str, mode: str = "auto", extensions: Sequence[Any] = (), elicitation: Any = None
) -> AsyncIterator[Client]:
    """The SDK's client for the gateway at `url` (.../mcp) as the token's user;
    `mode` "legacy" forces the 2025-11-25 handshake, "2026-07-28" the
    stateless era, "auto" lets the client discover; `extensions`: client
    extensions it declares (codex_devenv.mcp_tasks.TasksClient); `elicitation`:
    the client's elicitation callback (it then declares the capability)."""
    http = httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {token}"}, timeout=httpx2.Timeout(30, read=120)
    )
    transport = streamable_http_client(url, http_client=http)
    client_for = Client(
        transport, mode=mode, extensions=list(extensions) or None, elicitation_callback=elicitation
    )
    async with http, client_for as client:
        yield client


def start_gateway(
    control_plane: Any,
    namespace: str,
    work: Path,
    tokens: dict[str, Any],
    *,
    wait_seconds: float = 20,
    kubeconfig: Path | None = None,
    config_file: Path | None = None,
    redis_url: str | None = None,
    port: int | None = None,
    extra_args: tuple[str, ...] = (),
    name: str = "gateway",
) -> GatewayProcess:
    """The gateway for `namespace` with `tokens` ({token: user | {user, groups}}), healthy.
    `kubeconfig` defaults to the admin's; give the gateway ServiceAccount's to
    run it as an install does. The same `port` serves a restarted gateway."""
    tokens_file = work / f"{name}-tokens.json"
    tokens_file.write_text(json.dumps(tokens))
    tokens_file.chmod(0o600)
    port = port or free_port()
    metrics_port = free_port()
    argv = [
        str(REPO_ROOT / ".venv" / "bin" / "codex-gateway"),
        "--tokens-file",
        str(tokens_file),
        "--namespace",
        namespace,
        "--kubeconfig",
        str(kubeconfig or control_plane.kubeconfig("admin")),
        "--port",
        str(port),
        "--metrics-port",
        str(metrics_port),
        "--wait-seconds",
        str(wait_seconds),
        "--observe-seconds",
        "1",
        *(["--config", str(config_file)] if config_file else []),
        *extra_args,
    ]
    # Redis only when the test asks for it (never an URL leaking in from the environment).
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    if redis_url:
        env["REDIS_URL"] = redis_url
    proc = ManagedProcess("codex-gateway", argv, work / f"{name}.log", env=env).start()

    def healthy() -> bool:
        proc.check_alive()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    try:
        wait_for(healthy, timeout=30, what="the gateway /health")
    except (TimeoutError, RuntimeError):
        proc.stop()
        raise
    return GatewayProcess(proc, port, namespace, tokens_file, metrics_port)
