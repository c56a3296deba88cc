"""Deterministic names, labels and annotations of everything the operator
creates. A handler that runs twice computes the same names, so the second
create gets a 409 instead of a duplicate."""

from __future__ import annotations

from .common import GROUP

PREFIX = f"{GROUP}/"
FINALIZER = f"{GROUP}/finalizer"

LABEL_SESSION = f"{GROUP}/session"
LABEL_CONVERSATION = f"{GROUP}/conversation"
LABEL_REQUESTER = f"{GROUP}/requester"
# Which session's NetworkPolicy confines a runner pod: set when the pod is
# made and never changed, while LABEL_SESSION follows the turn a live pod
# serves (warm runners). Moving a pod between policies would leave it, for
# as long as the policy engine takes to notice, under neither.
LABEL_POLICY = f"{GROUP}/network-policy"
# On an unclaimed warm pool pod (and its claim and policy): the sandbox
# level it waits for. Claiming removes it from the pod.
LABEL_POOL = f"{GROUP}/pool"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_PART_OF = "app.kubernetes.io/part-of"
MANAGED_BY = "codex-operator"
PART_OF = "codex-k8s-operator"
COMPONENT_RUNNER = "runner"

ANNOTATION_ATTEMPT = f"{GROUP}/attempt"
# Set (to any value, e.g. a reason) to cancel a session that has not finished.
ANNOTATION_CANCEL = f"{GROUP}/cancel"
# Set (to who asked) to remove a session now: the operator cancels it if it
# has not finished, then deletes it without waiting for its TTL. This is how
# the gateway's codex-cleanup removes sessions without the right to delete.
ANNOTATION_CLEANUP = f"{GROUP}/cleanup"
# Recorded on a conversation's workspace claim when the operator creates it:
# a later turn may mount the claim only for the same requester and conversation.
ANNOTATION_REQUESTER = f"{GROUP}/requester"
ANNOTATION_CONVERSATION = f"{GROUP}/conversation"
# On a live runner pod (warm runners): the SHA-256 of its spec, so a reply
# goes to it only when the pod it would otherwise get is exactly this one,
# and the fingerprint of the key its agent accepts turns signed with.
ANNOTATION_POD_SHAPE = f"{GROUP}/pod-shape"
ANNOTATION_AGENT_KEY = f"{GROUP}/agent-key"


def runner_pod(session: str, attempt: int) -> str:
    return f"{session}-runner-{attempt}"


def network_policy(session: str) -> str:
    return f"{session}-egress"


def approval_request(session: str) -> str:
    return f"{session}-approval"


def action_request(session: str, action_digest: str) -> str:
    """The ApprovalRequest of one action a session's Codex asks for, named by what
    runs: the same action asked again (a resumed thread) finds its decision."""
    return f"{session}-action-{action_digest[:12]}"


def workspace_claim(conversation: str) -> str:
    return f"{conversation}-workspace"


def common_labels(session: str, conversation: str) -> dict[str, str]:
    return {
        LABEL_SESSION: session,
        LABEL_CONVERSATION: conversation,
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_PART_OF: PART_OF,
    }


def owner_reference(kind: str, name: str, uid: str, *, controller: bool = True) -> dict[str, object]:
    """An owner reference to a CodexSession (or ApprovalRequest), as kopf.adopt would set it."""
    return {
        "apiVersion": f"{GROUP}/v1alpha1",
        "kind": kind,
        "name": name,
        "uid": uid,
        "controller": controller,
        "blockOwnerDeletion": True,
    }
