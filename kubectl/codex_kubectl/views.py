"""Pure rendering: CodexSessions and ApprovalRequests (API-shaped dicts,
camelCase as the API server returns them) as tables, descriptions, JSON and
YAML. No I/O, and the current time is a parameter, so every output is
testable as text."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import yaml

NONE = "<none>"
SESSION_COLUMNS = ["NAME", "PHASE", "SANDBOX", "RISK", "REQUESTER", "MODEL", "COST", "AGE"]
SESSION_WIDE_COLUMNS = ["REASON", "APPROVAL", "POD", "TOKENS"]
PENDING_COLUMNS = ["NAME", "SESSION", "RISK", "REQUESTER", "REASONS", "EXPIRES"]
PENDING_WIDE_COLUMNS = ["JUSTIFICATION", "AGE"]
PROMPT_PREVIEW = 200
REASONS_WIDTH = 60
EVENTS_SHOWN = 15

Obj = Mapping[str, Any]


# --------------------------------------------------------------------------- time
def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 timestamp as the API server writes it (or None)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def human_duration(seconds: float) -> str:
    """kubectl's HumanDuration (k8s.io/apimachinery/pkg/util/duration)."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        rest = s % 60
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h{rest}m" if rest else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d{rest}h" if rest else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y{days}d" if days else f"{hours // 24 // 365}y"
    return f"{hours // 24 // 365}y"


def age(timestamp: Any, now: datetime) -> str:
    when = parse_time(timestamp)
    return human_duration((now - when).total_seconds()) if when else NONE


def relative(timestamp: Any, now: datetime) -> str:
    """'in 59m' for the future, '3m ago' for the past."""
    when = parse_time(timestamp)
    if when is None:
        return NONE
    delta = (when - now).total_seconds()
    return f"in {human_duration(delta)}" if delta >= 0 else f"{human_duration(-delta)} ago"


def stamp(timestamp: Any, now: datetime) -> str:
    """'2025-01-01T10:00:00Z (5m ago)'."""
    return f"{timestamp} ({relative(timestamp, now)})" if parse_time(timestamp) else NONE


# --------------------------------------------------------------------------- text
def shorten(text: str, limit: int) -> str:
    """One line of at most `limit` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: max(limit - 3, 0)].rstrip() + "..."


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Columns as kubectl aligns them: left-aligned, three spaces apart."""
    body = [[str(cell) if str(cell) != "" else NONE for cell in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in body:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = [
        "   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [list(headers), *body]
    ]
    return "\n".join(lines)


def _get(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def _text(value: Any) -> str:
    return NONE if value is None or value == "" else str(value)


def usd(value: Any) -> str:
    if not isinstance(value, int | float):
        return NONE
    return f"${value:.4f}" if value < 100 else f"${value:,.2f}"


def format_cost(cost: Any) -> str:
    """The actual cost, else the estimate marked with '~'."""
    actual, estimated = _get(cost, "actualUsd"), _get(cost, "estimatedUsd")
    if isinstance(actual, int | float):
        return usd(actual)
    if isinstance(estimated, int | float):
        return "~" + usd(estimated)
    return NONE


def format_tokens(usage: Any) -> str:
    if not isinstance(usage, Mapping):
        return NONE
    return f"{usage.get('inputTokens', 0)}/{usage.get('outputTokens', 0)}"


# --------------------------------------------------------------------------- sessions
def session_row(s: Obj, now: datetime, *, wide: bool = False, all_namespaces: bool = False) -> list[str]:
    spec, status = s.get("spec") or {}, s.get("status") or {}
    meta = s.get("metadata") or {}
    row = [
        _text(meta.get("name")),
        _text(status.get("phase")),
        _text(spec.get("sandbox")),
        _text(status.get("riskLevel")),
        _text(spec.get("requestedBy")),
        _text(status.get("model") or spec.get("model")),
        format_cost(status.get("cost")),
        age(meta.get("creationTimestamp"), now),
    ]
    if wide:
        row += [
            _text(status.get("reason")),
            _text(status.get("approvalRef")),
            _text(status.get("podName")),
            format_tokens(status.get("usage")),
        ]
    if all_namespaces:
        row.insert(0, _text(meta.get("namespace")))
    return row


def sessions_table(
    sessions: Sequence[Obj], now: datetime, *, wide: bool = False, all_namespaces: bool = False
) -> str:
    headers = SESSION_COLUMNS + (SESSION_WIDE_COLUMNS if wide else [])
    if all_namespaces:
        headers = ["NAMESPACE", *headers]
    return table(
        headers,
        [session_row(s, now, wide=wide, all_namespaces=all_namespaces) for s in sort_objects(sessions)],
    )


def sort_objects(objs: Iterable[Obj]) -> list[Obj]:
    return sorted(
        objs, key=lambda o: (_get(o, "metadata", "namespace") or "", _get(o, "metadata", "name") or "")
    )


# --------------------------------------------------------------------------- approvals
def approval_reasons(approval: Obj, session: Obj | None = None) -> str:
    """Why a human has to decide: the risk factors the request names, and the
    operator's policy reason from the session's Approved condition."""
    args = _get(approval, "spec", "arguments") or {}
    factors: list[str] = []
    if args.get("sandbox"):
        factors.append(f"sandbox {args['sandbox']}")
    if str(args.get("fullAuto", "")).lower() == "true":
        factors.append("fullAuto")
    if args.get("mode") == "ci":
        factors.append("ci mode")
    if not factors and _get(approval, "spec", "operation"):
        factors.append(str(approval["spec"]["operation"]))
    policy = next(
        (
            c.get("message")
            for c in (_get(session, "status", "conditions") or [])
            if c.get("type") == "Approved" and c.get("message")
        ),
        None,
    )
    if policy:
        factors.append(str(policy))
    return ", ".join(factors) or NONE


def pending_row(
    approval: Obj,
    session: Obj | None,
    now: datetime,
    *,
    wide: bool = False,
    all_namespaces: bool = False,
) -> list[str]:
    spec, meta = approval.get("spec") or {}, approval.get("metadata") or {}
    row = [
        _text(meta.get("name")),
        _text(spec.get("sessionRef")),
        _text(spec.get("riskLevel")),
        _text(spec.get("requestedBy")),
        shorten(approval_reasons(approval, session), REASONS_WIDTH),
        relative(spec.get("expiresAt"), now),
    ]
    if wide:
        row += [
            shorten(_text(spec.get("businessJustification")), REASONS_WIDTH),
            age(meta.get("creationTimestamp"), now),
        ]
    if all_namespaces:
        row.insert(0, _text(meta.get("namespace")))
    return row


def is_pending(approval: Obj) -> bool:
    """Still waiting for a human: no decision in the spec, and not Expired/decided by the operator."""
    if _get(approval, "spec", "decision"):
        return False
    return (_get(approval, "status", "phase") or "Pending") == "Pending"


def pending_table(
    approvals: Sequence[Obj],
    sessions: Mapping[tuple[str, str], Obj],
    now: datetime,
    *,
    wide: bool = False,
    all_namespaces: bool = False,
) -> str:
    headers = PENDING_COLUMNS + (PENDING_WIDE_COLUMNS if wide else [])
    if all_namespaces:
        headers = ["NAMESPACE", *headers]
    rows = []
    for a in sort_objects(approvals):
        key = (_get(a, "metadata", "namespace") or "", _get(a, "spec", "sessionRef") or "")
        rows.append(pending_row(a, sessions.get(key), now, wide=wide, all_namespaces=all_namespaces))
    return table(headers, rows)


def decision_summary(approval: Obj) -> str:
    """'Approved by alice: reason' from the spec (what admission verified), else the status phase."""
    spec, status = approval.get("spec") or {}, approval.get("status") or {}
    decision = spec.get("decision")
    if not decision:
        return _text(status.get("phase") or "Pending")
    who = spec.get("decidedBy") or status.get("decidedBy") or "unknown"
    text = f"{decision} by {who}"
    return f"{text}: {spec['reason']}" if spec.get("reason") else text


# --------------------------------------------------------------------------- output formats
def as_list(items: Sequence[Obj]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "List", "items": list(sort_objects(items)), "metadata": {}}


def dump(doc: Any, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(doc, indent=4, sort_keys=False)
    if fmt == "yaml":
        return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False).rstrip("\n")
    raise ValueError(f"unknown output format {fmt!r}")


def names_only(items: Sequence[Obj], resource: str) -> str:
    return "\n".join(f"{resource}/{_get(o, 'metadata', 'name')}" for o in sort_objects(items))


# --------------------------------------------------------------------------- describe
def _fields(pairs: Sequence[tuple[str, Any]], indent: int = 0) -> list[str]:
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


def _block(text: str, indent: int = 2) -> list[str]:
    return [(" " * indent + line).rstrip() for line in str(text).splitlines()]


def _bool(value: Any) -> str | None:
    return None if value is None else str(bool(value)).lower()


def describe_session(
    session: Obj,
    approval: Obj | None,
    events: Sequence[Obj] | None,
    now: datetime,
    *,
    events_error: str | None = None,
    approval_error: str | None = None,
) -> str:
    meta, spec, status = session.get("metadata") or {}, session.get("spec") or {}, session.get("status") or {}
    out: list[str] = _fields(
        [
            ("Name", meta.get("name")),
            ("Namespace", meta.get("namespace")),
            ("Requester", spec.get("requestedBy") or NONE),
            ("Created", stamp(meta.get("creationTimestamp"), now)),
        ]
    )
    workspace = spec.get("workspace") or {}
    out.append("Spec:")
    out += _fields(
        [
            ("Prompt", shorten(spec.get("prompt", ""), PROMPT_PREVIEW)),
            ("Sandbox", spec.get("sandbox")),
            ("Mode", spec.get("mode")),
            ("Full auto", _bool(spec.get("fullAuto"))),
            ("Model", spec.get("model") or "(operator default)"),
            ("Reasoning", spec.get("reasoningEffort")),
            ("Verbosity", spec.get("verbosity")),
            ("Resume from", spec.get("resumeFrom")),
            ("Workspace", workspace.get("type")),
            ("Timeout", f"{spec['timeoutSeconds']}s" if spec.get("timeoutSeconds") else None),
            (
                "Justification",
                shorten(spec["businessJustification"], PROMPT_PREVIEW)
                if spec.get("businessJustification")
                else None,
            ),
        ],
        indent=2,
    )
    out.append("Status:")
    out += _fields(
        [
            ("Phase", status.get("phase") or NONE),
            ("Reason", status.get("reason")),
            ("Message", status.get("message")),
            ("Risk", status.get("riskLevel")),
            ("Model", status.get("model")),
            ("Conversation", status.get("conversationId")),
            ("Thread", status.get("threadId")),
            ("Pod", status.get("podName")),
            ("Attempts", status.get("attempts")),
        ],
        indent=2,
    )
    if status.get("response"):
        title = "Result (truncated):" if status.get("responseTruncated") else "Result:"
        out += [title, *_block(status["response"])]
    usage = status.get("usage")
    if isinstance(usage, Mapping):
        out.append("Usage:")
        out += _fields(
            [
                (
                    "Input tokens",
                    f"{usage.get('inputTokens', 0)} ({usage.get('cachedInputTokens', 0)} cached)",
                ),
                (
                    "Output tokens",
                    f"{usage.get('outputTokens', 0)} ({usage.get('reasoningTokens', 0)} reasoning)",
                ),
            ],
            indent=2,
        )
    cost = status.get("cost")
    if isinstance(cost, Mapping):
        out.append("Cost:")
        providers = ", ".join(
            f"{p.get('provider')} {usd(p.get('actualUsd', p.get('estimatedUsd')))}"
            for p in cost.get("providers") or []
        )
        out += _fields(
            [
                ("Estimated", usd(cost["estimatedUsd"]) if "estimatedUsd" in cost else None),
                ("Actual", usd(cost["actualUsd"]) if "actualUsd" in cost else None),
                ("Providers", providers or None),
            ],
            indent=2,
        )
    timings = status.get("timings")
    if isinstance(timings, Mapping) and timings:
        out.append("Timings:")
        duration = timings.get("durationSeconds")
        out += _fields(
            [
                ("Queued", stamp(timings["queuedAt"], now) if timings.get("queuedAt") else None),
                ("Started", stamp(timings["startedAt"], now) if timings.get("startedAt") else None),
                ("Completed", stamp(timings["completedAt"], now) if timings.get("completedAt") else None),
                ("Duration", f"{duration:.1f}s" if isinstance(duration, int | float) else None),
            ],
            indent=2,
        )
    progress = status.get("progress")
    if isinstance(progress, Mapping) and progress.get("eventCount"):
        out.append("Progress:")
        out += _fields(
            [
                ("Events", progress.get("eventCount")),
                ("Commands", progress.get("commands")),
                ("File changes", progress.get("fileChanges")),
                ("Last event", progress.get("lastEvent")),
            ],
            indent=2,
        )
    conditions = status.get("conditions") or []
    out.append("Conditions:")
    if conditions:
        rows = [
            [
                _text(c.get("type")),
                _text(c.get("status")),
                _text(c.get("reason")),
                age(c.get("lastTransitionTime"), now),
                _text(c.get("message")),
            ]
            for c in conditions
        ]
        out += _block(table(["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"], rows))
    else:
        out.append(f"  {NONE}")
    out += _describe_approval(status.get("approvalRef"), approval, approval_error, now)
    out += _describe_events(events, events_error, now)
    return "\n".join(out)


def _describe_approval(ref: Any, approval: Obj | None, error: str | None, now: datetime) -> list[str]:
    if approval is None:
        if error:
            return ["Approval:", f"  {ref or NONE}: <unavailable: {error}>"]
        return ["Approval:", f"  {ref or 'not needed'}"]
    spec, status, meta = (
        approval.get("spec") or {},
        approval.get("status") or {},
        approval.get("metadata") or {},
    )
    lines = ["Approval:"]
    lines += _fields(
        [
            ("Name", meta.get("name")),
            ("Phase", status.get("phase") or "Pending"),
            ("Risk", spec.get("riskLevel")),
            ("Decision", decision_summary(approval) if spec.get("decision") else None),
            ("Expires", stamp(spec.get("expiresAt"), now)),
            ("Decided at", stamp(status["decidedAt"], now) if status.get("decidedAt") else None),
            ("Message", status.get("message")),
        ],
        indent=2,
    )
    return lines


def event_time(event: Obj) -> str:
    for key in ("lastTimestamp", "eventTime", "firstTimestamp"):
        value = event.get(key)
        if value:
            return str(value)
    return str(_get(event, "metadata", "creationTimestamp") or "")


def _describe_events(events: Sequence[Obj] | None, error: str | None, now: datetime) -> list[str]:
    if error:
        return [f"Events:  <unavailable: {error}>"]
    if not events:
        return [f"Events:  {NONE}"]
    recent = sorted(events, key=lambda e: parse_time(event_time(e)) or now)[-EVENTS_SHOWN:]
    rows = [
        [
            _text(e.get("type")),
            _text(e.get("reason")),
            age(event_time(e), now),
            f"{_kind_short(_get(e, 'involvedObject', 'kind'))}/{_get(e, 'involvedObject', 'name')}",
            _text(e.get("reportingComponent") or _get(e, "source", "component")),
            shorten(_text(e.get("message")), 200),
        ]
        for e in recent
    ]
    return ["Events:", *_block(table(["TYPE", "REASON", "AGE", "OBJECT", "FROM", "MESSAGE"], rows))]


def _kind_short(kind: Any) -> str:
    return {"CodexSession": "cxs", "ApprovalRequest": "cxar", "Pod": "pod"}.get(str(kind), str(kind).lower())
