"""What ships is what runs: the configuration the chart renders by default
(its ConfigMap codex-config, which manifests/base mirrors), changed only
where this machine must differ, drives a turn end to end: `kubectl apply`
-> the real operator -> a runner pod on the real kubelet -> the real Codex
CLI -> the model proxy (on by default: the runner holds a credential, the
proxy the key) -> the scripted fake model at a public address (the stand-in
internet, 198.51.100.1:443) through the proxy's shipped egress rule -> Succeeded.
Here the proxy runs as a process on the pod bridge, where the runner's
shipped egress rule (the proxy only) lets it go; the chart's own proxy
Deployment is tests/integration/test_in_cluster_install.py's.

The default model endpoint is the point: Codex 0.171 refuses a provider
table with a built-in id, and the shipped `provider_id = "openai"` failed
every session of a default install while every other end-to-end test used
its own `fake` provider. Here the provider id, the key variable and the key
Secret's name and key are the shipped defaults; only the endpoint's URL
points at the fake model."""

from __future__ import annotations

import json
import secrets
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from codex_api.config import DEFAULT_PROVIDER_ID
from codex_devenv import fake_model as fm
from codex_devenv import helm
from codex_devenv.in_cluster import bridge_address
from codex_devenv.model_proxy_process import start_model_proxy
from codex_devenv.node import TEST_NODE_TAINT
from codex_devenv.operator_process import start_operator
from codex_devenv.system import API_KEY_SECRET, API_KEY_SECRET_KEY, prepare_sessions_namespace
from codex_devenv.testkit import phase_is, wait_session

REPO = Path(__file__).resolve().parents[2]
API_KEY = "sk-shipped-" + secrets.token_hex(16)
ANSWER = "Hello from the fake model, through the shipped configuration."


def _overrides(namespace: str, model: fm.FakeModelServer, proxy_url: str | None = None) -> dict[str, Any]:
    """The only values that differ from the chart's defaults, each because this machine needs it."""
    values: dict[str, Any] = {
        # The test's own namespace (a default install uses codex-sessions).
        "namespaces": {"sessions": namespace},
        "config": {
            "kubernetes": {
                # The shared test node is tainted so that only pods meant for it land
                # there (tests that play the node on the same control plane); a real
                # cluster's nodes need no toleration.
                "runner_tolerations": [
                    {"key": TEST_NODE_TAINT["key"], "operator": "Exists", "effect": "NoSchedule"}
                ],
                # The endpoint's URL: the fake model at a public address of the
                # stand-in internet, port 443, instead of api.openai.com. Everything
                # else of model_endpoint stays the default, its egress rule too (public
                # addresses on 443, now the proxy's).
                "model_endpoint": {"base_url": model.url},
            },
        },
    }
    if proxy_url is not None:
        # The proxy as a process on the pod bridge instead of the chart's Deployment:
        # its URL and address in place of the chart's Service and pod labels.
        values["modelProxy"] = {"enabled": False}
        values["config"]["model_proxy"] = {"url": proxy_url, "egress_cidrs": [f"{bridge_address()}/32"]}
    return values


def _without(config: dict[str, Any], *paths: str) -> dict[str, Any]:
    out = json.loads(json.dumps(config))
    for path in paths:
        *parents, leaf = path.split(".")
        table = out
        for key in parents:
            table = table[key]
        table.pop(leaf, None)
    return out


