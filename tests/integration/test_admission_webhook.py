"""The operator's identity-stamping mutating webhook on the real API server,
exercised by real, distinct users, together with the ValidatingAdmissionPolicies
that enforce what it stamps.

The real operator process serves the webhook over HTTPS with a serving
certificate signed by the control plane's CA. The MutatingWebhookConfiguration
is the shipped one (manifests/base/webhook.yaml), renamed for this run, pointed
at the local server by URL instead of the in-cluster Service, and scoped to the
test's namespace; the policies are the project's, scoped the same way
(codex_devenv.admission_kit). "dave" stands in for the gateway, the trusted
requester, on both sides: the operator's --trusted-requester and the policy's
trustedRequesters."""

from __future__ import annotations

import base64
import copy
import json
import secrets
import shlex
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from codex_api.common import GROUP, VERSION
from codex_devenv.admission_kit import COMMAND_ACTION, ScopedAdmission, approval_request, message
from codex_devenv.generate import admission
from codex_devenv.operator_process import bind_operator, start_operator
from codex_devenv.process import free_port
from codex_devenv.testkit import get_session, phase_is, session_body, wait_session
from codex_operator import webhook

REPO_ROOT = Path(__file__).resolve().parents[2]
SHIPPED_WEBHOOKS = REPO_ROOT / "manifests" / "base" / "webhook.yaml"
SESSIONS, APPROVALS = "codexsessions", "approvalrequests"
GATEWAY = "dave"  # trusted to name the requester
READY_TIMEOUT = 60.0
DOCUMENTED_APPROVE = [
    "kubectl",
    "patch",
    "cxar",
    "NAME",
    "--type",
    "merge",
    "-p",
    '{"spec":{"decision":"Approved"}}',
]


@dataclass(frozen=True)
class Env:
    namespace: str
    webhook_port: int


def _unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def webhook_configuration(namespace: str, url: str, ca_bundle: bytes, suffix: str) -> dict[str, Any]:
    """The shipped MutatingWebhookConfiguration, renamed, served at `url`, matching only `namespace`."""
    doc = copy.deepcopy(yaml.safe_load(SHIPPED_WEBHOOKS.read_text()))
    doc["metadata"]["name"] = f"t{suffix}.{doc['metadata']['name']}"
    for hook in doc["webhooks"]:
        path = hook["clientConfig"]["service"]["path"]
        hook["clientConfig"] = {
            "url": url.rstrip("/") + path,
            "caBundle": base64.b64encode(ca_bundle).decode(),
        }
        hook["namespaceSelector"] = {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
    return dict(doc)


def approval(name: str, *, risk: str = "low", **more: Any) -> dict[str, Any]:
    return approval_request(name, risk=risk, session_ref=name, **more)


def _retry_until(check: Callable[[], str | None], what: str, timeout: float = READY_TIMEOUT) -> None:
    """Retry `check` (None: done; else the last answer) within a bound."""
    deadline = time.monotonic() + timeout
    last: str | None = "never checked"
    while time.monotonic() < deadline:
        last = check()
        if last is None:
            return
        time.sleep(0.2)
    pytest.fail(f"{what} within {timeout}s; last answer: {last}")


def _wait_for_stamping(api: Callable[[str], Any], ns: str, probe_approval: str) -> None:
    """The webhook configuration reaches the API server's cache, and the
    operator's webhook server its listening socket, a moment after they are
    created: dry-run both stamps until they show."""

    def session_stamped() -> str | None:
        body = session_body("webhook-probe")
        del body["spec"]["requestedBy"]
        try:
            out = api("carol").create_namespaced_custom_object(
                GROUP, VERSION, ns, SESSIONS, body, dry_run="All"
            )
        except ApiException as err:
            return str(err.body)
        return None if out["spec"].get("requestedBy") == "carol" else json.dumps(out["spec"])

    def decision_stamped() -> str | None:
        try:
            out = api("bob").patch_namespaced_custom_object(
                GROUP,
                VERSION,
                ns,
                APPROVALS,
                probe_approval,
                {"spec": {"decision": "Approved"}},
                dry_run="All",
            )
        except ApiException as err:
            return str(err.body)
        return None if out["spec"].get("decidedBy") == "bob" else json.dumps(out["spec"])

    _retry_until(session_stamped, "the webhook did not stamp spec.requestedBy")
    _retry_until(decision_stamped, "the webhook did not stamp spec.decidedBy")


@pytest.fixture(scope="module")
def env(
    control_plane: Any,
    kube_client: Any,
    client_for: Any,
    operator_kubeconfig: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Env]:
    suffix = secrets.token_hex(3)
    ns = f"t-admission-webhook-{suffix}"
    work = tmp_path_factory.mktemp("admission-webhook")
    core = client.CoreV1Api(kube_client)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    policies = ScopedAdmission(control_plane, ns, suffix=suffix)
    config: dict[str, Any] | None = None
    op = None
    try:
        bind_operator(control_plane, ns)
        # The policies first: their readiness probe relies on nothing stamping yet.
        policies.install(client_for, trusted=[GATEWAY])
        cert, key = control_plane.certs.issue(work, "webhook", "IP:127.0.0.1")
        port = free_port()
        op = start_operator(
            control_plane,
            operator_kubeconfig,
            ns,
            work,
            webhook_port=port,
            webhook_cert=cert,
            webhook_key=key,
            trusted_requesters=[GATEWAY],
        )
        config = webhook_configuration(
            ns, f"https://127.0.0.1:{port}", control_plane.certs.ca_cert.read_bytes(), suffix
        )
        control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(config))
        client.CustomObjectsApi(kube_client).create_namespaced_custom_object(
            GROUP, VERSION, ns, APPROVALS, approval("probe")
        )
        _wait_for_stamping(lambda user: client.CustomObjectsApi(client_for(user)), ns, "probe")
        yield Env(ns, port)
    finally:
        if config is not None:
            control_plane.kubectl(
                "delete", "mutatingwebhookconfiguration", config["metadata"]["name"], "--ignore-not-found"
            )
        policies.uninstall()
        if op is not None:
            op.stop()
        core.delete_namespace(ns, propagation_policy="Background")


