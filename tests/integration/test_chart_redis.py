"""What ships is tested: the in-cluster Redis exactly as the chart (and the
kustomize kind overlay) renders it — its container's command, arguments and
environment from the rendered Deployment, its password from the rendered
Secret — run with Debian's redis-server, and the gateway's own Redis client
with the URL the rendered gateway Deployment builds from that Secret.

Only what a pod has and this machine has not is changed: /data (the pod's
emptyDir) becomes a temporary directory, and `--port N --bind 127.0.0.1` are
appended (the pod listens on 6379 of its own network namespace). The
kubelet's part is done by hand as the kubelet does it: secretKeyRef values
from the Secret, $(VAR) references expanded from the variables before.

An unauthenticated client, and one with a wrong password, are refused
(NOAUTH / WRONGPASS); the gateway's client with the Secret's password works;
the password appears in no argument of the running process."""

from __future__ import annotations

import base64
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio

from codex_api.config import parse_config
from codex_devenv import helm
from codex_devenv.process import ManagedProcess, free_port, wait_for
from codex_gateway.guard import Guard, redis_url_from_env

SYSTEM = "codex-system"
Objects = list[dict[str, Any]]


def _find(objects: Objects, kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def _container(objects: Objects, deployment: str) -> dict[str, Any]:
    return dict(_find(objects, "Deployment", deployment)["spec"]["template"]["spec"]["containers"][0])


def kubelet_env(container: dict[str, Any], secrets: dict[str, dict[str, str]]) -> dict[str, str]:
    """The container's environment as the kubelet builds it: values from
    secretKeyRef, and $(VAR) expanded from the variables defined before it."""
    env: dict[str, str] = {}
    for var in container.get("env", []):
        if "valueFrom" in var:
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = base64.b64decode(secrets[ref["name"]]["data"][ref["key"]]).decode()
        else:
            env[var["name"]] = re.sub(
                r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m[1], m[0]), var["value"]
            )
    return env


def _chart() -> Objects:
    return helm.template()


def _kind_overlay(work: Path) -> Objects:
    """The kind overlay with its generated files, as `make kind-certs` makes them."""
    root = helm.manifests_with_generated_files(work / "manifests")
    return helm.kustomize(root / "overlays" / "kind")


class ShippedRedis:
    def __init__(self, objects: Objects, work: Path) -> None:
        self.objects = objects
        self.container = _container(objects, "codex-redis")
        self.secrets = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Secret"}
        self.env = kubelet_env(self.container, self.secrets)
        self.password = self.env["REDISCLI_AUTH"]
        self.port = free_port()
        self.work = work
        self.data = work / "data"
        self.data.mkdir()
        self.proc: ManagedProcess | None = None

    def argv(self) -> list[str]:
        argv = [*self.container["command"], *self.container["args"]]
        assert argv.count("/data") == 1  # --dir /data, the pod's emptyDir
        argv[argv.index("/data")] = str(self.data)
        return [*argv, "--port", str(self.port), "--bind", "127.0.0.1"]

    def start(self) -> ShippedRedis:
        assert shutil.which("redis-server"), "Debian's redis-server (make deps installs it)"
        env = {"PATH": os.environ["PATH"], **self.env}
        self.proc = ManagedProcess("shipped-redis", self.argv(), self.work / "redis.log", env=env).start()

        def listening() -> bool:
            assert self.proc is not None
            self.proc.check_alive()
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True

        wait_for(listening, timeout=20, what="the shipped redis-server")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


