"""Structured JSON logs: one object per line on stderr (stdout belongs to
the stdio transport), every message passed through the redaction point."""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import Any

from codex_api.redaction import redact

# The user on whose behalf the current MCP request runs, once the gateway knows
# it. Log handlers read it to file each line under its user (the
# codex://logs/recent resource shows callers their own lines only); it is a
# context variable, so concurrent requests never see each other's.
_CALLER: ContextVar[str | None] = ContextVar("codex_gateway_caller", default=None)


def bind_caller(user: str | None) -> Token[str | None]:
    """Log lines from here on (in this context) belong to `user`."""
    return _CALLER.set(user)


def unbind_caller(token: Token[str | None]) -> None:
    _CALLER.reset(token)


def record_user(record: logging.LogRecord) -> str | None:
    """Whose line `record` is: the user of an audit event (set explicitly, also
    for calls refused before any tool code ran), else the caller of the request
    that logged it; None for the gateway's own lines (startup, background work)."""
    audit = getattr(record, "audit", None)
    if isinstance(audit, dict):
        user = audit.get("user")
        return user if isinstance(user, str) and user else None
    return _CALLER.get()


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The JSON object of one log record; audit events carry their fields."""
    message = record.getMessage()
    if record.exc_info and record.exc_info[0] is not None:
        message += f" ({record.exc_info[0].__name__})"
    fields: dict[str, Any] = {
        "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
        "level": record.levelname,
        "logger": record.name,
        "message": redact(message),
    }
    audit = getattr(record, "audit", None)
    if isinstance(audit, dict):
        fields["audit"] = audit
    return fields


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(record_fields(record), ensure_ascii=False, default=str)


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn installs its own text handlers unless told not to (log_config=None);
    # its loggers then propagate here.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
