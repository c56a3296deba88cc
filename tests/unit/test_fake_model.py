"""The fake Responses API on its own, over plain HTTP: SSE framing, scripting,
recording, and every failure mode. (tests/integration/test_codex_cli_fake_model.py
runs the real Codex CLI against it.)"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from codex_devenv.fake_model import (
    DEFAULT_ANSWER,
    FakeModelServer,
    HttpError,
    RecordedRequest,
    Script,
    Usage,
    apply_patch,
    computed,
    cut_stream,
    exec_command,
    fail,
    http_error,
    message_item,
    respond,
    say,
)
from codex_devenv.process import ManagedProcess, free_port, wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-unit-test-secret-123"


@pytest.fixture
def server() -> Iterator[FakeModelServer]:
    with FakeModelServer() as srv:
        yield srv


def _conn(server: FakeModelServer, timeout: float = 10) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)


def _post(
    server: FakeModelServer, body: Any = None, *, path: str = "/v1/responses", key: str = KEY
) -> http.client.HTTPResponse:
    conn = _conn(server)
    payload = body if body is not None else {"model": "fake-model", "stream": True, "input": []}
    conn.request(
        "POST",
        path,
        body=json.dumps(payload),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
    )
    return conn.getresponse()


def _frames(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """Parse an SSE body strictly: every frame is `event: T` + one `data:` line, blank-line separated."""
    text = raw.decode()
    assert text.endswith("\n\n"), f"SSE body must end with a blank line: {text[-40:]!r}"
    frames = []
    for block in text[:-2].split("\n\n"):
        lines = block.split("\n")
        assert len(lines) == 2 and lines[0].startswith("event: ") and lines[1].startswith("data: "), block
        event, data = lines[0][len("event: ") :], json.loads(lines[1][len("data: ") :])
        assert data["type"] == event
        frames.append((event, data))
    return frames


def _stream(server: FakeModelServer, body: Any = None) -> list[tuple[str, dict[str, Any]]]:
    resp = _post(server, body)
    assert resp.status == 200
    assert resp.getheader("Content-Type") == "text/event-stream"
    return _frames(resp.read())


# --------------------------------------------------------------------------- framing


def test_default_answer_is_a_complete_sse_turn(server: FakeModelServer) -> None:
    resp = _post(server)
    assert resp.status == 200
    assert resp.getheader("Content-Type") == "text/event-stream"
    assert resp.getheader("Transfer-Encoding") == "chunked"
    frames = _frames(resp.read())
    assert [e for e, _ in frames] == ["response.created", "response.output_item.done", "response.completed"]
    assert frames[1][1]["item"] == message_item(DEFAULT_ANSWER)
    assert frames[1][1]["item"]["content"][0] == {
        "type": "output_text",
        "text": DEFAULT_ANSWER,
        "annotations": [],
    }
    completed = frames[2][1]["response"]
    assert completed["id"] == frames[0][1]["response"]["id"]
    assert completed["status"] == "completed"
    assert completed["model"] == "fake-model"
    assert completed["usage"] == {
        "input_tokens": 10,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 5,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 15,
    }
    assert [d["sequence_number"] for _, d in frames] == [0, 1, 2]


def test_one_output_item_done_per_item_and_scripted_usage(server: FakeModelServer) -> None:
    usage = Usage(input_tokens=1234, output_tokens=56, cached_tokens=1000, reasoning_tokens=7)
    server.set_script(say("first", usage=usage))
    frames = _stream(server)
    assert frames[-1][1]["response"]["usage"] == {
        "input_tokens": 1234,
        "input_tokens_details": {"cached_tokens": 1000},
        "output_tokens": 56,
        "output_tokens_details": {"reasoning_tokens": 7},
        "total_tokens": 1290,
    }
    server.set_script(respond(message_item("a"), message_item("b"), message_item("c")))
    frames = _stream(server)
    done = [d for e, d in frames if e == "response.output_item.done"]
    assert [d["item"]["content"][0]["text"] for d in done] == ["a", "b", "c"]
    assert [d["output_index"] for d in done] == [0, 1, 2]


def test_models_endpoint_and_unknown_routes(server: FakeModelServer) -> None:
    conn = _conn(server)
    conn.request("GET", "/v1/models?client_version=0.171.0")
    resp = conn.getresponse()
    assert resp.status == 200
    assert [m["id"] for m in json.loads(resp.read())["data"]] == ["fake-model"]
    conn.request("GET", "/v1/nothing")
    resp = conn.getresponse()
    assert resp.status == 404
    resp.read()
    assert [(r.method, r.path) for r in server.requests] == [
        ("GET", "/v1/models?client_version=0.171.0"),
        ("GET", "/v1/nothing"),
    ]
    assert server.responses_requests == []


def test_keep_alive_connection_serves_several_requests(server: FakeModelServer) -> None:
    conn = _conn(server)
    for _ in range(3):
        conn.request(
            "POST", "/v1/responses", body=b'{"stream": true}', headers={"Content-Type": "application/json"}
        )
        resp = conn.getresponse()
        assert _frames(resp.read())[-1][0] == "response.completed"
    assert len(server.responses_requests) == 3


def test_url_and_lifecycle() -> None:
    port = free_port()
    srv = FakeModelServer(port)
    assert srv.url == f"http://127.0.0.1:{port}/v1"
    srv.start()
    srv.start()  # idempotent
    try:
        assert _stream(srv)[-1][0] == "response.completed"
    finally:
        srv.stop()
        srv.stop()
    with pytest.raises(OSError):
        _post(srv)


def test_stop_does_not_hang_on_an_open_slow_stream() -> None:
    srv = FakeModelServer().start()
    srv.set_script(say("slow", delay=5))
    resp = _post(srv)
    assert resp.status == 200
    start = time.monotonic()
    srv.stop()
    assert time.monotonic() - start < 3


# --------------------------------------------------------------------------- scripting


def test_exec_command_is_a_function_call_with_json_arguments(server: FakeModelServer) -> None:
    server.set_script(exec_command("ls -la", call_id="call_1", workdir="/tmp"))
    item = _stream(server)[1][1]["item"]
    assert item["type"] == "function_call"
    assert item["name"] == "exec_command"
    assert item["call_id"] == "call_1"
    assert json.loads(item["arguments"]) == {"cmd": "ls -la", "workdir": "/tmp"}


def test_apply_patch_is_a_custom_tool_call_with_the_raw_patch(server: FakeModelServer) -> None:
    patch = "*** Begin Patch\n*** Add File: a.txt\n+hi\n*** End Patch\n"
    server.set_script(apply_patch(patch))
    item = _stream(server)[1][1]["item"]
    assert item["type"] == "custom_tool_call"
    assert item["name"] == "apply_patch"
    assert item["input"] == patch
    assert item["call_id"].startswith("call_")


def test_steps_answer_in_order_then_script_exhaustion_is_a_loud_500(server: FakeModelServer) -> None:
    server.set_script(say("one"), say("two"))
    assert _stream(server)[1][1]["item"]["content"][0]["text"] == "one"
    assert _stream(server)[1][1]["item"]["content"][0]["text"] == "two"
    resp = _post(server)
    assert resp.status == 500
    assert json.loads(resp.read())["error"]["code"] == "script_exhausted"
    assert server.errors == ["fake model: script exhausted after 2 steps (request #3)"]


def test_script_then_answers_after_the_steps(server: FakeModelServer) -> None:
    server.script = Script(say("scripted"), then=say("fallback"))
    texts = [_stream(server)[1][1]["item"]["content"][0]["text"] for _ in range(3)]
    assert texts == ["scripted", "fallback", "fallback"]
    assert server.errors == []
    server.reset()
    assert _stream(server)[1][1]["item"]["content"][0]["text"] == DEFAULT_ANSWER
    assert len(server.requests) == 1


def test_computed_step_answers_from_the_conversation(server: FakeModelServer) -> None:
    def echo_output(req: RecordedRequest) -> str:
        return f"the command printed {req.last_tool_output()!r}"

    server.set_script(computed(echo_output), computed(lambda req: say(f"users: {req.user_texts()}")))
    history = {
        "model": "fake-model",
        "stream": True,
        "input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "run it"}]},
            {"type": "function_call", "name": "exec_command", "arguments": "{}", "call_id": "c1"},
            {"type": "function_call_output", "call_id": "c1", "output": "Output:\nhello\n"},
        ],
    }
    assert (
        _stream(server, history)[1][1]["item"]["content"][0]["text"]
        == "the command printed 'Output:\\nhello\\n'"
    )
    assert _stream(server, history)[1][1]["item"]["content"][0]["text"] == "users: ['run it']"


def test_a_computed_step_that_raises_answers_500_and_is_recorded(server: FakeModelServer) -> None:
    server.set_script(computed(lambda req: 1 / 0))  # type: ignore[arg-type,return-value]
    resp = _post(server)
    assert resp.status == 500
    assert "ZeroDivisionError" in json.loads(resp.read())["error"]["message"]
    assert len(server.errors) == 1 and "ZeroDivisionError" in server.errors[0]
    assert _post(server).status == 500  # still up; the script is exhausted now


# --------------------------------------------------------------------------- recording


def test_requests_are_recorded_with_headers_and_parsed_body(server: FakeModelServer) -> None:
    body = {
        "model": "m1",
        "stream": True,
        "input": [],
        "tools": [{"type": "function", "name": "exec_command"}],
    }
    _post(server, body).read()
    (req,) = server.requests
    assert req.is_responses and req.method == "POST" and req.path == "/v1/responses"
    assert req.body == body
    assert req.tool_names() == ["exec_command"]
    assert req.authorization == f"Bearer {KEY}"
    assert req.header("Content-Type") == "application/json"
    assert KEY not in repr(req) and "<redacted>" in repr(req)
    assert KEY not in str(server.requests)


def test_the_key_is_never_logged(capsys: pytest.CaptureFixture[str]) -> None:
    with FakeModelServer(verbose=True) as srv:
        _post(srv).read()
        _post(srv, path="/v1/other").read()
    err = capsys.readouterr().err
    assert "POST /v1/responses" in err and "responses request" in err
    assert KEY not in err


def test_recording_is_thread_safe(server: FakeModelServer) -> None:
    server.set_script(*[say(f"answer {i}") for i in range(40)])
    answers: list[str] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        for _ in range(4):
            text = _stream(server, {"stream": True, "client": n})[1][1]["item"]["content"][0]["text"]
            with lock:
                answers.append(text)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(answers) == sorted(f"answer {i}" for i in range(40))  # each step used exactly once
    assert len(server.wait_for_requests(40, timeout=1)) == 40
    assert sorted(r.body["client"] for r in server.requests) == sorted(n for n in range(10) for _ in range(4))


def test_wait_for_requests_blocks_until_they_arrive(server: FakeModelServer) -> None:
    threading.Timer(0.2, lambda: _post(server).read()).start()
    start = time.monotonic()
    assert len(server.wait_for_requests(1, timeout=5)) == 1
    assert time.monotonic() - start >= 0.15
    with pytest.raises(TimeoutError):
        server.wait_for_requests(2, timeout=0.2)


# --------------------------------------------------------------------------- failure modes


def test_http_error(server: FakeModelServer) -> None:
    server.set_script(
        http_error(500), HttpError(429, "slow down", code="rate_limit_exceeded"), http_error(400)
    )
    resp = _post(server)
    assert resp.status == 500
    assert resp.getheader("Content-Type") == "application/json"
    assert json.loads(resp.read())["error"] == {
        "message": "fake model: scripted server error",
        "type": "server_error",
        "param": None,
        "code": "server_error",
    }
    resp = _post(server)
    assert resp.status == 429
    assert json.loads(resp.read())["error"]["code"] == "rate_limit_exceeded"
    resp = _post(server)
    assert resp.status == 400
    assert json.loads(resp.read())["error"]["type"] == "invalid_request_error"


def test_cut_stream_drops_the_connection_before_completed(server: FakeModelServer) -> None:
    server.set_script(cut_stream(message_item("partial")))
    resp = _post(server)
    assert resp.status == 200
    with pytest.raises(http.client.IncompleteRead) as excinfo:
        resp.read()
    partial = excinfo.value.partial.decode()
    assert "response.output_item.done" in partial and "partial" in partial
    assert "response.completed" not in partial


def test_clean_cut_ends_the_body_without_completed(server: FakeModelServer) -> None:
    server.set_script(cut_stream(message_item("a"), message_item("b"), clean=True))
    frames = _stream(server)
    assert [e for e, _ in frames] == [
        "response.created",
        "response.output_item.done",
        "response.output_item.done",
    ]


def test_response_failed(server: FakeModelServer) -> None:
    server.set_script(fail("model overloaded", code="server_error"))
    frames = _stream(server)
    assert [e for e, _ in frames] == ["response.created", "response.failed"]
    response = frames[-1][1]["response"]
    assert response["status"] == "failed"
    assert response["error"] == {"code": "server_error", "message": "model overloaded"}


def test_slow_stream_spaces_events_as_they_are_sent(server: FakeModelServer) -> None:
    server.set_script(say("slow", delay=0.3))
    resp = _post(server)
    start = time.monotonic()
    arrivals = []
    while line := resp.readline():
        if line.startswith(b"event: "):
            arrivals.append(time.monotonic() - start)
    assert len(arrivals) == 3
    assert arrivals[0] < 0.2  # streamed, not buffered until the end
    assert arrivals[1] - arrivals[0] >= 0.25 and arrivals[2] - arrivals[1] >= 0.25


# --------------------------------------------------------------------------- as a process


def test_runs_as_a_process(tmp_path: Path) -> None:
    port = free_port()
    proc = ManagedProcess(
        "fake-model",
        [
            sys.executable,
            "-m",
            "codex_devenv.fake_model",
            "--port",
            str(port),
            "--answer",
            "Hi from a process.",
        ],
        tmp_path / "fake-model.log",
    ).start()
    try:
        wait_for(lambda: "listening on" in proc.tail(), timeout=10, what="fake model process")
        assert f"http://127.0.0.1:{port}/v1" in proc.tail()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request(
            "POST", "/v1/responses", body=b'{"stream":true}', headers={"Authorization": f"Bearer {KEY}"}
        )
        frames = _frames(conn.getresponse().read())
        assert frames[1][1]["item"]["content"][0]["text"] == "Hi from a process."
        assert proc.proc is not None
        proc.proc.terminate()
        assert proc.proc.wait(timeout=10) == 0
        assert KEY not in proc.tail(100)
    finally:
        proc.stop()


def test_process_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "codex_devenv.fake_model", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--port" in out.stdout
