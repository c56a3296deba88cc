"""`codex-devenv up`: the local system for `make dev`.

Starts the real control plane (etcd, kube-apiserver, controller-manager,
scheduler) with the CRDs installed, and a real Redis, writes a kubeconfig,
prints how to use them, prints a line `ready` (so scripts and tests can wait
for it), and keeps everything running until Ctrl-C or SIGTERM, then stops
every process it started.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from .assets import REPO_ROOT, ensure_binaries
from .controlplane import ControlPlane
from .redis_server import RedisServer

READY_LINE = "ready"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="codex-devenv", description="Local development environment.")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the local system and keep it running until Ctrl-C")
    up.add_argument("--work-dir", type=Path, default=REPO_ROOT / ".devenv", help="state, logs, kubeconfigs")
    up.add_argument("--no-redis", action="store_true", help="do not start redis-server")
    up.add_argument(
        "--exit-after-ready",
        action="store_true",
        help="stop everything right after reaching ready (smoke test)",
    )
    return parser


def _banner(cp: ControlPlane, redis: RedisServer | None, work_dir: Path) -> str:
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
        "",
        "Try:",
        f"  export KUBECONFIG={kubeconfig}",
        f"  alias kubectl={kubectl}",
        "  kubectl apply -f examples/session-read-only.yaml",
        "  kubectl get cxs",
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
        print(_banner(cp, redis, work_dir), flush=True)
        print(f"started in {time.monotonic() - started:.1f}s", flush=True)
        print(READY_LINE, flush=True)
        while not args.exit_after_ready and not stop.wait(1.0):
            cp.check_alive()
        return 0
    finally:
        print("stopping ...", flush=True)
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