@pytest.fixture
def shipped(
    node_cluster: Any,
    node_ns: str,
    public_model: fm.FakeModelServer,
    operator_kubeconfig: Path,
    tmp_path: Path,
    kube_client: Any,
) -> Iterator[dict[str, Any]]:
    cp, _node, refs = node_cluster
    model = public_model
    model.reset()
    # The proxy, as an install runs it: the rendered configuration, the key in its environment.
    proxy = start_model_proxy(
        cp,
        tmp_path,
        helm.config_toml(_overrides(node_ns, model)),
        provider_keys={"CODEX_MODEL_API_KEY": API_KEY},
        host=bridge_address(),
    )
    # The operator as a host process: its agent key in a file, its address for the agents.
    text = helm.for_host_operator(
        helm.config_toml(_overrides(node_ns, model, proxy.base)), tmp_path, f"{bridge_address()}/32"
    )
    rendered, default = tomllib.loads(text), tomllib.loads(helm.config_toml())
    # Nothing but the overrides differs from a default install's configuration.
    overridden = (
        "kubernetes.sessions_namespace",
        "kubernetes.runner_tolerations",
        "kubernetes.model_endpoint.base_url",
        "model_proxy.url",
        "model_proxy.egress_cidrs",
        "model_proxy.namespace_labels",
        "model_proxy.pod_labels",
        "kubernetes.warm_runners.signing_key_file",
        "kubernetes.warm_runners.operator_cidrs",
        "kubernetes.warm_runners.operator_namespace_labels",
        "kubernetes.warm_runners.operator_pod_labels",
    )
    assert default["model_proxy"]["url"], "the chart turns the model proxy on by default"
    assert default["kubernetes"]["warm_runners"]["idle_seconds"] > 0, "and warm runners"
    assert _without(rendered, *overridden) == _without(default, *overridden)
    endpoint = rendered["kubernetes"]["model_endpoint"]
    assert endpoint["base_url"] == model.url and rendered["kubernetes"]["sessions_namespace"] == node_ns
    # The defaults this test is about, as the chart renders them.
    assert endpoint["provider_id"] == DEFAULT_PROVIDER_ID
    assert (endpoint["api_key_secret_name"], endpoint["api_key_secret_key"]) == (
        API_KEY_SECRET,
        API_KEY_SECRET_KEY,
    )
    # The default runner image reference exists on the node as is: the images are
    # imported under the names the chart's defaults give them (no registry here).
    assert rendered["kubernetes"]["runner_image"] == refs["runner"]
    config_file = tmp_path / "codex-mcp.toml"
    config_file.write_text(text)

    # No key in the sessions namespace: the proxy holds it.
    prepare_sessions_namespace(cp, kube_client, node_ns, None)
    op = start_operator(
        cp,
        operator_kubeconfig,
        node_ns,
        tmp_path,
        config_file=config_file,
        env=proxy.operator_env,
    )
    yield {"cp": cp, "ns": node_ns, "model": model, "op": op}
    op.stop()
    proxy.stop()
    assert model.errors == []
    # The model saw the key only from the proxy.
    assert {r.authorization for r in model.responses_requests} == {f"Bearer {API_KEY}"}


def test_the_example_session_succeeds_with_the_shipped_configuration(
    shipped: dict[str, Any], kube_client: Any
) -> None:
    cp, ns, model = shipped["cp"], shipped["ns"], shipped["model"]
    model.set_script(fm.say(ANSWER, usage=fm.Usage(input_tokens=200, output_tokens=12)))
    cp.kubectl("apply", "-n", ns, "-f", str(REPO / "examples" / "session-read-only.yaml"))
    s = wait_session(
        kube_client, ns, "hello-codex", phase_is("Succeeded", "Failed", "TimedOut", "Denied"), timeout=120
    )
    status = s["status"]
    pod_name = status.get("podName")
    logs = cp.kubectl("logs", "-n", ns, pod_name, "-c", "runner", check=False).stdout if pod_name else ""
    assert status["phase"] == "Succeeded", f"{status}\n--- runner log ---\n{logs[-3000:]}"
    assert status["response"] == ANSWER
    assert status["model"] == "gpt-5-codex"  # the shipped [codex] model
    # The runner wrote the default provider id into Codex's config, and Codex accepted it.
    pod = client.CoreV1Api(kube_client).read_namespaced_pod(pod_name, ns)
    args = pod.spec.containers[0].args
    assert args[args.index("--provider-id") + 1] == DEFAULT_PROVIDER_ID, args
    # The model got the request with the key from the default Secret.
    requests = model.responses_requests
    assert requests and requests[0].authorization == f"Bearer {API_KEY}"
