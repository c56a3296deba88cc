"""What binds a decision, or a child object, to exactly one CodexSession.

An ApprovalRequest records the uid of the session it was made for and a
digest of that session's spec; the operator honours a decision only when
both still match the session it is about to run. A session's spec is
immutable (CRD rule), so the digest of what was approved is the digest of
what runs. Objects that outlive a session (a conversation's workspace
claim) record their requester and conversation instead.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from . import names

DIGEST_PREFIX = "sha256:"
DIGEST_PATTERN = r"^sha256:[0-9a-f]{64}$"


def spec_digest(spec: dict[str, Any]) -> str:
    """sha256 over the canonical JSON of a session spec as the API server stores it."""
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return DIGEST_PREFIX + hashlib.sha256(canonical.encode()).hexdigest()


def expected_binding(session: Mapping[str, Any]) -> dict[str, str]:
    """What an ApprovalRequest's spec must record to count for `session` as it is now."""
    meta, spec = session.get("metadata") or {}, dict(session.get("spec") or {})
    return {
        "sessionUid": str(meta.get("uid")),
        "sessionRef": str(meta.get("name")),
        "requestedBy": spec.get("requestedBy") or "unknown",
        "specDigest": spec_digest(spec),
    }


def unbound_fields(approval: Mapping[str, Any], session: Mapping[str, Any]) -> list[str]:
    """The fields of `approval` that do not bind it to `session` (empty: it binds).
    The operator honours a decision, and the kubectl plugin approves, only when empty."""
    recorded = approval.get("spec") or {}
    return [key for key, value in expected_binding(session).items() if recorded.get(key) != value]


def text_digest(text: str) -> str:
    return DIGEST_PREFIX + hashlib.sha256(text.encode()).hexdigest()


def controller_uid(obj: dict[str, Any]) -> str | None:
    """The uid of the CodexSession that controls `obj`, if any."""
    for ref in obj.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("kind") == "CodexSession" and ref.get("controller"):
            return str(ref.get("uid"))
    return None


def claim_owner(obj: dict[str, Any]) -> tuple[str | None, str | None]:
    """(requester, conversation) recorded on a workspace claim at creation."""
    annotations = obj.get("metadata", {}).get("annotations") or {}
    return annotations.get(names.ANNOTATION_REQUESTER), annotations.get(names.ANNOTATION_CONVERSATION)
