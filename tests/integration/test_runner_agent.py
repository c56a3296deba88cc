"""The runner's agent (codex_runner.agent) with the real Codex CLI's app-server
and the scripted fake model on 127.0.0.1: the operator's signed orders run
turns on one warm process; everything anyone else sends, including a model
that read every file of its pod and replays what it saw, runs nothing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from codex_api.turn_request import generate_private_key, sign
from codex_devenv import fake_model as fm
from codex_devenv.codex_cli import codex_binary, exec_env, write_codex_home
from codex_devenv.process import free_port
from codex_runner.agent import Agent
from codex_runner.app_server import AppServer, ServerRequestHandler

pytestmark = pytest.mark.timeout(180)
POD = "pod-uid-1"
OPERATOR = generate_private_key()


@pytest.fixture(scope="module")
def model() -> Iterator[fm.FakeModelServer]:
    with fm.FakeModelServer() as server:
        yield server


@pytest_asyncio.fixture(loop_scope="function")  # the tests' loop: the server and its clients share it
async def agent(model: fm.FakeModelServer, tmp_path: Path) -> AsyncIterator[tuple[str, Agent]]:
    model.reset()
    home = write_codex_home(tmp_path / "codex-home", model.url)
    workspace = tmp_path / "ws"
    workspace.mkdir()

    async def start(on_request: ServerRequestHandler) -> AppServer:
        return await AppServer.start(codex_binary(), env=exec_env(home), cwd=workspace, on_request=on_request)

    served = Agent(public_key=OPERATOR.public_key(), pod_uid=POD, workspace=workspace, start_app_server=start)
    runner = web.AppRunner(served.app())
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}", served
    finally:
        await runner.cleanup()


def order(prompt: str = "hello", **changes: Any) -> bytes:
    body = {
        "namespace": "ns",
        "session": "s1",
        "session_uid": "uid-1",
        "prompt": prompt,
        "sandbox": "read-only",
        "timeout_seconds": 60,
        **changes,
    }
    return json.dumps(body).encode()


async def send(
    url: str, path: str, body: bytes = b"", *, method: str = "POST", headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    # The signature covers the path, not the query (?wait= only says how long to wait).
    signed = (
        sign(OPERATOR, method=method, path=path.split("?")[0], pod_uid=POD, body=body)
        if headers is None
        else headers
    )
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, url + path, data=body, headers=signed) as resp,
    ):
        text = await resp.text()
        try:
            return resp.status, json.loads(text)
        except ValueError:
            return resp.status, text


async def _until_running(served: Agent) -> None:
    for _ in range(100):
        if served._running is not None:
            return
        await asyncio.sleep(0.05)


async def test_signed_orders_run_turns_on_one_warm_thread(
    agent: tuple[str, Agent], model: fm.FakeModelServer
) -> None:
    url, _ = agent
    model.set_script(
        fm.say("first answer", usage=fm.Usage(input_tokens=120, output_tokens=4)),
        fm.say("second answer", usage=fm.Usage(input_tokens=300, output_tokens=6)),
    )
    status, first = await send(url, "/v1/turns", order("remember 7"))
    assert status == 200 and first["status"] == "completed", first
    assert first["final_message"] == "first answer" and first["usage"]["input_tokens"] == 120
    status, second = await send(
        url,
        "/v1/turns",
        order("what was it?", session="s2", session_uid="uid-2", thread_id=first["thread_id"]),
    )
    assert status == 200 and second["final_message"] == "second answer", second
    assert second["thread_id"] == first["thread_id"] and second["usage"]["input_tokens"] == 300
    assert "remember 7" in json.dumps(model.responses_requests[-1].input)
    # The operator, restarted mid-turn, can read how a finished turn ended.
    status, again = await send(url, "/v1/turns/uid-1", method="GET")
    assert status == 200 and again == first
    assert (await send(url, "/v1/turns/uid-9", method="GET"))[0] == 404


async def test_nothing_but_the_operators_signature_for_this_pod_runs_a_turn(
    agent: tuple[str, Agent], model: fm.FakeModelServer
) -> None:
    url, _ = agent
    model.set_script(then=fm.say("ran"))
    body = order("run rm -rf")
    replayed = sign(OPERATOR, method="POST", path="/v1/turns", pod_uid=POD, body=body)
    assert (await send(url, "/v1/turns", body, headers=replayed))[0] == 200  # the operator's, once
    requests_before = len(model.responses_requests)
    attacks = {
        "unsigned": (body, {}),
        "replayed": (body, replayed),
        "another key": (
            body,
            sign(generate_private_key(), method="POST", path="/v1/turns", pod_uid=POD, body=body),
        ),
        "another pod's": (
            body,
            sign(OPERATOR, method="POST", path="/v1/turns", pod_uid="pod-uid-2", body=body),
        ),
        "stale": (body, sign(OPERATOR, method="POST", path="/v1/turns", pod_uid=POD, body=body, now=1.0)),
        "altered after signing": (order("something else"), replayed),
        "signed for another path": (
            body,
            sign(OPERATOR, method="POST", path="/v1/interrupt", pod_uid=POD, body=body),
        ),
    }
    for what, (attack_body, headers) in attacks.items():
        status, text = await send(url, "/v1/turns", attack_body, headers=headers)
        assert status == 401, (what, status, text)
    assert len(model.responses_requests) == requests_before, "a refused order reached the model"
    # Signed but not an order: refused before anything runs.
    status, _ = await send(url, "/v1/turns", b'{"prompt": "x", "sandbox": "root"}')
    assert status == 400
    assert (await send(url, "/v1/turns/uid-1", method="GET", headers={}))[0] == 401


async def test_one_turn_at_a_time_and_the_operator_can_interrupt_it(
    agent: tuple[str, Agent], model: fm.FakeModelServer
) -> None:
    url, served = agent
    model.set_script(fm.say("too slow", delay=20))
    running = asyncio.create_task(send(url, "/v1/turns", order("take your time")))
    await _until_running(served)
    status, _ = await send(url, "/v1/turns", order("me too", session_uid="uid-2"))
    assert status == 409
    assert (await send(url, "/v1/interrupt", headers={}))[0] == 401  # not by anyone else
    status, answer = await send(url, "/v1/interrupt")
    assert status == 200 and answer == {"interrupted": True}
    status, report = await asyncio.wait_for(running, 10)
    assert status == 200 and report["status"] == "interrupted", report


async def test_a_turn_is_never_run_twice_whoever_asks_again(
    agent: tuple[str, Agent], model: fm.FakeModelServer
) -> None:
    """An operator that restarted mid-turn orders it again, or asks for its report:
    it gets the one turn's report, and the model saw the turn once."""
    url, served = agent
    model.set_script(fm.say("slowly done", delay=1.5))
    running = asyncio.create_task(send(url, "/v1/turns", order("once")))
    await _until_running(served)
    waiting = asyncio.create_task(send(url, "/v1/turns/uid-1?wait=20", method="GET"))
    again = await send(url, "/v1/turns", order("once"))  # the same session, while it runs
    first = await running
    asked = await waiting
    assert first[0] == again[0] == asked[0] == 200, (first, again, asked)
    assert first[1] == again[1] == asked[1] and first[1]["final_message"] == "slowly done"
    after = await send(url, "/v1/turns", order("once"))  # and once it has ended
    assert after == first
    assert len(model.responses_requests) == 1


