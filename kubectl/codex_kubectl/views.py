"""Pure rendering: CodexSessions and ApprovalRequests (API-shaped dicts,
camelCase as the API server returns them) as tables, descriptions, JSON and
YAML. No I/O, and the current time is a parameter, so every output is
testable as text."""

from __future__ import annotations

import json
import re
import typing
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import yaml
from pydantic import BaseModel

from codex_api import names
from codex_api.action_text import action_text
from codex_api.action_text import block as _block
from codex_api.action_text import fields as _fields
from codex_api.binding import spec_digest
from codex_api.session import CodexSessionSpec, Cost, Usage
from codex_api.status import approval_status, session_status
from codex_api.visible import hidden_count, visible

from . import verify

NONE = "<none>"
SESSION_COLUMNS = ["NAME", "PHASE", "SANDBOX", "RISK", "REQUESTER", "MODEL", "COST", "AGE"]
SESSION_WIDE_COLUMNS = ["REASON", "APPROVAL", "POD", "TOKENS"]
PENDING_COLUMNS = ["NAME", "SESSION", "RISK", "REQUESTER", "DIGEST", "REASONS", "EXPIRES"]
PENDING_WIDE_COLUMNS = ["JUSTIFICATION", "AGE"]
REASONS_WIDTH = 60
EVENTS_SHOWN = 15
# Where the whole of anything a table shortens is (stderr, after a table).
PENDING_HINT = (
    "What a request would run, in full, and whether it still matches its session: kubectl codex describe NAME"
)

Obj = Mapping[str, Any]


# --------------------------------------------------------------------------- time
def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 timestamp as the API server writes it, or a typed status's datetime (or None)."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
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
    when = parse_time(timestamp)
    if when is None:
        return NONE
    shown = (
        when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if isinstance(timestamp, datetime) else timestamp
    )
    return f"{shown} ({relative(timestamp, now)})"


# --------------------------------------------------------------------------- text
def shorten(text: str, limit: int) -> str:
    """One line of at most `limit` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: max(limit - 3, 0)].rstrip() + "..."


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Columns as kubectl aligns them: left-aligned, three spaces apart."""
    # Cells hold what requesters typed (justifications, names): no terminal escapes get through.
    body = [[visible(str(cell)) if str(cell) != "" else NONE for cell in row] for row in rows]
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


def format_cost(cost: Cost | None) -> str:
    """The actual cost, else the estimate marked with '~'."""
    if cost is not None and cost.actual_usd is not None:
        return usd(cost.actual_usd)
    if cost is not None and cost.estimated_usd is not None:
        return "~" + usd(cost.estimated_usd)
    return NONE


def format_tokens(usage: Usage | None) -> str:
    return NONE if usage is None else f"{usage.input_tokens}/{usage.output_tokens}"


# --------------------------------------------------------------------------- sessions
def session_row(s: Obj, now: datetime, *, wide: bool = False, all_namespaces: bool = False) -> list[str]:
    spec, status = s.get("spec") or {}, session_status(s)
    meta = s.get("metadata") or {}
    row = [
        _text(meta.get("name")),
        _text(status.phase),
        _text(spec.get("sandbox")),
        _text(status.risk_level),
        _text(spec.get("requestedBy")),
        _text(status.model or spec.get("model")),
        format_cost(status.cost),
        age(meta.get("creationTimestamp"), now),
    ]
    if wide:
        row += [
            _text(status.reason),
            _text(status.approval_ref),
            _text(status.pod_name),
            format_tokens(status.usage),
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
    if _get(approval, "spec", "action"):  # one action of a running turn: what it does
        return _text(_get(approval, "spec", "operation")) or NONE
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
            c.message
            for c in (session_status(session).conditions if session is not None else [])
            if c.type == "Approved" and c.message
        ),
        None,
    )
    if policy:
        factors.append(str(policy))
    return ", ".join(factors) or NONE


def digest_cell(approval: Obj, session: Obj | None, *, sessions_known: bool) -> str:
    """The start of the recorded spec digest, marked when the request no longer
    binds to its session (only when the sessions could be read: sessions_known)."""
    cell = verify.short_digest(_get(approval, "spec", "specDigest"))
    if sessions_known:
        flag = verify.check(approval, session).short_status()
        cell = f"{cell} {flag}" if flag else cell
    return cell