@pytest.fixture
def api(client_for: Any) -> Callable[[str], Any]:
    return lambda user: client.CustomObjectsApi(client_for(user))


def _create_session(api: Callable[[str], Any], user: str, ns: str, name: str, **spec: Any) -> dict[str, Any]:
    body = session_body(name, **spec)
    if "requestedBy" not in spec:
        del body["spec"]["requestedBy"]
    result: dict[str, Any] = api(user).create_namespaced_custom_object(GROUP, VERSION, ns, SESSIONS, body)
    return result


def _approval(kube_client: Any, ns: str, name: str) -> dict[str, Any]:
    return cast(
        dict[str, Any],
        client.CustomObjectsApi(kube_client).get_namespaced_custom_object(
            GROUP, VERSION, ns, APPROVALS, name
        ),
    )


def _wait_approval(kube_client: Any, ns: str, name: str, phase: str) -> dict[str, Any]:
    box: dict[str, Any] = {}

    def check() -> str | None:
        box["ar"] = _approval(kube_client, ns, name)
        status = box["ar"].get("status") or {}
        return None if status.get("phase") == phase else json.dumps(status)

    _retry_until(check, f"ApprovalRequest {name} did not become {phase}", timeout=30)
    return box["ar"]


def _awaiting_approval(kube_client: Any, ns: str, name: str) -> tuple[str, list[str]]:
    """The session's ApprovalRequest and the approve command its status message documents."""
    s = wait_session(kube_client, ns, name, phase_is("AwaitingApproval"))
    command = s["status"]["message"].split("approve with: ", 1)[1]
    return s["status"]["approvalRef"], shlex.split(command)


# -- the shipped configuration ------------------------------------------------------------