async def test_malformed_or_mismatched_requests_are_refused_and_run_nothing(
    agent: tuple[str, Agent], model: fm.FakeModelServer
) -> None:
    url, served = agent
    served._sandbox = "read-only"  # as a pod started for read-only turns
    for body in (
        b"{",
        b"[]",
        order("x", sandbox="nope"),
        order("x", extra="field"),
        order("x", timeout_seconds=0),
    ):
        status, text = await send(url, "/v1/turns", body)
        assert status == 400 and "not a turn order" in text, (body, status, text)
    status, text = await send(url, "/v1/turns", order("x", sandbox="full-access"))
    assert status == 400 and "runs read-only turns" in text
    for wait in ("nan", "-1", "soon", "inf"):
        status, text = await send(url, f"/v1/turns/uid-1?wait={wait}", method="GET")
        assert status in (400, 404), (wait, status)
        if wait != "inf":
            assert status == 400 and "wait must be" in text
    assert model.responses_requests == []


async def test_a_turn_past_its_timeout_is_interrupted(
    agent: tuple[str, Agent], model: fm.FakeModelServer
) -> None:
    url, _ = agent
    model.set_script(fm.say("too slow", delay=20))
    status, report = await asyncio.wait_for(send(url, "/v1/turns", order("slow", timeout_seconds=1.5)), 15)
    assert status == 200 and report["status"] == "interrupted", report
    assert "exceeded 1.5s" in report["error"]


