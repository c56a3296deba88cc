"""The pieces of a working local system, shared by `make dev` and the
end-to-end tests: a sessions namespace as an install prepares it, and the
operator configuration that points runner pods at the model."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from .assets import REPO_ROOT
from .node import TEST_NODE_TAINT
from .operator_process import bind_operator

API_KEY_SECRET = "codex-model-api-key"
API_KEY_SECRET_KEY = "api-key"
SHIPPED_ADMISSION = REPO_ROOT / "manifests" / "base" / "admission.yaml"
SHIPPED_WEBHOOK = REPO_ROOT / "manifests" / "base" / "webhook.yaml"


@dataclass(frozen=True)
class ModelEndpoint:
    provider_id: str
    base_url: str
    egress_cidrs: tuple[str, ...]
    egress_ports: tuple[int, ...]
    model: str


def fake_endpoint(host: str, port: int) -> ModelEndpoint:
    return ModelEndpoint("fake", f"http://{host}:{port}/v1", (f"{host}/32",), (port,), "fake-model")


def prepare_sessions_namespace(
    control_plane: Any, kube_client: Any, namespace: str, api_key: str | None
) -> None:
    """What an install puts into a sessions namespace: PodSecurity `restricted`,
    the operator's RoleBinding, the runner's ServiceAccount, and, for runners
    that hold the key themselves (no model proxy, `api_key` given), the model
    key Secret."""
    core = client.CoreV1Api(kube_client)
    labels = {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
    }
    try:
        body: Any = {"metadata": {"name": namespace, "labels": labels}}
        core.create_namespace(body)
    except ApiException as err:
        if err.status != 409:
            raise
        core.patch_namespace(namespace, {"metadata": {"labels": labels}})
    bind_operator(control_plane, namespace)
    if api_key is None:
        return
    secret: Any = {"metadata": {"name": API_KEY_SECRET}, "stringData": {API_KEY_SECRET_KEY: api_key}}
    try:
        core.create_namespaced_secret(namespace, secret)
    except ApiException as err:
        if err.status != 409:
            raise


def model_proxy_config(endpoint: ModelEndpoint) -> str:
    """The model proxy's TOML: where `endpoint` is and its model (for pricing); the
    rest (limits, prices) the defaults, as the operator's of `operator_config`."""
    return (
        f'[codex]\nmodel = "{endpoint.model}"\n'
        f'\n[kubernetes.model_endpoint]\nprovider_id = "{endpoint.provider_id}"\nbase_url = "{endpoint.base_url}"\n'
    )


def operator_config(
    endpoint: ModelEndpoint,
    runner_image: str,
    *,
    tolerate_test_node: bool,
    auto_approve: bool,
    network_enforced: bool = True,
    model_proxy: tuple[str, str] | None = None,
) -> tuple[str, str]:
    """(lines for the [kubernetes] table, extra tables) for start_operator.
    `network_enforced=False` (a node without NetworkPolicy enforcement) turns
    the runner's network fence off, as an install on such a cluster would.
    `model_proxy` (its URL, its address as a CIDR): runners reach the model
    through that proxy with a credential of their own instead of the key."""
    kubernetes_extra = f'runner_image = "{runner_image}"\nrunner_image_pull_policy = "Never"\n'
    if not network_enforced:
        kubernetes_extra += "network_fence_seconds = 0\n"
    extra = f'\n[codex]\nmodel = "{endpoint.model}"\n'
    if auto_approve:
        extra += (
            "\n[security.approval_workflows]\nauto_approve_isolated = true\nauto_approve_full_access = true\n"
        )
    if tolerate_test_node:
        extra += (
            f'\n[[kubernetes.runner_tolerations]]\nkey = "{TEST_NODE_TAINT["key"]}"\n'
            'operator = "Exists"\neffect = "NoSchedule"\n'
        )
    cidrs = ", ".join(f'"{c}"' for c in endpoint.egress_cidrs)
    ports = ", ".join(str(p) for p in endpoint.egress_ports)
    extra += (
        f'\n[kubernetes.model_endpoint]\nprovider_id = "{endpoint.provider_id}"\nbase_url = "{endpoint.base_url}"\n'
        f"egress_cidrs = [{cidrs}]\negress_ports = [{ports}]\n"
    )
    if model_proxy is not None:
        url, cidr = model_proxy
        extra += f'\n[model_proxy]\nurl = "{url}"\negress_cidrs = ["{cidr}"]\n'
    return kubernetes_extra, extra