def test_shipped_webhooks_name_the_operator_handlers() -> None:
    doc = yaml.safe_load(SHIPPED_WEBHOOKS.read_text())
    assert doc["kind"] == "MutatingWebhookConfiguration"
    assert doc["metadata"]["name"] == "codex-identity.codex.techsapo.io"
    hooks = {h["rules"][0]["resources"][0]: h for h in doc["webhooks"]}
    assert hooks[APPROVALS]["clientConfig"]["service"]["path"] == webhook.path(webhook.DECIDER_HANDLER)
    assert hooks[APPROVALS]["rules"][0]["operations"] == ["UPDATE"]
    assert hooks[SESSIONS]["clientConfig"]["service"]["path"] == webhook.path(webhook.REQUESTER_HANDLER)
    assert hooks[SESSIONS]["rules"][0]["operations"] == ["CREATE"]
    for hook in hooks.values():
        service = hook["clientConfig"]["service"]
        assert (service["name"], service["namespace"], service["port"]) == (
            "codex-operator-webhook",
            "codex-system",
            443,
        )
        assert "caBundle" not in hook["clientConfig"]
        assert hook["failurePolicy"] == "Ignore"
        assert hook["sideEffects"] == "None"
        assert hook["admissionReviewVersions"] == ["v1"]
        assert hook["timeoutSeconds"] == 5


# -- CodexSession: spec.requestedBy -------------------------------------------------------


def test_requester_is_stamped_when_omitted(env: Env, api: Callable[[str], Any], kube_client: Any) -> None:
    name = _unique("plain")
    created = _create_session(api, "carol", env.namespace, name)
    assert created["spec"]["requestedBy"] == "carol"
    assert get_session(kube_client, env.namespace, name)["spec"]["requestedBy"] == "carol"


def test_typed_requester_is_overwritten_with_the_caller(
    env: Env, api: Callable[[str], Any], kube_client: Any
) -> None:
    # carol claims to be alice: the webhook stamps carol, so the policy allows it.
    name = _unique("claim")
    created = _create_session(api, "carol", env.namespace, name, requestedBy="alice")
    assert created["spec"]["requestedBy"] == "carol"
    assert get_session(kube_client, env.namespace, name)["spec"]["requestedBy"] == "carol"


def test_trusted_requester_names_the_user(env: Env, api: Callable[[str], Any], kube_client: Any) -> None:
    named = _unique("for-erin")
    assert (
        _create_session(api, GATEWAY, env.namespace, named, requestedBy="erin")["spec"]["requestedBy"]
        == "erin"
    )
    assert get_session(kube_client, env.namespace, named)["spec"]["requestedBy"] == "erin"
    # Naming no one, the trusted requester is the requester itself.
    bare = _unique("by-dave")
    assert _create_session(api, GATEWAY, env.namespace, bare)["spec"]["requestedBy"] == GATEWAY


# -- ApprovalRequest: spec.decidedBy ------------------------------------------------------


def test_documented_kubectl_approval_is_stamped_and_the_session_runs(
    env: Env, control_plane: Any, api: Callable[[str], Any], kube_client: Any
) -> None:
    ns, name = env.namespace, _unique("risky")
    _create_session(api, "carol", ns, name, sandbox="full-access")
    ar_name, argv = _awaiting_approval(kube_client, ns, name)
    ar = _approval(kube_client, ns, ar_name)
    assert ar["spec"]["requestedBy"] == "carol"  # from the stamped session
    # The documented command (README), with the namespace the status adds.
    assert argv == [*DOCUMENTED_APPROVE[:3], ar_name, "-n", ns, *DOCUMENTED_APPROVE[4:]]
    kubectl_args = argv[1:]

    # The requester cannot approve her own request: the webhook stamps carol,
    # and the policy refuses it.
    own = control_plane.kubectl(*kubectl_args, user="carol", check=False)
    assert own.returncode != 0
    assert "ValidatingAdmissionPolicy" in own.stderr and admission.MSG_OWN_REQUEST in own.stderr, own.stderr
    outsider = control_plane.kubectl(*kubectl_args, user="mallory", check=False)
    assert outsider.returncode != 0 and admission.MSG_APPROVER_GROUP in outsider.stderr, outsider.stderr
    assert "decision" not in _approval(kube_client, ns, ar_name)["spec"]

    ok = control_plane.kubectl(*kubectl_args, user="bob", check=False)
    assert ok.returncode == 0, ok.stderr
    ar = _approval(kube_client, ns, ar_name)
    assert ar["spec"]["decision"] == "Approved" and ar["spec"]["decidedBy"] == "bob"
    ar = _wait_approval(kube_client, ns, ar_name, "Approved")
    assert ar["status"]["decidedBy"] == "bob"
    s = wait_session(kube_client, ns, name, phase_is("Running", "Queued"))
    assert {c["type"]: c["message"] for c in s["status"]["conditions"]}["Approved"] == "approved by bob"


