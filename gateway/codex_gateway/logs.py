"""Structured JSON logs: one object per line on stderr (stdout belongs to
the stdio transport), every message passed through the redaction point."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from codex_api.redaction import redact


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
