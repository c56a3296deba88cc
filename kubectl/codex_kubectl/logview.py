"""A runner pod's log made readable. Pure and incremental, so `logs -f` can
render line by line.

The runner prints Codex's `codex exec --json` events (one JSON object a
line), its own plain-text lines (and Codex's stderr), and ends with one
framed result line (`::codex-result::{...}`, codex_api.result)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from codex_api.result import FRAME_PREFIX, parse_frame
from codex_api.session import Usage

OUTPUT_LINES = 5
LINE_WIDTH = 200


def _short(text: Any, limit: int = LINE_WIDTH) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3].rstrip() + "..."


def _indent(text: str, prefix: str = "    ") -> list[str]:
    return [prefix + line.rstrip() for line in text.splitlines()]


class LogRenderer:
    """feed(line) -> the readable lines for it (often none: progress events
    that a later event repeats are skipped)."""

    def __init__(self) -> None:
        self.last_message: str | None = None

    def feed(self, line: str) -> list[str]:
        line = line.rstrip("\r\n")
        if line.startswith(FRAME_PREFIX):
            return self._frame(line)
        try:
            event = json.loads(line)
        except ValueError:
            return [line] if line.strip() else []
        if not isinstance(event, dict):
            return [line]
        return self._event(event)

    def feed_all(self, lines: Iterable[str]) -> list[str]:
        out: list[str] = []
        for line in lines:
            out += self.feed(line)
        return out

    # -- Codex events --------------------------------------------------------------
    def _event(self, event: Mapping[str, Any]) -> list[str]:
        kind = str(event.get("type", ""))
        if kind == "thread.started":
            return [f"== thread {event.get('thread_id', '?')} started"]
        if kind == "turn.started":
            return ["== turn started"]
        if kind in ("item.started", "item.updated"):
            return []  # item.completed carries the whole item
        if kind == "item.completed":
            return self._item(event.get("item") or {})
        if kind == "turn.completed":
            return [f"== turn completed: {usage_text(Usage.from_codex(event.get('usage')))}"]
        if kind == "turn.failed":
            message = (event.get("error") or {}).get("message") or "turn failed"
            return [f"== turn failed: {_short(message)}"]
        if kind == "error":
            return [f"error: {_short(event.get('message') or 'error')}"]
        return [f"[{kind or 'event'}]"]

    def _item(self, item: Mapping[str, Any]) -> list[str]:
        kind = str(item.get("type", ""))
        if kind == "agent_message":
            text = str(item.get("text") or "")
            self.last_message = text.strip()
            return ["codex:", *_indent(text)]
        if kind == "reasoning":
            return [f"thinking: {_short(item.get('text') or '')}"]
        if kind == "command_execution":
            code = item.get("exit_code")
            status = f"exit {code}" if code is not None else str(item.get("status") or "")
            lines = [f"$ {_short(item.get('command') or '')}" + (f"   ({status})" if status else "")]
            output = str(item.get("aggregated_output") or "").rstrip()
            if output:
                shown = output.splitlines()[:OUTPUT_LINES]
                lines += [f"    {_short(o)}" for o in shown]
                hidden = len(output.splitlines()) - len(shown)
                if hidden > 0:
                    lines.append(f"    ... {hidden} more lines")
            return lines
        if kind == "file_change":
            changes = item.get("changes") or []
            what = ", ".join(f"{c.get('kind', 'update')} {c.get('path', '?')}" for c in changes) or "files"
            return [f"files changed: {_short(what)}"]
        if kind == "mcp_tool_call":
            name = ".".join(str(x) for x in (item.get("server"), item.get("tool")) if x)
            return [f"tool call: {name or '?'} ({item.get('status', '')})".replace(" ()", "")]
        if kind == "web_search":
            return [f"web search: {_short(item.get('query') or '')}"]
        if kind == "todo_list":
            todos = item.get("items") or []
            return [
                "plan:",
                *[f"    [{'x' if t.get('completed') else ' '}] {_short(t.get('text', ''))}" for t in todos],
            ]
        if kind == "error":
            return [f"error: {_short(item.get('message') or 'error')}"]
        return [f"[{kind or 'item'}]"]

    # -- the runner's result frame -------------------------------------------------
    def _frame(self, line: str) -> list[str]:
        result = parse_frame(line)
        if result is None:
            return [line]
        return render_result(result, skip_message=self.last_message)


def usage_text(usage: Usage) -> str:
    return (
        f"{usage.input_tokens} input tokens ({usage.cached_input_tokens} cached), "
        f"{usage.output_tokens} output ({usage.reasoning_tokens} reasoning)"
    )


def render_result(result: Any, *, skip_message: str | None = None) -> list[str]:
    """A RunnerResult as a summary line, its errors, and the final message
    (unless the log already showed that message)."""
    parts = [str(result.outcome), f"exit {result.exit_code}"]
    parts.append(f"{result.commands} command{'s' if result.commands != 1 else ''}")
    parts.append(f"{result.file_changes} file change{'s' if result.file_changes != 1 else ''}")
    if result.duration_seconds is not None:
        parts.append(f"{result.duration_seconds:.1f}s")
    lines = [f"== result: {', '.join(parts)}"]
    if result.thread_id:
        lines.append(f"   thread: {result.thread_id}")
    lines.append(f"   usage: {usage_text(result.usage)}")
    lines += [f"   error: {_short(e)}" for e in result.errors]
    message = (result.final_message or "").strip()
    if message and message != skip_message:
        title = "final message (truncated):" if result.truncated else "final message:"
        lines += [title, *_indent(message)]
    return lines


def render_log(text: str) -> list[str]:
    return LogRenderer().feed_all(text.splitlines())
