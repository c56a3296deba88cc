"""codex_runner.app_server against the real, pinned Codex CLI and the scripted
fake model on 127.0.0.1: what warm runners (issue 14) will build on. One
app-server process takes turn after turn on a thread, keeps the
conversation, reports each turn's own usage, can be interrupted, declines
what no one approved, and picks a thread up again from disk. The protocol
methods it relies on are pinned against the binary's own generated schema."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from codex_api.session import Usage
from codex_devenv import fake_model as fm
from codex_devenv.codex_cli import codex_binary, exec_env, write_codex_home
from codex_runner.app_server import AppServer

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def model() -> Iterator[fm.FakeModelServer]:
    with fm.FakeModelServer() as server:
        yield server


@pytest.fixture
def fake(model: fm.FakeModelServer) -> fm.FakeModelServer:
    model.reset()
    return model


@pytest.fixture
def home(tmp_path: Path, model: fm.FakeModelServer) -> tuple[Path, dict[str, str], Path]:
    codex_home = write_codex_home(tmp_path / "codex-home", model.url)
    workspace = tmp_path / "ws"
    workspace.mkdir()
    return codex_home, exec_env(codex_home), workspace


async def start(home: tuple[Path, dict[str, str], Path], **kwargs: Any) -> AppServer:
    _, env, workspace = home
    return await AppServer.start(codex_binary(), env=env, cwd=workspace, **kwargs)


def test_the_methods_relied_on_are_in_the_pinned_binarys_schema(tmp_path: Path) -> None:
    subprocess.run(
        [str(codex_binary()), "app-server", "generate-json-schema", "--out", str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=60,
    )

    def methods(file: str) -> set[str]:
        schema = json.loads((tmp_path / file).read_text())
        return {e for v in schema["oneOf"] for e in v["properties"]["method"].get("enum", [])}

    assert {"initialize", "thread/start", "thread/resume", "turn/start", "turn/interrupt"} <= methods(
        "ClientRequest.json"
    )
    assert {"turn/completed", "item/completed", "thread/tokenUsage/updated"} <= methods(
        "ServerNotification.json"
    )
    assert "item/commandExecution/requestApproval" in methods("ServerRequest.json")
    v2 = json.loads((tmp_path / "codex_app_server_protocol.v2.schemas.json").read_text())["definitions"]
    assert set(v2["TurnStartParams"]["required"]) == {"threadId", "input"}
    assert set(v2["TurnInterruptParams"]["required"]) == {"threadId", "turnId"}
    assert {"inputTokens", "cachedInputTokens", "outputTokens", "reasoningOutputTokens"} <= set(
        v2["TokenUsageBreakdown"]["required"]
    )
    assert set(v2["TurnStatus"]["enum"]) == {"completed", "interrupted", "failed", "inProgress"}


async def test_one_process_takes_turn_after_turn_and_keeps_the_conversation(
    fake: fm.FakeModelServer, home: tuple[Path, dict[str, str], Path]
) -> None:
    usages = [fm.Usage(input_tokens=100 * (i + 1), output_tokens=7 + i) for i in range(3)]
    fake.set_script(*(fm.say(f"answer {i}", usage=u) for i, u in enumerate(usages)))
    server = await start(home)
    try:
        thread = await server.start_thread(cwd=home[2], sandbox="read-only")
        outcomes = [await server.run_turn(thread, f"question {i}", timeout=60) for i in range(3)]
    finally:
        await server.close()
    for i, outcome in enumerate(outcomes):
        assert (outcome.status, outcome.final_message) == ("completed", f"answer {i}"), outcome
        # Each turn's own usage, not the thread's running total.
        assert outcome.usage == Usage(
            input_tokens=usages[i].input_tokens, output_tokens=usages[i].output_tokens
        )
    # The third request carried the whole conversation: the thread stayed in the process.
    texts = json.dumps(fake.responses_requests[-1].input)
    assert all(f"question {i}" in texts for i in range(3)) and "answer 1" in texts
    assert len({o.turn_id for o in outcomes}) == 3


async def test_a_running_turn_is_interrupted_at_once(
    fake: fm.FakeModelServer, home: tuple[Path, dict[str, str], Path]
) -> None:
    fake.set_script(fm.say("too late", delay=20))
    server = await start(home)
    try:
        thread = await server.start_thread(cwd=home[2], sandbox="read-only")
        turn = await server.begin_turn(thread, "take your time")
        await asyncio.sleep(0.5)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await server.interrupt(thread, turn)
        outcome = await server.wait_turn(timeout=10)
        assert outcome.status == "interrupted" and outcome.turn_id == turn, outcome
        assert loop.time() - t0 < 5
        # The process goes on: the next turn runs.
        fake.set_script(fm.say("next"))
        assert (await server.run_turn(thread, "again", timeout=60)).final_message == "next"
    finally:
        await server.close()


async def test_a_failing_model_fails_the_turn_with_its_message(
    fake: fm.FakeModelServer, home: tuple[Path, dict[str, str], Path]
) -> None:
    fake.set_script(then=fm.fail("the model fell over", code="invalid_prompt"))
    server = await start(home)
    try:
        thread = await server.start_thread(cwd=home[2], sandbox="read-only")
        outcome = await server.run_turn(thread, "hello", timeout=90)
    finally:
        await server.close()
    assert outcome.status == "failed" and outcome.error and "the model fell over" in outcome.error, outcome


async def test_what_no_one_approves_does_not_run(
    fake: fm.FakeModelServer, home: tuple[Path, dict[str, str], Path]
) -> None:
    asked: list[tuple[str, dict[str, Any]]] = []

    async def decline(method: str, params: dict[str, Any]) -> dict[str, Any]:
        asked.append((method, params))
        return {"decision": "decline"}

    fake.set_script(fm.exec_command("touch made-it"), fm.say("tried"))
    server = await start(home, on_request=decline)
    try:
        thread = await server.start_thread(cwd=home[2], sandbox="read-only", approval_policy="untrusted")
        outcome = await server.run_turn(thread, "make a file", timeout=60)
    finally:
        await server.close()
    assert outcome.status == "completed", outcome
    assert [m for m, _ in asked] == ["item/commandExecution/requestApproval"], asked
    assert "touch made-it" in json.dumps(asked[0][1])
    assert not (home[2] / "made-it").exists()


async def test_a_new_process_resumes_the_thread_from_disk(
    fake: fm.FakeModelServer, home: tuple[Path, dict[str, str], Path]
) -> None:
    fake.set_script(fm.say("remembered: 42"), fm.say("it was 42"))
    first = await start(home)
    try:
        thread = await first.start_thread(cwd=home[2], sandbox="read-only")
        await first.run_turn(thread, "remember 42", timeout=60)
    finally:
        await first.close()
    second = await start(home)
    try:
        assert await second.resume_thread(thread, sandbox="read-only") == thread
        outcome = await second.run_turn(thread, "what was it?", timeout=60)
    finally:
        await second.close()
    assert outcome.final_message == "it was 42"
    assert "remember 42" in json.dumps(fake.responses_requests[-1].input)


async def test_a_dead_app_server_fails_the_waiting_turn(
    fake: fm.FakeModelServer, home: tuple[Path, dict[str, str], Path]
) -> None:
    import os
    import signal

    fake.set_script(fm.say("never", delay=20))
    server = await start(home)
    thread = await server.start_thread(cwd=home[2], sandbox="read-only")
    await server.begin_turn(thread, "hang")
    os.kill(server.pid, signal.SIGKILL)
    with pytest.raises(Exception, match="app-server"):
        await server.wait_turn(timeout=10)
    await server.close()
