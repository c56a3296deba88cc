"""A scripted fake of the OpenAI Responses API on 127.0.0.1.

The real Codex CLI talks to it through a custom model provider
(`wire_api = "responses"`), so tests and the offline demo run Codex itself,
offline and deterministically. Codex makes one kind of model request:
`POST {base_url}/responses` with `stream: true` and the whole conversation in
`input` (no previous_response_id). The answer is Server-Sent Events, one
`response.output_item.done` per output item and then `response.completed`
with the usage (codex-rs `codex-api/src/sse/responses.rs` reads exactly
these; `usage.total_tokens` is required there, the rest of the usage is
optional; a `response.created` frame is sent first, as the real API does).

A test scripts what the model does, one step per request:

    server.set_script(
        exec_command("cat notes.txt"),                                  # request 1: run a command
        computed(lambda req: f"it said {req.last_tool_output()!r}"),   # request 2: sees its output
    )

Steps: `say` (assistant message), `exec_command` / `apply_patch` (tool
calls; the next request carries their output), `respond` (any items),
`computed` (a function of the recorded request), `http_error`,
`cut_stream`, `fail` (a `response.failed` event); every streamed step takes
`delay=` seconds between events. Without a script every request gets
DEFAULT_ANSWER. Every request is recorded (method, path, headers with the
Authorization header kept for assertions but never logged or repr'd, parsed
JSON body).

As a process (for `make dev`): `python -m codex_devenv.fake_model --port 18080`.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import itertools
import json
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DEFAULT_ANSWER = "Hello from the fake model."
DEFAULT_MODEL = "fake-model"
_SECRET_HEADERS = frozenset({"authorization", "openai-api-key", "x-api-key", "api-key"})


# --------------------------------------------------------------------------- usage and items


@dataclass(frozen=True)
class Usage:
    """Token usage reported in `response.completed` (Responses API field names)."""

    input_tokens: int = 10
    output_tokens: int = 5
    cached_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def to_json(self) -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens,
            "input_tokens_details": {"cached_tokens": self.cached_tokens},
            "output_tokens": self.output_tokens,
            "output_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
            "total_tokens": self.total_tokens,
        }


_ids = itertools.count(1)
_ids_lock = threading.Lock()


def _new_id(prefix: str) -> str:
    with _ids_lock:
        return f"{prefix}_fake{next(_ids):06d}"


def message_item(text: str) -> dict[str, Any]:
    """An assistant message output item."""
    return {
        "type": "message",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


def exec_command_item(cmd: str, *, call_id: str | None = None, **arguments: Any) -> dict[str, Any]:
    """A `function_call` of Codex's `exec_command` tool (arguments: cmd, workdir, yield_time_ms, ...)."""
    return {
        "type": "function_call",
        "name": "exec_command",
        "arguments": json.dumps({"cmd": cmd, **arguments}),
        "call_id": call_id or _new_id("call"),
    }


def apply_patch_item(patch: str, *, call_id: str | None = None) -> dict[str, Any]:
    """A `custom_tool_call` of Codex's freeform `apply_patch` tool; `patch` is the raw patch text."""
    return {
        "type": "custom_tool_call",
        "name": "apply_patch",
        "input": patch,
        "call_id": call_id or _new_id("call"),
    }


# --------------------------------------------------------------------------- recorded requests


@dataclass
class RecordedRequest:
    """One request as the fake received it. `headers` keys are lower-case."""

    method: str
    path: str
    headers: dict[str, str] = field(repr=False)
    body: Any  # parsed JSON, or None when the body was empty or not JSON
    raw_body: bytes = field(repr=False)
    received_at: float

    def __repr__(self) -> str:  # never shows secrets
        shown = {k: ("<redacted>" if k in _SECRET_HEADERS else v) for k, v in self.headers.items()}
        return f"RecordedRequest({self.method} {self.path}, headers={shown}, body={_short(self.body)})"

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    @property
    def authorization(self) -> str | None:
        return self.header("authorization")

    @property
    def is_responses(self) -> bool:
        return self.method == "POST" and self.path.split("?")[0].endswith("/responses")

    @property
    def input(self) -> list[dict[str, Any]]:
        """The conversation items Codex sent (`input` of a responses request)."""
        if isinstance(self.body, dict) and isinstance(self.body.get("input"), list):
            return [i for i in self.body["input"] if isinstance(i, dict)]
        return []

    def tool_names(self) -> list[str]:
        tools = self.body.get("tools", []) if isinstance(self.body, dict) else []
        return [str(t.get("name") or t.get("type")) for t in tools if isinstance(t, dict)]

    def tool_outputs(self) -> list[dict[str, Any]]:
        """`function_call_output` and `custom_tool_call_output` items, oldest first."""
        return [i for i in self.input if i.get("type") in ("function_call_output", "custom_tool_call_output")]

    def last_tool_output(self) -> str | None:
        outputs = self.tool_outputs()
        return output_text(outputs[-1]) if outputs else None

    def user_texts(self) -> list[str]:
        """The text of every user message in the history, oldest first."""
        return [
            "".join(str(c.get("text", "")) for c in item.get("content", []) if isinstance(c, dict))
            for item in self.input
            if item.get("type") == "message" and item.get("role") == "user"
        ]

    def assistant_texts(self) -> list[str]:
        return [
            "".join(str(c.get("text", "")) for c in item.get("content", []) if isinstance(c, dict))
            for item in self.input
            if item.get("type") == "message" and item.get("role") == "assistant"
        ]


