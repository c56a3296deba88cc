"""The pieces of a working local system, shared by `make dev` and the
end-to-end tests: a sessions namespace as an install prepares it, and the
operator configuration that points runner pods at the model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from .node import TEST_NODE_TAINT
from .operator_process import bind_operator

API_KEY_SECRET = "codex-model-api-key"
API_KEY_SECRET_KEY = "api-key"


@dataclass(frozen=True)
class ModelEndpoint:
    provider_id: str
    base_url: str
    egress_cidrs: tuple[str, ...]
    egress_ports: tuple[int, ...]
    model: str


def fake_endpoint(host: str, port: int) -> ModelEndpoint:
    return ModelEndpoint("fake", f"http://{host}:{port}/v1", (f"{host}/32",), (port,), "fake-model")


def prepare_sessions_namespace(control_plane: Any, kube_client: Any, namespace: str, api_key: str) -> None:
    """What an install puts into a sessions namespace: PodSecurity `restricted`,
    the operator's RoleBinding, the runner's ServiceAccount, the model key Secret."""
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
    secret: Any = {"metadata": {"name": API_KEY_SECRET}, "stringData": {API_KEY_SECRET_KEY: api_key}}
    try:
        core.create_namespaced_secret(namespace, secret)
    except ApiException as err:
        if err.status != 409:
            raise


def operator_config(
    endpoint: ModelEndpoint, runner_image: str, *, tolerate_test_node: bool, auto_approve: bool
) -> tuple[str, str]:
    """(lines for the [kubernetes] table, extra tables) for start_operator."""
    kubernetes_extra = f'runner_image = "{runner_image}"\nrunner_image_pull_policy = "Never"\n'
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
    return kubernetes_extra, extra
