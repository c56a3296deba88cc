"""Codex's JSONL events -> what the turn produced. Pure and incremental.

`turn.completed.usage` is cumulative for the thread, so the usage of this
turn is the difference to the figure the previous turn ended with.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from codex_api.session import Usage

MAX_ERRORS = 10


def subtract(current: Usage, previous: Usage | None) -> Usage:
    if previous is None:
        return current
    return Usage(
        input_tokens=max(current.input_tokens - previous.input_tokens, 0),
        cached_input_tokens=max(current.cached_input_tokens - previous.cached_input_tokens, 0),
        output_tokens=max(current.output_tokens - previous.output_tokens, 0),
        reasoning_tokens=max(current.reasoning_tokens - previous.reasoning_tokens, 0),
    )


@dataclass
class TurnAccumulator:
    thread_id: str | None = None
    final_message: str | None = None
    cumulative_usage: Usage | None = None
    commands: int = 0
    file_changes: int = 0
    errors: list[str] = field(default_factory=list)
    turn_completed: bool = False
    turn_failed: bool = False
    events: int = 0
    last_event: str = ""

    def feed(self, line: str) -> dict[str, Any] | None:
        """Take one stdout line; return the parsed event (None for non-JSON lines)."""
        try:
            event = json.loads(line)
        except ValueError:
            return None
        if not isinstance(event, dict):
            return None
        self.events += 1
        kind = str(event.get("type", ""))
        self.last_event = kind
        if kind == "thread.started":
            self.thread_id = event.get("thread_id") or self.thread_id
        elif kind == "item.completed":
            self._item(event.get("item") or {})
        elif kind == "turn.completed":
            self.turn_completed = True
            self.cumulative_usage = Usage.from_codex(event.get("usage"))
        elif kind == "turn.failed":
            self.turn_failed = True
            self._error((event.get("error") or {}).get("message") or "turn failed")
        elif kind == "error":
            self._error(event.get("message") or "error")
        return event

    def _item(self, item: dict[str, Any]) -> None:
        kind = item.get("type")
        if kind == "agent_message":
            self.final_message = item.get("text", self.final_message)
            self.last_event = "agent_message"
        elif kind == "command_execution":
            self.commands += 1
            self.last_event = f"command: {str(item.get('command', ''))[:200]}"
        elif kind == "file_change":
            self.file_changes += max(len(item.get("changes") or []), 1)
            self.last_event = "file_change"
        elif kind == "error":
            self._error(item.get("message") or "error")

    def _error(self, message: str) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(str(message)[:2000])
