"""Run the real `codex-gateway` process against a control plane, and talk to
it with the MCP SDK's client over streamable HTTP."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from .assets import REPO_ROOT
from .process import ManagedProcess, free_port, wait_for


class GatewayProcess:
    def __init__(self, proc: ManagedProcess, port: int, namespace: str, tokens_file: Path) -> None:
        self.proc = proc
        self.port = port
        self.namespace = namespace
        self.tokens_file = tokens_file
        self.url = f"http://127.0.0.1:{port}/mcp"

    @asynccontextmanager
    async def client(self, token: str) -> AsyncIterator[Client]:
        http = httpx2.AsyncClient(
            headers={"Authorization": f"Bearer {token}"}, timeout=httpx2.Timeout(30, read=120)
        )
        async with http, Client(streamable_http_client(self.url, http_client=http)) as mcp_client:
            yield mcp_client

    def stop(self) -> None:
        self.proc.stop()


def start_gateway(
    control_plane: Any, namespace: str, work: Path, tokens: dict[str, str], *, wait_seconds: float = 20
) -> GatewayProcess:
    """The gateway for `namespace` with `tokens` ({token: user}), healthy."""
    tokens_file = work / "gateway-tokens.json"
    tokens_file.write_text(json.dumps(tokens))
    tokens_file.chmod(0o600)
    port = free_port()
    proc = ManagedProcess(
        "codex-gateway",
        [
            str(REPO_ROOT / ".venv" / "bin" / "codex-gateway"),
            "--tokens-file",
            str(tokens_file),
            "--namespace",
            namespace,
            "--kubeconfig",
            str(control_plane.kubeconfig("admin")),
            "--port",
            str(port),
            "--wait-seconds",
            str(wait_seconds),
        ],
        work / "gateway.log",
    ).start()

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
    return GatewayProcess(proc, port, namespace, tokens_file)