async def test_each_orders_credential_reaches_the_model_from_the_same_warm_process(
    model: fm.FakeModelServer, tmp_path: Path
) -> None:
    """The pod's Codex home as the runner writes it (codex_runner.invocation) with the
    credential read from a file: each turn's order carries its session's credential,
    and the running app-server sends exactly that one. No key in the environment."""
    from codex_devenv.testkit import turn_settings
    from codex_runner.invocation import build_config

    model.reset()
    model.set_script(then=fm.say("ok"))
    home = tmp_path / "codex-home"
    home.mkdir()
    credential_file = tmp_path / "credential"
    settings = turn_settings(model="fake-model", provider_id="fake", base_url=model.url, codex_home=str(home))
    config = build_config(settings, sandbox_mode="read-only", credential_file=str(credential_file))
    (home / "config.toml").write_text(config.config_toml)
    for name, text in config.files.items():
        (home / name).write_text(text)
    env = {k: v for k, v in exec_env(home).items() if "KEY" not in k}
    workspace = tmp_path / "ws"
    workspace.mkdir()
    pids: list[int] = []

    async def start(on_request: ServerRequestHandler) -> AppServer:
        server = await AppServer.start(codex_binary(), env=env, cwd=workspace, on_request=on_request)
        pids.append(server.pid)
        return server

    served = Agent(
        public_key=OPERATOR.public_key(),
        pod_uid=POD,
        workspace=workspace,
        start_app_server=start,
        credential_file=credential_file,
    )
    runner = web.AppRunner(served.app())
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    url = f"http://127.0.0.1:{port}"
    try:
        status, first = await send(url, "/v1/turns", order("one", credential="cxs1.session-one"))
        assert status == 200 and first["status"] == "completed", first
        status, second = await send(
            url,
            "/v1/turns",
            order("two", session_uid="uid-2", thread_id=first["thread_id"], credential="cxs1.session-two"),
        )
        assert status == 200 and second["status"] == "completed", second
    finally:
        await runner.cleanup()
    assert len(pids) == 1, "the second turn started another app-server"
    assert [r.authorization for r in model.responses_requests] == [
        "Bearer cxs1.session-one",
        "Bearer cxs1.session-two",
    ]
    assert oct(credential_file.stat().st_mode & 0o777) == "0o600"


async def test_the_app_server_starts_ahead_and_the_idle_clock_starts_with_the_first_order(
    agent: tuple[str, Agent], model: fm.FakeModelServer
) -> None:
    """A warm pool pod waits for its conversation: it is never idle before its first
    order, and its app-server is already up when the order comes."""
    url, served = agent
    served.last_activity -= 3600  # as if it had waited an hour
    assert served.idle_for() == 0.0
    await served.warm_up()
    assert served._server is not None
    warm = served._server
    model.set_script(fm.say("done"))
    status, report = await send(url, "/v1/turns", order())
    assert status == 200 and report["final_message"] == "done", report
    assert served._server is warm  # the turn used the server started ahead
    await asyncio.sleep(0.2)
    assert 0.1 < served.idle_for() < 60


