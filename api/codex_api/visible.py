"""Text as a terminal would not show it: one definition of the characters that
can hide or disguise text (terminal escapes, carriage returns, bidi
overrides, zero-width and other format characters, line separators), used
wherever a human reads what will run: `kubectl codex` shows them as escapes,
and an action of Codex that holds one is flagged (codex_api.actions)."""

from __future__ import annotations

import unicodedata

_HIDING = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_KEPT = frozenset("\n\t")


def hiding(ch: str) -> bool:
    return ch not in _KEPT and unicodedata.category(ch) in _HIDING


def _escape(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def visible(text: str) -> str:
    """`text` with every character that could hide or disguise text on a terminal as an escape."""
    return "".join(_escape(ch) if hiding(ch) else ch for ch in text)


def hidden_count(text: str) -> int:
    return sum(1 for ch in text if hiding(ch))
