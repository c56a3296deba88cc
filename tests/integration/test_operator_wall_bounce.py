"""Wall-bounce sessions on the real control plane, with the real operator
process: admission, the runner pod's provider keys, the NetworkPolicy's
provider egress and the finished turn's status. The tests play the node."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kubernetes import client

from codex_api import names
from codex_api.result import ProviderRun, RunnerResult, WallBounceOutcome
from codex_api.session import Usage
from codex_devenv.testkit import create_session, finish_pod, phase_is, set_pod_running, wait_session

PROVIDERS = """
[[kubernetes.wall_bounce_providers]]
provider_id = "gpt"
model = "gpt-5-codex"
egress_cidrs = ["198.51.100.0/24"]

[[kubernetes.wall_bounce_providers]]
provider_id = "anthropic"
base_url = "https://api.anthropic.example/v1"
model = "claude-sonnet-4"
api_key_secret_name = "anthropic-key"
api_key_secret_key = "token"
egress_cidrs = ["203.0.113.0/24"]
egress_ports = [8443]
"""

PRICES = """
[cost.models."claude-sonnet-4"]
provider = "anthropic"
input_usd_per_mtok = 3.0
cached_input_usd_per_mtok = 0.3
output_usd_per_mtok = 15.0
"""

U_GPT = Usage(input_tokens=1200, cached_input_tokens=200, output_tokens=300, reasoning_tokens=50)
U_ANTHROPIC = Usage(input_tokens=2000, output_tokens=100)


def _result() -> RunnerResult:
    return RunnerResult(
        outcome="completed",
        final_message="def factorial(n): ...",
        usage=Usage(input_tokens=3200, cached_input_tokens=200, output_tokens=400, reasoning_tokens=50),
        wall_bounce=WallBounceOutcome(
            providers_used=["gpt", "anthropic"],
            consensus_score=0.86,
            confidence_score=0.91,
            chosen_provider="gpt",
            min_providers=2,
            quality_threshold=0.7,
            runs=[
                ProviderRun(
                    provider="gpt",
                    model="gpt-5-codex",
                    outcome="completed",
                    final_message="def factorial(n): ...",
                    usage=U_GPT,
                ),
                ProviderRun(
                    provider="anthropic",
                    model="claude-sonnet-4",
                    outcome="completed",
                    final_message="def factorial(n): ...",
                    usage=U_ANTHROPIC,
                ),
            ],
        ),
    )


def test_wall_bounce_session_runs_every_provider_and_reports_each(
    kube_client: Any, namespace: str, run_operator: Any
) -> None:
    run_operator(kubernetes_extra=PROVIDERS, extra_config=PRICES)
    create_session(kube_client, namespace, "wb", sandbox="read-only", wallBounce={})
    s = wait_session(kube_client, namespace, "wb", phase_is("Running"))
    status = s["status"]
    assert status["riskLevel"] == "low"  # wall-bounce does not change the risk
    assert [p["provider"] for p in status["cost"]["providers"]] == ["gpt", "anthropic"]

    core = client.CoreV1Api(kube_client)
    pod = core.read_namespaced_pod(status["podName"], namespace)
    (runner,) = pod.spec.containers
    refs = {
        e.name: (e.value_from.secret_key_ref.name, e.value_from.secret_key_ref.key)
        for e in runner.env
        if e.value_from is not None
    }
    assert refs == {
        "CODEX_MODEL_API_KEY": ("codex-model-api-key", "api-key"),
        "CODEX_WB_GPT_API_KEY": ("codex-model-api-key", "api-key"),
        "CODEX_WB_ANTHROPIC_API_KEY": ("anthropic-key", "token"),
    }
    assert "--wall-bounce" in runner.args

    policy = client.NetworkingV1Api(kube_client).read_namespaced_network_policy(
        names.network_policy("wb"), namespace
    )
    allowed = {
        (peer.ip_block.cidr, port.port)
        for rule in policy.spec.egress
        for peer in rule.to or []
        if peer.ip_block is not None
        for port in rule.ports or []
    }
    assert {("198.51.100.0/24", 443), ("203.0.113.0/24", 8443)} <= allowed

    set_pod_running(kube_client, namespace, status["podName"])
    finish_pod(kube_client, namespace, status["podName"], _result())
    s = wait_session(kube_client, namespace, "wb", phase_is("Succeeded"))
    status = s["status"]
    assert status["response"] == "def factorial(n): ..."
    assert status["wallBounce"] == {
        "providersUsed": ["gpt", "anthropic"],
        "consensusScore": 0.86,
        "confidenceScore": 0.91,
    }
    gpt_usd = (1000 * 1.25 + 200 * 0.125 + 300 * 10) / 1e6
    anthropic_usd = (2000 * 3.0 + 100 * 15.0) / 1e6
    providers = {p["provider"]: p for p in status["cost"]["providers"]}
    assert set(providers) == {"gpt", "anthropic"}
    assert abs(providers["gpt"]["actualUsd"] - gpt_usd) < 1e-9
    assert abs(providers["anthropic"]["actualUsd"] - anthropic_usd) < 1e-9
    assert abs(status["cost"]["actualUsd"] - (gpt_usd + anthropic_usd)) < 1e-9
    assert status["usage"]["inputTokens"] == 3200


def test_wall_bounce_refusals(kube_client: Any, namespace: str, run_operator: Any) -> None:
    run_operator(kubernetes_extra=PROVIDERS)
    create_session(kube_client, namespace, "wb-isolated", sandbox="isolated", wallBounce={})
    create_session(
        kube_client,
        namespace,
        "wb-unknown",
        wallBounce={"providers": ["gpt", "gemini"], "minProviders": 2},
    )
    s = wait_session(kube_client, namespace, "wb-isolated", phase_is("Failed"))
    assert s["status"]["reason"] == "InvalidWallBounce"
    assert "read-only" in s["status"]["message"]
    s = wait_session(kube_client, namespace, "wb-unknown", phase_is("Failed"))
    assert s["status"]["reason"] == "InvalidWallBounce"
    assert "'gemini'" in s["status"]["message"]
    core = client.CoreV1Api(kube_client)
    assert core.list_namespaced_pod(namespace).items == []


def test_wall_bounce_disabled(kube_client: Any, namespace: str, run_operator: Any, tmp_path: Path) -> None:
    config = tmp_path / "disabled.toml"
    config.write_text("[mcp]\nenable_wall_bounce = false\n\n[kubernetes]\n" + PROVIDERS)
    run_operator(config_file=config)
    create_session(kube_client, namespace, "wb-off", sandbox="read-only", wallBounce={})
    create_session(kube_client, namespace, "plain", sandbox="read-only")
    s = wait_session(kube_client, namespace, "wb-off", phase_is("Failed"))
    assert s["status"]["reason"] == "WallBounceDisabled"
    # Ordinary sessions are unaffected.
    wait_session(kube_client, namespace, "plain", phase_is("Running"))