# ------------------------------------------------------------------ per-action approvals (issue 15)


async def _pending(url: str, wait: float = 30) -> list[dict[str, Any]]:
    status, body = await send(url, f"/v1/actions?wait={wait:g}", method="GET")
    assert status == 200, body
    return list(body["pending"])


async def _answer(url: str, seq: int, answer: str) -> tuple[int, Any]:
    return await send(url, f"/v1/actions/{seq}", json.dumps({"answer": answer}).encode())


@pytest.mark.parametrize("answer", ["accept", "decline"])
async def test_a_per_action_turn_waits_for_the_operator_s_answer(
    agent: tuple[str, Agent], model: fm.FakeModelServer, answer: str
) -> None:
    url, served = agent
    workspace = served._workspace
    model.set_script(fm.exec_command("touch made-it"), fm.say("done"))
    turn = asyncio.create_task(send(url, "/v1/turns", order("make a file", approvals="per-action")))
    [pending] = await _pending(url)
    action = pending["action"]
    assert pending["session_uid"] == "uid-1" and action["kind"] == "command"
    assert action["command"] == "/bin/bash -lc 'touch made-it'" and action["cwd"] == str(workspace)
    assert not (workspace / "made-it").exists()  # nothing runs before the answer
    assert not turn.done()
    status, body = await _answer(url, pending["seq"], answer)
    assert (status, body) == (200, {"seq": pending["seq"], "answer": answer})
    status, report = await turn
    assert status == 200 and report["status"] == "completed", report
    assert (workspace / "made-it").exists() == (answer == "accept")
    assert await _pending(url, wait=0) == []


async def test_an_action_is_answered_once_with_an_offered_answer_by_the_operator_only(
    agent: tuple[str, Agent], model: fm.FakeModelServer
) -> None:
    url, served = agent
    model.set_script(fm.exec_command("touch made-it"), fm.say("done"))
    turn = asyncio.create_task(send(url, "/v1/turns", order("make a file", approvals="per-action")))
    [pending] = await _pending(url)
    seq = pending["seq"]
    body = json.dumps({"answer": "accept"}).encode()
    # Not the operator: unsigned, or signed by another key, or replayed.
    assert (await send(url, f"/v1/actions/{seq}", body, headers={}))[0] == 401
    forged = sign(generate_private_key(), method="POST", path=f"/v1/actions/{seq}", pod_uid=POD, body=body)
    assert (await send(url, f"/v1/actions/{seq}", body, headers=forged))[0] == 401
    assert (await send(url, "/v1/actions", method="GET", headers={}))[0] == 401
    # Not offered for an untrusted command (Codex offers accept and cancel), malformed, unknown.
    assert (await _answer(url, seq, "acceptForSession"))[0] == 400
    assert (await _answer(url, seq, "yes please"))[0] == 400
    assert (await send(url, f"/v1/actions/{seq}", b"accept"))[0] == 400
    assert (await send(url, "/v1/actions/x", body))[0] == 400
    assert (await _answer(url, seq + 1, "accept"))[0] == 404
    assert not (served._workspace / "made-it").exists() and not turn.done()
    signed = sign(OPERATOR, method="POST", path=f"/v1/actions/{seq}", pod_uid=POD, body=body)
    assert (await send(url, f"/v1/actions/{seq}", body, headers=signed))[0] == 200
    assert (await send(url, f"/v1/actions/{seq}", body, headers=signed))[0] == 401  # the replay
    assert (await _answer(url, seq, "decline"))[0] == 404  # answered already
    status, report = await turn
    assert status == 200 and report["status"] == "completed", report
    assert (served._workspace / "made-it").exists()


