"""codex_operator.ownership: which objects found under a session's names the
operator may adopt. The attacks these stop are played for real in
tests/security/."""

from __future__ import annotations

from typing import Any

from codex_api import binding, names
from codex_operator.ownership import check_approval, check_child, check_claim

UID, OTHER = "uid-now", "uid-before"
SPEC = {"prompt": "p", "sandbox": "full-access", "requestedBy": "carol"}


def session(uid: str = UID, spec: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": "s", "uid": uid}, "spec": dict(spec or SPEC)}


def child(owner_uid: str | None, kind: str = "NetworkPolicy", *, controller: bool = True) -> dict[str, Any]:
    refs = [names.owner_reference("CodexSession", "s", owner_uid, controller=controller)] if owner_uid else []
    return {"kind": kind, "metadata": {"name": "s-egress", "ownerReferences": refs}}


def approval(owner_uid: str | None = UID, **spec: Any) -> dict[str, Any]:
    body = child(owner_uid, "ApprovalRequest")
    body["metadata"]["name"] = "s-approval"
    body["spec"] = {
        "sessionRef": "s",
        "sessionUid": UID,
        "requestedBy": "carol",
        "specDigest": binding.spec_digest(SPEC),
        **spec,
    }
    return body


def test_a_child_controlled_by_this_session_is_adopted() -> None:
    assert check_child(child(UID), UID, {UID}.__contains__) is None


def test_an_orphan_is_never_adopted() -> None:
    found = check_child(child(None), UID, {UID}.__contains__)
    assert found is not None and not found.stale and found.reason == "ForeignObject"
    assert "orphaned or created by hand" in found.message and "never adopted" in found.message


def test_a_leftover_of_a_deleted_session_is_waited_for() -> None:
    found = check_child(child(OTHER), UID, {UID}.__contains__)
    assert found is not None and found.stale and "garbage-collected" in found.message


def test_another_live_sessions_object_is_refused_not_waited_for() -> None:
    found = check_child(child(OTHER), UID, {UID, OTHER}.__contains__)
    assert found is not None and not found.stale and OTHER in found.message


def test_a_non_controller_reference_proves_nothing() -> None:
    assert check_child(child(UID, controller=False), UID, {UID}.__contains__) is not None


def test_an_approval_made_for_this_session_and_spec_counts() -> None:
    assert check_approval(approval(), session(), {UID}.__contains__) is None


def test_an_approval_for_another_spec_does_not_count() -> None:
    changed = {**SPEC, "mode": "ci", "fullAuto": True}
    found = check_approval(approval(), session(spec=changed), {UID}.__contains__)
    assert found is not None and found.reason == "ApprovalMismatch" and "specDigest" in found.message


def test_an_approval_of_an_earlier_session_of_the_same_name_does_not_count() -> None:
    # owner references re-pointed at the new uid (by hand) do not help: sessionUid is frozen
    found = check_approval(approval(), session(uid="uid-new"), {"uid-new"}.__contains__)
    assert found is not None and found.reason == "ApprovalMismatch"
    forged = approval(owner_uid="uid-new")
    found = check_approval(forged, session(uid="uid-new"), {"uid-new"}.__contains__)
    assert found is not None and "sessionUid" in found.message and "specDigest" not in found.message


def test_an_approval_naming_another_requester_or_session_does_not_count() -> None:
    for field, value in (("requestedBy", "mallory"), ("sessionRef", "t")):
        found = check_approval(approval(**{field: value}), session(), {UID}.__contains__)
        assert found is not None and field in found.message


def test_an_orphaned_approval_does_not_count() -> None:
    found = check_approval(approval(owner_uid=None), session(), {UID}.__contains__)
    assert found is not None and found.reason == "ApprovalMismatch" and not found.stale


def claim(requester: str | None, conversation: str | None) -> dict[str, Any]:
    annotations = {}
    if requester is not None:
        annotations[names.ANNOTATION_REQUESTER] = requester
    if conversation is not None:
        annotations[names.ANNOTATION_CONVERSATION] = conversation
    return {"metadata": {"name": "conv-workspace", "annotations": annotations}}


def test_a_claim_is_mounted_only_for_its_requester_and_conversation() -> None:
    assert check_claim(claim("alice", "conv"), "alice", "conv") is None
    stolen = check_claim(claim("alice", "conv"), "mallory", "conv")
    assert stolen is not None and stolen.reason == "WorkspaceForbidden"
    assert "another requester" in stolen.message
    other = check_claim(claim("alice", "conv"), "alice", "conv2")
    assert other is not None and "conversation 'conv'" in other.message
    unmarked = check_claim(claim(None, None), "alice", "conv")
    assert unmarked is not None and "records no requester" in unmarked.message
