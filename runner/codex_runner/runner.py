"""Run one turn: write Codex's config, run the real Codex CLI with stdin
closed, stream every JSONL event to stdout (so `kubectl logs` shows
progress), then print one framed result line and write a bounded copy to
the termination message. The exit code says what happened.

A wall-bounce turn runs Codex once per provider, in order, in the same
CODEX_HOME and workspace (read-only), each run its own thread, with a
`{"type":"codex-runner","wall_bounce_provider":...}` line before each
run's events; then the answers are compared (consensus.py) and one frame
reports them all."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import IO, Any

from codex_api.result import (
    EXIT_CODEX_MISSING,
    EXIT_COMPLETED,
    EXIT_CONFIG_ERROR,
    EXIT_INTERNAL,
    EXIT_NETWORK_UNFENCED,
    EXIT_TURN_FAILED,
    TERMINATION_MESSAGE_PATH,
    RunnerResult,
    is_budget_refusal,
)
from codex_api.session import Usage

from .consensus import wall_bounce_result
from .contract import TurnSettings, WallBounceProvider, WallBounceSettings
from .events import TurnAccumulator, subtract
from .invocation import Invocation, build_invocation
from .network_fence import wait_until_fenced

STATE_DIR = "codex-runner"  # inside CODEX_HOME, on the conversation's volume


def codex_binary() -> str | None:
    return os.environ.get("CODEX_BIN") or shutil.which("codex")


def probe_inner_sandbox(codex_bin: str, workspace: str, env: dict[str, str]) -> bool:
    """Whether Codex's own bubblewrap sandbox works here (`codex sandbox -- true`,
    read-only by default); it only ever adds to the pod's boundary."""
    if os.environ.get("CODEX_RUNNER_INNER_SANDBOX") in ("0", "1"):
        return os.environ["CODEX_RUNNER_INNER_SANDBOX"] == "1"
    try:
        out = subprocess.run(
            [codex_bin, "sandbox", "--", "true"],
            cwd=workspace,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=15,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0


def prepare_home(settings: TurnSettings, codex_bin: str) -> tuple[dict[str, str], bool]:
    """Codex's home and HOME made, the workspace checked (OSError if missing); the
    environment Codex runs with, and whether its inner sandbox works here."""
    codex_home = Path(settings.codex_home)
    workspace = Path(settings.workspace)
    codex_home.mkdir(parents=True, exist_ok=True)
    Path(os.environ.get("HOME", "/tmp/home")).mkdir(parents=True, exist_ok=True)
    if not workspace.is_dir():
        raise OSError(f"workspace {workspace} does not exist")
    env = {**os.environ, "CODEX_HOME": str(codex_home)}
    return env, probe_inner_sandbox(codex_bin, str(workspace), env)


def write_codex_config(codex_home: Path, invocation: Invocation) -> None:
    """Codex's config.toml and the files it names, into its home."""
    (codex_home / "config.toml").write_text(invocation.config_toml)
    for name, text in invocation.files.items():
        (codex_home / name).write_text(text)


def _previous_usage(codex_home: Path, thread_id: str | None) -> Usage | None:
    if not thread_id:
        return None
    path = codex_home / STATE_DIR / f"usage-{thread_id}.json"
    try:
        return Usage.model_validate_json(path.read_text())
    except (OSError, ValueError):
        return None


def _save_usage(codex_home: Path, thread_id: str | None, usage: Usage | None) -> None:
    if not thread_id or usage is None:
        return
    directory = codex_home / STATE_DIR
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"usage-{thread_id}.json").write_text(usage.model_dump_json())


def _emit(result: RunnerResult, out: IO[str], termination_path: str) -> None:
    out.write(result.frame() + "\n")
    out.flush()
    with contextlib.suppress(OSError):  # outside a pod there may be no termination log
        Path(termination_path).write_text(result.bounded_frame())


def log_event(out: IO[str], message: str, **fields: Any) -> None:
    out.write(json.dumps({"type": "codex-runner", "message": message, **fields}) + "\n")
    out.flush()


class _Stop:
    """SIGTERM while the turn runs (the pod is being deleted): pass it to Codex,
    let it stop and report, and start no further wall-bounce run."""

    def __init__(self) -> None:
        self.requested = False
        self.proc: subprocess.Popen[str] | None = None

    def __call__(self, signum: int, _frame: Any) -> None:
        self.requested = True
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signum)


def run_turn(
    settings: TurnSettings, *, out: IO[str] | None = None, termination_path: str | None = None
) -> int:
    out = out or sys.stdout
    termination_path = termination_path or os.environ.get("CODEX_TERMINATION_LOG", TERMINATION_MESSAGE_PATH)
    started = time.monotonic()
    codex_bin = codex_binary()
    if codex_bin is None or not os.access(codex_bin, os.X_OK):
        result = RunnerResult(
            outcome="codex_missing",
            exit_code=EXIT_CODEX_MISSING,
            errors=[f"codex binary not found ({codex_bin or 'not on PATH'})"],
        )
        _emit(result, out, termination_path)
        return EXIT_CODEX_MISSING

    if settings.network_fence_seconds is not None:
        fence = wait_until_fenced(settings.network_fence_seconds)
        log_event(
            out,
            "network fence",
            fenced=fence.fenced,
            target=fence.target,
            probes=fence.probes,
            waited_seconds=fence.waited_seconds,
            detail=fence.detail,
        )
        if not fence.fenced:
            result = RunnerResult(
                outcome="network_unfenced", exit_code=EXIT_NETWORK_UNFENCED, errors=[fence.detail]
            )
            _emit(result, out, termination_path)
            return EXIT_NETWORK_UNFENCED

    try:
        env, inner = prepare_home(settings, codex_bin)
    except OSError as err:
        result = RunnerResult(outcome="config_error", exit_code=EXIT_CONFIG_ERROR, errors=[str(err)])
        _emit(result, out, termination_path)
        return EXIT_CONFIG_ERROR

    stop = _Stop()
    previous_handler = signal.signal(signal.SIGTERM, stop)
    try:
        if settings.wall_bounce is None:
            result = _run_codex(settings, codex_bin=codex_bin, env=env, inner=inner, out=out, stop=stop)
        else:
            result = _run_wall_bounce(
                settings, settings.wall_bounce, codex_bin=codex_bin, env=env, inner=inner, out=out, stop=stop
            )
    except OSError as err:  # writing Codex's config
        result = RunnerResult(outcome="config_error", exit_code=EXIT_CONFIG_ERROR, errors=[str(err)])
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
    result = result.model_copy(update={"duration_seconds": round(time.monotonic() - started, 3)})
    _emit(result, out, termination_path)
    return result.exit_code


