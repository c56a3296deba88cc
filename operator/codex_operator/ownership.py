"""Whether an object found under a session's deterministic name is that session's.

Names are deterministic so that a handler running twice gets a 409 instead
of a duplicate; but a 409 only says that *something* holds the name. It may
be an object of an earlier session with the same name (its owner deleted
with ``--cascade=orphan``, or the garbage collector not done yet), or one a
requester planted. The operator adopts an object only when it proves whose it
is; otherwise the session is refused with a clear reason and never runs.

- runner pod, NetworkPolicy, ApprovalRequest: controlled (ownerReference with
  ``controller: true``) by this session's uid;
- ApprovalRequest, in addition: made for this uid and for exactly this spec
  (``spec.sessionUid``, ``spec.specDigest``), for this session's name and
  requester;
- workspace claim (shared by the turns of a conversation): the requester and
  conversation recorded on it at creation are this session's.

Owner references can be typed by anyone who may create the object; the
``managed-objects`` admission policy keeps everyone but the operator from
creating or relabelling such objects, and these checks stand without it.

Pure functions over plain dicts, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from codex_api import binding

# A leftover of a deleted session of the same name is normally collected
# within seconds; a new session waits this long for it before giving up.
STALE_WAIT_SECONDS = 60.0


@dataclass(frozen=True)
class Foreign(Exception):
    """An object under this session's name that is not this session's."""

    reason: str
    message: str
    # Controlled by a session that no longer exists: the garbage collector
    # removes it, so waiting a little may resolve it.
    stale: bool = False


def _what(obj: dict[str, Any]) -> str:
    return f"{obj.get('kind', 'object')} {obj.get('metadata', {}).get('name', '?')}"


# Whether a session with this uid still exists. Asked only on the refusal path,
# so the common case (the object is this session's) costs no scan of the store.
IsLive = Callable[[str], bool]


def check_child(
    obj: dict[str, Any], session_uid: str, is_live: IsLive, *, reason: str = "ForeignObject"
) -> Foreign | None:
    """None when `obj` is controlled by this session; else why it may not be adopted."""
    owner = binding.controller_uid(obj)
    if owner == session_uid:
        return None
    if owner is not None and not is_live(owner):
        return Foreign(
            reason,
            f"{_what(obj)} still belongs to an earlier session of the same name (uid {owner}); "
            "it is being garbage-collected",
            stale=True,
        )
    whose = f"session uid {owner}" if owner else "no session (orphaned or created by hand)"
    return Foreign(
        reason,
        f"{_what(obj)} already exists and belongs to {whose}, not to this session; "
        "it is never adopted: delete it (an administrator) or use another session name",
    )


def check_approval(approval: dict[str, Any], session: dict[str, Any], is_live: IsLive) -> Foreign | None:
    """None when `approval` was made for exactly this session object and spec."""
    meta = session["metadata"]
    found = check_child(approval, meta["uid"], is_live, reason="ApprovalMismatch")
    if found is not None:
        return found
    wrong = binding.unbound_fields(approval, session)
    if wrong:
        return Foreign(
            "ApprovalMismatch",
            f"ApprovalRequest {approval['metadata']['name']} was not made for this session as it is "
            f"({', '.join(wrong)} differ); its decision does not count",
        )
    return None


def check_claim(claim: dict[str, Any], requester: str, conversation: str) -> Foreign | None:
    """None when the workspace claim holds this requester's conversation."""
    owner, recorded = binding.claim_owner(claim)
    if owner == requester and recorded == conversation:
        return None
    if owner is None or recorded is None:
        whose = "records no requester (not created by the operator for a conversation)"
    elif owner != requester:
        whose = "belongs to another requester's conversation"
    else:
        whose = f"belongs to conversation {recorded!r}"
    return Foreign(
        "WorkspaceForbidden",
        f"workspace claim {claim['metadata']['name']} {whose}; it is never mounted for "
        f"{requester!r} (conversation {conversation!r})",
    )
