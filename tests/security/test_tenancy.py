"""Users of one sessions namespace: who may cancel, clean up, delete, and how
much of the cluster's concurrency one requester may take.

Tenancy model (docs/security.md): sessions in a namespace are readable by
everyone who may read that namespace (teams are separated by namespace);
only the requester, a member of the admin groups, the operator and the
gateway (which checks its own callers) may change or delete a session.
"""

from __future__ import annotations

from typing import Any

from codex_api import names
from codex_api.common import GROUP, VERSION
from codex_devenv.generate import admission

from .conftest import Arena, refused


def _annotate(arena: Arena, user: str, name: str, key: str, value: str) -> None:
    arena.custom(user).patch_namespaced_custom_object(
        GROUP, VERSION, arena.namespace, "codexsessions", name, {"metadata": {"annotations": {key: value}}}
    )


def test_only_the_requester_or_an_admin_may_cancel_clean_up_or_delete(
    arena: Arena, run_operator: Any
) -> None:
    run_operator()
    arena.create("alice", "mine", prompt="long job")
    arena.wait("mine", "Running")
    for key in (names.ANNOTATION_CANCEL, names.ANNOTATION_CLEANUP):
        text = refused(
            lambda k=key: _annotate(arena, "mallory", "mine", k, "mallory"), admission.MSG_NOT_YOURS
        )
        assert "mallory did not request this session (alice)" in text
    refused(
        lambda: arena.custom("mallory").delete_namespaced_custom_object(
            GROUP, VERSION, arena.namespace, "codexsessions", "mine"
        ),
        admission.MSG_NOT_YOURS,
    )
    # an approver is not an admin either
    refused(lambda: _annotate(arena, "bob", "mine", names.ANNOTATION_CANCEL, "bob"), admission.MSG_NOT_YOURS)
    assert arena.session("mine")["status"]["phase"] == "Running"
    # dave is in codex-admins
    _annotate(arena, "dave", "mine", names.ANNOTATION_CANCEL, "runaway job")
    s = arena.wait("mine", "Cancelled")
    assert s["status"]["message"] == "cancelled: runaway job"
    # and alice may remove her own
    arena.create("alice", "mine-2", prompt="again")
    arena.wait("mine-2", "Running")
    _annotate(arena, "alice", "mine-2", names.ANNOTATION_CLEANUP, "alice")
    arena.gone("codexsessions", "mine-2")


def test_one_requester_cannot_take_every_slot(arena: Arena, run_operator: Any) -> None:
    run_operator(limit=3, per_user=2)
    for i in range(3):
        arena.create("mallory", f"hog-{i}", prompt="spin")
    arena.wait("hog-0", "Running")
    arena.wait("hog-1", "Running")
    queued = arena.wait("hog-2", "Queued")
    assert "2/2 of them mallory's" in queued["status"]["message"], queued["status"]
    # alice comes later, finds the free slot mallory may not take
    arena.create("alice", "fair", prompt="quick question")
    assert arena.wait("fair", "Running", "Queued")["status"]["phase"] == "Running"
    assert arena.session("hog-2")["status"]["phase"] == "Queued"