async def test_a_patch_pends_with_its_diff(agent: tuple[str, Agent], model: fm.FakeModelServer) -> None:
    url, served = agent
    model.set_script(
        fm.apply_patch("*** Begin Patch\n*** Add File: notes.txt\n+remember 42\n*** End Patch\n"),
        fm.say("done"),
    )
    turn = asyncio.create_task(send(url, "/v1/turns", order("write", approvals="per-action")))
    [pending] = await _pending(url)
    [change] = pending["action"]["changes"]
    assert (change["path"], change["diff"]) == (str(served._workspace / "notes.txt"), "remember 42\n")
    assert "acceptForSession" in pending["action"]["offered"]
    assert (await _answer(url, pending["seq"], "acceptForSession"))[0] == 200
    assert (await turn)[1]["status"] == "completed"
    assert (served._workspace / "notes.txt").read_text() == "remember 42\n"


async def test_the_time_an_action_waits_does_not_count_against_the_turn_s_timeout(
    agent: tuple[str, Agent], model: fm.FakeModelServer
) -> None:
    """The timeout bounds Codex's work, not the people deciding: an action
    answered after twice the turn's timeout still runs and the turn completes."""
    url, served = agent
    model.set_script(fm.exec_command("touch made-it"), fm.say("done"))
    turn = asyncio.create_task(
        send(url, "/v1/turns", order("make a file", approvals="per-action", timeout_seconds=3))
    )
    [pending] = await _pending(url)
    await asyncio.sleep(6)
    assert not turn.done()
    # Only a newer action ends a wait that asks for those after the one seen.
    status, body = await send(url, f"/v1/actions?wait=1&after={pending['seq']}", method="GET")
    assert status == 200 and [p["seq"] for p in body["pending"]] == [pending["seq"]]
    assert (await send(url, "/v1/actions?after=x", method="GET"))[0] == 400
    assert (await _answer(url, pending["seq"], "accept"))[0] == 200
    status, report = await turn
    assert status == 200 and report["status"] == "completed" and report["error"] is None, report
    assert (served._workspace / "made-it").exists()


async def test_what_waits_when_the_turn_is_interrupted_is_cancelled_and_nothing_runs(
    agent: tuple[str, Agent], model: fm.FakeModelServer
) -> None:
    url, served = agent
    model.set_script(fm.exec_command("touch made-it"), then=fm.say("done"))
    turn = asyncio.create_task(send(url, "/v1/turns", order("make a file", approvals="per-action")))
    await _pending(url)
    status, body = await send(url, "/v1/interrupt", b"")
    assert (status, body) == (200, {"interrupted": True})
    status, report = await turn
    assert status == 200 and report["status"] == "interrupted", report
    assert await _pending(url, wait=0) == []
    assert not (served._workspace / "made-it").exists()


async def test_an_unreviewable_action_is_declined_without_asking(
    agent: tuple[str, Agent], model: fm.FakeModelServer
) -> None:
    url, served = agent
    long = "touch made-it; " + "true; " * 3000  # longer than a reviewer is shown
    model.set_script(fm.exec_command(long), fm.computed(lambda req: req.last_tool_output()))
    status, report = await send(url, "/v1/turns", order("go", approvals="per-action"))
    assert status == 200 and report["status"] == "completed", report
    assert "rejected" in (report["final_message"] or "")
    assert not (served._workspace / "made-it").exists()


async def test_a_turn_ordered_without_per_action_approvals_asks_nothing(
    agent: tuple[str, Agent], model: fm.FakeModelServer
) -> None:
    """The default (the turn was approved whole): Codex's sandbox alone decides; nothing pends."""
    url, served = agent
    model.set_script(fm.exec_command("echo ran-it"), fm.computed(lambda req: req.last_tool_output()))
    status, report = await send(url, "/v1/turns", order("say it"))
    assert status == 200 and report["status"] == "completed", report
    assert "ran-it" in (report["final_message"] or "") and served._seq == 0
