"""`codex-devenv up`: the local system for `make dev`.

Starts the real control plane (etcd, kube-apiserver, controller-manager,
scheduler) with the CRDs installed, and a real Redis, writes a kubeconfig,
prints how to use them, prints a line `ready` (so scripts and tests can wait
for it), and keeps everything running until Ctrl-C or SIGTERM, then stops
every process it started.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .assets import REPO_ROOT, ensure_binaries
from .controlplane import ControlPlane
from .process import free_port
from .redis_server import RedisServer

READY_LINE = "ready"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="codex-devenv", description="Local development environment.")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the local system and keep it running until Ctrl-C")
    up.add_argument("--work-dir", type=Path, default=REPO_ROOT / ".devenv", help="state, logs, kubeconfigs")
    up.add_argument("--no-redis", action="store_true", help="do not start redis-server")
    up.add_argument(
        "--no-node",
        action="store_true",
        help="control plane only: no kubelet, no operator, no example session",
    )
    up.add_argument("--namespace", default="codex-sessions", help="sessions namespace")
    up.add_argument(
        "--exit-after-ready",
        action="store_true",
        help="stop everything right after reaching ready (smoke test)",
    )
    return parser


@contextlib.contextmanager
def _sessions_system(cp: ControlPlane, work_dir: Path, namespace: str) -> Iterator[list[str]]:
    """A real node, volumes, the model (fake unless CODEX_MODEL_API_KEY is set), the
    operator, and the example session run to Succeeded. Yields lines for the banner."""
    from kubernetes import config as kube_config

    from .fake_model import FakeModelServer
    from .images import build_problems, load_into
    from .local_volumes import LocalVolumeProvisioner
    from .node import TestNode, ensure_kubelet, host_problems, node_env
    from .operator_process import operator_kubeconfig, start_operator
    from .system import ModelEndpoint, fake_endpoint, operator_config, prepare_sessions_namespace

    problems = host_problems() + build_problems()
    if problems:
        raise SystemExit("cannot run the node here: " + "; ".join(problems) + " (run `make deps` as root)")
    with contextlib.ExitStack() as stack:
        ensure_kubelet(cp.bin_dir)
        node = TestNode(work_dir / "node", cp.bin_dir, name="codex-dev-node", taints=())
        stack.callback(node.stop)
        node.start(cp)
        refs = load_into(node)
        kube_client = kube_config.new_client_from_config(config_file=str(cp.kubeconfig("admin")))
        volumes = LocalVolumeProvisioner(kube_client, work_dir / "volumes").start()
        stack.callback(volumes.stop)
        api_key = os.environ.get("CODEX_MODEL_API_KEY")
        if api_key:
            endpoint = ModelEndpoint(
                "openai",
                os.environ.get("CODEX_MODEL_BASE_URL", "https://api.openai.com/v1"),
                (),
                (443,),
                os.environ.get("CODEX_MODEL", "gpt-5-codex"),
            )
            model_line = f"{endpoint.base_url} (real model {endpoint.model}, key from CODEX_MODEL_API_KEY)"
        else:
            bridge_ip = node_env()["NODE_BRIDGE_ADDR"].split("/")[0]
            model = FakeModelServer(port=free_port(), host=bridge_ip).start()
            stack.callback(model.stop)
            endpoint = fake_endpoint(model.host, model.port)
            model_line = f"{model.url} (fake model; set CODEX_MODEL_API_KEY for a real one)"
        prepare_sessions_namespace(cp, kube_client, namespace, api_key or "fake-key")
        kubernetes_extra, extra = operator_config(
            endpoint, refs["runner"], tolerate_test_node=False, auto_approve=False
        )
        operator = start_operator(
            cp,
            operator_kubeconfig(cp, work_dir),
            namespace,
            work_dir,
            kubernetes_extra=kubernetes_extra,
            extra_config=extra,
        )
        stack.callback(operator.stop)
        example = REPO_ROOT / "examples" / "session-read-only.yaml"
        cp.kubectl("apply", "-n", namespace, "-f", str(example))
        status = _wait_example(cp, namespace, "hello-codex")
        lines = [
            f"  node            {node.name} (kubelet + containerd, images {', '.join(refs.values())})",
            f"  model           {model_line}",
            f"  operator        metrics http://127.0.0.1:{operator.metrics_port}/metrics",
            "  node pids       "
            + " ".join(
                f"{k}={v}" for k, v in {**node.pids(), "codex-operator": operator.proc.pid}.items() if v
            ),
            f"  example         kubectl get cxs hello-codex -n {namespace}: {status.get('phase')}"
            f" -- {str(status.get('response') or status.get('message'))[:100]!r}",
        ]
        if status.get("phase") != "Succeeded":
            raise SystemExit("the example session did not succeed:\n" + "\n".join(lines))
        yield lines


def _wait_example(cp: ControlPlane, namespace: str, name: str, timeout: float = 180) -> dict[str, Any]:
    import json

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


def _banner(cp: ControlPlane, redis: RedisServer | None, work_dir: Path, summary: list[str]) -> str:
    kubeconfig = work_dir / "kubeconfig"
    kubectl = cp.bin_dir / "kubectl"
    pids = {**cp.pids(), **({"redis-server": redis.proc.pid} if redis and redis.proc else {})}
    users = ", ".join(f"{u.name}[{','.join(u.groups) or '-'}]" for u in cp.users.values())
    lines = [
        "",
        "codex-k8s-operator development environment",
        f"  kube-apiserver  {cp.server} (Kubernetes {cp.version()})",
        f"  kubeconfig      {kubeconfig}   (admin; per user: {cp.work_dir / 'kubeconfigs'}/<user>.yaml)",
        f"  users           {users}",
        f"  redis           {redis.url if redis else '(not started)'}",
        f"  logs            {cp.logs_dir}",
        f"  pids            {' '.join(f'{name}={pid}' for name, pid in pids.items())}",
        *summary,
        "",
        "Try:",
        f"  export KUBECONFIG={kubeconfig}",
        f"  alias kubectl={kubectl}",
        "  kubectl get cxs -A",
        "  kubectl logs -n codex-sessions hello-codex-runner-1",
        "  kubectl apply -n codex-sessions -f examples/session-isolated-reply.yaml",
        "  kubectl explain cxs.spec",
        "",
        "Ctrl-C stops everything.",
    ]
    return "\n".join(lines)


def up(args: argparse.Namespace) -> int:
    work_dir: Path = args.work_dir.resolve()
    if work_dir.exists():
        shutil.rmtree(work_dir)  # state of an earlier run: its processes died with it
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    cp = ControlPlane(work_dir / "control-plane", ensure_binaries())
    redis: RedisServer | None = None
    stack = contextlib.ExitStack()
    summary: list[str] = []
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
        if not args.no_node:
            summary = stack.enter_context(_sessions_system(cp, work_dir, args.namespace))
        print(_banner(cp, redis, work_dir, summary), flush=True)
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
