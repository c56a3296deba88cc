"""`make dev` (the README's first command) reaches ready, serves a working
control plane, and stops every process it started on Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().split()[2] == "Z"


def test_make_dev_headless(tmp_path: Path) -> None:
    work = tmp_path / "devenv"
    proc = subprocess.Popen(
        ["make", "--no-print-directory", "dev", f"DEVENV_ARGS=--work-dir {work}"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    output: list[str] = []
    try:
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            output.append(line)
            if line.strip() == "ready":
                break
        text = "".join(output)
        assert output and output[-1].strip() == "ready", text
        pids = {
            name: int(pid)
            for line in text.splitlines()
            if line.lstrip().startswith(("pids", "node pids"))
            for name, pid in re.findall(r"(\S+)=(\d+)", line)
        }
        expected = {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "redis-server"}
        expected |= {"containerd", "kubelet", "codex-operator"}
        assert expected <= set(pids), pids
        # the example session ran through the operator, a runner pod and the real Codex CLI
        assert re.search(r"example .*hello-codex.*: Succeeded -- 'Hello from the fake model.'", text), text

        kubectl = re.search(r"alias kubectl=(\S+)", text)
        assert kubectl is not None
        env = {**os.environ, "KUBECONFIG": str(work / "kubeconfig")}
        applied = subprocess.run(
            [kubectl.group(1), "apply", "-n", "default", "-f", "examples/session-read-only.yaml"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert applied.returncode == 0, applied.stderr
        listed = subprocess.run(
            [kubectl.group(1), "get", "cxs"], env=env, capture_output=True, text=True, timeout=60
        )
        assert "hello-codex" in listed.stdout and "read-only" in listed.stdout
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            rest, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("make dev did not stop on SIGINT")
    assert "stopped" in rest
    for name, pid in pids.items():
        deadline = time.monotonic() + 10
        while not _gone(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gone(pid), f"{name} (pid {pid}) still running after make dev stopped"