def install_admission(
    cp: Any,
    kube_client: Any,
    namespace: str,
    users: Sequence[str],
    requester_decides_up_to: str = "none",
) -> None:
    """The shipped ValidatingAdmissionPolicies (manifests/base/admission.yaml), their
    params ConfigMap naming the approver group and the gateway as trusted requester,
    and a Role letting the static users work in the sessions namespace.
    `requester_decides_up_to` must equal the operator's and the gateway's
    [security.action_approvals].requester_decides_up_to."""
    import yaml
    from kubernetes import client

    from codex_api.common import GROUP, VERSION

    from .admission_kit import user_rbac, wait_until_denied
    from .controlplane import ADMINS_GROUP, APPROVERS_GROUP
    from .gateway_process import GATEWAY_USER
    from .generate import admission
    from .operator_process import OPERATOR_USER

    params = admission.params_configmap(
        admission.DEFAULT_PARAMS_NAMESPACE,
        [APPROVERS_GROUP],
        [GATEWAY_USER],
        operators=[OPERATOR_USER],
        admin_groups=[ADMINS_GROUP],
        runner_secrets=[API_KEY_SECRET],
        requester_decides_up_to=requester_decides_up_to,
    )
    cp.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([*user_rbac(namespace, users), params]))
    cp.kubectl("apply", "-f", str(SHIPPED_ADMISSION))
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "CodexSession",
        "metadata": {"name": "admission-probe"},
        "spec": {"prompt": "probe", "requestedBy": "alice"},
    }
    api = client.CustomObjectsApi(kube_client)
    wait_until_denied(
        lambda: api.create_namespaced_custom_object(
            GROUP, VERSION, namespace, "codexsessions", body, dry_run="All"
        ),
        admission.MSG_REQUESTER,
        "session requester",
    )


def install_webhook(cp: Any, kube_client: Any, namespace: str, port: int, timeout: float = 60) -> None:
    """The shipped MutatingWebhookConfiguration, pointed at the operator's webhook on
    127.0.0.1 (instead of the in-cluster Service); returns once it stamps requestedBy."""
    import base64

    import yaml
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    from codex_api.common import GROUP, VERSION

    assert cp.certs is not None
    doc = yaml.safe_load(SHIPPED_WEBHOOK.read_text())
    ca_bundle = base64.b64encode(cp.certs.ca_cert.read_bytes()).decode()
    for hook in doc["webhooks"]:
        path = hook["clientConfig"]["service"]["path"]
        hook["clientConfig"] = {"url": f"https://127.0.0.1:{port}{path}", "caBundle": ca_bundle}
    cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))
    api = client.CustomObjectsApi(kube_client)
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "CodexSession",
        "metadata": {"name": "webhook-probe"},
        "spec": {"prompt": "probe"},
    }
    deadline = time.monotonic() + timeout
    last = "never probed"
    while time.monotonic() < deadline:
        try:
            out: Any = api.create_namespaced_custom_object(
                GROUP, VERSION, namespace, "codexsessions", body, dry_run="All"
            )
            if out["spec"].get("requestedBy") == "admin":
                return
            last = json.dumps(out["spec"])
        except ApiException as err:
            last = str(err.body)
        time.sleep(0.2)
    raise SystemExit(f"the operator's webhook did not stamp spec.requestedBy within {timeout}s: {last}")
