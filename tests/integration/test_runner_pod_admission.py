"""The builders' manifests against the real kube-apiserver: every read-only and
isolated runner pod passes the PodSecurity `restricted` profile, full-access
pods pass `baseline` (and, being just as locked down, `restricted` too),
admission really rejects a weakened pod, and the NetworkPolicy and workspace
claim are accepted and stored as built."""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from codex_api import names
from codex_api.common import GROUP, VERSION
from codex_api.config import CodexMCPConfig, ModelEndpointConfig
from codex_api.session import CodexSessionSpec
from codex_api.turn_request import generate_private_key, public_key_pem
from codex_operator.netpol_builder import BLOCKED_EGRESS_RANGES, build_network_policy
from codex_operator.pod_builder import LivePod, build_runner_pod, build_workspace_claim
from codex_runner.contract import parse_agent_args, parse_runner_args, turn_settings_for

CONFIG = CodexMCPConfig()
SESSION = "turn-one"
CONVERSATION = "conv-one"
FAKE_UID = "00000000-0000-4000-8000-000000000001"


# The client's type stubs ask for model objects; the API server takes the
# builders' plain dicts, and sending exactly those is the point of these tests.
def core_api(kube_client: Any) -> Any:
    return client.CoreV1Api(kube_client)


def net_api(kube_client: Any) -> Any:
    return client.NetworkingV1Api(kube_client)


def custom_api(kube_client: Any) -> Any:
    return client.CustomObjectsApi(kube_client)


def enforce(kube_client: Any, namespace: str, level: str) -> None:
    core = core_api(kube_client)
    core.patch_namespace(
        namespace,
        {
            "metadata": {
                "labels": {
                    "pod-security.kubernetes.io/enforce": level,
                    "pod-security.kubernetes.io/enforce-version": "latest",
                }
            }
        },
    )
    # The runner's ServiceAccount exists in a real install (the chart makes it);
    # create it so nothing but PodSecurity can reject the pods.
    core.create_namespaced_service_account(
        namespace, {"metadata": {"name": CONFIG.kubernetes.runner_service_account}}
    )


def make_pod(
    namespace: str,
    *,
    sandbox: str,
    workspace: str = "scratch",
    mode: str = "interactive",
    resume: str | None = None,
    uid: str = FAKE_UID,
    attempt: int = 1,
    live: LivePod | None = None,
    credential: str | None = None,
) -> dict[str, Any]:
    spec = CodexSessionSpec.model_validate(
        {
            "prompt": "--help\nexplain the build, 日本語で",
            "sandbox": sandbox,
            "mode": mode,
            "fullAuto": mode == "ci",
            "workspace": {"type": workspace},
        }
    )
    settings = turn_settings_for(
        spec, model="gpt-5-codex", resume_thread_id=resume, endpoint=CONFIG.kubernetes.model_endpoint
    )
    return build_runner_pod(
        session_name=SESSION,
        session_uid=uid,
        namespace=namespace,
        spec=spec,
        settings=settings,
        conversation=CONVERSATION,
        attempt=attempt,
        timeout_seconds=300,
        config=CONFIG,
        live=live,
        credential=credential,
    )


def create_session(kube_client: Any, namespace: str) -> str:
    """A real CodexSession to own the children, so the garbage collector keeps them."""
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "CodexSession",
        "metadata": {"name": SESSION},
        "spec": {"prompt": "explain the build", "workspace": {"type": "persistent"}},
    }
    created = custom_api(kube_client).create_namespaced_custom_object(
        GROUP, VERSION, namespace, "codexsessions", body
    )
    return str(created["metadata"]["uid"])


def as_dict(kube_client: Any, obj: Any) -> dict[str, Any]:
    data: dict[str, Any] = kube_client.sanitize_for_serialization(obj)
    return data


def forbidden_message(err: ApiException) -> str:
    assert err.status == 403, err.body
    return str(json.loads(err.body or "{}").get("message", ""))


CONFINED = list(
    itertools.product(
        ("read-only", "isolated"),
        ("scratch", "persistent"),
        ("interactive", "ci"),
        (None, "0199a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"),
    )
)


