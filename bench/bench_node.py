"""The node system the node benchmarks share: a control plane, a test node
with the project's images, the fake model on the node's bridge, Redis, and
local volumes for persistent workspaces; all stopped at the end."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import config

from codex_devenv import fake_model as fm
from codex_devenv.assets import REPO_ROOT, ensure_binaries
from codex_devenv.cluster_network import api_server_address
from codex_devenv.controlplane import ControlPlane
from codex_devenv.images import load_into
from codex_devenv.local_volumes import LocalVolumeProvisioner
from codex_devenv.node import TestNode, ensure_kubelet, node_env
from codex_devenv.process import free_port
from codex_devenv.redis_server import RedisServer

RUNNER_UID = 10001  # the runner image's user (runner/Dockerfile)


@dataclass
class BenchNode:
    work: Path
    cp: ControlPlane
    refs: dict[str, str]
    model: fm.FakeModelServer
    redis: RedisServer
    api: Any


@contextmanager
def bench_node(prefix: str) -> Iterator[BenchNode]:
    work = Path(tempfile.mkdtemp(prefix=prefix))
    cp = ControlPlane(work / "cp", ensure_binaries(), address=api_server_address()).start()
    node: TestNode | None = None
    model = redis = volumes = None
    try:
        cp.install_crds(REPO_ROOT / "crds")
        ensure_kubelet(cp.bin_dir)
        node = TestNode(work / "node", cp.bin_dir, name="codex-bench-node", taints=()).start(cp)
        refs = load_into(node)
        model = fm.FakeModelServer(
            port=free_port(), host=node_env()["NODE_BRIDGE_ADDR"].split("/")[0]
        ).start()
        redis = RedisServer(work / "redis").start()
        api = config.new_client_from_config(config_file=str(cp.kubeconfig("admin")))
        volumes = LocalVolumeProvisioner(api, work / "volumes", owner_uid=RUNNER_UID).start()
        yield BenchNode(work, cp, refs, model, redis, api)
    finally:
        if volumes:
            volumes.stop()
            volumes.cleanup()
        if redis:
            redis.stop()
        if model:
            model.stop()
        if node:
            node.stop()
        cp.stop()