def raw(port: int, command: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(command)
        return s.recv(256)


@pytest.fixture(params=["chart", "kind-overlay"])
def shipped(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ShippedRedis]:
    objects = _chart() if request.param == "chart" else _kind_overlay(tmp_path)
    server = ShippedRedis(objects, tmp_path).start()
    try:
        yield server
    finally:
        server.stop()


async def test_the_shipped_redis_requires_its_password(shipped: ShippedRedis) -> None:
    port, password = shipped.port, shipped.password
    assert len(password) >= 32

    # Unauthenticated: refused, whatever it asks.
    assert raw(port, b"PING\r\n").startswith(b"-NOAUTH")
    assert raw(port, b"KEYS *\r\n").startswith(b"-NOAUTH")
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=port, socket_timeout=5).ping()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=port, password="not-" + password, socket_timeout=5).ping()

    # The gateway's client with the URL its rendered Deployment builds.
    gateway_env = kubelet_env(_container(shipped.objects, "codex-gateway"), shipped.secrets)
    url = redis_url_from_env(parse_config(""), gateway_env)
    assert url == f"redis://:{password}@codex-redis.{SYSTEM}.svc:6379/0"
    local = url.replace(f"codex-redis.{SYSTEM}.svc:6379", f"127.0.0.1:{port}")
    guard = Guard(parse_config("[cache]\nenabled = true\n"), local)
    try:
        assert await guard.ping(), guard.status()
        await guard.check_rate("alice")
        assert await guard.cache_put("alice", "codex", {"prompt": "p"}, {"answer": 42})
        assert await guard.cache_get("alice", "codex", {"prompt": "p"}) == {"answer": 42}
    finally:
        await guard.close()
    # ...and the same client without the password is refused.
    anonymous = Guard(parse_config(""), f"redis://127.0.0.1:{port}/0")
    try:
        assert not await anonymous.ping()
        assert "Authentication" in str(anonymous.status().get("last_error")), anonymous.status()
    finally:
        await anonymous.close()

    # What Redis runs with: protected mode on, the Secret's password, nothing persisted.
    client = redis.asyncio.Redis(host="127.0.0.1", port=port, password=password, socket_timeout=5)
    try:
        assert await client.config_get("protected-mode") == {"protected-mode": "yes"}
        assert await client.config_get("requirepass") == {"requirepass": password}
        assert await client.config_get("save") == {"save": ""}
        assert await client.config_get("appendonly") == {"appendonly": "no"}
        assert len(await client.keys("codex-mcp:*")) >= 1  # the gateway's keys went in
    finally:
        await client.aclose()

    # The password is in no argument of the running process (it came on stdin).
    assert shipped.proc is not None and shipped.proc.pid is not None
    cmdline = Path(f"/proc/{shipped.proc.pid}/cmdline").read_bytes()
    assert b"redis-server" in cmdline and password.encode() not in cmdline
    assert password not in " ".join(shipped.argv())
    assert password not in Path(shipped.work / "redis.log").read_text()


def test_the_readiness_probe_needs_the_password(shipped: ShippedRedis) -> None:
    """The rendered probe (its shell line, pointed at this port): ready with the
    container's environment, not ready without the password."""
    command = shipped.container["readinessProbe"]["exec"]["command"]
    assert command[:2] == ["sh", "-c"] and command[2].startswith("redis-cli ")
    line = command[2].replace("redis-cli ", f"redis-cli -p {shipped.port} ", 1)
    env = {"PATH": os.environ["PATH"], **shipped.env}
    assert subprocess.run(["sh", "-c", line], env=env, timeout=30).returncode == 0
    without = {k: v for k, v in env.items() if k != "REDISCLI_AUTH"}
    assert subprocess.run(["sh", "-c", line], env=without, timeout=30).returncode != 0
    wrong = {**env, "REDISCLI_AUTH": "x" * 32}
    assert subprocess.run(["sh", "-c", line], env=wrong, timeout=30, capture_output=True).returncode != 0


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("", "at least 16 characters"),
        ("short-password", "at least 16 characters"),
        ("a password with spaces in it", "only letters, digits"),
        ('quote"and$(dollar)and-more', "only letters, digits"),
        ("line\nrequirepass-override-attempt", "only letters, digits"),
    ],
    ids=["empty", "short", "spaces", "shell-and-quotes", "newline"],
)
def test_the_shipped_redis_refuses_to_start_with_a_bad_password(
    password: str, message: str, tmp_path: Path
) -> None:
    """An existing Secret with an unusable password stops Redis (fails closed)
    instead of starting it without, or with a different, password."""
    server = ShippedRedis(_chart(), tmp_path)
    env = {"PATH": os.environ["PATH"], **server.env, "REDISCLI_AUTH": password}
    out = subprocess.run(server.argv(), env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode != 0 and message in out.stderr, out
    with pytest.raises(OSError):
        raw(server.port, b"PING\r\n")