def test_typed_decider_is_overwritten_with_the_caller(
    env: Env, api: Callable[[str], Any], kube_client: Any
) -> None:
    ns, name = env.namespace, _unique("risky")
    _create_session(api, "carol", ns, name, sandbox="full-access")
    ar_name, _ = _awaiting_approval(kube_client, ns, name)
    # alice types bob as the decider: the webhook stamps alice.
    out = api("alice").patch_namespaced_custom_object(
        GROUP, VERSION, ns, APPROVALS, ar_name, {"spec": {"decision": "Approved", "decidedBy": "bob"}}
    )
    assert out["spec"]["decidedBy"] == "alice"
    ar = _wait_approval(kube_client, ns, ar_name, "Approved")
    assert ar["spec"]["decidedBy"] == "alice" and ar["status"]["decidedBy"] == "alice"
    wait_session(kube_client, ns, name, phase_is("Running", "Queued"))


def test_requester_cannot_approve_even_typing_someone_else(
    env: Env, api: Callable[[str], Any], kube_client: Any
) -> None:
    ns = env.namespace
    ar_name = _unique("ar")
    client.CustomObjectsApi(kube_client).create_namespaced_custom_object(
        GROUP, VERSION, ns, APPROVALS, approval(ar_name, requested_by="bob")
    )
    with pytest.raises(ApiException) as err:
        api("bob").patch_namespaced_custom_object(
            GROUP, VERSION, ns, APPROVALS, ar_name, {"spec": {"decision": "Approved", "decidedBy": "alice"}}
        )
    assert err.value.status == 403, err.value.body
    assert admission.MSG_OWN_REQUEST in message(err.value)
    assert "decision" not in _approval(kube_client, ns, ar_name)["spec"]


def _create_action_approval(kube_client: Any, ns: str, risk: str) -> str:
    name = _unique("action")
    client.CustomObjectsApi(kube_client).create_namespaced_custom_object(
        GROUP, VERSION, ns, APPROVALS, approval(name, risk=risk, action=COMMAND_ACTION)
    )
    return name


def _refused(api: Any, ns: str, name: str, spec: dict[str, Any]) -> str:
    with pytest.raises(ApiException) as err:
        api.patch_namespaced_custom_object(GROUP, VERSION, ns, APPROVALS, name, {"spec": spec})
    assert err.value.status == 403, err.value.body
    return message(err.value)


def test_trusted_requester_relays_the_requesters_decision_in_their_name(
    env: Env, api: Callable[[str], Any], kube_client: Any
) -> None:
    """The gateway writes the decision of the user it authenticated, naming them:
    the webhook keeps that name (stamping the gateway over it would make the
    decision the gateway's, which the policy refuses), and the policy admits it
    because carol may deny her own action, high as it is."""
    ns = env.namespace
    name = _create_action_approval(kube_client, ns, "high")
    out = api(GATEWAY).patch_namespaced_custom_object(
        GROUP,
        VERSION,
        ns,
        APPROVALS,
        name,
        {"spec": {"decision": "Denied", "reason": "carol said no", "decidedBy": "carol"}},
    )
    assert out["spec"]["decision"] == "Denied" and out["spec"]["decidedBy"] == "carol"
    ar = _wait_approval(kube_client, ns, name, "Denied")
    assert ar["spec"]["decidedBy"] == "carol" and ar["status"]["decidedBy"] == "carol"


def test_trusted_requester_relays_only_what_the_policy_allows(
    env: Env, api: Callable[[str], Any], kube_client: Any
) -> None:
    ns = env.namespace
    name = _create_action_approval(kube_client, ns, "low")
    # The name it writes is kept, so the policy judges carol's approval: the
    # params here (requesterDecidesUpTo none) let her approve nothing.
    text = _refused(api(GATEWAY), ns, name, {"decision": "Approved", "decidedBy": "carol"})
    assert admission.MSG_RELAY in text and "Approved by carol" in text, text
    # Naming no one, the webhook stamps the gateway itself, which decides nothing.
    text = _refused(api(GATEWAY), ns, name, {"decision": "Denied", "reason": "no"})
    assert admission.MSG_RELAY in text and f"Denied by {GATEWAY}" in text, text
    assert "decision" not in _approval(kube_client, ns, name)["spec"]


