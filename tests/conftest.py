"""Shared fixtures: a real control plane and a real Redis, started once per
test session, and a fresh namespace per test. Unit tests never touch them
(the fixtures are lazy), so `make test-unit` needs no binaries."""

from __future__ import annotations

import functools
import re
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

RUNNER_UID = 10001  # the runner image's user (runner/Dockerfile)

if TYPE_CHECKING:
    from codex_devenv.controlplane import ControlPlane
    from codex_devenv.redis_server import RedisServer

REPO_ROOT = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/integration/" in str(item.path) or "/security/" in str(item.path):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    from codex_devenv.assets import ensure_binaries
    from codex_devenv.cluster_network import api_server_address
    from codex_devenv.controlplane import ControlPlane

    # On the pod bridge when the host has one: pods reach the API server as in a real cluster.
    cp = ControlPlane(
        tmp_path_factory.mktemp("control-plane"), ensure_binaries(), address=api_server_address()
    )
    try:
        cp.start()
        cp.install_crds(REPO_ROOT / "crds")
        yield cp
    finally:
        pids = cp.pids()
        cp.stop()
        print(f"\n[harness] stopped control plane processes {pids}")


@pytest.fixture(scope="session")
def kube_client(control_plane: ControlPlane) -> Any:
    """An admin ApiClient of the official kubernetes client."""
    from kubernetes import config

    return config.new_client_from_config(config_file=str(control_plane.kubeconfig("admin")))


@pytest.fixture(scope="session")
def client_for(control_plane: ControlPlane) -> Any:
    """client_for("alice") -> an ApiClient authenticated as that static-token user."""
    from kubernetes import config

    cache: dict[str, Any] = {}

    def make(user: str) -> Any:
        if user not in cache:
            cache[user] = config.new_client_from_config(config_file=str(control_plane.kubeconfig(user)))
        return cache[user]

    return make