def output_text(item: dict[str, Any]) -> str:
    """The text of a tool output item (`output` is a string or a list of content items)."""
    out = item.get("output")
    if isinstance(out, str):
        return out
    if isinstance(out, dict):  # older shape: {"content": ..., "success": ...}
        return str(out.get("content", ""))
    if isinstance(out, list):
        return "".join(str(c.get("text", "")) for c in out if isinstance(c, dict))
    return ""


def _short(value: Any, limit: int = 200) -> str:
    text = json.dumps(value) if value is not None else "None"
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------- steps


@dataclass(frozen=True)
class Respond:
    """Stream `items` and finish as told.

    end: "completed" (normal), "failed" (`response.failed` with `error`, no
    completed), "cut" (the connection is dropped mid-body, before
    `response.completed`), "eof" (the body ends cleanly without
    `response.completed`). `cut_after` items are sent before a cut/eof.
    """

    items: tuple[dict[str, Any], ...] = ()
    usage: Usage = Usage()
    delay: float = 0.0
    end: str = "completed"
    error: dict[str, Any] | None = None
    cut_after: int | None = None
    response_id: str | None = None

    def __post_init__(self) -> None:
        if self.end not in ("completed", "failed", "cut", "eof"):
            raise ValueError(f"unknown end {self.end!r}")


@dataclass(frozen=True)
class HttpError:
    """Answer with a plain HTTP error (JSON body in the OpenAI error shape)."""

    status: int = 500
    message: str = "fake model: scripted server error"
    code: str | None = "server_error"
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Computed:
    """A step computed from the request: fn(request) -> step, or a str (an assistant message)."""

    fn: Callable[[RecordedRequest], Step | str]


Step = Respond | HttpError | Computed


def respond(*items: dict[str, Any], usage: Usage | None = None, delay: float = 0.0) -> Respond:
    return Respond(items=tuple(items), usage=usage or Usage(), delay=delay)


def say(text: str, *, usage: Usage | None = None, delay: float = 0.0) -> Respond:
    """The model answers `text` and ends its turn."""
    return respond(message_item(text), usage=usage, delay=delay)


# What a hostile model has Codex run to look for keys: every process's
# environment, its own, the service account path and the Codex home.
HOSTILE_READS = (
    "for f in /proc/[0-9]*/environ; do echo \"== $f\"; tr '\\0' '\\n' < $f; done; "
    "echo '== env'; env; echo '== sa'; ls -la /var/run/secrets 2>&1; "
    "echo '== home'; grep -rs . $CODEX_HOME 2>/dev/null | head -100"
)


def exec_command(
    cmd: str, *, call_id: str | None = None, usage: Usage | None = None, delay: float = 0.0, **arguments: Any
) -> Respond:
    """The model runs a shell command through `exec_command`; the next request carries its output."""
    return respond(exec_command_item(cmd, call_id=call_id, **arguments), usage=usage, delay=delay)


def apply_patch(
    patch: str, *, call_id: str | None = None, usage: Usage | None = None, delay: float = 0.0
) -> Respond:
    """The model edits files with `apply_patch` (`*** Begin Patch` ... `*** End Patch`)."""
    return respond(apply_patch_item(patch, call_id=call_id), usage=usage, delay=delay)


def computed(fn: Callable[[RecordedRequest], Step | str]) -> Computed:
    return Computed(fn)


def http_error(status: int = 500, message: str = "fake model: scripted server error") -> HttpError:
    return HttpError(status=status, message=message)


