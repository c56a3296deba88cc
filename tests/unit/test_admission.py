"""The admission policies as data, the committed YAML, and the operator's
stamping and decision-time helpers. The policies' behaviour on a real API
server is in tests/integration/test_approval_admission.py."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from codex_api.approval import requester_risks
from codex_api.common import GROUP, VERSION
from codex_devenv.generate import admission
from codex_operator.admission import decision_time, stamp_decider, stamp_requester

REPO = Path(__file__).resolve().parents[2]

POLICIES = [
    (admission.approval_decision_policy(), admission.APPROVAL_VALIDATIONS),
    (admission.session_requester_policy(), admission.SESSION_VALIDATIONS),
    (admission.session_update_policy(), admission.SESSION_UPDATE_VALIDATIONS),
    (admission.session_tenancy_policy(), admission.SESSION_TENANCY_VALIDATIONS),
    (admission.approval_integrity_policy(), admission.APPROVAL_INTEGRITY_VALIDATIONS),
    (admission.status_writers_policy(), admission.STATUS_WRITERS_VALIDATIONS),
    (admission.managed_objects_policy(), admission.MANAGED_OBJECTS_VALIDATIONS),
]
IDS = ["approval", "session", "update", "tenancy", "integrity", "status", "managed"]
FRAGMENTS = {
    "still-pending": admission.MSG_NOT_PENDING,
    "not-own-request": admission.MSG_OWN_REQUEST,
    "approver-group": admission.MSG_APPROVER_GROUP,
    "decided-by-caller": admission.MSG_DECIDER,
    "relay-for-requester": admission.MSG_RELAY,
    "requester-present": admission.MSG_REQUESTER_MISSING,
    "requester-is-caller": admission.MSG_REQUESTER,
    "trusted-only-annotates": admission.MSG_TRUSTED_UPDATE,
    "requester-or-admin": admission.MSG_NOT_YOURS,
    "operator-creates": admission.MSG_APPROVAL_CREATE,
    "no-decision-on-create": admission.MSG_DECISION_ON_CREATE,
    "operator-keeps-metadata": admission.MSG_APPROVAL_METADATA,
    "operator-writes-status": admission.MSG_STATUS,
    "operator-creates-children": admission.MSG_MANAGED_CREATE,
    "operator-changes-children": admission.MSG_MANAGED_UPDATE,
    "runner-pod-shape": admission.MSG_RUNNER_SHAPE,
}


@pytest.mark.parametrize("out_file", admission.OUT_FILES)
def test_committed_manifests_are_current(out_file: str) -> None:
    assert (REPO / out_file).read_text() == admission.render_yaml(), "run `make generate`"


def test_rendered_yaml_holds_policies_and_bindings() -> None:
    docs = list(yaml.safe_load_all(admission.render_yaml("ops")))
    names = [
        admission.APPROVAL_DECISION_POLICY,
        admission.SESSION_REQUESTER_POLICY,
        admission.SESSION_UPDATE_POLICY,
        admission.SESSION_TENANCY_POLICY,
        admission.APPROVAL_INTEGRITY_POLICY,
        admission.STATUS_WRITERS_POLICY,
        admission.MANAGED_OBJECTS_POLICY,
    ]
    assert [(d["kind"], d["metadata"]["name"]) for d in docs] == [
        (kind, name)
        for name in names
        for kind in ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")
    ]
    assert all(d["apiVersion"] == "admissionregistration.k8s.io/v1" for d in docs)
    assert docs[1]["spec"]["paramRef"]["namespace"] == "ops"


@pytest.mark.parametrize(("policy", "validations"), POLICIES, ids=IDS)
def test_every_validation_has_a_message_naming_the_problem(
    policy: dict[str, Any], validations: tuple[admission.Validation, ...]
) -> None:
    rendered = policy["spec"]["validations"]
    assert rendered == [v.to_k8s() for v in validations]
    for check, entry in zip(validations, rendered, strict=True):
        fragment = FRAGMENTS[check.name]
        assert fragment in entry["message"], check.name
        # The messageExpression is CEL: the fragment sits inside a string literal.
        assert fragment in entry["messageExpression"], check.name
        assert entry["reason"] == "Forbidden"
        assert entry["expression"].strip()


def test_messages_fit_in_a_cel_string_literal() -> None:
    """The fragments are spliced into single-quoted CEL strings: a quote breaks the policy."""
    fragments = [v for k, v in vars(admission).items() if k.startswith("MSG_")]
    assert fragments and all("'" not in f and "\\" not in f for f in fragments)


@pytest.mark.parametrize(("policy", "validations"), POLICIES, ids=IDS)
def test_policies_read_params_and_fail_closed(
    policy: dict[str, Any], validations: tuple[admission.Validation, ...]
) -> None:
    spec = policy["spec"]
    assert spec["failurePolicy"] == "Fail"
    assert spec["paramKind"] == {"apiVersion": "v1", "kind": "ConfigMap"}
    rules = spec["matchConstraints"]["resourceRules"]
    if policy["metadata"]["name"] == admission.MANAGED_OBJECTS_POLICY:
        assert {r for rule in rules for r in rule["resources"]} == {
            "pods",
            "persistentvolumeclaims",
            "networkpolicies",
        }
    else:
        (rule,) = rules
        assert rule["apiGroups"] == [GROUP] and rule["apiVersions"] == [VERSION]
        # Status subresources are matched only by the policy that keeps them the operator's.
        subresources = [r for r in rule["resources"] if "/" in r]
        if policy["metadata"]["name"] == admission.STATUS_WRITERS_POLICY:
            assert subresources == rule["resources"] == ["codexsessions/status", "approvalrequests/status"]
        else:
            assert subresources == []
    # Every variable (a parsed param) is used by some validation.
    names = {v["name"] for v in spec["variables"]}
    # Every variable (a parsed param) is used by some validation, or by a variable that is.
    readers = [c.expression for c in validations] + [v["expression"] for v in spec["variables"]]
    used = {n for n in names if any(f"variables.{n}" in r for r in readers)}
    assert used == names


def test_approval_policy_matches_only_the_update_that_makes_the_decision() -> None:
    spec = admission.approval_decision_policy()["spec"]
    (rule,) = spec["matchConstraints"]["resourceRules"]
    assert rule["operations"] == ["UPDATE"] and rule["resources"] == ["approvalrequests"]
    (condition,) = spec["matchConditions"]
    assert condition["expression"] == "has(object.spec.decision) && !has(oldObject.spec.decision)"
    expressions = " ".join(v["expression"] for v in spec["validations"])
    assert "object.spec.decidedBy == request.userInfo.username" in expressions
    assert "object.spec.requestedBy != request.userInfo.username" in expressions
    assert "variables.approverGroups" in expressions
    assert "oldObject.status.phase == 'Pending'" in expressions


def test_approval_policy_orders_its_checks_from_the_most_fundamental() -> None:
    # The API server reports the first failing validation.
    assert [v.name for v in admission.APPROVAL_VALIDATIONS] == [
        "still-pending",
        "not-own-request",
        "relay-for-requester",
        "approver-group",
        "decided-by-caller",
    ]


def test_requester_risks_in_cel_are_the_python_ones() -> None:
    """requesterRisks spells codex_api.approval.requester_risks; what it does on a
    real API server is tests/integration/test_approval_admission.py."""
    variables = {
        v["name"]: v["expression"] for v in admission.approval_decision_policy()["spec"]["variables"]
    }
    assert admission.REQUESTER_DECIDES == ("none", "low", "medium")
    for up_to in admission.REQUESTER_DECIDES:
        risks = list(requester_risks(up_to))
        if risks:
            assert f"variables.requesterDecidesUpTo == '{up_to}' ? {risks!r}" in variables["requesterRisks"]
        else:
            assert f"'{up_to}'" not in variables["requesterRisks"]
    assert variables["requesterRisks"].endswith(": []")  # none, or anything else: approve nothing
    assert variables["requesterDecidesUpTo"].endswith("? params.data['requesterDecidesUpTo'] : 'none'")
    assert variables["relay"] == "request.userInfo.username in variables.trustedRequesters"
    assert variables["selfAllowed"].startswith("has(object.spec.action) && !has(object.spec.policyDecision)")


def test_session_policy_checks_creates_against_the_caller() -> None:
    spec = admission.session_requester_policy()["spec"]
    (rule,) = spec["matchConstraints"]["resourceRules"]
    assert rule["operations"] == ["CREATE"] and rule["resources"] == ["codexsessions"]
    assert "matchConditions" not in spec
    expressions = " ".join(v["expression"] for v in spec["validations"])
    assert "request.userInfo.username in variables.trustedRequesters" in expressions


@pytest.mark.parametrize(
    "binding",
    [
        admission.approval_decision_binding("codex-system"),
        admission.session_requester_binding("codex-system"),
    ],
    ids=["approval", "session"],
)
def test_bindings_deny_and_need_their_params(binding: dict[str, Any]) -> None:
    spec = binding["spec"]
    assert spec["policyName"] == binding["metadata"]["name"]
    assert spec["validationActions"] == ["Deny"]
    assert spec["paramRef"] == {
        "name": admission.PARAMS_CONFIGMAP,
        "namespace": "codex-system",
        "parameterNotFoundAction": "Deny",
    }


def test_params_configmap() -> None:
    cm = admission.params_configmap(
        "codex-system",
        ["codex-approvers", "codex-admins"],
        ["system:serviceaccount:codex-system:codex-gateway"],
        operators=["system:serviceaccount:codex-system:codex-operator"],
        admin_groups=["codex-admins"],
    )
    assert cm["metadata"] == {
        "name": "codex-admission-params",
        "namespace": "codex-system",
        "labels": {"app.kubernetes.io/part-of": "codex-k8s-operator"},
    }
    assert cm["data"] == {
        "approverGroups": "codex-approvers,codex-admins",
        "trustedRequesters": "system:serviceaccount:codex-system:codex-gateway",
        "operators": "system:serviceaccount:codex-system:codex-operator",
        "adminGroups": "codex-admins",
        "requesterDecidesUpTo": "none",
    }
    assert admission.params_configmap("ns", [], [])["data"] == {
        "approverGroups": "",
        "trustedRequesters": "",
        "operators": "",
        "adminGroups": "",
        "requesterDecidesUpTo": "none",
    }


@pytest.mark.parametrize("up_to", ["none", "low", "medium"])
def test_params_say_how_far_requesters_decide_their_own_actions(up_to: str) -> None:
    data = admission.params_configmap("ns", [], [], requester_decides_up_to=up_to)["data"]
    assert data[admission.REQUESTER_DECIDES_KEY] == up_to == data["requesterDecidesUpTo"]


@pytest.mark.parametrize("bad", ["high", "critical", "", "Medium", " low"])
def test_params_refuse_a_requester_risk_the_policy_does_not_know(bad: str) -> None:
    # high and critical stay with the approver groups, whatever the params say.
    with pytest.raises(ValueError, match="requester_decides_up_to"):
        admission.params_configmap("ns", [], [], requester_decides_up_to=bad)


@pytest.mark.parametrize("bad", ["a,b", "", " padded"])
def test_params_configmap_rejects_names_that_would_split_wrongly(bad: str) -> None:
    with pytest.raises(ValueError, match="without commas"):
        admission.params_configmap("ns", [bad], [])
    with pytest.raises(ValueError, match="without commas"):
        admission.params_configmap("ns", [], [bad])
    with pytest.raises(ValueError, match="without commas"):
        admission.params_configmap("ns", [], [], operators=[bad])
    with pytest.raises(ValueError, match="without commas"):
        admission.params_configmap("ns", [], [], admin_groups=[bad])
    with pytest.raises(ValueError, match="without commas"):
        admission.params_configmap("ns", [], [], runner_secrets=[bad])


def test_params_name_the_runner_secrets_only_when_given() -> None:
    data = admission.params_configmap("ns", [], [], runner_secrets=["key-a", "key-b"])["data"]
    assert data["runnerSecrets"] == "key-a,key-b" and data["runnerServiceAccount"] == "codex-runner"
    assert "runnerSecrets" not in admission.params_configmap("ns", [], [])["data"]


# -- the operator's helpers ---------------------------------------------------------


def _approval(**spec: Any) -> dict[str, Any]:
    return {"spec": {"sessionRef": "s1", "riskLevel": "high", "requestedBy": "carol", **spec}}


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (_approval(), _approval(decision="Approved"), {"decidedBy": "bob"}),
        (_approval(), _approval(decision="Denied", reason="no"), {"decidedBy": "bob"}),
        # A typed name is replaced by the caller's identity.
        (_approval(), _approval(decision="Approved", decidedBy="alice"), {"decidedBy": "bob"}),
        (None, _approval(decision="Approved"), {"decidedBy": "bob"}),
        (_approval(), _approval(), {}),
        (_approval(), _approval(decision=None), {}),
        (
            _approval(decision="Approved", decidedBy="alice"),
            _approval(decision="Approved", decidedBy="alice"),
            {},
        ),
        (_approval(decision="Approved"), _approval(decision="Denied", reason="x"), {}),
        ({}, {}, {}),
    ],
    ids=[
        "approve",
        "deny",
        "typed-name-overwritten",
        "no-old-object",
        "no-decision",
        "decision-null",
        "already-decided",
        "decision-flip",
        "empty",
    ],
)
def test_stamp_decider(old: dict[str, Any] | None, new: dict[str, Any], expected: dict[str, Any]) -> None:
    assert stamp_decider(old, new, "bob") == expected


def test_stamp_decider_without_a_username_stamps_nothing() -> None:
    assert stamp_decider(_approval(), _approval(decision="Approved"), "") == {}


GATEWAY = "system:serviceaccount:codex-system:codex-gateway"


@pytest.mark.parametrize(
    ("user", "new", "expected"),
    [
        # The gateway relays carol's decision in her name: kept, the policy checks it.
        (GATEWAY, _approval(decision="Denied", reason="no", decidedBy="carol"), {}),
        # Whatever name it writes is kept: the policy refuses anyone but the requester.
        (GATEWAY, _approval(decision="Approved", decidedBy="alice"), {}),
        # Naming no one, the gateway decides as itself (which the policy refuses).
        (GATEWAY, _approval(decision="Approved"), {"decidedBy": GATEWAY}),
        (GATEWAY, _approval(decision="Approved", decidedBy=""), {"decidedBy": GATEWAY}),
        # Anyone else is stamped over, whoever they type.
        ("bob", _approval(decision="Approved", decidedBy="carol"), {"decidedBy": "bob"}),
        ("carol", _approval(decision="Denied", reason="no", decidedBy="carol"), {"decidedBy": "carol"}),
    ],
    ids=["relay", "relay-other-name", "trusted-without-name", "trusted-empty-name", "untrusted", "requester"],
)
def test_stamp_decider_keeps_the_name_a_trusted_requester_relays(
    user: str, new: dict[str, Any], expected: dict[str, Any]
) -> None:
    assert stamp_decider(_approval(), new, user, {GATEWAY}) == expected


def test_stamp_decider_keeps_nothing_once_decided_even_for_a_trusted_requester() -> None:
    decided = _approval(decision="Denied", reason="no", decidedBy="carol")
    assert stamp_decider(decided, decided, GATEWAY, {GATEWAY}) == {}
    # Without the trusted set (the default), a relay is stamped like anyone's decision.
    assert stamp_decider(_approval(), _approval(decision="Approved", decidedBy="carol"), GATEWAY) == {
        "decidedBy": GATEWAY
    }


@pytest.mark.parametrize(
    ("spec", "user", "expected"),
    [
        ({"prompt": "hi"}, "carol", {"requestedBy": "carol"}),
        ({"prompt": "hi", "requestedBy": "alice"}, "carol", {"requestedBy": "carol"}),
        ({"prompt": "hi", "requestedBy": "carol"}, "carol", {"requestedBy": "carol"}),
        ({"prompt": "hi", "requestedBy": "mcp-user@example.com"}, GATEWAY, {}),
        ({"prompt": "hi"}, GATEWAY, {"requestedBy": GATEWAY}),
        ({"prompt": "hi", "requestedBy": ""}, GATEWAY, {"requestedBy": GATEWAY}),
        ({"prompt": "hi"}, "", {}),
    ],
    ids=[
        "stamped",
        "typed-name-overwritten",
        "same-name",
        "trusted-names-its-user",
        "trusted-without-name",
        "trusted-empty-name",
        "no-username",
    ],
)
def test_stamp_requester(spec: dict[str, Any], user: str, expected: dict[str, Any]) -> None:
    assert stamp_requester({"spec": spec}, user, {GATEWAY}) == expected


def _entry(manager: str, time: str, fields: dict[str, Any], subresource: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "fieldsType": "FieldsV1",
        "fieldsV1": fields,
        "manager": manager,
        "operation": "Update",
        "time": time,
    }
    if subresource:
        entry["subresource"] = subresource
    return entry


CREATED = _entry("codex-operator", "2030-01-01T10:00:00Z", {"f:spec": {".": {}, "f:riskLevel": {}}})
DECIDED = _entry("kubectl-patch", "2030-01-01T10:05:00Z", {"f:spec": {"f:decidedBy": {}, "f:decision": {}}})
STATUS = _entry(
    "codex-operator", "2030-01-01T10:06:00Z", {"f:status": {"f:phase": {}, "f:decision": {}}}, "status"
)


def test_decision_time_is_the_server_time_of_the_deciding_write() -> None:
    body = {"metadata": {"managedFields": [CREATED, DECIDED, STATUS]}, "spec": {"decision": "Approved"}}
    assert decision_time(body) == datetime(2030, 1, 1, 10, 5, tzinfo=UTC)


def test_decision_time_takes_the_newest_entry_holding_the_decision() -> None:
    # Two managers can own the same field (e.g. an apply that repeats the value).
    later = _entry("kubectl", "2030-01-01T11:00:00Z", {"f:spec": {"f:decision": {}}})
    body = {"metadata": {"managedFields": [later, DECIDED]}}
    assert decision_time(body) == datetime(2030, 1, 1, 11, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"metadata": {}},
        {"metadata": {"managedFields": None}},
        {"metadata": {"managedFields": [CREATED]}},
        # Only the status subresource mentions a decision: that is not the spec's.
        {"metadata": {"managedFields": [CREATED, STATUS]}},
        {"metadata": {"managedFields": [{**DECIDED, "time": "not a time"}]}},
        {"metadata": {"managedFields": [{**DECIDED, "time": None}]}},
    ],
    ids=["no-metadata", "no-managed-fields", "null", "undecided", "status-only", "bad-time", "no-time"],
)
def test_decision_time_is_none_without_a_recorded_decision(body: dict[str, Any]) -> None:
    assert decision_time(body) is None


def test_decision_time_accepts_client_objects() -> None:
    # The official client's models, as dicts, have datetimes and snake_case keys.
    entry = {"fields_v1": {"f:spec": {"f:decision": {}}}, "time": datetime(2030, 1, 1, 9, 0)}
    body = {"metadata": {"managed_fields": [entry]}}
    assert decision_time(body) == datetime(2030, 1, 1, 9, 0, tzinfo=UTC)
