"""The usage a model reports, read from the stream as it passes through.

The Responses API ends a streamed answer with one `response.completed` (or
`response.incomplete` / `response.failed`) event whose `response` carries
`usage` and `model`. The proxy forwards every byte as it arrives and feeds
the same bytes here; only the event being received is buffered, and an event
larger than MAX_EVENT_BYTES is skipped (no usage event is that large, though
`response.completed` repeats the whole output; see the cap).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from codex_api.session import Usage

FINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})
MAX_EVENT_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class Reported:
    usage: Usage
    model: str | None
    event: str


def from_response(response: Any, event: str) -> Reported | None:
    if not isinstance(response, dict) or not isinstance(response.get("usage"), dict):
        return None
    model = response.get("model")
    return Reported(
        Usage.from_responses_api(response["usage"]), model if isinstance(model, str) else None, event
    )


class UsageScanner:
    """Feed it the SSE bytes in any chunking; `reported` holds the last final event's usage."""

    def __init__(self) -> None:
        self._pending = bytearray()
        self._data: list[bytes] = []
        self._data_bytes = 0
        self._skipping = False
        self.reported: Reported | None = None
        self.events = 0

    def feed(self, chunk: bytes) -> None:
        self._pending += chunk
        while True:
            end = self._pending.find(b"\n")
            if end < 0:
                if len(self._pending) > MAX_EVENT_BYTES:  # one endless line
                    self._pending.clear()
                    self._skipping = True
                return
            line = bytes(self._pending[:end]).rstrip(b"\r")
            del self._pending[: end + 1]
            self._line(line)

    def _line(self, line: bytes) -> None:
        if not line:
            self._dispatch()
            return
        if self._skipping or not line.startswith(b"data:"):
            return  # `event:`, `id:`, comments: the type is in the data too
        value = line[5:]
        if value.startswith(b" "):
            value = value[1:]
        self._data_bytes += len(value)
        if self._data_bytes > MAX_EVENT_BYTES:
            self._data.clear()
            self._skipping = True
            return
        self._data.append(value)

    def _dispatch(self) -> None:
        data, skipped = b"\n".join(self._data), self._skipping
        self._data, self._data_bytes, self._skipping = [], 0, False
        if skipped or not data:
            return
        self.events += 1
        if not any(name.encode() in data for name in FINAL_EVENTS):
            return  # cheap: only final events are decoded
        try:
            message = json.loads(data)
        except ValueError:
            return
        if isinstance(message, dict) and message.get("type") in FINAL_EVENTS:
            reported = from_response(message.get("response"), str(message["type"]))
            if reported is not None:
                self.reported = reported

    def close(self) -> None:
        """The stream ended: an event without its closing blank line still counts."""
        if self._pending:
            self._line(bytes(self._pending).rstrip(b"\r"))
            self._pending.clear()
        self._dispatch()