def provider_settings(settings: TurnSettings, provider: WallBounceProvider) -> TurnSettings:
    """One wall-bounce run: the turn's settings with this provider's endpoint, key and model.

    wall_bounce stays set, so Codex's config keeps every provider's key from
    the commands the model runs."""
    return dataclasses.replace(
        settings,
        provider_id=provider.provider_id,
        base_url=provider.base_url,
        api_key_env=provider.api_key_env,
        model=provider.model,
    )


def _run_wall_bounce(
    settings: TurnSettings,
    wall_bounce: WallBounceSettings,
    *,
    codex_bin: str,
    env: dict[str, str],
    inner: bool,
    out: IO[str],
    stop: _Stop,
) -> RunnerResult:
    keys = {settings.api_key_env, *(p.api_key_env for p in wall_bounce.providers)}
    runs: list[tuple[WallBounceProvider, RunnerResult]] = []
    for provider in wall_bounce.providers:
        if stop.requested:
            runs.append(
                (
                    provider,
                    RunnerResult(
                        outcome="turn_failed",
                        exit_code=EXIT_TURN_FAILED,
                        errors=["not run: the runner was asked to stop"],
                    ),
                )
            )
            continue
        out.write(json.dumps({"type": "codex-runner", "wall_bounce_provider": provider.provider_id}) + "\n")
        out.flush()
        # Each Codex sees only its own provider's key.
        own_env = {k: v for k, v in env.items() if k not in keys or k == provider.api_key_env}
        started = time.monotonic()
        run = _run_codex(
            provider_settings(settings, provider),
            codex_bin=codex_bin,
            env=own_env,
            inner=inner,
            out=out,
            stop=stop,
        )
        runs.append(
            (provider, run.model_copy(update={"duration_seconds": round(time.monotonic() - started, 3)}))
        )
    return wall_bounce_result(wall_bounce, runs)


def _run_codex(
    settings: TurnSettings, *, codex_bin: str, env: dict[str, str], inner: bool, out: IO[str], stop: _Stop
) -> RunnerResult:
    """One `codex exec`: write its config, run it, stream its events to ``out``; the result, not emitted."""
    codex_home = Path(settings.codex_home)
    invocation = build_invocation(settings, codex_bin=codex_bin, inner_sandbox=inner)
    write_codex_config(codex_home, invocation)
    log_event(
        out,
        "starting codex",
        sandbox=settings.sandbox,
        inner_sandbox=inner,
        resume=bool(settings.resume_thread_id),
        model=settings.model,
    )

    acc = TurnAccumulator(thread_id=settings.resume_thread_id)
    stderr_tail: deque[str] = deque(maxlen=20)
    proc = subprocess.Popen(
        invocation.argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=settings.workspace,
        env=env,
        text=True,
        bufsize=1,
    )
    stop.proc = proc

    def forward_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            stderr_tail.append(line.rstrip())
            sys.stderr.write(line)
            sys.stderr.flush()

    stderr_thread = threading.Thread(target=forward_stderr, daemon=True)
    stderr_thread.start()
    if stop.requested:  # SIGTERM came between the runs' start and here
        proc.terminate()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(line if line.endswith("\n") else line + "\n")
            out.flush()
            acc.feed(line)
        code = proc.wait()
    finally:
        stop.proc = None
    stderr_thread.join(timeout=2)  # the tail explains a failure

    previous = _previous_usage(codex_home, acc.thread_id) if settings.resume_thread_id else None
    usage = subtract(acc.cumulative_usage, previous) if acc.cumulative_usage else Usage()
    _save_usage(codex_home, acc.thread_id, acc.cumulative_usage)
    if code == 0 and acc.turn_completed and not acc.turn_failed:
        outcome, exit_code = "completed", EXIT_COMPLETED
    elif code == 2:
        outcome, exit_code = "config_error", EXIT_CONFIG_ERROR
    elif code in (0, 1) or acc.turn_failed:
        outcome, exit_code = "turn_failed", EXIT_TURN_FAILED
    else:
        outcome, exit_code = "internal_error", EXIT_INTERNAL
    errors = list(acc.errors)
    if outcome == "turn_failed" and any(is_budget_refusal(e) for e in errors):
        outcome = "budget_exceeded"  # the model proxy refused the next request: the budget is spent
    if outcome != "completed" and not errors:
        errors = [line for line in stderr_tail if line][-3:] or [f"codex exited with {code}"]
    return RunnerResult(
        outcome=outcome,
        thread_id=acc.thread_id,
        final_message=acc.final_message,
        usage=usage,
        commands=acc.commands,
        file_changes=acc.file_changes,
        errors=errors,
        exit_code=exit_code,
    )