def pending_row(
    approval: Obj,
    session: Obj | None,
    now: datetime,
    *,
    wide: bool = False,
    all_namespaces: bool = False,
    sessions_known: bool = False,
) -> list[str]:
    spec, meta = approval.get("spec") or {}, approval.get("metadata") or {}
    row = [
        _text(meta.get("name")),
        _text(spec.get("sessionRef")),
        _text(spec.get("riskLevel")),
        _text(spec.get("requestedBy")),
        digest_cell(approval, session, sessions_known=sessions_known),
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
    if _get(approval, "spec", "decision") or _get(approval, "spec", "policyDecision"):
        return False
    return (approval_status(approval).phase or "Pending") == "Pending"


def pending_table(
    approvals: Sequence[Obj],
    sessions: Mapping[tuple[str, str], Obj] | None,
    now: datetime,
    *,
    wide: bool = False,
    all_namespaces: bool = False,
) -> str:
    """`sessions` by (namespace, name); None when they could not be listed, so a
    missing session there means "unknown", not "gone"."""
    headers = PENDING_COLUMNS + (PENDING_WIDE_COLUMNS if wide else [])
    if all_namespaces:
        headers = ["NAMESPACE", *headers]
    rows = []
    for a in sort_objects(approvals):
        key = (_get(a, "metadata", "namespace") or "", _get(a, "spec", "sessionRef") or "")
        rows.append(
            pending_row(
                a,
                (sessions or {}).get(key),
                now,
                wide=wide,
                all_namespaces=all_namespaces,
                sessions_known=sessions is not None,
            )
        )
    return table(headers, rows)


def decision_summary(approval: Obj) -> str:
    """'Approved by alice: reason' from the spec (what admission verified), else the status phase."""
    spec, status = approval.get("spec") or {}, approval_status(approval)
    decision = spec.get("decision")
    if not decision:
        return _text(status.phase or "Pending")
    who = spec.get("decidedBy") or status.decided_by or "unknown"
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


# --------------------------------------------------------------------------- what will run
# Free text an approver has to read whole: shown as a block, never shortened.
FREE_TEXT = ("prompt", "baseInstructions", "businessJustification")
INLINE_MAX = 100  # longer strings are shown as blocks too
# Every line of a block starts with it, so a prompt cannot pass its own lines
# off as fields of the description ("  Sandbox:  read-only").
GUTTER = "| "
SECONDS_FIELDS = ("timeoutSeconds", "ttlSecondsAfterFinished")
# Labels that are not simply the API name in words.
LABELS = {
    "fullAuto": "Full auto",
    "ttlSecondsAfterFinished": "TTL after finished",
    "businessJustification": "Justification",
    "storageClassName": "Storage class",
    "timeoutSeconds": "Timeout",
    "maxCostUsd": "Cost cap (USD)",
}
# What the operator and the runner do when a field is unset (by API path).
UNSET = {
    "model": "the operator's codex.model",
    "reasoningEffort": "the model's own",
    "verbosity": "Codex's own",
    "resumeFrom": "a new conversation",
    "baseInstructions": "Codex's own instructions",
    "responseLanguage": "the model's choice",
    "timeoutSeconds": "the operator's mcp.session_timeout_ms",
    "ttlSecondsAfterFinished": "the operator's kubernetes.default_ttl_seconds_after_finished",
    "requestedBy": "unknown",
    "businessJustification": "none given",
    "workspace": "scratch: an emptyDir, gone with the pod",
    "wallBounce": "off: one provider",
    "maxCostUsd": "none: the user's monthly budget only",
    "workspace.size": "the operator's default",
    "workspace.storageClassName": "the operator's default, else the cluster's default StorageClass",
    "wallBounce.providers": "all configured providers",
}


def text_block(label: str, text: str, indent: int = 2) -> list[str]:
    """A label with the text's size, then the whole text, each line behind the gutter."""
    lines = text.count("\n") + 1
    about = f"{len(text)} characters, {lines} line{'s' if lines != 1 else ''}, in full"
    hidden = hidden_count(text)
    if hidden:
        about += (
            f"; {hidden} control or invisible character{'s' if hidden != 1 else ''} shown as \\x/\\u escapes"
        )
    pad = " " * indent
    return [
        f"{pad}{label}:  ({about})",
        # exact, trailing blanks included; an empty line is just the gutter
        *(
            f"{pad}  {GUTTER}{line}" if line else f"{pad}  {GUTTER.rstrip()}"
            for line in visible(text).split("\n")
        ),
    ]


def field_label(key: str) -> str:
    """'reasoningEffort' -> 'Reasoning effort'."""
    return LABELS.get(key) or re.sub(r"(?<!^)([A-Z])", r" \1", key).capitalize()


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    for candidate in typing.get_args(annotation) or (annotation,):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def model_fields(model: type[BaseModel]) -> list[tuple[str, type[BaseModel] | None]]:
    """(API name, model of its value if it is an object) of every field, in declaration order.
    The description walks these, so a field added to the CRD is shown without a change here."""
    return [(f.alias or name, _nested_model(f.annotation)) for name, f in model.model_fields.items()]


def _default(model: type[BaseModel] | None, key: str) -> str:
    """'default 0.7' from the model (the CRD applies it), else just 'default'."""
    for name, field in (model.model_fields if model is not None else {}).items():
        if (field.alias or name) == key and field.default is not None and not field.is_required():
            return f"default {_scalar(key, field.default)}"
    return "default"


def _scalar(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int) and key in SECONDS_FIELDS:
        return f"{value}s" + (f" ({human_duration(value)})" if value >= 120 else "")
    if isinstance(value, int | float):
        return json.dumps(value)
    if isinstance(value, str):
        return visible(value) if value else '"" (empty)'
    if isinstance(value, list) and all(isinstance(v, str | int | float | bool) for v in value):
        return ", ".join(_scalar(key, v) for v in value) if value else "[] (empty)"
    # Anything else as JSON; ensure_ascii spells out every non-ASCII character.
    return json.dumps(value, sort_keys=True, ensure_ascii=True)


def _spec_parts(
    values: Mapping[str, Any], model: type[BaseModel] | None, prefix: str, conversation: str | None
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(label, value) pairs shown inline and (label, text) blocks, for every field of
    `model` (set or not) and every key of `values` the model does not know."""
    known = dict(model_fields(model)) if model is not None else {}
    extra = sorted(k for k in values if k not in known)
    inline: list[tuple[str, str]] = []
    blocks: list[tuple[str, str]] = []
    for key in [*known, *extra]:
        path = prefix + key
        value = values.get(key)
        nested = known.get(key)
        if key not in known:
            # A newer CRD than this plugin: part of the digest all the same, so shown, marked.
            inline.append((key, f"{_scalar(key, value)} (a field this kubectl-codex does not know)"))
            continue
        label = field_label(key)
        if value is None:
            inline.append((label, f"<unset: {UNSET.get(path) or _default(model, key)}>"))
        elif (
            isinstance(value, str)
            and value
            and (path in FREE_TEXT or "\n" in value or len(value) > INLINE_MAX)
        ):
            blocks.append((label if not prefix else path, value))
        elif isinstance(value, Mapping) and nested is not None:
            sub_inline, sub_blocks = _spec_parts(value, nested, path + ".", None)
            inline.append((label, "\n".join(_fields(sub_inline)) or "{}"))
            blocks += sub_blocks
        elif key == "resumeFrom" and not prefix and conversation:
            inline.append(
                (
                    label,
                    f"{visible(str(value))} (conversation {visible(conversation)}: its Codex thread and workspace)",
                )
            )
        elif isinstance(value, list) and not value and path in UNSET:
            inline.append((label, f"[] (empty: {UNSET[path]})"))
        else:
            inline.append((label, _scalar(key, value)))
    return inline, blocks


def spec_lines(spec: Mapping[str, Any], *, conversation: str | None = None, indent: int = 2) -> list[str]:
    """Every field of a CodexSession spec, in full, and its digest: what an approver approves."""
    inline, blocks = _spec_parts(spec, CodexSessionSpec, "", conversation)
    lines = _fields([*inline, ("Spec digest", spec_digest(dict(spec)))], indent)
    for label, text in blocks:
        lines += text_block(label, text, indent)
    return lines


# --------------------------------------------------------------------------- describe
def mismatch_banner(binding: verify.Binding) -> list[str]:
    """Loud, first thing in a description: the request does not bind to what is shown."""
    lines = [
        f"WARNING: {binding.verdict()}",
        f'  ApprovalRequest "{binding.approval}" (for session "{binding.session_ref}"):',
    ]
    lines += [f"  - {problem}" for problem in binding.problems]
    lines.append(
        "  Its decision does not count for what is shown here: `kubectl codex approve` refuses it and "
        "the operator does not honour it. Deny it, or ask the requester for a new request."
    )
    return lines


def describe_session(
    session: Obj,
    approval: Obj | None,
    events: Sequence[Obj] | None,
    now: datetime,
    *,
    events_error: str | None = None,
    approval_error: str | None = None,
) -> str:
    meta, spec, status = session.get("metadata") or {}, session.get("spec") or {}, session_status(session)
    binding = verify.check(approval, session) if approval is not None else None
    out: list[str] = mismatch_banner(binding) if binding is not None and not binding.ok else []
    out += _fields(
        [
            ("Name", meta.get("name")),
            ("Namespace", meta.get("namespace")),
            ("Requester", spec.get("requestedBy") or NONE),
            ("Created", stamp(meta.get("creationTimestamp"), now)),
        ]
    )
    conversation = status.conversation_id or _get(approval, "metadata", "labels", names.LABEL_CONVERSATION)
    out.append("Spec:")
    out += spec_lines(spec, conversation=conversation)
    out.append("Status:")
    out += _fields(
        [
            ("Phase", status.phase or NONE),
            ("Reason", status.reason),
            ("Message", status.message),
            ("Risk", status.risk_level),
            ("Model", status.model),
            ("Conversation", status.conversation_id),
            ("Thread", status.thread_id),
            ("Pod", status.pod_name),
            ("Attempts", status.attempts),
        ],
        indent=2,
    )
    if status.response:
        title = "Result (truncated):" if status.response_truncated else "Result:"
        out += [title, *_block(status.response)]
    usage = status.usage
    if usage is not None:
        out.append("Usage:")
        out += _fields(
            [
                ("Input tokens", f"{usage.input_tokens} ({usage.cached_input_tokens} cached)"),
                ("Output tokens", f"{usage.output_tokens} ({usage.reasoning_tokens} reasoning)"),
            ],
            indent=2,
        )
    cost = status.cost
    if cost is not None:
        out.append("Cost:")
        providers = ", ".join(
            f"{p.provider} {usd(p.actual_usd if p.actual_usd is not None else p.estimated_usd)}"
            for p in cost.providers
        )
        out += _fields(
            [
                ("Estimated", usd(cost.estimated_usd) if cost.estimated_usd is not None else None),
                ("Actual", usd(cost.actual_usd) if cost.actual_usd is not None else None),
                ("Providers", providers or None),
            ],
            indent=2,
        )
    timings = status.timings
    if timings is not None and timings.model_fields_set:
        out.append("Timings:")
        duration = timings.duration_seconds
        out += _fields(
            [
                ("Queued", stamp(timings.queued_at, now) if timings.queued_at else None),
                ("Started", stamp(timings.started_at, now) if timings.started_at else None),
                ("Completed", stamp(timings.completed_at, now) if timings.completed_at else None),
                ("Duration", f"{duration:.1f}s" if duration is not None else None),
            ],
            indent=2,
        )
    progress = status.progress
    if progress is not None and progress.event_count:
        out.append("Progress:")
        out += _fields(
            [
                ("Events", progress.event_count),
                ("Commands", progress.commands),
                ("File changes", progress.file_changes),
                ("Last event", progress.last_event),
            ],
            indent=2,
        )
    out.append("Conditions:")
    if status.conditions:
        rows = [
            [
                _text(c.type),
                _text(c.status),
                _text(c.reason),
                age(c.last_transition_time, now),
                _text(c.message),
            ]
            for c in status.conditions
        ]
        out += _block(table(["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"], rows))
    else:
        out.append(f"  {NONE}")
    out += _describe_approval(status.approval_ref, approval, approval_error, now, binding)
    out += _describe_events(events, events_error, now)
    # Last line of defence: nothing anywhere in the description (a condition
    # message, Codex's answer) may hide text behind terminal escapes.
    return visible("\n".join(out))


def _pending(approval: Obj) -> bool:
    return (
        not _get(approval, "spec", "decision") and (approval_status(approval).phase or "Pending") == "Pending"
    )


def _effective(arguments: Mapping[str, Any]) -> str | None:
    """The values the operator resolved from its configuration when it made the
    request (arguments 'effective.*'): what an unset field turns into."""
    pairs = [
        (key.removeprefix("effective."), visible(str(value)))
        for key, value in sorted(arguments.items())
        if key.startswith("effective.")
    ]
    return "\n".join(_fields(pairs)) or None


def approve_command(approval: Obj) -> str:
    """The command that approves exactly the spec digest shown (refused if it changed)."""
    meta, spec = approval.get("metadata") or {}, approval.get("spec") or {}
    return (
        f"kubectl codex approve {meta.get('name')} -n {meta.get('namespace')} "
        f"--digest {spec.get('specDigest')}"
    )


def _policy_text(spec: Mapping[str, Any]) -> str | None:
    policy = spec.get("policyDecision")
    if not policy:
        return None
    return f"{policy.get('decision')} by [security.action_approvals] (rules: {', '.join(policy.get('rules') or []) or 'none'})"


def _request_fields(approval: Obj, now: datetime, binding: verify.Binding) -> list[tuple[str, Any]]:
    spec, status, meta = approval.get("spec") or {}, approval_status(approval), approval.get("metadata") or {}
    action = spec.get("action")
    pending = binding.ok and _pending(approval) and not spec.get("policyDecision")
    for_session = action is not None and "acceptForSession" in (action.get("offered") or [])
    return [
        ("Name", meta.get("name")),
        ("Phase", status.phase or "Pending"),
        ("Risk", spec.get("riskLevel")),
        ("Operation", spec.get("operation")),
        ("Action", action_text(action) if action else None),
        ("Policy", _policy_text(spec)),
        ("Scope", spec.get("scope")),
        ("Requested by", spec.get("requestedBy")),
        ("Session uid", spec.get("sessionUid") or NONE),
        ("Spec digest", spec.get("specDigest") or NONE),
        ("Effective", _effective(spec.get("arguments") or {})),
        ("Decision", decision_summary(approval) if spec.get("decision") else None),
        ("Expires", stamp(spec.get("expiresAt"), now)),
        ("Decided at", stamp(status.decided_at, now) if status.decided_at else None),
        ("Message", status.message),
        ("Binding", binding.verdict()),
        ("Approve with", approve_command(approval) if pending else None),
        (
            "Or for the session",
            approve_command(approval) + " --for-session" if pending and for_session else None,
        ),
    ]


def _describe_approval(
    ref: Any, approval: Obj | None, error: str | None, now: datetime, binding: verify.Binding | None
) -> list[str]:
    if approval is None or binding is None:
        if error:
            return ["Approval:", f"  {ref or NONE}: <unavailable: {error}>"]
        return ["Approval:", f"  {ref or 'not needed'}"]
    return ["Approval:", *_fields(_request_fields(approval, now, binding), indent=2)]


def describe_approval(
    approval: Obj,
    events: Sequence[Obj] | None,
    now: datetime,
    *,
    events_error: str | None = None,
) -> str:
    """An ApprovalRequest whose session is gone: the loud verdict, the request, and
    the arguments the operator recorded (the only record left of what it was for)."""
    meta, spec = approval.get("metadata") or {}, approval.get("spec") or {}
    binding = verify.check(approval, None)
    out = mismatch_banner(binding)
    out += _fields(
        [
            ("Name", meta.get("name")),
            ("Namespace", meta.get("namespace")),
            ("Session", f"{spec.get('sessionRef')} (not found)"),
            ("Created", stamp(meta.get("creationTimestamp"), now)),
        ]
    )
    out.append("Request:")
    out += _fields([f for f in _request_fields(approval, now, binding) if f[0] != "Name"], indent=2)
    arguments = spec.get("arguments") or {}
    out.append("Arguments (as recorded on the request):")
    inline = [
        (key, _scalar(key, value))
        for key, value in sorted(arguments.items())
        if not ("\n" in str(value) or len(str(value)) > INLINE_MAX)
    ]
    out += _fields(inline, indent=2) if inline else ([] if arguments else [f"  {NONE}"])
    for key, value in sorted(arguments.items()):
        if "\n" in str(value) or len(str(value)) > INLINE_MAX:
            out += text_block(key, str(value))
    if spec.get("businessJustification"):
        out += text_block("Justification", str(spec["businessJustification"]), indent=0)
    out += _describe_events(events, events_error, now)
    return visible("\n".join(out))


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
