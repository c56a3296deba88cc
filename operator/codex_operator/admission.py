"""What the operator's mutating webhook stamps, and when a decision was made.

The webhook only fills in identity so that people need not type it; the
ValidatingAdmissionPolicies of ``codex_devenv.generate.admission`` (shipped as manifests) are the enforcement
and run after every mutating webhook, so whatever is stamped here is
verified there against ``request.userInfo`` again.

Pure functions over plain dicts (kopf bodies or API responses), no I/O.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from typing import Any


def _spec(obj: Mapping[str, Any] | None) -> Mapping[str, Any]:
    if not obj:
        return {}
    spec = obj.get("spec")
    return spec if isinstance(spec, Mapping) else {}


def stamp_decider(
    old: Mapping[str, Any] | None,
    new: Mapping[str, Any],
    username: str,
    trusted: Collection[str] = (),
) -> dict[str, Any]:
    """Spec changes for an ApprovalRequest write: ``{"decidedBy": username}``
    when this write newly sets ``spec.decision``, else ``{}``.

    Whatever the caller typed into decidedBy is overwritten: the decider is
    who sent the request. Later writes get nothing, since the CRD freezes
    decidedBy together with the decision. Without a username there is nothing
    trustworthy to stamp; the policy then rejects the decision.

    A trusted requester (the gateway) relays the decision of the MCP user it
    authenticated and names them: that name is kept, as stamp_requester keeps
    the requester it names. The policy lets a relay through only for the
    request's own requester and a decision they may make themselves, so
    keeping the name gives the gateway nothing; stamping over it would turn
    every relay into a decision by the gateway, which the policy refuses.
    """
    if not username:
        return {}
    if _spec(new).get("decision") is None or _spec(old).get("decision") is not None:
        return {}
    if username in trusted and _spec(new).get("decidedBy"):
        return {}
    return {"decidedBy": username}


def stamp_requester(new: Mapping[str, Any], username: str, trusted: set[str]) -> dict[str, Any]:
    """Spec changes for a CodexSession create: ``{"requestedBy": username}``
    unless the caller is a trusted requester.

    A trusted requester (the gateway's ServiceAccount) creates sessions on
    behalf of users it authenticated itself and names them; only when it
    names no one does it become the requester itself, since the policy
    requires every session to have one.
    """
    if not username:
        return {}
    if username in trusted and _spec(new).get("requestedBy"):
        return {}
    return {"requestedBy": username}


def _parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def decision_time(approval: Mapping[str, Any]) -> datetime | None:
    """When the API server recorded the write that set ``spec.decision``.

    Read from ``metadata.managedFields``: the newest entry (of the main
    resource, not a subresource) whose fields include ``f:spec`` ->
    ``f:decision``. The time is the server's, so a client cannot backdate a
    decision made after ``spec.expiresAt``. An entry's time is its manager's
    latest write, so a later write by the same manager can only make the
    decision look later, never earlier: the safe direction for a deadline.
    None when there is no such entry (no decision, or managedFields stripped).
    """
    metadata = approval.get("metadata") or {}
    entries = metadata.get("managedFields") or metadata.get("managed_fields") or []
    newest: datetime | None = None
    for entry in entries:
        if not isinstance(entry, Mapping) or entry.get("subresource"):
            continue
        fields = entry.get("fieldsV1") or entry.get("fields_v1") or {}
        spec = fields.get("f:spec") if isinstance(fields, Mapping) else None
        if not isinstance(spec, Mapping) or "f:decision" not in spec:
            continue
        when = _parse_time(entry.get("time"))
        if when is not None and (newest is None or when > newest):
            newest = when
    return newest
