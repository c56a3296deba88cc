"""The REAL Codex CLI (the pinned @openai/codex native binary) against the
scripted fake Responses API: what it sends, what it prints as JSONL, and how
each failure of the model looks from the outside (exit code and events).

Every run gets a fresh CODEX_HOME whose config.toml names a custom provider
at the fake (codex_devenv.codex_cli.write_codex_home) and a small explicit
environment, so nothing of the developer's ~/.codex or secrets leaks in.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from codex_devenv.codex_cli import (
    FAKE_API_KEY_ENV,
    ExecResult,
    codex_binary,
    codex_version,
    exec_env,
    parse_events,
    run_exec,
    write_codex_home,
)
from codex_devenv.fake_model import (
    FakeModelServer,
    RecordedRequest,
    Usage,
    apply_patch,
    computed,
    cut_stream,
    exec_command,
    fail,
    http_error,
    message_item,
    say,
)
from codex_devenv.process import free_port

API_KEY = "sk-fake-integration-key-4242"


@pytest.fixture(scope="module")
def codex() -> Path:
    return codex_binary()


@pytest.fixture(scope="module")
def model_server() -> Iterator[FakeModelServer]:
    with FakeModelServer() as srv:
        yield srv


@pytest.fixture
def fake(model_server: FakeModelServer) -> Iterator[FakeModelServer]:
    model_server.reset()
    yield model_server
    assert model_server.errors == [], model_server.errors


class Codex:
    """`codex exec` runs for one test: its own CODEX_HOME and workspace."""

    def __init__(self, binary: Path, base: Path, base_url: str) -> None:
        self.binary = binary
        self.home = write_codex_home(base / "codex-home", base_url)
        self.workspace = base / "workspace"
        self.workspace.mkdir()
        self.env = exec_env(self.home, api_key=API_KEY)

    def run(self, prompt: str, **kwargs: Any) -> ExecResult:
        kwargs.setdefault("env", self.env)
        return run_exec(prompt, codex_home=self.home, cwd=self.workspace, binary=self.binary, **kwargs)


@pytest.fixture
def cx(codex: Path, tmp_path: Path, fake: FakeModelServer) -> Codex:
    return Codex(codex, tmp_path, fake.url)


def _types(result: ExecResult) -> list[str]:
    return [str(e["type"]) for e in result.events]


# workspace-write also makes /tmp and $TMPDIR writable (pytest's tmp_path is under /tmp):
# these two keys leave only the workspace writable.
NO_TMP_WRITES = [
    "sandbox_workspace_write.exclude_slash_tmp=true",
    "sandbox_workspace_write.exclude_tmpdir_env_var=true",
]


def _probe_sandbox(cx: Codex, fake: FakeModelServer, outside: Path) -> ExecResult:
    fake.set_script(
        exec_command(
            f"touch inside.txt; touch {outside}; grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status"
        ),
        say("probed"),
    )
    return cx.run("probe the sandbox", sandbox="workspace-write", config=NO_TMP_WRITES)


@pytest.fixture(scope="module")
def sandbox_works(
    codex: Path, model_server: FakeModelServer, tmp_path_factory: pytest.TempPathFactory
) -> bool:
    """Does Codex's own sandbox (bubblewrap + seccomp) confine a workspace-write command here?"""
    base = tmp_path_factory.mktemp("sandbox-probe")
    model_server.reset()
    outside = base / "outside.txt"
    result = _probe_sandbox(Codex(codex, base, model_server.url), model_server, outside)
    model_server.reset()
    return result.returncode == 0 and (base / "workspace" / "inside.txt").exists() and not outside.exists()


# --------------------------------------------------------------------------- the happy paths


