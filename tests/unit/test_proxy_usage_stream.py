"""Reading the provider's usage from an SSE answer in any chunking."""

from __future__ import annotations

import json

import pytest

from codex_devenv.fake_model import Usage, message_item, respond, sse_events
from codex_proxy import usage_stream
from codex_proxy.usage_stream import UsageScanner


def _answer(usage: Usage) -> bytes:
    events = sse_events(respond(message_item("hello"), usage=usage), response_id="resp_1", model="m-1")
    return b"".join(e for e in events if e is not None)


@pytest.mark.parametrize("size", [1, 2, 7, 64, 100_000])
def test_usage_is_read_in_any_chunking(size: int) -> None:
    raw = _answer(Usage(120, 30, cached_tokens=20, reasoning_tokens=5))
    scanner = UsageScanner()
    for i in range(0, len(raw), size):
        scanner.feed(raw[i : i + size])
    scanner.close()
    assert scanner.reported is not None
    assert scanner.reported.model == "m-1" and scanner.reported.event == "response.completed"
    assert scanner.reported.usage.by_kind() == {
        "input": 120,
        "cached_input": 20,
        "output": 30,
        "reasoning": 5,
    }
    assert scanner.events == 3


def test_crlf_multiline_data_and_a_missing_final_blank_line() -> None:
    final = {
        "type": "response.completed",
        "response": {"model": "m", "usage": {"input_tokens": 3, "output_tokens": 4}},
    }
    text = json.dumps(final, indent=1)  # several lines: several data: fields
    raw = "event: response.completed\r\n" + "".join(f"data: {line}\r\n" for line in text.splitlines())
    scanner = UsageScanner()
    scanner.feed(raw.encode())
    scanner.close()
    assert scanner.reported is not None and scanner.reported.usage.output_tokens == 4


@pytest.mark.parametrize(
    "data",
    [
        b"data: not json\n\n",
        b'data: {"type":"response.completed"}\n\n',  # no response
        b'data: {"type":"response.completed","response":{"usage":"many"}}\n\n',
        b'data: {"type":"response.output_text.delta","response":{"usage":{"input_tokens":9}}}\n\n',
        b": a comment\n\n",
    ],
)
def test_malformed_or_other_events_report_nothing(data: bytes) -> None:
    scanner = UsageScanner()
    scanner.feed(data)
    scanner.close()
    assert scanner.reported is None


def test_hostile_usage_values_count_as_zero() -> None:
    usage = {"input_tokens": -5, "output_tokens": "9", "input_tokens_details": {"cached_tokens": True}}
    final = {"type": "response.completed", "response": {"usage": usage}}
    scanner = UsageScanner()
    scanner.feed(b"data: " + json.dumps(final).encode() + b"\n\n")
    assert scanner.reported is not None
    assert scanner.reported.usage.by_kind() == {"input": 0, "cached_input": 0, "output": 0, "reasoning": 0}


def test_an_oversized_event_is_skipped_and_the_next_one_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(usage_stream, "MAX_EVENT_BYTES", 1000)
    scanner = UsageScanner()
    scanner.feed(b"data: " + b"x" * 5000 + b"\n\n")  # one long line
    scanner.feed(b"data: " + b"y" * 600 + b"\ndata: " + b"y" * 600 + b"\n\n")  # many lines
    scanner.feed(_answer(Usage(1, 2)))
    scanner.close()
    assert scanner.reported is not None and scanner.reported.usage.output_tokens == 2
