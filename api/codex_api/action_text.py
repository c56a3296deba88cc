"""An action's request as text a person reads before deciding it: every field
of what will run, whole. `kubectl codex describe` and the gateway's MCP task
(the elicitation a client shows) print the same text, escaped with
codex_api.visible so a hidden character cannot change what is read."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def fields(pairs: Sequence[tuple[str, Any]], indent: int = 0) -> list[str]:
    """`Key:   value` lines, aligned; empty values left out; multi-line values indented."""
    shown = [(k, v) for k, v in pairs if v is not None and v != ""]
    if not shown:
        return []
    width = max(len(k) for k, _ in shown) + 3
    pad = " " * indent
    lines = []
    for key, value in shown:
        text = str(value).splitlines() or [""]
        lines.append(f"{pad}{(key + ':').ljust(width)}{text[0]}".rstrip())
        lines.extend(f"{pad}{' ' * width}{more}".rstrip() for more in text[1:])
    return lines


def block(text: str, indent: int = 2) -> list[str]:
    return [(" " * indent + line).rstrip() for line in str(text).splitlines()]


def action_text(action: Mapping[str, Any]) -> str:
    """Everything an action's request says will run, whole (escape it with visible())."""
    lines = fields(
        [
            ("Kind", action.get("kind")),
            ("Command", action.get("command")),
            ("Directory", action.get("cwd")),
            ("Network host", action.get("networkHost")),
            ("Reason", action.get("reason")),
            ("Codex offers", ", ".join(action.get("offered") or [])),
            (
                "WARNING",
                "it holds characters a terminal hides or acts on; they are shown escaped here"
                if action.get("hiddenCharacters")
                else None,
            ),
        ]
    )
    permissions = action.get("permissions")
    if permissions:
        lines += fields(
            [
                ("Network", "yes" if permissions.get("network") else "no"),
                ("Read", ", ".join(permissions.get("read") or []) or None),
                ("Write", ", ".join(permissions.get("write") or []) or None),
            ]
        )
    for change in action.get("changes") or []:
        moved = f" -> {change['moveTo']}" if change.get("moveTo") else ""
        lines.append(f"{change.get('change')} {change.get('path')}{moved}:")
        lines += block(change.get("diff") or "", indent=2)
    return "\n".join(lines)