def cut_stream(*items: dict[str, Any], clean: bool = False, delay: float = 0.0) -> Respond:
    """Send `items`, then end the stream before `response.completed`: drop the
    connection mid-body (default) or, with clean=True, end the body normally."""
    return Respond(items=tuple(items), end="eof" if clean else "cut", delay=delay)


def fail(
    message: str = "fake model: scripted failure",
    *,
    code: str = "server_error",
    items: Sequence[dict[str, Any]] = (),
    delay: float = 0.0,
) -> Respond:
    """A `response.failed` event instead of `response.completed`."""
    return Respond(items=tuple(items), end="failed", error={"code": code, "message": message}, delay=delay)


class Script:
    """Steps answered in order, one per `POST /responses` request.

    When the steps run out, `then` answers every further request; by default
    an HTTP 500 saying the script is exhausted (recorded in
    FakeModelServer.errors), so an unexpected extra request fails loudly.
    """

    def __init__(self, *steps: Step, then: Step | None = None) -> None:
        self._steps = list(steps)
        self._then = then
        self._lock = threading.Lock()
        self.used = 0

    def next_step(self) -> Step | None:
        with self._lock:
            if self._steps:
                self.used += 1
                return self._steps.pop(0)
            return self._then

    def extend(self, *steps: Step) -> None:
        with self._lock:
            self._steps.extend(steps)

    @property
    def remaining(self) -> int:
        with self._lock:
            return len(self._steps)


# --------------------------------------------------------------------------- server


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # As real servers do: without it a kept-alive client waits out a delayed
    # ACK (40 ms) behind each small write of a streamed answer.
    disable_nagle_algorithm = True
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # headers are never logged
        if self.server.owner.verbose:
            sys.stderr.write(f"[fake-model] {self.address_string()} {format % args}\n")

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        encoding = (self.headers.get("Content-Encoding") or "identity").lower()
        if encoding == "gzip":
            raw = gzip.decompress(raw)
        try:
            body = json.loads(raw) if raw and encoding in ("identity", "gzip") else None
        except ValueError:
            body = None
        request = RecordedRequest(
            method=self.command,
            path=self.path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            raw_body=raw,
            received_at=time.time(),
        )
        owner = self.server.owner
        owner._record(request)
        route = self.path.split("?")[0].rstrip("/")
        if encoding not in ("identity", "gzip"):
            self._send_json(
                415, {"error": {"message": f"fake model: unsupported Content-Encoding {encoding}"}}
            )
        elif self.command == "GET" and route.endswith("/models"):
            self._send_json(200, owner.models_json())
        elif self.command == "POST" and route.endswith("/responses"):
            self._answer(owner._step_for(request), request)
        else:
            self._send_json(404, {"error": {"message": f"fake model: no route {self.command} {route}"}})

    # -- replies

    def _send_json(self, status: int, payload: Any, headers: Sequence[tuple[str, str]] = ()) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _answer(self, step: Step, request: RecordedRequest) -> None:
        depth = 0
        while isinstance(step, Computed):
            depth += 1
            try:
                if depth > 10:
                    raise RecursionError("computed steps nested more than 10 deep")
                result = step.fn(request)
            except Exception as exc:  # a broken test callable: answer 500 and keep the server up
                message = f"fake model: computed step raised {type(exc).__name__}: {exc}"
                self.server.owner._error(message)
                step = HttpError(500, message, code="computed_step_failed")
                break
            step = say(result) if isinstance(result, str) else result
        if isinstance(step, HttpError):
            kind = "server_error" if step.status >= 500 else "invalid_request_error"
            error = {"message": step.message, "type": kind, "param": None, "code": step.code}
            self._send_json(step.status, {"error": error}, step.headers)
            return
        self._stream(step, request)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _stream(self, step: Respond, request: RecordedRequest) -> None:
        model = request.body.get("model", DEFAULT_MODEL) if isinstance(request.body, dict) else DEFAULT_MODEL
        response_id = step.response_id or _new_id("resp")
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("x-request-id", response_id)
        self.end_headers()
        try:
            for i, event in enumerate(sse_events(step, response_id=response_id, model=model)):
                if i and step.delay:
                    time.sleep(step.delay)
                if event is None:
                    # Drop the connection mid-body: no terminating chunk.
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self._chunk(event)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away (e.g. the test killed codex)


def sse_event(payload: dict[str, Any]) -> bytes:
    """One SSE frame: `event: <type>` and one `data:` line of JSON, then a blank line."""
    return f"event: {payload['type']}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