@pytest.mark.parametrize(("sandbox", "workspace", "mode", "resume"), CONFINED)
def test_confined_runner_pod_passes_restricted(
    kube_client: Any, namespace: str, sandbox: str, workspace: str, mode: str, resume: str | None
) -> None:
    enforce(kube_client, namespace, "restricted")
    pod = make_pod(namespace, sandbox=sandbox, workspace=workspace, mode=mode, resume=resume)
    admitted = core_api(kube_client).create_namespaced_pod(namespace, pod, dry_run="All")
    got = as_dict(kube_client, admitted)
    assert got["metadata"]["name"] == names.runner_pod(SESSION, 1)
    (container,) = got["spec"]["containers"]
    assert container["securityContext"] == pod["spec"]["containers"][0]["securityContext"]
    assert parse_runner_args(container["args"]).resume_thread_id == resume
    workspace_mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/workspace")
    assert workspace_mount.get("readOnly", False) is (sandbox == "read-only")


def test_runner_pod_is_created_for_real_and_stored_as_built(kube_client: Any, namespace: str) -> None:
    enforce(kube_client, namespace, "restricted")
    uid = create_session(kube_client, namespace)
    pod = make_pod(
        namespace, sandbox="isolated", workspace="persistent", mode="ci", resume="thread-1", uid=uid
    )
    core = core_api(kube_client)
    core.create_namespaced_pod(namespace, pod)
    stored = as_dict(kube_client, core.read_namespaced_pod(pod["metadata"]["name"], namespace))

    assert stored["metadata"]["labels"] == pod["metadata"]["labels"]
    assert stored["metadata"]["annotations"] == pod["metadata"]["annotations"]
    assert stored["metadata"]["ownerReferences"] == pod["metadata"]["ownerReferences"]
    spec, built = stored["spec"], pod["spec"]
    for key in (
        "restartPolicy",
        "activeDeadlineSeconds",
        "automountServiceAccountToken",
        "serviceAccountName",
        "enableServiceLinks",
        "securityContext",
        "volumes",
    ):
        assert spec[key] == built[key], key
    (container,) = spec["containers"]
    (built_container,) = built["containers"]
    for key in (
        "image",
        "command",
        "args",
        "workingDir",
        "env",
        "resources",
        "volumeMounts",
        "securityContext",
        "terminationMessagePath",
        "terminationMessagePolicy",
    ):
        assert container[key] == built_container[key], key
    # No token volume was injected: the runner holds no Kubernetes credentials.
    assert not any(v.get("projected") for v in spec["volumes"])
    assert all("serviceaccount" not in m["mountPath"] for m in container["volumeMounts"])

    # A handler that runs twice gets a conflict, not a second pod.
    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod(namespace, pod)
    assert err.value.status == 409
    assert len(core.list_namespaced_pod(namespace).items) == 1


