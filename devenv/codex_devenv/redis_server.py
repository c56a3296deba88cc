"""A real Redis server (Debian's redis-server) on 127.0.0.1 for tests and make dev."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

from .process import ManagedProcess, free_port, wait_for


def _ping(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
        s.sendall(b"PING\r\n")
        return s.recv(16).startswith(b"+PONG")


class RedisServer:
    def __init__(self, work_dir: Path, port: int | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server not found: install Debian's redis-server (make deps does)")
        self.binary = binary
        self.work_dir = work_dir
        self.port = port or free_port()
        self.proc: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 20) -> RedisServer:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.proc = ManagedProcess(
            "redis-server",
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.work_dir),
                "--daemonize",
                "no",
                "--protected-mode",
                "yes",
            ],
            self.work_dir / "redis.log",
        ).start()
        wait_for(lambda: self._alive_and_ping(), timeout=timeout, what=f"redis-server on port {self.port}")
        return self

    def _alive_and_ping(self) -> bool:
        assert self.proc is not None
        self.proc.check_alive()
        return _ping(self.port)

    def stop(self) -> None:
        if self.proc:
            self.proc.stop()

    def restart(self) -> None:
        """Stop and start again on the same port (for Redis-outage tests)."""
        self.stop()
        self.start()