def sse_events(step: Respond, *, response_id: str, model: str = DEFAULT_MODEL) -> Iterator[bytes | None]:
    """The frames of a streamed step, in order (None where the connection is dropped)."""
    seq = itertools.count()
    created = {"id": response_id, "object": "response", "status": "in_progress", "model": model, "output": []}
    yield sse_event({"type": "response.created", "sequence_number": next(seq), "response": created})
    items = step.items
    if step.end in ("cut", "eof") and step.cut_after is not None:
        items = items[: step.cut_after]
    for index, item in enumerate(items):
        payload = {"type": "response.output_item.done", "sequence_number": next(seq), "output_index": index}
        yield sse_event({**payload, "item": item})
    if step.end == "cut":
        yield None
        return
    if step.end == "eof":
        return
    response: dict[str, Any] = {
        "id": response_id,
        "object": "response",
        "model": model,
        "output": list(items),
    }
    if step.end == "failed":
        response.update(status="failed", error=step.error or {"code": "server_error", "message": "failed"})
        yield sse_event({"type": "response.failed", "sequence_number": next(seq), "response": response})
        return
    response.update(status="completed", usage=step.usage.to_json())
    yield sse_event({"type": "response.completed", "sequence_number": next(seq), "response": response})


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default backlog is 5: a burst of connections (the proxy
    # bench's 200 streams) would wait out SYN retransmits, seconds each.
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], owner: FakeModelServer) -> None:
        self.owner = owner
        self._connections: set[socket.socket] = set()
        self._conn_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conn_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conn_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_all_connections(self) -> None:
        with self._conn_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class FakeModelServer:
    """The fake on 127.0.0.1 in a background thread. `url` is the provider base_url (…/v1)."""

    def __init__(self, port: int = 0, *, host: str = "127.0.0.1", verbose: bool = False) -> None:
        self.host = host
        self.port = port
        self.verbose = verbose
        self.script: Script | None = None
        self.default_step: Step = say(DEFAULT_ANSWER)
        self.models: list[str] = [DEFAULT_MODEL]
        self.errors: list[str] = []
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Condition()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle

    def start(self) -> FakeModelServer:
        if self._httpd is not None:
            return self
        self._httpd = _HTTPServer((self.host, self.port), self)
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-model", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.close_all_connections()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeModelServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    # -- scripting and recording

    def set_script(self, *steps: Step, then: Step | None = None) -> Script:
        self.script = Script(*steps, then=then)
        return self.script

    def reset(self) -> None:
        """Forget the script, the recorded requests and errors."""
        with self._lock:
            self.script = None
            self._requests.clear()
            self.errors.clear()

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def responses_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.is_responses]

    def wait_for_requests(self, count: int, timeout: float = 10.0) -> list[RecordedRequest]:
        """Block until `count` responses requests arrived; return them."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while sum(r.is_responses for r in self._requests) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"fake model: {count} responses requests did not arrive in {timeout}s")
                self._lock.wait(left)
            return [r for r in self._requests if r.is_responses]

    def models_json(self) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.models],
        }

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)
            self._lock.notify_all()
        if self.verbose and request.is_responses:
            body = request.body if isinstance(request.body, dict) else {}
            sys.stderr.write(
                f"[fake-model] responses request: model={body.get('model')!r} input_items={len(request.input)}\n"
            )

    def _error(self, message: str) -> None:
        with self._lock:
            self.errors.append(message)
        if self.verbose:
            sys.stderr.write(f"[fake-model] {message}\n")

    def _step_for(self, request: RecordedRequest) -> Step:
        script = self.script
        if script is None:
            return self.default_step
        step = script.next_step()
        if step is None:
            count = len(self.responses_requests)
            message = f"fake model: script exhausted after {script.used} steps (request #{count})"
            self._error(message)
            return HttpError(status=500, message=message, code="script_exhausted")
        return step


# --------------------------------------------------------------------------- process entry point


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m codex_devenv.fake_model",
        description="A fake OpenAI Responses API on 127.0.0.1 that answers every request the same way.",
    )
    parser.add_argument("--port", type=int, default=18080)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--answer", default=DEFAULT_ANSWER, help="the assistant message of every answer")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds between SSE events")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)

    server = FakeModelServer(args.port, host=args.host, verbose=not args.quiet)
    server.default_step = say(args.answer, delay=args.delay)
    server.start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"fake model listening on {server.url}", flush=True)
    try:
        stop.wait()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
