"""Run `codex-runner` as a local process (the real Codex CLI on the host,
against a fake model), the way the runner tests do: a scratch HOME, TMPDIR,
CODEX_HOME and workspace, a termination-log file, and the result parsed."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codex_api.result import RunnerResult, parse_frame

from .codex_cli import codex_binary

DIR_NAMES = ("home", "workspace", "tmp", "userhome")


@dataclass
class RunnerRun:
    code: int
    stdout: str
    stderr: str
    termination: str

    @property
    def result(self) -> RunnerResult:
        frame = parse_frame(self.stdout)
        assert frame is not None, self.stdout + self.stderr
        return frame

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.stdout.splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                out.append(event)
        return out


def runner_dirs(root: Path) -> dict[str, Path]:
    """CODEX_HOME and the workspace as on the conversation volume; TMPDIR beside, never above them."""
    out = {name: root / name for name in DIR_NAMES}
    for path in out.values():
        path.mkdir()
    return out


def run_runner_process(
    argv: Sequence[str],
    dirs: dict[str, Path],
    *,
    api_key: str,
    codex_bin: str | None = None,
    extra_env: dict[str, str] | None = None,
    timeout: float = 60,
) -> RunnerRun:
    """`python -m codex_runner ARGV` with only the environment a runner pod has."""
    termination = dirs["tmp"] / "termination-log"
    termination.unlink(missing_ok=True)
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(dirs["userhome"]),
        "TMPDIR": str(dirs["tmp"]),
        "CODEX_BIN": codex_bin if codex_bin is not None else str(codex_binary()),
        "CODEX_MODEL_API_KEY": api_key,
        "CODEX_TERMINATION_LOG": str(termination),
        **(extra_env or {}),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "codex_runner", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    return RunnerRun(
        proc.returncode, proc.stdout, proc.stderr, termination.read_text() if termination.exists() else ""
    )
