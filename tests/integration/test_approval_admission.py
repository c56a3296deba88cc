"""The ValidatingAdmissionPolicies of codex_devenv.generate.admission on the real API
server, exercised by real, distinct users.

No operator (and so no stamping webhook) runs here: this is the fail-safe
case where people set decidedBy/requestedBy themselves and the policy checks
them against request.userInfo. Every rejection asserts the policy's message
and that nothing was created or changed.

The policies are cluster-scoped, so the module installs renamed copies bound
only to its own namespace, and removes them afterwards: other tests in the
same control plane never see them."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from codex_api import names
from codex_api.common import GROUP, VERSION
from codex_devenv.admission_kit import (
    COMMAND_ACTION,
    approval_request,
    ensure_param_keeper,
    wait_until_denied,
)
from codex_devenv.admission_kit import message as _message
from codex_devenv.admission_kit import scoped as _scoped
from codex_devenv.admission_kit import user_rbac as _rbac
from codex_devenv.gateway_process import bind_gateway, gateway_kubeconfig
from codex_devenv.generate import admission
from codex_devenv.operator_process import OPERATOR_USER
from codex_operator.admission import decision_time

SESSIONS, APPROVALS = "codexsessions", "approvalrequests"
APPROVER_GROUP = "codex-approvers"
GATEWAY = "system:serviceaccount:codex-system:codex-gateway"
USERS = ("alice", "bob", "carol", "dave", "mallory")
POLICY_TIMEOUT = 60.0


def _wait(probe: Callable[[], object], fragment: str, what: str) -> None:
    try:
        wait_until_denied(probe, fragment, what, POLICY_TIMEOUT)
    except TimeoutError as err:
        pytest.fail(str(err))


@dataclass(frozen=True)
class Setup:
    namespace: str


def _apply(control_plane: Any, docs: list[dict[str, Any]]) -> None:
    control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))


def _params(
    namespace: str,
    trusted: list[str],
    *,
    up_to: str = "none",
    approver_groups: tuple[str, ...] = (APPROVER_GROUP,),
) -> dict[str, Any]:
    return admission.params_configmap(
        namespace,
        list(approver_groups),
        trusted,
        operators=[OPERATOR_USER],
        admin_groups=["codex-admins"],
        requester_decides_up_to=up_to,
    )


approval = approval_request


def session(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "CodexSession",
        "metadata": {"name": name},
        "spec": {"prompt": "Write a factorial function", **spec},
    }


@pytest.fixture(scope="module")
def setup(control_plane: Any, kube_client: Any, client_for: Any) -> Iterator[Setup]:
    suffix = secrets.token_hex(3)
    namespace = f"t-approval-admission-{suffix}"
    core = client.CoreV1Api(kube_client)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    docs = [
        *_scoped(
            admission.approval_decision_policy(),
            admission.approval_decision_binding(namespace),
            suffix,
            namespace,
        ),
        *_scoped(
            admission.session_requester_policy(),
            admission.session_requester_binding(namespace),
            suffix,
            namespace,
        ),
        *_scoped(
            admission.session_update_policy(),
            admission.session_update_binding(namespace),
            suffix,
            namespace,
        ),
    ]
    try:
        ensure_param_keeper(control_plane)
        _apply(control_plane, [*_rbac(namespace), _params(namespace, [GATEWAY])])
        _apply(control_plane, docs)
        as_carol = client.CustomObjectsApi(client_for("carol"))
        _wait(
            lambda: as_carol.create_namespaced_custom_object(
                GROUP, VERSION, namespace, SESSIONS, session("probe", requestedBy="alice"), dry_run="All"
            ),
            admission.MSG_REQUESTER,
            "session requester",
        )
        client.CustomObjectsApi(kube_client).create_namespaced_custom_object(
            GROUP, VERSION, namespace, APPROVALS, approval("probe", risk="low")
        )
        _wait(
            lambda: as_carol.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                APPROVALS,
                "probe",
                {"spec": {"decision": "Approved", "decidedBy": "carol"}},
                dry_run="All",
            ),
            admission.MSG_OWN_REQUEST,
            "approval decision",
        )
        yield Setup(namespace)
    finally:
        control_plane.kubectl(
            "delete", "--ignore-not-found", "--wait=false", "-f", "-", input=yaml.safe_dump_all(docs)
        )
        core.delete_namespace(namespace, propagation_policy="Background")


@pytest.fixture
def api(client_for: Any) -> Callable[[str], Any]:
    return lambda user: client.CustomObjectsApi(client_for(user))


@pytest.fixture
def admin(kube_client: Any) -> Any:
    return client.CustomObjectsApi(kube_client)


def _unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def _create_approval(admin: Any, ns: str, **kwargs: Any) -> str:
    name = _unique("ar")
    admin.create_namespaced_custom_object(GROUP, VERSION, ns, APPROVALS, approval(name, **kwargs))
    return name


def _decide(
    api: Any, ns: str, name: str, decided_by: str | None, decision: str = "Approved"
) -> dict[str, Any]:
    spec: dict[str, Any] = {"decision": decision}
    if decision == "Denied":
        spec["reason"] = "too risky"
    if decided_by is not None:
        spec["decidedBy"] = decided_by
    result: dict[str, Any] = api.patch_namespaced_custom_object(
        GROUP, VERSION, ns, APPROVALS, name, {"spec": spec}
    )
    return result


def _assert_decision_rejected(
    admin: Any,
    api: Any,
    ns: str,
    name: str,
    decided_by: str | None,
    fragments: list[str],
    decision: str = "Approved",
) -> None:
    before = admin.get_namespaced_custom_object(GROUP, VERSION, ns, APPROVALS, name)
    with pytest.raises(ApiException) as err:
        _decide(api, ns, name, decided_by, decision)
    assert err.value.status == 403, err.value.body
    message = _message(err.value)
    assert "ValidatingAdmissionPolicy" in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    after = admin.get_namespaced_custom_object(GROUP, VERSION, ns, APPROVALS, name)
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert "decision" not in after["spec"] and "decidedBy" not in after["spec"]


# -- ApprovalRequest decisions ------------------------------------------------------


@pytest.mark.parametrize("risk", ["low", "high"])
@pytest.mark.parametrize("decided_by", ["carol", None])
def test_requester_cannot_decide_their_own_request(
    setup: Setup, admin: Any, api: Any, risk: str, decided_by: str | None
) -> None:
    name = _create_approval(admin, setup.namespace, risk=risk)
    _assert_decision_rejected(
        admin,
        api("carol"),
        setup.namespace,
        name,
        decided_by,
        [f"carol requested this session and {admission.MSG_OWN_REQUEST}"],
    )


@pytest.mark.parametrize("risk", ["high", "critical"])
def test_approver_decides_a_privileged_request_as_themselves(
    setup: Setup, admin: Any, api: Any, risk: str
) -> None:
    name = _create_approval(admin, setup.namespace, risk=risk)
    decided = _decide(api("bob"), setup.namespace, name, "bob")
    assert decided["spec"]["decision"] == "Approved"
    assert decided["spec"]["decidedBy"] == "bob"
    # The server's own clock records when the decision was written.
    when = decision_time(decided)
    assert when is not None
    assert abs((datetime.now(UTC) - when).total_seconds()) < 60


def test_approver_can_deny(setup: Setup, admin: Any, api: Any) -> None:
    name = _create_approval(admin, setup.namespace)
    decided = _decide(api("alice"), setup.namespace, name, "alice", decision="Denied")
    assert decided["spec"]["decision"] == "Denied" and decided["spec"]["decidedBy"] == "alice"


def test_typing_someone_elses_name_is_rejected(setup: Setup, admin: Any, api: Any) -> None:
    name = _create_approval(admin, setup.namespace)
    _assert_decision_rejected(
        admin, api("alice"), setup.namespace, name, "bob", [admission.MSG_DECIDER, "you are alice, not bob"]
    )


def test_decision_without_decider_is_rejected_when_no_webhook_stamps_it(
    setup: Setup, admin: Any, api: Any
) -> None:
    name = _create_approval(admin, setup.namespace)
    _assert_decision_rejected(
        admin,
        api("alice"),
        setup.namespace,
        name,
        None,
        [admission.MSG_DECIDER, "it is not set", "set spec.decidedBy to your own username alice"],
    )


@pytest.mark.parametrize("risk", ["high", "critical"])
def test_outsider_cannot_decide_a_privileged_request(setup: Setup, admin: Any, api: Any, risk: str) -> None:
    name = _create_approval(admin, setup.namespace, risk=risk)
    _assert_decision_rejected(
        admin,
        api("mallory"),
        setup.namespace,
        name,
        "mallory",
        [
            f"a {risk} risk request {admission.MSG_APPROVER_GROUP} ({APPROVER_GROUP})",
            "mallory is in none of them",
        ],
    )


@pytest.mark.parametrize("risk", ["low", "medium"])
def test_outsider_can_decide_a_low_risk_request_as_themselves(
    setup: Setup, admin: Any, api: Any, risk: str
) -> None:
    name = _create_approval(admin, setup.namespace, risk=risk)
    _assert_decision_rejected(
        admin, api("mallory"), setup.namespace, name, "alice", ["you are mallory, not alice"]
    )
    decided = _decide(api("mallory"), setup.namespace, name, "mallory")
    assert decided["spec"]["decidedBy"] == "mallory"


@pytest.mark.parametrize(("phase", "allowed"), [("Expired", False), ("Pending", True)])
def test_only_a_pending_request_can_be_decided(
    setup: Setup, admin: Any, api: Any, phase: str, allowed: bool
) -> None:
    name = _create_approval(admin, setup.namespace)
    admin.patch_namespaced_custom_object_status(
        GROUP, VERSION, setup.namespace, APPROVALS, name, {"status": {"phase": phase}}
    )
    if allowed:
        assert _decide(api("bob"), setup.namespace, name, "bob")["spec"]["decidedBy"] == "bob"
        return
    _assert_decision_rejected(
        admin,
        api("bob"),
        setup.namespace,
        name,
        "bob",
        [f"this request is already Expired and {admission.MSG_NOT_PENDING}"],
    )


def test_other_writes_are_not_checked(setup: Setup, admin: Any, api: Any) -> None:
    """Only the write that makes the decision is matched: the operator's
    metadata and status writes, and writes after the decision, go through."""
    name = _create_approval(admin, setup.namespace)
    ns = setup.namespace
    admin.patch_namespaced_custom_object(
        GROUP, VERSION, ns, APPROVALS, name, {"metadata": {"labels": {"step": "created"}}}
    )
    admin.patch_namespaced_custom_object_status(
        GROUP, VERSION, ns, APPROVALS, name, {"status": {"phase": "Pending"}}
    )
    _decide(api("bob"), ns, name, "bob")
    # carol is the requester, but this write decides nothing.
    labelled = api("carol").patch_namespaced_custom_object(
        GROUP, VERSION, ns, APPROVALS, name, {"metadata": {"labels": {"seen-by": "carol"}}}
    )
    assert labelled["metadata"]["labels"]["seen-by"] == "carol"
    admin.patch_namespaced_custom_object_status(
        GROUP, VERSION, ns, APPROVALS, name, {"status": {"phase": "Approved", "decidedBy": "bob"}}
    )


def test_kubectl_patch_as_a_human_without_the_webhook(setup: Setup, admin: Any, control_plane: Any) -> None:
    """The commands the docs give: the short one needs the operator's webhook;
    without it, decidedBy is the caller's own name from `kubectl auth whoami`."""
    name = _create_approval(admin, setup.namespace)
    ns = setup.namespace
    short = control_plane.kubectl(
        "-n", ns, "patch", "cxar", name, "--type", "merge", "-p", '{"spec":{"decision":"Approved"}}',
        user="bob", check=False,
    )  # fmt: skip
    assert short.returncode != 0
    assert admission.MSG_DECIDER in short.stderr and "it is not set" in short.stderr
    me = control_plane.kubectl("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}", user="bob")
    assert me.stdout == "bob"
    patch = json.dumps({"spec": {"decision": "Approved", "decidedBy": me.stdout}})
    control_plane.kubectl("-n", ns, "patch", "cxar", name, "--type", "merge", "-p", patch, user="bob")
    stored = admin.get_namespaced_custom_object(GROUP, VERSION, ns, APPROVALS, name)
    assert stored["spec"]["decision"] == "Approved" and stored["spec"]["decidedBy"] == "bob"


