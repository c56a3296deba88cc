"""The status writer's condition logic: Kubernetes conventions, pure.

A condition's lastTransitionTime changes only when its status changes; every
condition carries the generation it was computed from.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

Status = Literal["True", "False", "Unknown"]


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def set_condition(
    conditions: list[dict[str, Any]] | None,
    type_: str,
    status: Status,
    reason: str,
    message: str,
    generation: int | None,
    at: datetime,
) -> list[dict[str, Any]]:
    """A new conditions list with `type_` set; the others are kept as they were."""
    out: list[dict[str, Any]] = []
    previous: dict[str, Any] | None = None
    for cond in conditions or []:
        if cond.get("type") == type_:
            previous = cond
        else:
            out.append(cond)
    changed = previous is None or previous.get("status") != status
    entry: dict[str, Any] = {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message[:1024],
        "lastTransitionTime": rfc3339(at) if changed else previous["lastTransitionTime"],  # type: ignore[index]
    }
    if generation is not None:
        entry["observedGeneration"] = generation
    out.append(entry)
    return out


def get_condition(conditions: list[dict[str, Any]] | None, type_: str) -> dict[str, Any] | None:
    return next((c for c in conditions or [] if c.get("type") == type_), None)
