"""Harness processes never outlive the harness, even one killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from codex_devenv.process import ManagedProcess


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie still answers kill(0); it is dead for our purposes.
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().split()[2] == "Z"


def _wait_gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _gone(pid):
            return True
        time.sleep(0.05)
    return False


def test_stop_terminates_the_whole_process_group(tmp_path: Path) -> None:
    proc = ManagedProcess(
        "sh", ["sh", "-c", "sleep 300 & echo $! > child.pid; wait"], tmp_path / "log", cwd=tmp_path
    ).start()
    deadline = time.monotonic() + 5
    # The shell creates the file before it writes the pid: wait for the content.
    while not (tmp_path / "child.pid").exists() or not (tmp_path / "child.pid").read_text().strip():
        assert time.monotonic() < deadline, "the child never wrote its pid"
        time.sleep(0.02)
    grandchild = int((tmp_path / "child.pid").read_text())
    proc.stop(timeout=5)
    assert not proc.alive()
    assert _wait_gone(grandchild)


def test_children_die_when_the_harness_is_killed(tmp_path: Path) -> None:
    harness = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from codex_devenv.process import ManagedProcess
        p = ManagedProcess("sleeper", ["sleep", "300"], Path({str(tmp_path)!r}) / "log").start()
        print(p.pid, flush=True)
        time.sleep(300)
    """)
    parent = subprocess.Popen([sys.executable, "-c", harness], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child_pid = int(parent.stdout.readline())
    assert not _gone(child_pid)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    assert _wait_gone(child_pid), "the child survived its SIGKILLed parent"


def test_check_alive_reports_the_log_tail(tmp_path: Path) -> None:
    proc = ManagedProcess("failing", ["sh", "-c", "echo boom-marker; exit 3"], tmp_path / "log").start()
    assert proc.proc is not None
    proc.proc.wait()
    try:
        proc.check_alive()
    except RuntimeError as err:
        assert "code 3" in str(err) and "boom-marker" in str(err)
    else:
        raise AssertionError("check_alive did not raise")


def test_free_ports_stay_out_of_the_node_port_and_ephemeral_ranges() -> None:
    """kube-router lets every pod reach LOCAL ports in the NodePort range ahead of
    any policy: an API server or kubelet there would be open to runners (a CI run
    failed on exactly that)."""
    from codex_devenv.process import NODE_PORT_RANGE, _ephemeral_range, free_port

    low, _ = _ephemeral_range()
    ports = [free_port() for _ in range(500)]
    assert len(set(ports)) == len(ports)
    assert not [p for p in ports if NODE_PORT_RANGE[0] <= p <= NODE_PORT_RANGE[1]]
    assert not [p for p in ports if p >= low]