@pytest.mark.parametrize("sandbox", ["read-only", "isolated"])
def test_a_live_runner_pod_passes_restricted_and_is_stored_as_built(
    kube_client: Any, namespace: str, sandbox: str
) -> None:
    """Warm runners: the pod that serves a conversation's turns runs the agent,
    opens its port, and carries the operator's public key and no credential."""
    enforce(kube_client, namespace, "restricted")
    uid = create_session(kube_client, namespace)
    live = LivePod(
        public_key_pem=public_key_pem(generate_private_key()).decode(),
        key_fingerprint="f" * 32,
        port=8470,
        idle_seconds=300,
        lifetime_seconds=3600,
    )
    credential = "cxs1.secret-of-the-first-turn"
    pod = make_pod(
        namespace, sandbox=sandbox, workspace="persistent", uid=uid, live=live, credential=credential
    )
    core = core_api(kube_client)
    core.create_namespaced_pod(namespace, pod)
    stored = as_dict(kube_client, core.read_namespaced_pod(pod["metadata"]["name"], namespace))
    (container,) = stored["spec"]["containers"]
    (built,) = pod["spec"]["containers"]
    for key in ("args", "env", "ports", "securityContext", "volumeMounts"):
        assert container[key] == built[key], key
    assert stored["spec"]["activeDeadlineSeconds"] == 3600
    assert stored["metadata"]["annotations"] == pod["metadata"]["annotations"]
    settings, options = parse_agent_args(container["args"])
    assert settings.sandbox == sandbox and options.port == 8470 and options.credential_file
    text = json.dumps(stored)
    assert "secret-of-the-first-turn" not in text and "secretKeyRef" not in text and "--help" not in text
    uid_env = next(e for e in container["env"] if e["name"] == "CODEX_POD_UID")
    assert uid_env["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.uid"


@pytest.mark.parametrize("workspace", ["scratch", "persistent"])
@pytest.mark.parametrize("mode", ["interactive", "ci"])
def test_full_access_runner_pod_passes_baseline(
    kube_client: Any, namespace: str, workspace: str, mode: str
) -> None:
    enforce(kube_client, namespace, "baseline")
    pod = make_pod(namespace, sandbox="full-access", workspace=workspace, mode=mode, resume="thread-1")
    core_api(kube_client).create_namespaced_pod(namespace, pod, dry_run="All")


def test_full_access_runner_pod_also_passes_restricted(kube_client: Any, namespace: str) -> None:
    # full-access widens egress, never privileges: the pod is as locked down as the others.
    enforce(kube_client, namespace, "restricted")
    core = core_api(kube_client)
    for workspace in ("scratch", "persistent"):
        pod = make_pod(namespace, sandbox="full-access", workspace=workspace, mode="ci")
        core.create_namespaced_pod(namespace, pod, dry_run="All")


def _container(pod: dict[str, Any]) -> dict[str, Any]:
    only: dict[str, Any] = pod["spec"]["containers"][0]
    return only


def _escalation(pod: dict[str, Any]) -> None:
    _container(pod)["securityContext"]["allowPrivilegeEscalation"] = True


def _keep_capabilities(pod: dict[str, Any]) -> None:
    del _container(pod)["securityContext"]["capabilities"]


def _add_capability(pod: dict[str, Any]) -> None:
    _container(pod)["securityContext"]["capabilities"]["add"] = ["NET_RAW"]


def _may_run_as_root(pod: dict[str, Any]) -> None:
    del pod["spec"]["securityContext"]["runAsNonRoot"]
    del _container(pod)["securityContext"]["runAsNonRoot"]


def _root_user(pod: dict[str, Any]) -> None:
    _container(pod)["securityContext"]["runAsUser"] = 0


def _no_seccomp(pod: dict[str, Any]) -> None:
    del pod["spec"]["securityContext"]["seccompProfile"]
    del _container(pod)["securityContext"]["seccompProfile"]


WEAKENED: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("allowPrivilegeEscalation", _escalation, "allowPrivilegeEscalation != false"),
    ("capabilities kept", _keep_capabilities, 'must set securityContext.capabilities.drop=["ALL"]'),
    ("capability added", _add_capability, "unrestricted capabilities"),
    ("runAsNonRoot removed", _may_run_as_root, "runAsNonRoot != true"),
    ("runAsUser 0", _root_user, "runAsUser=0"),
    ("seccomp removed", _no_seccomp, "seccompProfile"),
]


@pytest.mark.parametrize(("weaken", "reason"), [(w[1], w[2]) for w in WEAKENED], ids=[w[0] for w in WEAKENED])
def test_admission_really_rejects_a_weakened_pod(
    kube_client: Any, namespace: str, weaken: Callable[[dict[str, Any]], None], reason: str
) -> None:
    enforce(kube_client, namespace, "restricted")
    core = core_api(kube_client)
    pod = make_pod(namespace, sandbox="isolated")
    # Control: the builder's own pod is admitted in this very namespace.
    core.create_namespaced_pod(namespace, pod, dry_run="All")

    bad = copy.deepcopy(pod)
    weaken(bad)
    for dry_run in ("All", None):
        with pytest.raises(ApiException) as err:
            core.create_namespaced_pod(namespace, bad, dry_run=dry_run)
        message = forbidden_message(err.value)
        assert 'violates PodSecurity "restricted:latest"' in message
        assert reason in message
    assert core.list_namespaced_pod(namespace).items == []


