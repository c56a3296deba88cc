"""`codex-devenv up`: the local system for `make dev`.

Starts the real control plane (etcd, kube-apiserver, controller-manager,
scheduler) with the CRDs installed, and a real Redis, writes a kubeconfig;
then (unless --no-node) a real node, the model (fake unless
CODEX_MODEL_API_KEY is set), the admission policies and the operator with its
identity webhook, and the MCP gateway as its own ServiceAccount on
127.0.0.1:8080 with a bearer token for a dev user. It runs one example
session with kubectl and one through MCP (the `codex` tool), prints how to
use and connect to everything, prints a line `ready` (so scripts and tests
can wait for it), and keeps everything running until Ctrl-C or SIGTERM, then
stops every process it started.

For scripts: `.devenv/gateway.env` (CODEX_GATEWAY_URL, CODEX_GATEWAY_TOKEN,
...) and `.devenv/mcp.json` (an `mcpServers` entry with the URL and header).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .assets import REPO_ROOT, ensure_binaries, pinned_versions
from .cluster_network import api_server_address
from .controlplane import APPROVERS_GROUP, ControlPlane
from .process import free_port
from .redis_server import RedisServer

READY_LINE = "ready"
DEFAULT_GATEWAY_PORT = 8080
DEV_USER = "developer"
GATEWAY_ENV = "gateway.env"
MCP_JSON = "mcp.json"
MCP_SERVER_NAME = "codex"
TOKEN_ENV = "CODEX_GATEWAY_TOKEN"
# Static users who may use the sessions namespace with kubectl (mallory stays an outsider).
KUBECTL_USERS = ("alice", "bob", "carol", "dave")
MCP_EXAMPLE_PROMPT = "In one sentence: what does a Kubernetes operator do?"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="codex-devenv", description="Local development environment.")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the local system and keep it running until Ctrl-C")
    up.add_argument("--work-dir", type=Path, default=REPO_ROOT / ".devenv", help="state, logs, kubeconfigs")
    up.add_argument("--no-redis", action="store_true", help="do not start redis-server")
    up.add_argument(
        "--no-node",
        action="store_true",
        help="control plane only: no kubelet, no operator, no gateway, no example session",
    )
    up.add_argument("--namespace", default="codex-sessions", help="sessions namespace")
    up.add_argument(
        "--gateway-port",
        type=int,
        default=DEFAULT_GATEWAY_PORT,
        help=f"port of the MCP gateway on 127.0.0.1 (default {DEFAULT_GATEWAY_PORT}; a free one if taken)",
    )
    up.add_argument(
        "--exit-after-ready",
        action="store_true",
        help="stop everything right after reaching ready (smoke test)",
    )
    return parser


# --------------------------------------------------------------------------- the gateway's client side


@dataclass(frozen=True)
class GatewayAccess:
    """How an MCP client reaches the dev gateway: printed, and written for scripts."""

    url: str
    token: str
    user: str
    metrics_url: str

    def env_text(self, kubeconfig: Path) -> str:
        values = {
            "CODEX_GATEWAY_URL": self.url,
            TOKEN_ENV: self.token,
            "CODEX_GATEWAY_USER": self.user,
            "CODEX_GATEWAY_METRICS_URL": self.metrics_url,
            "KUBECONFIG": str(kubeconfig),
        }
        return "".join(f"{k}={shlex.quote(v)}\n" for k, v in values.items())

    def mcp_json(self) -> dict[str, Any]:
        """An `mcpServers` entry (Cursor's mcp.json; most clients read the same shape)."""
        return {
            "mcpServers": {
                MCP_SERVER_NAME: {"url": self.url, "headers": {"Authorization": f"Bearer {self.token}"}}
            }
        }

    def client_lines(self) -> list[str]:
        inspector = pinned_versions().get("MCP_INSPECTOR_VERSION", "latest")
        header = f'"Authorization: Bearer {self.token}"'
        return [
            f"  Claude Code   claude mcp add --transport http {MCP_SERVER_NAME} {self.url} --header {header}",
            f"  Codex         export {TOKEN_ENV}={self.token}",
            f"                codex mcp add {MCP_SERVER_NAME} --url {self.url} --bearer-token-env-var {TOKEN_ENV}",
            f"  Cursor        ~/.cursor/mcp.json: {json.dumps(self.mcp_json())}",
            f"  Inspector     npx @modelcontextprotocol/inspector@{inspector} --cli {self.url} --header {header}"
            " --method tools/list",
        ]

    def write(self, work_dir: Path, kubeconfig: Path) -> None:
        for name, text in (
            (GATEWAY_ENV, self.env_text(kubeconfig)),
            (MCP_JSON, json.dumps(self.mcp_json(), indent=2) + "\n"),
        ):
            path = work_dir / name
            path.touch(mode=0o600)
            path.chmod(0o600)
            path.write_text(text)


def _previous_token(work_dir: Path) -> str | None:
    """The dev user's token of the last run, so configured clients keep working."""
    with contextlib.suppress(OSError):
        for line in (work_dir / GATEWAY_ENV).read_text().splitlines():
            key, _, value = line.partition("=")
            if key == TOKEN_ENV and re.fullmatch(r"[A-Za-z0-9_-]{32,128}", value):
                return value
    return None


def _gateway_port(wanted: int) -> tuple[int, str]:
    """`wanted` if it can be bound on 127.0.0.1 (as uvicorn binds: SO_REUSEADDR), else a free one."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", wanted))
        except OSError:
            port = free_port()
            return port, f"   (port {wanted} is taken: using {port}; --gateway-port chooses)"
    return wanted, ""


# --------------------------------------------------------------------------- admission


# --------------------------------------------------------------------------- the MCP example


async def _mcp_example(gateway: Any, token: str, timeout: float = 240) -> dict[str, Any]:
    """One `codex` tool call through the gateway as the dev user (SDK client, streamable
    HTTP, bearer token); a 'running' answer is followed with codex-session-info."""

    def structured(result: Any) -> dict[str, Any]:
        if result.is_error:
            raise SystemExit(f"the MCP example failed: {result.content}")
        return dict(result.structured_content or {})

    async with gateway.client(token) as mcp:
        args = {"prompt": MCP_EXAMPLE_PROMPT, "sandbox": "read-only", "reasoning_effort": "low"}
        out = structured(await mcp.call_tool("codex", args))
        deadline = time.monotonic() + timeout
        while out.get("status") == "running" and time.monotonic() < deadline:
            await asyncio.sleep(1)
            info = structured(await mcp.call_tool("codex-session-info", {"session_id": out["session_id"]}))
            out = dict(info.get("session") or out)
        return out


def _mcp_example_lines(out: dict[str, Any], user: str) -> list[str]:
    usage = out.get("usage") or {}
    cost = out.get("cost") or {}
    dollars = cost.get("actual_usd") if cost.get("actual_usd") is not None else cost.get("estimated_usd")
    answer = str(out.get("response") or out.get("message") or out.get("reason"))
    return [
        f"  mcp example     codex tool as {user}: {out.get('phase')} -- {answer[:100]!r}",
        f"                  session {out.get('session_id')}, model {out.get('model')},"
        f" usage in={usage.get('input_tokens', 0)} (cached {usage.get('cached_input_tokens', 0)})"
        f" out={usage.get('output_tokens', 0)} reasoning={usage.get('reasoning_tokens', 0)},"
        f" cost {'n/a' if dollars is None else f'${dollars:.6f}'}",
    ]


# --------------------------------------------------------------------------- the sessions system


@contextlib.contextmanager
def _sessions_system(
    cp: ControlPlane,
    work_dir: Path,
    namespace: str,
    *,
    redis_url: str | None,
    gateway_port: int,
    token: str,
) -> Iterator[tuple[list[str], GatewayAccess]]:
    """A real node, volumes, the model (fake unless CODEX_MODEL_API_KEY is set), the
    admission policies, the operator with its webhook, the gateway, and the example
    sessions (kubectl and MCP) run to Succeeded. Yields lines for the banner and how
    to reach the gateway."""
    from kubernetes import config as kube_config

    from codex_api.config import DEFAULT_PROVIDER_ID

    from .fake_model import FakeModelServer
    from .gateway_process import GATEWAY_USER, bind_gateway, gateway_kubeconfig, start_gateway
    from .images import build_problems, load_into
    from .local_volumes import LocalVolumeProvisioner
    from .model_proxy_process import start_model_proxy
    from .node import TestNode, ensure_kubelet, host_problems, node_env
    from .operator_process import operator_kubeconfig, start_operator
    from .system import (
        SHIPPED_ADMISSION,
        ModelEndpoint,
        fake_endpoint,
        install_admission,
        install_webhook,
        model_proxy_config,
        operator_config,
        prepare_sessions_namespace,
    )

    problems = host_problems() + build_problems()
    if problems:
        raise SystemExit("cannot run the node here: " + "; ".join(problems) + " (run `make deps` as root)")
    with contextlib.ExitStack() as stack:
        ensure_kubelet(cp.bin_dir)
        node = TestNode(work_dir / "node", cp.bin_dir, name="codex-dev-node", taints=())
        stack.callback(node.stop)
        node.start(cp)
        if node.cluster_network_off:
            print(f"[node] no Services or cluster DNS on {node.name}: {node.cluster_network_off}", flush=True)
        enforced = node.network_policy is not None
        if not enforced:
            # The other node's kube-proxy still answers 10.96.0.1 for these pods, and
            # nothing enforces their policies: the runner's fence would refuse every turn.
            print(
                f"[node] NetworkPolicy is not enforced on {node.name}: runners skip their "
                "network fence here (network_fence_seconds = 0)",
                flush=True,
            )
        refs = load_into(node)
        kube_client = kube_config.new_client_from_config(config_file=str(cp.kubeconfig("admin")))
        volumes = LocalVolumeProvisioner(kube_client, work_dir / "volumes").start()
        stack.callback(volumes.stop)
        bridge_ip = node_env()["NODE_BRIDGE_ADDR"].split("/")[0]
        api_key = os.environ.get("CODEX_MODEL_API_KEY")
        if api_key:
            endpoint = ModelEndpoint(
                # What an install uses by default (Codex refuses a provider table named "openai").
                DEFAULT_PROVIDER_ID,
                os.environ.get("CODEX_MODEL_BASE_URL", "https://api.openai.com/v1"),
                (),
                (443,),
                os.environ.get("CODEX_MODEL", "gpt-5-codex"),
            )
            model_line = f"{endpoint.base_url} (real model {endpoint.model}, key from CODEX_MODEL_API_KEY)"
        else:
            model = FakeModelServer(port=free_port(), host=bridge_ip).start()
            stack.callback(model.stop)
            endpoint = fake_endpoint(model.host, model.port)
            model_line = f"{model.url} (fake model; set CODEX_MODEL_API_KEY for a real one)"
        # The model proxy holds the key, as in the chart; runners get a credential of their own.
        proxy = start_model_proxy(
            cp,
            work_dir,
            model_proxy_config(endpoint),
            provider_keys={"CODEX_MODEL_API_KEY": api_key or "fake-key"},
            redis_url=redis_url,
            host=bridge_ip,
        )
        stack.callback(proxy.stop)
        prepare_sessions_namespace(cp, kube_client, namespace, None)
        operator_kc = operator_kubeconfig(cp, work_dir)
        gateway_kc = gateway_kubeconfig(cp, work_dir)
        bind_gateway(cp, namespace)
        install_admission(cp, kube_client, namespace, KUBECTL_USERS)

        kubernetes_extra, extra = operator_config(
            endpoint,
            refs["runner"],
            tolerate_test_node=False,
            auto_approve=False,
            network_enforced=enforced,
            model_proxy=(proxy.base, f"{bridge_ip}/32"),
        )
        assert cp.certs is not None
        webhook_cert, webhook_key = cp.certs.issue(work_dir / "webhook", "operator-webhook", "IP:127.0.0.1")
        webhook_port = free_port()
        operator = start_operator(
            cp,
            operator_kc,
            namespace,
            work_dir,
            kubernetes_extra=kubernetes_extra,
            extra_config=extra,
            webhook_port=webhook_port,
            webhook_cert=webhook_cert,
            webhook_key=webhook_key,
            trusted_requesters=[GATEWAY_USER],
            env=proxy.operator_env,
        )
        stack.callback(operator.stop)
        install_webhook(cp, kube_client, namespace, webhook_port)

        # The gateway as an install runs it: its ServiceAccount, the operator's config, Redis.
        gateway = start_gateway(
            cp,
            namespace,
            work_dir,
            {token: {"user": DEV_USER, "groups": []}},
            kubeconfig=gateway_kc,
            config_file=work_dir / f"operator-{namespace}.toml",
            redis_url=redis_url,
            port=gateway_port,
        )
        stack.callback(gateway.stop)
        access = GatewayAccess(
            gateway.url, token, DEV_USER, f"http://127.0.0.1:{gateway.metrics_port}/metrics"
        )

        # The examples: one with kubectl (as admin), one through MCP (as the dev user), side by side.
        example = REPO_ROOT / "examples" / "session-read-only.yaml"
        cp.kubectl("apply", "-n", namespace, "-f", str(example))
        mcp_out = asyncio.run(_mcp_example(gateway, token))
        status = _wait_example(cp, namespace, "hello-codex")
        pids = {
            **node.pids(),
            "codex-operator": operator.proc.pid,
            "codex-gateway": gateway.proc.pid,
            "codex-model-proxy": proxy.proc.pid,
        }
        lines = [
            f"  node            {node.name} (kubelet + containerd, images {', '.join(refs.values())})",
            f"  model           {model_line}",
            f"  model proxy     {proxy.base} (holds the key; runners get a per-session credential),"
            f" metrics {proxy.base}/metrics",
            f"  operator        metrics http://127.0.0.1:{operator.metrics_port}/metrics,"
            f" identity webhook https://127.0.0.1:{webhook_port}",
            f"  admission       {SHIPPED_ADMISSION.relative_to(REPO_ROOT)}: approvers {APPROVERS_GROUP},"
            f" trusted requester {GATEWAY_USER}",
            f"  gateway         {gateway.url} as {GATEWAY_USER}, Redis {redis_url or '(none)'}",
            f"  gateway metrics {access.metrics_url}",
            "  node pids       " + " ".join(f"{k}={v}" for k, v in pids.items() if v),
            f"  example         kubectl get cxs hello-codex -n {namespace}: {status.get('phase')}"
            f" -- {str(status.get('response') or status.get('message'))[:100]!r}",
            *_mcp_example_lines(mcp_out, DEV_USER),
        ]
        if status.get("phase") != "Succeeded":
            raise SystemExit("the kubectl example session did not succeed:\n" + "\n".join(lines))
        if mcp_out.get("phase") != "Succeeded":
            raise SystemExit(
                "the MCP example session did not succeed:\n"
                + "\n".join(lines)
                + f"\n--- gateway log ---\n{gateway.proc.tail(40)}"
            )
        yield lines, access


def _wait_example(cp: ControlPlane, namespace: str, name: str, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        out = cp.kubectl("get", "cxs", name, "-n", namespace, "-o", "json", check=False)
        if out.returncode == 0:
            status = json.loads(out.stdout).get("status") or {}
            if status.get("phase") in ("Succeeded", "Failed", "TimedOut", "Denied", "Cancelled"):
                return status
        time.sleep(0.5)
    return status


def _banner(
    cp: ControlPlane,
    redis: RedisServer | None,
    work_dir: Path,
    summary: list[str],
    access: GatewayAccess | None,
    port_note: str = "",
) -> str:
    kubeconfig = work_dir / "kubeconfig"
    kubectl = cp.bin_dir / "kubectl"
    pids = {**cp.pids(), **({"redis-server": redis.proc.pid} if redis and redis.proc else {})}
    users = ", ".join(f"{u.name}[{','.join(u.groups) or '-'}]" for u in cp.users.values())
    kubeconfigs = cp.work_dir / "kubeconfigs"
    lines = [
        "",
        "codex-k8s-operator development environment",
        f"  kube-apiserver  {cp.server} (Kubernetes {cp.version()})",
        f"  kubeconfig      {kubeconfig}   (admin; per user: {kubeconfigs}/<user>.yaml)",
        f"  users           {users}",
        f"  redis           {redis.url if redis else '(not started)'}",
        f"  logs            {cp.logs_dir}",
        f"  pids            {' '.join(f'{name}={pid}' for name, pid in pids.items())}",
        *summary,
    ]
    if access is not None:
        lines += [
            "",
            f"MCP gateway (user {access.user}; also in {work_dir / GATEWAY_ENV} and {work_dir / MCP_JSON}):",
            f"  MCP URL       {access.url}{port_note}",
            f"  token         {access.token}",
            f"  metrics       {access.metrics_url}",
            *access.client_lines(),
        ]
    lines += [
        "",
        "Try:",
        f"  export KUBECONFIG={kubeconfig}",
        f"  alias kubectl={kubectl}",
        "  kubectl get cxs -A",
        "  kubectl logs -n codex-sessions hello-codex-runner-1",
        "  kubectl apply -n codex-sessions -f examples/session-isolated-reply.yaml",
        "  kubectl get cxar -n codex-sessions",
        f"  kubectl --kubeconfig {kubeconfigs}/alice.yaml -n codex-sessions patch cxar NAME --type merge"
        """ -p '{"spec":{"decision":"Approved"}}'""",
        "  kubectl explain cxs.spec",
        "",
        "Ctrl-C stops everything.",
    ]
    return "\n".join(lines)


def up(args: argparse.Namespace) -> int:
    work_dir: Path = args.work_dir.resolve()
    token = _previous_token(work_dir) or secrets.token_hex(24)
    if work_dir.exists():
        shutil.rmtree(work_dir)  # state of an earlier run: its processes died with it
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    cp = ControlPlane(work_dir / "control-plane", ensure_binaries(), address=api_server_address())
    redis: RedisServer | None = None
    stack = contextlib.ExitStack()
    summary: list[str] = []
    access: GatewayAccess | None = None
    try:
        started = time.monotonic()
        cp.start()
        cp.install_crds(REPO_ROOT / "crds")
        if not args.no_redis:
            redis = RedisServer(work_dir / "redis").start()
        for user in cp.users:
            cp.kubeconfig(user)
        kubeconfig = work_dir / "kubeconfig"
        shutil.copy(cp.kubeconfig("admin"), kubeconfig)
        os.chmod(kubeconfig, 0o600)
        port_note = ""
        if not args.no_node:
            gateway_port, port_note = _gateway_port(args.gateway_port)
            summary, access = stack.enter_context(
                _sessions_system(
                    cp,
                    work_dir,
                    args.namespace,
                    redis_url=redis.url if redis else None,
                    gateway_port=gateway_port,
                    token=token,
                )
            )
            access.write(work_dir, kubeconfig)
        print(_banner(cp, redis, work_dir, summary, access, port_note), flush=True)
        print(f"started in {time.monotonic() - started:.1f}s", flush=True)
        print(READY_LINE, flush=True)
        while not args.exit_after_ready and not stop.wait(1.0):
            cp.check_alive()
        return 0
    finally:
        print("stopping ...", flush=True)
        stack.close()
        if redis:
            redis.stop()
        cp.stop()
        print("stopped", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "up":
        return up(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
