"""Child processes that cannot outlive the harness.

Every process is started in its own session (so stop() can signal the whole
group) with PR_SET_PDEATHSIG=SIGKILL, so even a harness killed with SIGKILL
leaves no etcd or kube-apiserver behind to hold ports in the next run.
"""

from __future__ import annotations

import ctypes
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


_handed_out: set[int] = set()

# The API server's default --service-node-port-range. kube-router (the test
# node's NetworkPolicy engine) lets pods reach any LOCAL port in this range
# ahead of every policy ("allow LOCAL TCP traffic to node ports"), so a server
# of ours there (the API server, the kubelet) would be open to every runner,
# as it would be in a real cluster. Real clusters keep them out of it (6443,
# 10250); so do we.
NODE_PORT_RANGE = (30000, 32767)
FREE_PORT_LOW = 15000


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A port for a server we start. Not from the kernel's ephemeral range (what
    binding to port 0 returns): any outgoing connection may take such a port
    before our server binds it; nor from the Service NodePort range
    (NODE_PORT_RANGE). Random below both, never the same twice in this process,
    and checked free at the time."""
    low, _ = _ephemeral_range()
    top = max(min(low, NODE_PORT_RANGE[0]) - 1, FREE_PORT_LOW + 5000)
    for _ in range(200):
        port = random.randint(FREE_PORT_LOW, top)
        if port in _handed_out or NODE_PORT_RANGE[0] <= port <= NODE_PORT_RANGE[1]:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError("no free port below the ephemeral range")


def wait_for(check: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as exc:  # the thing we wait for is not up yet
            last_error = exc
        time.sleep(interval)
    raise TimeoutError(
        f"timed out after {timeout:.0f}s waiting for {what}" + (f": {last_error}" if last_error else "")
    )


class ManagedProcess:
    """One long-running child with its output in a log file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = env
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 -- owned by the child for its lifetime
        try:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        finally:
            log.close()
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            code = self.proc.returncode if self.proc else None
            raise RuntimeError(f"{self.name} exited (code {code}); last log lines:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 10.0, sig: int = signal.SIGTERM) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        self.stop(timeout=10, sig=signal.SIGKILL)