@pytest.fixture
def namespace(request: pytest.FixtureRequest, kube_client: Any) -> Iterator[str]:
    """A namespace of the test's own, deleted afterwards."""
    from kubernetes import client

    base = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"t-{base}-{secrets.token_hex(3)}"
    core = client.CoreV1Api(kube_client)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name, propagation_policy="Background")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    from codex_devenv.redis_server import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def operator_kubeconfig(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A kubeconfig holding a token for the operator's own ServiceAccount (manifests/base RBAC)."""
    from codex_devenv.operator_process import operator_kubeconfig as make

    return make(control_plane, tmp_path_factory.mktemp("operator"))


@pytest.fixture
def run_operator(
    control_plane: ControlPlane, operator_kubeconfig: Path, namespace: str, tmp_path: Path
) -> Iterator[Any]:
    """run_operator(limit=10, ...) starts the real operator for the test's namespace."""
    from codex_devenv.operator_process import bind_operator, start_operator

    bind_operator(control_plane, namespace)
    started: list[Any] = []

    def start(**kwargs: Any) -> Any:
        op = start_operator(control_plane, operator_kubeconfig, namespace, tmp_path, **kwargs)
        started.append(op)
        return op

    yield start
    for op in started:
        op.stop()


@pytest.fixture(scope="session")
def node_cluster(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """(control_plane, node, {image: ref}): one real kubelet+containerd node for the
    session, with the project's images imported. It is tainted, so only pods
    that tolerate it (TEST_NODE_TOLERATION) run there."""
    import os
    import secrets
    import time

    from codex_devenv.assets import ensure_binaries
    from codex_devenv.images import build_problems, load_into
    from codex_devenv.node import TestNode, ensure_kubelet, host_problems

    bin_dir = ensure_binaries()
    problems = host_problems() + build_problems()
    if problems:
        reason = "host cannot build images and run a real node: " + "; ".join(problems)
        if os.environ.get("CI") == "true":
            pytest.fail(reason + " (CI runs `make deps`, which prepares the host)")
        pytest.skip(reason)
    ensure_kubelet(bin_dir)
    node = TestNode(tmp_path_factory.mktemp("node"), bin_dir, name=f"codex-node-{secrets.token_hex(2)}")
    try:
        node.start(control_plane)
        print(f"\n[node] {node.name} ready: {node.timings}")
        started = time.monotonic()
        refs = load_into(node)
        print(f"\n[images] imported {refs} in {time.monotonic() - started:.1f}s")
        yield control_plane, node, refs
    finally:
        pids = node.pids()
        node.stop()
        print(f"\n[node] stopped {pids}")


@pytest.fixture(scope="module")
def netpol_engine(node_cluster: Any) -> Any:
    """The node's NetworkPolicy engine (kube-router's firewall,
    codex_devenv.network_policy): every node test runs under enforcement; the
    modules that test the network itself ask for it by name."""
    import os

    _, node, _ = node_cluster
    if node.network_policy is None:
        reason = f"the test node runs without NetworkPolicy enforcement ({node.cluster_network_off})"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    engine = node.network_policy
    print(
        f"\n[netpol] kube-router ready in {engine.started_in:.2f}s (left before start: {engine.removed_at_start})"
    )
    return engine


@pytest.fixture(scope="session")
def internet(node_cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The stand-in internet (codex_devenv.stand_in_internet): SUBNET on
    a veth of its own, a server at SERVER_IP in its own network namespace."""
    from codex_devenv.stand_in_internet import StandInInternet

    host = StandInInternet(tmp_path_factory.mktemp("internet")).start()
    yield host
    host.stop()


@pytest.fixture(scope="module")
def public_model(internet: Any) -> Iterator[Any]:
    """The scripted fake model at a public address as NetworkPolicy sees it
    (the stand-in internet's host end, port 443): what the shipped default
    egress rule (public addresses on 443) lets runners reach."""
    from codex_devenv import fake_model as fm
    from codex_devenv.stand_in_internet import HOST_IP

    with fm.FakeModelServer(port=443, host=HOST_IP) as server:
        yield server


@pytest.fixture
def node_ns(node_cluster: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    """A namespace enforcing PodSecurity `restricted`, as sessions namespaces do."""
    cp = node_cluster[0]
    base = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:30].strip("-")
    name = f"n-{base}-{secrets.token_hex(3)}"
    cp.kubectl("create", "namespace", name)
    cp.kubectl(
        "label",
        "namespace",
        name,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/enforce-version=latest",
    )
    yield name
    cp.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="module")
def model(node_cluster: Any) -> Iterator[Any]:
    """The scripted fake model on the pod bridge's own address: runner pods
    reach it, nothing leaves this machine."""
    from codex_devenv import fake_model as fm
    from codex_devenv.node import node_env
    from codex_devenv.process import free_port

    bridge_ip = node_env()["NODE_BRIDGE_ADDR"].split("/")[0]
    with fm.FakeModelServer(port=free_port(), host=bridge_ip) as server:
        yield server


@pytest.fixture(scope="module")
def volumes(node_cluster: Any, tmp_path_factory: pytest.TempPathFactory, kube_client: Any) -> Iterator[Path]:
    """Persistent workspaces for runner pods (a small hostPath provisioner)."""
    from codex_devenv.local_volumes import LocalVolumeProvisioner

    root = tmp_path_factory.mktemp("volumes")
    provisioner = LocalVolumeProvisioner(kube_client, root, owner_uid=RUNNER_UID).start()
    yield root
    provisioner.stop()
    provisioner.cleanup()


@pytest.fixture
def live(
    node_cluster: Any,
    node_ns: str,
    model: Any,
    volumes: Path,
    operator_kubeconfig: Path,
    redis_server: RedisServer,
    tmp_path: Path,
    kube_client: Any,
) -> Callable[..., Any]:
    """codex_devenv.live_system on the test node, in this test's namespace, with
    the module's fake model: call it with `warm=` (and `tables=`)."""
    from codex_devenv.live_system import live_system

    cp, _node, refs = node_cluster
    return functools.partial(
        live_system,
        cp,
        refs["runner"],
        node_ns,
        model,
        operator_kubeconfig,
        redis_server.url,
        tmp_path,
        kube_client,
    )
