"""The runner (codex-runner) around the REAL Codex CLI, against the scripted
fake model on 127.0.0.1, run as a local process: its JSONL stream, the framed
result, the termination message, per-turn usage over a resume, secrets kept
from model-run commands, and the exit code of every failure mode.

The same runner inside a real container on the test node is covered by the
end-to-end tests; here the Codex sandbox (bubblewrap works as root on these
machines) is what keeps a read-only session from writing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from codex_api.result import (
    EXIT_CODEX_MISSING,
    EXIT_COMPLETED,
    EXIT_CONFIG_ERROR,
    EXIT_NETWORK_UNFENCED,
    EXIT_TURN_FAILED,
    parse_frame,
)
from codex_devenv import fake_model as fm
from codex_devenv.runner_process import RunnerRun, run_runner_process, runner_dirs
from codex_devenv.testkit import turn_settings
from codex_runner.contract import runner_args

API_KEY = "sk-test-abcdefghijklmnopqrstuvwxyz0123456789"


@pytest.fixture
def dirs(tmp_path: Path) -> dict[str, Path]:
    return runner_dirs(tmp_path)


def run_runner(
    model: fm.FakeModelServer,
    dirs: dict[str, Path],
    prompt: str,
    *,
    sandbox: str = "isolated",
    resume: str | None = None,
    codex_bin: str | None = None,
    argv: list[str] | None = None,
) -> RunnerRun:
    if argv is None:
        settings = turn_settings(
            prompt=prompt,
            model="fake-model",
            sandbox=sandbox,
            resume_thread_id=resume,
            provider_id="fake",
            base_url=model.url,
            codex_home=str(dirs["home"]),
            workspace=str(dirs["workspace"]),
        )
        argv = runner_args(settings)
    return run_runner_process(argv, dirs, api_key=API_KEY, codex_bin=codex_bin)


def test_plain_answer_streams_events_and_ends_with_a_frame(
    fake: fm.FakeModelServer, dirs: dict[str, Path]
) -> None:
    fake.set_script(
        fm.say(
            "Hello from the runner test.",
            usage=fm.Usage(input_tokens=120, output_tokens=9, cached_tokens=20, reasoning_tokens=3),
        )
    )
    run = run_runner(fake, dirs, "Say hello")
    assert run.code == EXIT_COMPLETED, run.stderr
    kinds = [e["type"] for e in run.events()]
    assert kinds[:3] == ["codex-runner", "thread.started", "turn.started"] and "turn.completed" in kinds
    result = run.result
    assert result.outcome == "completed" and result.final_message == "Hello from the runner test."
    assert result.thread_id == run.events()[1]["thread_id"]
    assert (
        result.usage.input_tokens,
        result.usage.cached_input_tokens,
        result.usage.output_tokens,
        result.usage.reasoning_tokens,
    ) == (120, 20, 9, 3)
    assert run.stdout.splitlines()[-1] == result.frame()  # the frame is the last line
    assert parse_frame(run.termination) == result  # and the termination message carries it
    assert fake.responses_requests[0].authorization == f"Bearer {API_KEY}"
    config = (dirs["home"] / "config.toml").read_text()
    assert "model_catalog_json" in config and API_KEY not in config


def test_isolated_session_writes_the_workspace(fake: fm.FakeModelServer, dirs: dict[str, Path]) -> None:
    fake.set_script(
        fm.apply_patch(
            "*** Begin Patch\n*** Add File: factorial.py\n+def factorial(n):\n+    return 1 if n < 2 else n * factorial(n - 1)\n*** End Patch\n"
        ),
        fm.say("Wrote factorial.py"),
    )
    run = run_runner(fake, dirs, "Write factorial.py", sandbox="isolated")
    assert run.code == EXIT_COMPLETED, run.stderr
    assert (dirs["workspace"] / "factorial.py").read_text().startswith("def factorial(n):")
    assert run.result.file_changes == 1


def test_read_only_session_cannot_write_and_still_completes(
    fake: fm.FakeModelServer, dirs: dict[str, Path]
) -> None:
    fake.set_script(
        fm.exec_command("echo hi > notes.txt; echo exit=$?"),
        fm.computed(lambda req: f"The command said: {req.last_tool_output()}"),
    )
    run = run_runner(fake, dirs, "Write notes.txt", sandbox="read-only")
    assert run.code == EXIT_COMPLETED, run.stderr
    assert not (dirs["workspace"] / "notes.txt").exists()
    assert "Read-only file system" in (run.result.final_message or "")
    assert run.result.commands == 1


def test_reply_resumes_with_history_files_and_per_turn_usage(
    fake: fm.FakeModelServer, dirs: dict[str, Path]
) -> None:
    fake.set_script(
        fm.exec_command("echo remembered > memo.txt", usage=fm.Usage(input_tokens=100, output_tokens=10)),
        fm.say("Saved.", usage=fm.Usage(input_tokens=150, output_tokens=5)),
    )
    first = run_runner(fake, dirs, "Remember this", sandbox="isolated")
    assert first.code == EXIT_COMPLETED, first.stderr
    assert first.result.usage.input_tokens == 250 and first.result.usage.output_tokens == 15
    thread = first.result.thread_id
    assert thread and list(dirs["home"].glob(f"sessions/**/rollout-*{thread}.jsonl"))
    earlier = fake.responses_requests[-1].input

    fake.set_script(
        fm.exec_command("cat memo.txt", usage=fm.Usage(input_tokens=300, output_tokens=8)),
        fm.computed(
            lambda req: fm.say(
                f"It says {req.last_tool_output()}", usage=fm.Usage(input_tokens=320, output_tokens=6)
            )
        ),
    )
    second = run_runner(fake, dirs, "What did you save?", sandbox="isolated", resume=thread)
    assert second.code == EXIT_COMPLETED, second.stderr
    assert second.result.thread_id == thread
    resumed = fake.responses_requests[-2].input
    assert resumed[: len(earlier)] == earlier  # the whole earlier conversation is resent
    assert "remembered" in (second.result.final_message or "")  # the file written in turn one
    # turn.completed.usage is cumulative for the thread; the runner reports this turn only
    assert second.result.usage.input_tokens == 620 and second.result.usage.output_tokens == 14


def test_commands_cannot_see_the_model_key(fake: fm.FakeModelServer, dirs: dict[str, Path]) -> None:
    fake.set_script(fm.exec_command("env"), fm.computed(lambda req: f"env was: {req.last_tool_output()}"))
    run = run_runner(fake, dirs, "print the environment", sandbox="isolated")
    assert run.code == EXIT_COMPLETED, run.stderr
    output = fake.responses_requests[-1].last_tool_output() or ""
    assert "PATH=" in output  # the command ran and printed its environment
    assert API_KEY not in output and "CODEX_MODEL_API_KEY" not in output


@pytest.mark.parametrize(
    ("steps", "fragment"),
    [
        ((fm.http_error(500), fm.http_error(500)), ""),
        ((fm.fail("the model gave up"),), "the model gave up"),
        (
            (fm.cut_stream(fm.message_item("partial")), fm.cut_stream(fm.message_item("partial"))),
            "stream disconnected",
        ),
        ((fm.cut_stream(clean=True), fm.cut_stream(clean=True)), "response.completed"),
    ],
    ids=["http-500", "response-failed", "cut-stream", "no-completed"],
)
def test_model_failures_end_as_turn_failed(
    fake: fm.FakeModelServer, dirs: dict[str, Path], steps: tuple[Any, ...], fragment: str
) -> None:
    fake.set_script(*steps, then=fm.http_error(500))
    run = run_runner(fake, dirs, "anything")
    assert run.code == EXIT_TURN_FAILED, run.stdout
    result = run.result
    assert result.outcome == "turn_failed" and result.errors
    assert fragment in " ".join(result.errors)
    assert parse_frame(run.termination) is not None
    fake.errors.clear()  # the exhausted-script 500s were part of the scenario


def test_a_spent_budget_ends_the_turn_budget_exceeded_with_the_work_done(
    fake: fm.FakeModelServer, dirs: dict[str, Path]
) -> None:
    """The model proxy's 402 (test_model_proxy.py sends the real one), here from the
    fake model in the same shape, after the turn has already run a command."""
    refusal = "budget exceeded: monthly budget reached: 1.60 of 1.00 USD spent in 2026-12 (UTC)"
    fake.set_script(fm.exec_command("echo working"), fm.http_error(402, refusal))
    run = run_runner(fake, dirs, "spend it")
    assert run.code == EXIT_TURN_FAILED, run.stdout
    assert run.result.outcome == "budget_exceeded", run.result
    assert run.result.commands == 1 and "monthly budget reached" in " ".join(run.result.errors)
    fake.errors.clear()


def test_missing_codex_binary(fake: fm.FakeModelServer, dirs: dict[str, Path]) -> None:
    run = run_runner(fake, dirs, "anything", codex_bin="/nonexistent/codex")
    assert run.code == EXIT_CODEX_MISSING
    assert run.result.outcome == "codex_missing" and "/nonexistent/codex" in run.result.errors[0]


@pytest.mark.parametrize("argv", [["run"], ["run", "--prompt", "x", "--sandbox", "root"], ["launch"]])
def test_bad_arguments_are_a_configuration_error(
    fake: fm.FakeModelServer, dirs: dict[str, Path], argv: list[str]
) -> None:
    run = run_runner(fake, dirs, "", argv=argv)
    assert run.code == EXIT_CONFIG_ERROR
    assert run.result.outcome == "config_error" and run.result.errors
    assert fake.requests == []  # nothing reached the model


# --------------------------------------------------------------------------- network fence


def _fenced_run(
    model: fm.FakeModelServer, dirs: dict[str, Path], api_server: tuple[str, int], seconds: float
) -> RunnerRun:
    settings = turn_settings(
        prompt="Say hello",
        model="fake-model",
        provider_id="fake",
        base_url=model.url,
        codex_home=str(dirs["home"]),
        workspace=str(dirs["workspace"]),
        network_fence_seconds=seconds,
    )
    host, port = api_server
    return run_runner_process(
        runner_args(settings),
        dirs,
        api_key=API_KEY,
        extra_env={"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": str(port)},
    )


def test_codex_never_starts_while_the_api_server_is_reachable(
    fake: fm.FakeModelServer, dirs: dict[str, Path]
) -> None:
    """A pod whose NetworkPolicy is not in force reaches the API server: the
    turn fails closed before Codex (and so the model) is asked anything."""
    import socket

    fake.set_script(fm.say("must not be asked"))
    api_server = socket.create_server(("127.0.0.1", 0))  # answers, as an unfenced API server does
    try:
        run = _fenced_run(fake, dirs, api_server.getsockname(), 0.5)
    finally:
        api_server.close()
    assert run.code == EXIT_NETWORK_UNFENCED, run.stderr
    assert run.result.outcome == "network_unfenced"
    assert "was still reachable after 0.5 s" in run.result.errors[0]
    assert parse_frame(run.termination).outcome == "network_unfenced"
    assert fake.requests == [] and not any(e["type"] == "thread.started" for e in run.events())
    assert not list(dirs["home"].glob("sessions/**/*.jsonl"))


def test_a_fenced_pod_runs_its_turn(fake: fm.FakeModelServer, dirs: dict[str, Path]) -> None:
    import socket

    closed = socket.create_server(("127.0.0.1", 0))
    address = closed.getsockname()
    closed.close()  # refuses, as kube-router's REJECT does
    fake.set_script(fm.say("Hello."))
    run = _fenced_run(fake, dirs, address, 5)
    assert run.code == EXIT_COMPLETED, run.stderr
    fence = next(e for e in run.events() if e.get("message") == "network fence")
    assert fence["fenced"] is True and fence["probes"] == 1 and fence["detail"] == "ECONNREFUSED"
    assert run.result.final_message == "Hello."