def _roundtrip_network_policy(kube_client: Any, namespace: str, policy: dict[str, Any]) -> dict[str, Any]:
    net = net_api(kube_client)
    net.create_namespaced_network_policy(namespace, policy)
    return as_dict(kube_client, net.read_namespaced_network_policy(policy["metadata"]["name"], namespace))


ENDPOINTS = {
    "internet": ModelEndpointConfig(),
    "cidr": ModelEndpointConfig(
        egress_cidrs=["203.0.113.0/24", "0.0.0.0/0", "2001:db8::/32"], egress_ports=[443, 8443]
    ),
    "in-cluster": ModelEndpointConfig(
        in_cluster_namespace_labels={"kubernetes.io/metadata.name": "models"},
        in_cluster_pod_labels={"app": "fake-model"},
        egress_ports=[8080],
    ),
}


@pytest.mark.parametrize("endpoint", list(ENDPOINTS), ids=list(ENDPOINTS))
def test_network_policy_for_each_sandbox_is_stored_as_built(
    kube_client: Any, namespace: str, endpoint: str
) -> None:
    uid = create_session(kube_client, namespace)
    for sandbox in ("read-only", "isolated", "full-access"):
        policy = build_network_policy(
            session_name=SESSION,
            namespace=namespace,
            session_uid=uid,
            conversation=CONVERSATION,
            sandbox=sandbox,
            endpoint=ENDPOINTS[endpoint],
        )
        stored = _roundtrip_network_policy(kube_client, namespace, policy)
        assert stored["metadata"]["ownerReferences"] == policy["metadata"]["ownerReferences"]
        assert stored["metadata"]["labels"] == policy["metadata"]["labels"]
        # The API drops the empty ingress list; "Ingress" in policyTypes still denies all.
        expected = {k: v for k, v in policy["spec"].items() if k != "ingress"}
        assert stored["spec"] == expected
        assert stored["spec"]["policyTypes"] == ["Ingress", "Egress"]
        assert not stored["spec"].get("ingress")
        public = [
            peer["ipBlock"]
            for rule in stored["spec"]["egress"]
            for peer in rule["to"]
            if "ipBlock" in peer and peer["ipBlock"]["cidr"] in ("0.0.0.0/0", "::/0")
        ]
        for block in public:
            family = [r for r in BLOCKED_EGRESS_RANGES if (":" in r) == (":" in block["cidr"])]
            assert block["except"] == family
        net_api(kube_client).delete_namespaced_network_policy(policy["metadata"]["name"], namespace)


def test_workspace_claim_is_stored_as_built(kube_client: Any, namespace: str) -> None:
    uid = create_session(kube_client, namespace)
    core = core_api(kube_client)
    owner = names.owner_reference("CodexSession", SESSION, uid)
    for storage_class in (None, "fast-ssd"):
        pvc = build_workspace_claim(
            conversation=f"{CONVERSATION}-{storage_class or 'default'}",
            namespace=namespace,
            owner_refs=[owner],
            size="2Gi",
            storage_class=storage_class,
            requester="carol",
        )
        core.create_namespaced_persistent_volume_claim(namespace, pvc)
        stored = as_dict(
            kube_client, core.read_namespaced_persistent_volume_claim(pvc["metadata"]["name"], namespace)
        )
        assert stored["metadata"]["labels"] == pvc["metadata"]["labels"]
        assert stored["metadata"]["ownerReferences"] == [owner]
        assert stored["spec"]["accessModes"] == ["ReadWriteOnce"]
        assert stored["spec"]["resources"] == {"requests": {"storage": "2Gi"}}
        assert stored["spec"]["volumeMode"] == "Filesystem"
        assert stored["spec"].get("storageClassName") == storage_class
        with pytest.raises(ApiException) as err:
            core.create_namespaced_persistent_volume_claim(namespace, pvc)
        assert err.value.status == 409
