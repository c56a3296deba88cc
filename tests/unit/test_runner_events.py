"""Codex JSONL events -> the turn's result; usage per turn from cumulative figures."""

from __future__ import annotations

import json

from codex_api.session import Usage
from codex_runner.events import TurnAccumulator, subtract


def _feed(acc: TurnAccumulator, *events: dict[str, object]) -> None:
    for event in events:
        acc.feed(json.dumps(event))


def test_a_completed_turn() -> None:
    acc = TurnAccumulator()
    _feed(
        acc,
        {"type": "thread.started", "thread_id": "t-1"},
        {"type": "turn.started"},
        {"type": "item.completed", "item": {"id": "0", "type": "reasoning", "text": "thinking"}},
        {
            "type": "item.completed",
            "item": {"id": "1", "type": "command_execution", "command": "ls", "exit_code": 0},
        },
        {
            "type": "item.completed",
            "item": {"id": "2", "type": "file_change", "changes": [{"path": "a"}, {"path": "b"}]},
        },
        {"type": "item.completed", "item": {"id": "3", "type": "agent_message", "text": "Done."}},
        {
            "type": "turn.completed",
            "usage": {
                "input_tokens": 100,
                "cached_input_tokens": 40,
                "output_tokens": 7,
                "reasoning_output_tokens": 3,
            },
        },
    )
    assert acc.thread_id == "t-1" and acc.final_message == "Done."
    assert acc.commands == 1 and acc.file_changes == 2
    assert acc.turn_completed and not acc.turn_failed and acc.errors == []
    assert acc.cumulative_usage == Usage(
        input_tokens=100, cached_input_tokens=40, output_tokens=7, reasoning_tokens=3
    )
    assert acc.events == 7


def test_failures_are_collected_and_bounded() -> None:
    acc = TurnAccumulator()
    acc.feed("not json")
    acc.feed("[1, 2]")
    _feed(acc, *({"type": "error", "message": f"retry {i}"} for i in range(15)))
    _feed(acc, {"type": "turn.failed", "error": {"message": "stream disconnected"}})
    assert acc.turn_failed and len(acc.errors) == 10 and acc.errors[0] == "retry 0"
    assert acc.events == 16  # non-JSON and non-object lines are not events


def test_usage_of_a_reply_is_the_difference() -> None:
    first = Usage(input_tokens=100, cached_input_tokens=0, output_tokens=10, reasoning_tokens=2)
    second = Usage(input_tokens=260, cached_input_tokens=90, output_tokens=25, reasoning_tokens=2)
    assert subtract(second, first) == Usage(
        input_tokens=160, cached_input_tokens=90, output_tokens=15, reasoning_tokens=0
    )
    assert subtract(second, None) == second
    assert subtract(first, second) == Usage()  # never negative
    assert Usage.from_codex({"input_tokens": 5}) == Usage(input_tokens=5)