def test_pinned_version(codex: Path) -> None:
    out = subprocess.run([str(codex), "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"codex-cli {codex_version()}"


def test_plain_answer(cx: Codex, fake: FakeModelServer) -> None:
    usage = Usage(input_tokens=1234, output_tokens=56, cached_tokens=1000, reasoning_tokens=7)
    fake.set_script(say("Hello from the script.", usage=usage))

    result = cx.run("say hello")

    assert result.returncode == 0, result.describe()
    assert _types(result) == ["thread.started", "turn.started", "item.completed", "turn.completed"]
    assert result.thread_id
    assert result.items() == [{"id": "item_0", "type": "agent_message", "text": "Hello from the script."}]
    assert result.usage == {
        "input_tokens": 1234,
        "cached_input_tokens": 1000,
        "cache_write_input_tokens": 0,
        "output_tokens": 56,
        "reasoning_output_tokens": 7,
    }
    (req,) = fake.requests  # one request, and no /models or anything else
    assert req.is_responses and req.path == "/v1/responses"
    assert req.authorization == f"Bearer {API_KEY}"
    assert req.body["stream"] is True and req.body["model"] == "fake-model"
    assert "previous_response_id" not in req.body
    assert req.user_texts()[-1] == "say hello"
    assert {"exec_command", "apply_patch"} <= set(req.tool_names())
    assert req.header("session-id") == result.thread_id
    assert API_KEY not in result.stdout + result.stderr


def test_exec_command_output_reaches_the_model(cx: Codex, fake: FakeModelServer) -> None:
    def echo(req: RecordedRequest) -> str:
        return f"The command said: {req.last_tool_output()}"

    fake.set_script(exec_command("printf 'marker-%s\\n' 42", call_id="call_cmd1"), computed(echo))

    result = cx.run("run a command")

    assert result.returncode == 0, result.describe()
    (command,) = result.items("command_execution")
    assert command["status"] == "completed" and command["exit_code"] == 0
    assert "marker-42" in command["aggregated_output"]
    first, second = fake.responses_requests
    assert first.tool_outputs() == []
    (output,) = second.tool_outputs()
    assert output["type"] == "function_call_output" and output["call_id"] == "call_cmd1"
    assert "marker-42" in (second.last_tool_output() or "")
    (call,) = [i for i in second.input if i.get("type") == "function_call"]
    assert call["name"] == "exec_command" and json.loads(call["arguments"]) == {
        "cmd": "printf 'marker-%s\\n' 42"
    }
    assert result.agent_messages == [f"The command said: {second.last_tool_output()}"]
    # usage is summed over the turn's two model requests
    assert result.usage is not None and result.usage["input_tokens"] == 20


def test_sandbox_probe(cx: Codex, fake: FakeModelServer, tmp_path: Path) -> None:
    """Whether Codex's bubblewrap sandbox works here (as root on these machines it does)."""
    outside = tmp_path / "outside.txt"
    result = _probe_sandbox(cx, fake, outside)
    assert result.returncode == 0, result.describe()
    (command,) = result.items("command_execution")
    print(f"\n[sandbox] workspace-write probe output: {command['aggregated_output']!r}")
    if outside.exists():
        pytest.skip("Codex's sandbox does not confine writes here: tests use danger-full-access")
    assert (cx.workspace / "inside.txt").exists()
    assert "Read-only file system" in command["aggregated_output"]
    assert "NoNewPrivs:\t1" in command["aggregated_output"]
    assert "Seccomp:\t2" in command["aggregated_output"]


def test_workspace_write_also_opens_tmp_by_default(
    cx: Codex, fake: FakeModelServer, sandbox_works: bool, tmp_path: Path
) -> None:
    if not sandbox_works:
        pytest.skip("Codex's sandbox does not work here")
    in_tmp = tmp_path / "in-tmp.txt"  # under /tmp, outside the workspace
    fake.set_script(exec_command(f"touch {in_tmp}"), say("done"))
    result = cx.run("write to /tmp", sandbox="workspace-write")
    assert result.returncode == 0, result.describe()
    assert in_tmp.exists()


def test_apply_patch_creates_a_file(cx: Codex, fake: FakeModelServer, sandbox_works: bool) -> None:
    patch = "*** Begin Patch\n*** Add File: notes/hello.txt\n+hello from apply_patch\n+second line\n*** End Patch\n"
    fake.set_script(apply_patch(patch, call_id="call_patch1"), say("patched"))
    sandbox = "workspace-write" if sandbox_works else "danger-full-access"

    result = cx.run("create a file", sandbox=sandbox)

    assert result.returncode == 0, result.describe()
    target = cx.workspace / "notes" / "hello.txt"
    assert target.read_text() == "hello from apply_patch\nsecond line\n"
    (change,) = result.items("file_change")
    assert change["status"] == "completed"
    assert change["changes"] == [{"path": str(target), "kind": "add"}]
    second = fake.responses_requests[1]
    (output,) = second.tool_outputs()
    assert output["type"] == "custom_tool_call_output" and output["call_id"] == "call_patch1"
    assert "Success" in (second.last_tool_output() or "")


def test_apply_patch_outside_the_workspace_is_refused(
    cx: Codex, fake: FakeModelServer, sandbox_works: bool, tmp_path: Path
) -> None:
    if not sandbox_works:
        pytest.skip("Codex's sandbox does not work here")
    outside = tmp_path / "outside-patch.txt"
    patch = f"*** Begin Patch\n*** Add File: {outside}\n+nope\n*** End Patch\n"
    fake.set_script(apply_patch(patch), computed(lambda req: f"tool said: {req.last_tool_output()}"))

    result = cx.run("write outside", sandbox="workspace-write", config=NO_TMP_WRITES)

    assert result.returncode == 0, result.describe()  # the turn completes; the edit does not happen
    assert not outside.exists()
    assert result.agent_messages and result.agent_messages[-1].startswith("tool said:")


def test_resume_resends_the_whole_history(cx: Codex, fake: FakeModelServer) -> None:
    fake.set_script(exec_command("echo first-turn-output"), say("first answer"))
    first = cx.run("first prompt")
    assert first.returncode == 0, first.describe()
    first_history = fake.responses_requests[-1].input

    fake.set_script(computed(lambda req: f"I remember {req.user_texts()[-2]!r}"))
    second = cx.run("second prompt", resume=first.thread_id)

    assert second.returncode == 0, second.describe()
    assert second.thread_id == first.thread_id
    assert second.agent_messages == ["I remember 'first prompt'"]
    resumed = fake.responses_requests[-1]
    assert resumed.header("session-id") == first.thread_id
    # The whole first turn (instructions, prompt, tool call and output) is resent unchanged,
    # then the first answer and the new prompt.
    assert resumed.input[: len(first_history)] == first_history
    rest = resumed.input[len(first_history) :]
    assert [(i["type"], i.get("role")) for i in rest] == [("message", "assistant"), ("message", "user")]
    assert resumed.assistant_texts() == ["first answer"]
    assert resumed.user_texts()[-1] == "second prompt"
    assert "first-turn-output" in "".join(o.get("output", "") for o in resumed.tool_outputs())
    # turn.completed usage is cumulative for the thread: 2 requests, then 1 more
    assert first.usage and first.usage["input_tokens"] == 20
    assert second.usage and second.usage["input_tokens"] == 30
    rollouts = list(cx.home.glob(f"sessions/**/rollout-*-{first.thread_id}.jsonl"))
    assert len(rollouts) == 1


# --------------------------------------------------------------------------- failure modes


def _assert_turn_failed(result: ExecResult, message_part: str) -> None:
    assert result.returncode == 1, result.describe()
    assert "turn.completed" not in _types(result)
    assert _types(result)[:2] == ["thread.started", "turn.started"]
    assert _types(result)[-2:] == ["error", "turn.failed"]
    assert result.failure is not None and message_part in result.failure, result.failure
    assert result.of_type("error")[-1]["message"] == result.failure


def test_http_500_fails_the_turn(cx: Codex, fake: FakeModelServer) -> None:
    fake.set_script(http_error(500))
    result = cx.run("hi")
    _assert_turn_failed(result, "high demand")  # Codex's own wording for a 5xx
    assert len(fake.responses_requests) == 1  # request_max_retries = 0


def test_http_500_is_retried_request_max_retries_times(cx: Codex, fake: FakeModelServer) -> None:
    fake.set_script(http_error(500), say("recovered"))
    result = cx.run("hi", config=["model_providers.fake.request_max_retries=1"])
    assert result.returncode == 0, result.describe()
    assert result.agent_messages == ["recovered"]
    assert len(fake.responses_requests) == 2


def test_http_400_fails_with_the_body_as_message(cx: Codex, fake: FakeModelServer) -> None:
    fake.set_script(http_error(400, "bad request from the fake"))
    result = cx.run("hi")
    _assert_turn_failed(result, "bad request from the fake")


def test_cut_stream_fails_the_turn(cx: Codex, fake: FakeModelServer) -> None:
    fake.set_script(cut_stream(message_item("partial answer")))
    result = cx.run("hi")
    _assert_turn_failed(result, "stream disconnected before completion")
    assert "error decoding response body" in (result.failure or "")
    # items that arrived before the cut are still reported
    assert result.agent_messages == ["partial answer"]
    assert len(fake.responses_requests) == 1  # stream_max_retries = 0


def test_stream_ending_without_completed_fails_the_turn(cx: Codex, fake: FakeModelServer) -> None:
    fake.set_script(cut_stream(clean=True))
    result = cx.run("hi")
    _assert_turn_failed(result, "stream closed before response.completed")


def test_cut_stream_is_retried_stream_max_retries_times(cx: Codex, fake: FakeModelServer) -> None:
    fake.set_script(cut_stream(), say("recovered"))
    result = cx.run("hi", config=["model_providers.fake.stream_max_retries=1"])
    assert result.returncode == 0, result.describe()
    assert [e["message"] for e in result.of_type("error")] == [
        "Reconnecting... 1/1 (stream disconnected before completion: "
        "Transport error: network error: error decoding response body)"
    ]
    assert result.agent_messages == ["recovered"]
    assert len(fake.responses_requests) == 2


def test_response_failed_fails_the_turn(cx: Codex, fake: FakeModelServer) -> None:
    fake.set_script(fail("the model fell over"))
    result = cx.run("hi")
    _assert_turn_failed(result, "the model fell over")


def test_context_window_exceeded(cx: Codex, fake: FakeModelServer) -> None:
    fake.set_script(fail("too long", code="context_length_exceeded"))
    result = cx.run("hi")
    _assert_turn_failed(result, "ran out of room in the model's context window")


def test_slow_stream_completes(cx: Codex, fake: FakeModelServer) -> None:
    fake.set_script(say("slowly", delay=0.4))
    result = cx.run("hi")
    assert result.returncode == 0, result.describe()
    assert result.agent_messages == ["slowly"]
    assert result.duration >= 0.8  # three events, 0.4 s apart


def test_stream_idle_timeout(cx: Codex, fake: FakeModelServer) -> None:
    fake.set_script(say("too slow", delay=2))
    result = cx.run("hi", config=["model_providers.fake.stream_idle_timeout_ms=300"])
    _assert_turn_failed(result, "idle timeout waiting for SSE")
    assert result.duration < 2


def test_unreachable_model_is_retried_without_end(cx: Codex, tmp_path: Path) -> None:
    """Connection refused is not bound by request_max_retries: Codex waits for the
    network (with back-off) indefinitely, so whoever runs it must enforce a timeout."""
    home = write_codex_home(tmp_path / "dead-home", f"http://127.0.0.1:{free_port()}/v1")
    argv = [str(cx.binary), "exec", "--json", "--skip-git-repo-check", "-s", "read-only", "hi"]
    with pytest.raises(subprocess.TimeoutExpired) as excinfo:
        subprocess.run(
            argv,
            cwd=cx.workspace,
            env=exec_env(home, api_key=API_KEY),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=3,
        )
    out = excinfo.value.stdout
    events = parse_events(out.decode() if isinstance(out, bytes) else out or "")
    assert [e["type"] for e in events][:2] == ["thread.started", "turn.started"]
    assert events[2]["message"].startswith("Reconnecting... waiting for network")
    assert not [e for e in events if e["type"] in ("turn.completed", "turn.failed")]


# --------------------------------------------------------------------------- secrets


ENV_PROBE = "env | grep -E '^(MY_API_KEY|FAKE_MODEL_API_KEY|SOME_SECRET|GH_TOKEN|PLAIN_VAR)=' | sort"


def _env_seen_by_command(cx: Codex, fake: FakeModelServer, config: list[str]) -> str:
    fake.reset()
    fake.set_script(exec_command(ENV_PROBE), say("done"))
    env = {
        **cx.env,
        "MY_API_KEY": "k-123",
        "SOME_SECRET": "s-123",
        "GH_TOKEN": "t-123",
        "PLAIN_VAR": "visible",
    }
    result = cx.run("show env", config=config, env=env)
    assert result.returncode == 0, result.describe()
    (command,) = result.items("command_execution")
    return str(command["aggregated_output"])


def test_commands_see_secrets_by_default(cx: Codex, fake: FakeModelServer) -> None:
    seen = _env_seen_by_command(cx, fake, [])
    assert f"{FAKE_API_KEY_ENV}={API_KEY}" in seen  # the provider key itself reaches the model's commands
    assert "MY_API_KEY=k-123" in seen and "GH_TOKEN=t-123" in seen


def test_default_excludes_hide_key_secret_token_variables(cx: Codex, fake: FakeModelServer) -> None:
    seen = _env_seen_by_command(cx, fake, ["shell_environment_policy.ignore_default_excludes=false"])
    assert seen.splitlines() == ["PLAIN_VAR=visible"]
    assert API_KEY not in seen
    # ...and the recorded tool output the model received agrees
    assert API_KEY not in (fake.responses_requests[-1].last_tool_output() or "")


def test_inherit_core_keeps_only_basics(cx: Codex, fake: FakeModelServer) -> None:
    seen = _env_seen_by_command(cx, fake, ['shell_environment_policy.inherit="core"'])
    assert seen == ""


# --------------------------------------------------------------------------- cost


def test_trivial_turn_timing(cx: Codex, fake: FakeModelServer) -> None:
    durations = []
    for _ in range(7):
        fake.set_script(say("ok"))
        start = time.monotonic()
        result = cx.run("hi")
        durations.append(time.monotonic() - start)
        assert result.returncode == 0, result.describe()
    median = statistics.median(durations)
    print(
        f"\n[timing] trivial codex exec turn: median {median * 1000:.0f} ms, min {min(durations) * 1000:.0f} ms"
    )
    assert median < 5