def test_only_a_trusted_requester_keeps_the_name_it_writes(
    env: Env, api: Callable[[str], Any], kube_client: Any
) -> None:
    # mallory types the requester: the webhook stamps mallory, who may deny a low action.
    ns = env.namespace
    name = _create_action_approval(kube_client, ns, "low")
    out = api("mallory").patch_namespaced_custom_object(
        GROUP,
        VERSION,
        ns,
        APPROVALS,
        name,
        {"spec": {"decision": "Denied", "reason": "no", "decidedBy": "carol"}},
    )
    assert out["spec"]["decidedBy"] == "mallory"


# -- the webhook down: failurePolicy Ignore, the policies still decide ------------------


def test_without_the_webhook_the_policies_still_decide(
    control_plane: Any, client_for: Any, kube_client: Any, namespace: str, api: Callable[[str], Any]
) -> None:
    """Nothing listens at the configured URL. First with failurePolicy Fail,
    to see the configuration take effect, then with the shipped Ignore: the
    request goes on unstamped and the policies demand the typed identity."""
    suffix = secrets.token_hex(3)
    policies = ScopedAdmission(control_plane, namespace, suffix=suffix).install(client_for, trusted=[GATEWAY])
    dead = f"https://127.0.0.1:{free_port()}"
    config = webhook_configuration(namespace, dead, control_plane.certs.ca_cert.read_bytes(), suffix)
    shipped_policies = [h["failurePolicy"] for h in config["webhooks"]]
    failing = copy.deepcopy(config)
    for hook in failing["webhooks"]:
        hook["failurePolicy"] = "Fail"
    bare = session_body("probe")
    del bare["spec"]["requestedBy"]

    def create_bare() -> Any:
        return api("carol").create_namespaced_custom_object(
            GROUP, VERSION, namespace, SESSIONS, bare, dry_run="All"
        )

    def answer_contains(fragment: str) -> Callable[[], str | None]:
        def check() -> str | None:
            try:
                create_bare()
            except ApiException as err:
                return None if fragment in message(err) else message(err)
            return "allowed"

        return check

    try:
        control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(failing))
        _retry_until(answer_contains("failed calling webhook"), "the failing webhook did not take effect")
        control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(config))
        assert shipped_policies == ["Ignore", "Ignore"]
        _retry_until(
            answer_contains(admission.MSG_REQUESTER_MISSING), "the policy did not answer for the dead webhook"
        )

        # Sessions: the requester types her own name, and only her own.
        with pytest.raises(ApiException) as err:
            _create_session(api, "carol", namespace, "claim", requestedBy="alice")
        assert err.value.status == 403 and admission.MSG_REQUESTER in message(err.value)
        typed = _create_session(api, "carol", namespace, "typed", requestedBy="carol")
        assert typed["spec"]["requestedBy"] == "carol"

        # Decisions: nothing stamped, so the decider must type themselves.
        client.CustomObjectsApi(kube_client).create_namespaced_custom_object(
            GROUP, VERSION, namespace, APPROVALS, approval("ar")
        )
        with pytest.raises(ApiException) as err:
            api("bob").patch_namespaced_custom_object(
                GROUP, VERSION, namespace, APPROVALS, "ar", {"spec": {"decision": "Approved"}}
            )
        assert err.value.status == 403 and admission.MSG_DECIDER in message(err.value)
        out = api("bob").patch_namespaced_custom_object(
            GROUP, VERSION, namespace, APPROVALS, "ar", {"spec": {"decision": "Approved", "decidedBy": "bob"}}
        )
        assert out["spec"]["decidedBy"] == "bob"
    finally:
        control_plane.kubectl(
            "delete", "mutatingwebhookconfiguration", config["metadata"]["name"], "--ignore-not-found"
        )
        policies.uninstall()
