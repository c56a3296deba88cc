"""The part of every ApprovalRequest the operator makes that binds it to its
session: the session's name, uid and spec digest (a decision counts for exactly
that object and spec), who asked, when it expires, and the session as owner.
The per-turn request (codex_operator.session_reconciler) and the per-action
ones (codex_operator.action_gate) add what they are about."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from codex_api import binding, names
from codex_api.session import CodexSessionSpec
from codex_api.status import session_status

from .conditions import now, rfc3339
from .context import Context


def approval_request_body(
    ctx: Context,
    session: dict[str, Any],
    spec: CodexSessionSpec,
    *,
    name: str,
    risk: str,
    tool: str,
    operation: str,
    **about: Any,
) -> dict[str, Any]:
    meta = session["metadata"]
    conversation = session_status(session).conversation_id or meta["name"]
    return {
        "apiVersion": session["apiVersion"],
        "kind": "ApprovalRequest",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": names.common_labels(meta["name"], conversation),
            "ownerReferences": [names.owner_reference("CodexSession", meta["name"], meta["uid"])],
        },
        "spec": {
            "sessionRef": meta["name"],
            "sessionUid": meta["uid"],
            "specDigest": binding.spec_digest(session.get("spec") or {}),
            "toolName": tool,
            "operation": operation,
            "riskLevel": risk,
            "requestedBy": spec.requested_by or "unknown",
            "expiresAt": rfc3339(now() + timedelta(seconds=ctx.config.kubernetes.approval_timeout_seconds)),
            **{key: value for key, value in about.items() if value is not None},
        },
    }