# -- per-action requests: the requester decides, the gateway relays ---------------------
#
# codex_api.approval.requester_may_decide on the API server: the requester of an
# action may deny it, and approve it up to the params' requesterDecidesUpTo; the
# gateway (the trusted requester, here its real ServiceAccount with the shipped
# RBAC) may relay exactly that decision in their name, and nothing else.

GATEWAY_GROUP = "system:serviceaccounts:codex-system"  # one of the gateway's own groups
PROBE_ACTION = "probe-action"


@pytest.fixture(scope="module")
def gateway(setup: Setup, control_plane: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The gateway's ServiceAccount, with the rights an install gives it in a sessions namespace."""
    from kubernetes import config

    kubeconfig = gateway_kubeconfig(control_plane, tmp_path_factory.mktemp("gateway-sa"))
    bind_gateway(control_plane, setup.namespace)
    return client.CustomObjectsApi(config.new_client_from_config(config_file=str(kubeconfig)))


def _action_approval(admin: Any, ns: str, risk: str, requested_by: str = "carol") -> str:
    return _create_approval(admin, ns, risk=risk, requested_by=requested_by, action=COMMAND_ACTION)


def _params_seen(api: Any, admin: Any, ns: str, up_to: str, approver_groups: tuple[str, ...]) -> None:
    """Params reach the API server's informer a moment after the apply: wait
    until the policy's own messages show the new values."""
    try:
        admin.create_namespaced_custom_object(
            GROUP, VERSION, ns, APPROVALS, approval(PROBE_ACTION, risk="critical", action=COMMAND_ACTION)
        )
    except ApiException as err:
        if err.status != 409:
            raise
    # No requester approves their own critical action: the refusal names the param.
    fragment = "not approve them" if up_to == "none" else f"approve them up to {up_to} risk"
    _wait(
        lambda: api("carol").patch_namespaced_custom_object(
            GROUP, VERSION, ns, APPROVALS, PROBE_ACTION,
            {"spec": {"decision": "Approved", "decidedBy": "carol"}}, dry_run="All",
        ),
        fragment,
        f"requesterDecidesUpTo={up_to}",
    )  # fmt: skip
    _wait(
        lambda: api("mallory").patch_namespaced_custom_object(
            GROUP, VERSION, ns, APPROVALS, PROBE_ACTION,
            {"spec": {"decision": "Approved", "decidedBy": "mallory"}}, dry_run="All",
        ),
        f"({', '.join(approver_groups)})",
        f"approverGroups={approver_groups}",
    )  # fmt: skip


@contextmanager
def _requester_decides(
    control_plane: Any,
    api: Any,
    admin: Any,
    ns: str,
    up_to: str,
    approver_groups: tuple[str, ...] = (APPROVER_GROUP,),
) -> Iterator[None]:
    """The params with `up_to` (and `approver_groups`) in force, the defaults again afterwards."""
    _apply(control_plane, [_params(ns, [GATEWAY], up_to=up_to, approver_groups=approver_groups)])
    try:
        _params_seen(api, admin, ns, up_to, approver_groups)
        yield
    finally:
        _apply(control_plane, [_params(ns, [GATEWAY])])
        _params_seen(api, admin, ns, "none", (APPROVER_GROUP,))


@pytest.mark.parametrize("up_to", ["none", "medium"])
@pytest.mark.parametrize("decision", ["Approved", "Denied"])
def test_requester_never_decides_their_own_turn(
    setup: Setup, admin: Any, api: Any, control_plane: Any, up_to: str, decision: str
) -> None:
    """requesterDecidesUpTo is about actions: a turn's request keeps its four eyes."""
    ns = setup.namespace
    with _requester_decides(control_plane, api, admin, ns, up_to):
        name = _create_approval(admin, ns, risk="low")
        _assert_decision_rejected(
            admin, api("carol"), ns, name, "carol",
            [f"carol requested this session and {admission.MSG_OWN_REQUEST}"], decision,
        )  # fmt: skip


@pytest.mark.parametrize(
    ("up_to", "risk", "allowed"),
    [
        ("none", "low", False),
        ("none", "medium", False),
        ("low", "low", True),
        ("low", "medium", False),
        ("medium", "low", True),
        ("medium", "medium", True),
        ("medium", "high", False),
        ("medium", "critical", False),
    ],
)
def test_requester_approves_their_own_action_up_to_the_param(
    setup: Setup, admin: Any, api: Any, control_plane: Any, up_to: str, risk: str, allowed: bool
) -> None:
    ns = setup.namespace
    with _requester_decides(control_plane, api, admin, ns, up_to):
        name = _action_approval(admin, ns, risk)
        if allowed:
            decided = _decide(api("carol"), ns, name, "carol")
            assert decided["spec"]["decision"] == "Approved" and decided["spec"]["decidedBy"] == "carol"
            return
        limit = "not approve them" if up_to == "none" else f"up to {up_to} risk, this one is {risk}"
        _assert_decision_rejected(
            admin, api("carol"), ns, name, "carol",
            [f"carol requested this action and {admission.MSG_OWN_REQUEST}", limit],
        )  # fmt: skip


@pytest.mark.parametrize("risk", ["medium", "high", "critical"])
def test_requester_denies_their_own_action_without_being_an_approver(
    setup: Setup, admin: Any, api: Any, risk: str
) -> None:
    """Denying can only make the turn do less: allowed at any risk, whatever the param
    (the module's default, none), without an approver group (carol is in none)."""
    name = _action_approval(admin, setup.namespace, risk)
    decided = _decide(api("carol"), setup.namespace, name, "carol", decision="Denied")
    assert decided["spec"]["decision"] == "Denied" and decided["spec"]["decidedBy"] == "carol"
    assert decided["spec"]["reason"] == "too risky"


def test_requester_denying_their_own_action_still_names_themselves(
    setup: Setup, admin: Any, api: Any
) -> None:
    """Without the webhook, the requester's own denial is refused for the missing
    decidedBy (what to fix), not for an approver group they do not need."""
    ns = setup.namespace
    name = _action_approval(admin, ns, "high")
    _assert_decision_rejected(
        admin, api("carol"), ns, name, None,
        [admission.MSG_DECIDER, "set spec.decidedBy to your own username carol"], "Denied",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("user", "risk", "decision"),
    [
        ("mallory", "high", "Denied"),  # would pass as carol without an approver group
        ("mallory", "medium", "Approved"),
        ("bob", "low", "Approved"),  # an approver, but not as carol
        ("bob", "critical", "Denied"),
    ],
)
def test_others_cannot_decide_in_the_requesters_name(
    setup: Setup, admin: Any, api: Any, control_plane: Any, user: str, risk: str, decision: str
) -> None:
    """Typing the requester as decidedBy does not make anyone the requester: only
    the trusted requester may write a name other than its own."""
    ns = setup.namespace
    with _requester_decides(control_plane, api, admin, ns, "medium"):
        name = _action_approval(admin, ns, risk)
        _assert_decision_rejected(
            admin,
            api(user),
            ns,
            name,
            "carol",
            [admission.MSG_DECIDER, f"you are {user}, not carol"],
            decision,
        )


@pytest.mark.parametrize("risk", ["low", "medium", "high", "critical"])
def test_gateway_relays_the_requesters_denial(setup: Setup, admin: Any, gateway: Any, risk: str) -> None:
    name = _action_approval(admin, setup.namespace, risk)
    decided = _decide(gateway, setup.namespace, name, "carol", decision="Denied")
    assert decided["spec"]["decision"] == "Denied" and decided["spec"]["decidedBy"] == "carol"


@pytest.mark.parametrize(
    ("up_to", "risk", "allowed"),
    [("none", "low", False), ("low", "low", True), ("low", "medium", False), ("medium", "high", False)],
)
def test_gateway_relays_an_approval_only_as_far_as_the_requester_may(
    setup: Setup, admin: Any, api: Any, gateway: Any, control_plane: Any, up_to: str, risk: str, allowed: bool
) -> None:
    ns = setup.namespace
    with _requester_decides(control_plane, api, admin, ns, up_to):
        name = _action_approval(admin, ns, risk)
        if allowed:
            decided = _decide(gateway, ns, name, "carol")
            assert decided["spec"]["decision"] == "Approved" and decided["spec"]["decidedBy"] == "carol"
            return
        _assert_decision_rejected(
            admin, gateway, ns, name, "carol",
            [f"{GATEWAY} is a trusted requester: {admission.MSG_RELAY} ({up_to})",
             f"Approved by carol on a {risk} risk action requested by carol"],
        )  # fmt: skip


@pytest.mark.parametrize("decision", ["Approved", "Denied"])
def test_gateway_relays_only_for_the_requester(
    setup: Setup, admin: Any, api: Any, gateway: Any, control_plane: Any, decision: str
) -> None:
    """Not an approver's name (alice could approve it herself, the gateway may not
    say she did), nor another user's."""
    ns = setup.namespace
    with _requester_decides(control_plane, api, admin, ns, "medium"):
        name = _action_approval(admin, ns, "low")
        for someone in ("alice", "mallory"):
            _assert_decision_rejected(
                admin, gateway, ns, name, someone,
                [admission.MSG_RELAY, f"{decision} by {someone} on a low risk action"], decision,
            )  # fmt: skip


@pytest.mark.parametrize("decision", ["Approved", "Denied"])
def test_gateway_relays_nothing_on_a_turn(setup: Setup, admin: Any, gateway: Any, decision: str) -> None:
    ns = setup.namespace
    name = _create_approval(admin, ns, risk="low")
    _assert_decision_rejected(
        admin, gateway, ns, name, "carol", [admission.MSG_RELAY, "risk turn requested by carol"], decision
    )


@pytest.mark.parametrize("action", [True, False], ids=["action", "turn"])
def test_gateway_never_decides_as_itself_even_in_an_approver_group(
    setup: Setup, admin: Any, api: Any, gateway: Any, control_plane: Any, action: bool
) -> None:
    """Its own groups count for nothing: with one of them among the approver
    groups, it still may not approve a high request, with its name or none."""
    ns = setup.namespace
    with _requester_decides(control_plane, api, admin, ns, "medium", (APPROVER_GROUP, GATEWAY_GROUP)):
        name = _create_approval(admin, ns, risk="high", action=COMMAND_ACTION if action else None)
        for decided_by in (GATEWAY, None):
            for decision in ("Approved", "Denied"):
                _assert_decision_rejected(
                    admin, gateway, ns, name, decided_by, [admission.MSG_RELAY], decision
                )


def test_gateway_cannot_decide_its_own_request(setup: Setup, admin: Any, gateway: Any) -> None:
    """A session the gateway created naming no one has it as requester: as
    requester it may deny its own action like anyone, never approve its turn."""
    ns = setup.namespace
    turn = _create_approval(admin, ns, risk="low", requested_by=GATEWAY)
    _assert_decision_rejected(admin, gateway, ns, turn, GATEWAY, [admission.MSG_OWN_REQUEST])
    action = _action_approval(admin, ns, "high", requested_by=GATEWAY)
    assert _decide(gateway, ns, action, GATEWAY, decision="Denied")["spec"]["decidedBy"] == GATEWAY


# -- CodexSession requester ---------------------------------------------------------


def _assert_create_rejected(
    admin: Any, api: Any, ns: str, body: dict[str, Any], fragments: list[str]
) -> None:
    with pytest.raises(ApiException) as err:
        api.create_namespaced_custom_object(GROUP, VERSION, ns, SESSIONS, body)
    assert err.value.status == 403, err.value.body
    message = _message(err.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    names = [
        o["metadata"]["name"]
        for o in admin.list_namespaced_custom_object(GROUP, VERSION, ns, SESSIONS)["items"]
    ]
    assert body["metadata"]["name"] not in names


def test_session_for_someone_else_is_rejected(setup: Setup, admin: Any, api: Any) -> None:
    body = session(_unique("s"), requestedBy="alice")
    _assert_create_rejected(
        admin, api("carol"), setup.namespace, body, [admission.MSG_REQUESTER, "you are carol, not alice"]
    )


def test_session_without_requester_is_rejected_when_no_webhook_stamps_it(
    setup: Setup, admin: Any, api: Any
) -> None:
    body = session(_unique("s"))
    _assert_create_rejected(
        admin, api("carol"), setup.namespace, body, [admission.MSG_REQUESTER_MISSING, "username carol"]
    )


def test_session_for_oneself_is_created(setup: Setup, api: Any) -> None:
    body = session(_unique("s"), requestedBy="carol")
    created = api("carol").create_namespaced_custom_object(GROUP, VERSION, setup.namespace, SESSIONS, body)
    assert created["spec"]["requestedBy"] == "carol"


def test_trusted_requester_from_params_may_name_anyone(
    setup: Setup, admin: Any, api: Any, control_plane: Any
) -> None:
    ns = setup.namespace
    body = session(_unique("s"), requestedBy="mcp-user@example.com")
    _assert_create_rejected(admin, api("dave"), ns, body, ["you are dave, not mcp-user@example.com"])
    _apply(control_plane, [_params(ns, [GATEWAY, "dave"])])
    try:
        deadline = time.monotonic() + POLICY_TIMEOUT
        while True:
            try:
                created = api("dave").create_namespaced_custom_object(GROUP, VERSION, ns, SESSIONS, body)
                break
            except ApiException as err:
                # The params reach the API server's informer a moment later.
                if err.status != 403 or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert created["spec"]["requestedBy"] == "mcp-user@example.com"
        # Trusted or not, a session always names its requester.
        _assert_create_rejected(
            admin, api("dave"), ns, session(_unique("s")), [admission.MSG_REQUESTER_MISSING]
        )
    finally:
        _apply(control_plane, [_params(ns, [GATEWAY])])


def test_trusted_requester_may_only_add_the_cancel_or_cleanup_annotation(
    setup: Setup, admin: Any, api: Any, control_plane: Any
) -> None:
    """The gateway's `patch` right exists for codex-cleanup; the policy keeps it from being more."""
    ns = setup.namespace
    name = _unique("s")
    admin_body = session(name, requestedBy="admin")
    admin_body["metadata"]["labels"] = {"team": "a"}
    admin_body["metadata"]["annotations"] = {"note": "keep"}
    _apply(control_plane, [_params(ns, [GATEWAY, "dave"])])
    try:
        admin.create_namespaced_custom_object(GROUP, VERSION, ns, SESSIONS, admin_body)
        dave = api("dave")

        def patch(body: dict[str, Any], who: Any = dave) -> Any:
            return who.patch_namespaced_custom_object(GROUP, VERSION, ns, SESSIONS, name, body)

        _wait(
            lambda: dave.patch_namespaced_custom_object(
                GROUP, VERSION, ns, SESSIONS, name, {"metadata": {"labels": {"team": "b"}}}, dry_run="All"
            ),
            admission.MSG_TRUSTED_UPDATE,
            "session update",
        )
        refused = [
            {"metadata": {"labels": {"team": "b"}}},
            {"metadata": {"labels": {"extra": "x"}}},
            {"metadata": {"annotations": {"note": None}}},
            {"metadata": {"annotations": {"note": "changed"}}},
            {"metadata": {"annotations": {"other": "x"}}},
            {"metadata": {"finalizers": ["example.com/hold"]}},
        ]
        for body in refused:
            with pytest.raises(ApiException) as err:
                patch(body)
            assert err.value.status == 403, body
            assert admission.MSG_TRUSTED_UPDATE in _message(err.value), body
        unchanged = admin.get_namespaced_custom_object(GROUP, VERSION, ns, SESSIONS, name)["metadata"]
        assert unchanged["labels"] == {"team": "a"} and unchanged["annotations"] == {"note": "keep"}
        assert not unchanged.get("finalizers")

        patch({"metadata": {"annotations": {names.ANNOTATION_CLEANUP: "alice"}}})
        patch({"metadata": {"annotations": {names.ANNOTATION_CANCEL: "asked by alice"}}})
        after = admin.get_namespaced_custom_object(GROUP, VERSION, ns, SESSIONS, name)["metadata"]
        assert after["annotations"] == {
            "note": "keep",
            names.ANNOTATION_CLEANUP: "alice",
            names.ANNOTATION_CANCEL: "asked by alice",
        }
        # Untrusted users are not limited by this policy (RBAC decides for them).
        patch({"metadata": {"labels": {"team": "c"}}}, who=admin)
    finally:
        _apply(control_plane, [_params(ns, [GATEWAY])])
