"""Wall-bounce sessions on the operator side: admission (codex_operator.wall_bounce),
the runner pod's env and args, the NetworkPolicy, and the finished turn's status."""

from __future__ import annotations

from typing import Any

import pytest

from codex_api.config import CodexMCPConfig, CostConfig, parse_config
from codex_api.result import ProviderRun, RunnerResult, WallBounceOutcome
from codex_api.session import CodexSessionSpec, Cost, ProviderCost, Usage
from codex_operator import cost
from codex_operator.netpol_builder import build_network_policy
from codex_operator.pod_builder import build_runner_pod, wall_bounce_endpoints
from codex_operator.pod_outcome import PodOutcome, turn_result
from codex_operator.wall_bounce import WallBouncePlan, WallBounceRefused, plan_wall_bounce
from codex_runner.contract import (
    RunnerArgsError,
    WallBounceProvider,
    WallBounceSettings,
    parse_runner_args,
    turn_settings_for,
)

UID = "6f1c1f57-0c38-4b7e-9d43-3c2f0c3f0a11"

PROVIDERS_TOML = """
[[kubernetes.wall_bounce_providers]]
provider_id = "gpt"
model = "gpt-5-codex"

[[kubernetes.wall_bounce_providers]]
provider_id = "anthropic"
base_url = "https://api.anthropic.example/v1"
model = "claude-sonnet-4"
api_key_secret_name = "anthropic-key"
api_key_secret_key = "token"
egress_cidrs = ["203.0.113.0/24"]

[[kubernetes.wall_bounce_providers]]
provider_id = "local-llm"
base_url = "http://vllm.models.svc:8000/v1"
model = "qwen-coder"
api_key_env = "LOCAL_LLM_KEY"
api_key_secret_name = "local-llm-key"
egress_ports = [8000]
in_cluster_namespace_labels = { "kubernetes.io/metadata.name" = "models" }
in_cluster_pod_labels = { app = "vllm" }
"""


def config(extra: str = "") -> CodexMCPConfig:
    return parse_config(PROVIDERS_TOML + extra)


def spec(**fields: Any) -> CodexSessionSpec:
    return CodexSessionSpec.model_validate({"prompt": "Review README.md", **fields})


def refusal(s: CodexSessionSpec, cfg: CodexMCPConfig) -> WallBounceRefused:
    with pytest.raises(WallBounceRefused) as caught:
        plan_wall_bounce(s, cfg)
    return caught.value


# --------------------------------------------------------------------------- config


def test_configured_providers_get_distinct_key_variables() -> None:
    providers = config().kubernetes.wall_bounce_providers
    assert [p.provider_id for p in providers] == ["gpt", "anthropic", "local-llm"]
    assert [p.api_key_env for p in providers] == [
        "CODEX_WB_GPT_API_KEY",
        "CODEX_WB_ANTHROPIC_API_KEY",
        "LOCAL_LLM_KEY",
    ]
    assert providers[1].egress_cidrs == ["203.0.113.0/24"]
    assert parse_config("").kubernetes.wall_bounce_providers == []


# --------------------------------------------------------------------------- admission


def test_ordinary_session_has_no_plan() -> None:
    assert plan_wall_bounce(spec(), config()) is None
    assert plan_wall_bounce(spec(sandbox="isolated"), parse_config("")) is None


def test_empty_provider_list_means_every_configured_provider() -> None:
    plan = plan_wall_bounce(spec(wallBounce={}), config())
    assert isinstance(plan, WallBouncePlan)
    assert [p.provider_id for p in plan.providers] == ["gpt", "anthropic", "local-llm"]
    # The CRD defaults (the same as [mcp]'s defaults).
    assert (plan.min_providers, plan.quality_threshold) == (2, 0.7)
    assert plan.models() == {
        "gpt": "gpt-5-codex",
        "anthropic": "claude-sonnet-4",
        "local-llm": "qwen-coder",
    }


def test_listed_providers_in_the_listed_order_with_the_spec_thresholds() -> None:
    plan = plan_wall_bounce(
        spec(wallBounce={"providers": ["local-llm", "gpt"], "minProviders": 2, "qualityThreshold": 0.9}),
        config(),
    )
    assert plan is not None
    settings = plan.settings()
    assert settings == WallBounceSettings(
        providers=(
            WallBounceProvider(
                provider_id="local-llm",
                base_url="http://vllm.models.svc:8000/v1",
                api_key_env="LOCAL_LLM_KEY",
                model="qwen-coder",
            ),
            WallBounceProvider(
                provider_id="gpt",
                base_url="https://api.openai.com/v1",
                api_key_env="CODEX_WB_GPT_API_KEY",
                model="gpt-5-codex",
            ),
        ),
        min_providers=2,
        quality_threshold=0.9,
    )


def test_disabled_wall_bounce_fails_the_session() -> None:
    got = refusal(spec(wallBounce={}), config("[mcp]\nenable_wall_bounce = false\n"))
    assert got.reason == "WallBounceDisabled"
    assert "enable_wall_bounce" in got.message


def test_unknown_providers_are_named() -> None:
    got = refusal(spec(wallBounce={"providers": ["gpt", "gemini", "mistral"]}), config())
    assert got.reason == "InvalidWallBounce"
    assert "'gemini', 'mistral'" in got.message
    assert "configured: gpt, anthropic, local-llm" in got.message


@pytest.mark.parametrize(
    ("wall_bounce", "toml", "fragment"),
    [
        ({"providers": ["gpt"], "minProviders": 1}, PROVIDERS_TOML, "at least 2 providers; 1 listed"),
        ({}, "", "at least 2 providers; 0 configured"),
        ({"providers": ["gpt", "gpt"]}, PROVIDERS_TOML, "'gpt' listed more than once"),
        (
            {"providers": ["gpt", "anthropic"], "minProviders": 2},
            PROVIDERS_TOML.split('[[kubernetes.wall_bounce_providers]]\nprovider_id = "local-llm"')[0],
            None,
        ),
        ({"minProviders": 4}, PROVIDERS_TOML, "minProviders is 4 but the session consults only 3"),
    ],
    ids=["one-listed", "none-configured", "duplicate", "two-configured-ok", "min-above-count"],
)
def test_provider_count_rules(wall_bounce: dict[str, Any], toml: str, fragment: str | None) -> None:
    s = spec(wallBounce=wall_bounce)
    cfg = parse_config(toml)
    if fragment is None:
        assert plan_wall_bounce(s, cfg) is not None
        return
    got = refusal(s, cfg)
    assert got.reason == "InvalidWallBounce"
    assert fragment in got.message


@pytest.mark.parametrize("sandbox", ["isolated", "full-access"])
def test_only_read_only_sandbox(sandbox: str) -> None:
    got = refusal(spec(sandbox=sandbox, wallBounce={}), config())
    assert got.reason == "InvalidWallBounce"
    assert f"read-only sandbox, not {sandbox}" in got.message


def test_no_resume() -> None:
    got = refusal(spec(resumeFrom="cx-parent", workspace={"type": "persistent"}, wallBounce={}), config())
    assert got.reason == "InvalidWallBounce"
    assert "resumeFrom" in got.message


# --------------------------------------------------------------------------- runner pod


def build_pod(s: CodexSessionSpec, cfg: CodexMCPConfig) -> dict[str, Any]:
    plan = plan_wall_bounce(s, cfg)
    settings = turn_settings_for(
        s,
        model="gpt-5-codex",
        resume_thread_id=None,
        endpoint=cfg.kubernetes.model_endpoint,
        wall_bounce=plan.settings() if plan else None,
    )
    return build_runner_pod(
        session_name="wb",
        session_uid=UID,
        namespace="codex-sessions",
        spec=s,
        settings=settings,
        conversation="wb",
        attempt=1,
        timeout_seconds=300,
        config=cfg,
    )


def key_refs(pod: dict[str, Any]) -> dict[str, dict[str, str]]:
    (runner,) = pod["spec"]["containers"]
    return {e["name"]: e["valueFrom"]["secretKeyRef"] for e in runner["env"] if "valueFrom" in e}


def test_wall_bounce_pod_gets_every_consulted_providers_key() -> None:
    cfg = config()
    pod = build_pod(spec(wallBounce={}), cfg)
    assert key_refs(pod) == {
        "CODEX_MODEL_API_KEY": {"name": "codex-model-api-key", "key": "api-key"},
        "CODEX_WB_GPT_API_KEY": {"name": "codex-model-api-key", "key": "api-key"},
        "CODEX_WB_ANTHROPIC_API_KEY": {"name": "anthropic-key", "key": "token"},
        "LOCAL_LLM_KEY": {"name": "local-llm-key", "key": "api-key"},
    }
    (runner,) = pod["spec"]["containers"]
    # The main endpoint's key stays first, the providers follow in order.
    assert [e["name"] for e in runner["env"]][3:] == [
        "CODEX_MODEL_API_KEY",
        "CODEX_WB_GPT_API_KEY",
        "CODEX_WB_ANTHROPIC_API_KEY",
        "LOCAL_LLM_KEY",
    ]
    parsed = parse_runner_args(runner["args"])
    assert parsed.wall_bounce is not None
    assert [p.provider_id for p in parsed.wall_bounce.providers] == ["gpt", "anthropic", "local-llm"]
    assert [p.model for p in parsed.wall_bounce.providers] == ["gpt-5-codex", "claude-sonnet-4", "qwen-coder"]


def test_listed_providers_only_and_no_key_in_the_manifest() -> None:
    pod = build_pod(spec(wallBounce={"providers": ["anthropic", "gpt"]}), config())
    assert set(key_refs(pod)) == {
        "CODEX_MODEL_API_KEY",
        "CODEX_WB_ANTHROPIC_API_KEY",
        "CODEX_WB_GPT_API_KEY",
    }
    assert "LOCAL_LLM_KEY" not in str(pod)


def test_ordinary_pod_gets_no_provider_keys() -> None:
    pod = build_pod(spec(), config())
    assert set(key_refs(pod)) == {"CODEX_MODEL_API_KEY"}
    assert parse_runner_args(pod["spec"]["containers"][0]["args"]).wall_bounce is None


def test_unconfigured_provider_in_settings_is_refused() -> None:
    cfg = config()
    plan = plan_wall_bounce(spec(wallBounce={}), cfg)
    assert plan is not None
    settings = turn_settings_for(
        spec(wallBounce={}),
        model="gpt-5-codex",
        resume_thread_id=None,
        endpoint=cfg.kubernetes.model_endpoint,
        wall_bounce=plan.settings(),
    )
    with pytest.raises(RunnerArgsError, match="not configured: gpt, anthropic, local-llm"):
        wall_bounce_endpoints(settings, parse_config(""))


# --------------------------------------------------------------------------- NetworkPolicy


def netpol(cfg: CodexMCPConfig, extra: Any = ()) -> dict[str, Any]:
    return build_network_policy(
        session_name="wb",
        namespace="codex-sessions",
        session_uid=UID,
        conversation="wb",
        sandbox="read-only",
        endpoint=cfg.kubernetes.model_endpoint,
        extra_endpoints=extra,
    )


def test_network_policy_allows_every_provider_endpoint() -> None:
    cfg = config()
    plan = plan_wall_bounce(spec(wallBounce={}), cfg)
    assert plan is not None
    egress = netpol(cfg, plan.providers)["spec"]["egress"]
    plain = netpol(cfg)["spec"]["egress"]
    # DNS, then the main endpoint (public, 443) - which the gpt provider shares, so it is not repeated -
    # then anthropic's range and the in-cluster model server.
    assert egress[:2] == plain
    assert egress[2:] == [
        {"to": [{"ipBlock": {"cidr": "203.0.113.0/24"}}], "ports": [{"protocol": "TCP", "port": 443}]},
        {
            "to": [
                {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "models"}},
                    "podSelector": {"matchLabels": {"app": "vllm"}},
                }
            ],
            "ports": [{"protocol": "TCP", "port": 8000}],
        },
    ]


# --------------------------------------------------------------------------- finished turn

PRICES = CostConfig.model_validate(
    {
        "models": {
            "gpt-5-codex": {
                "input_usd_per_mtok": 1.25,
                "cached_input_usd_per_mtok": 0.125,
                "output_usd_per_mtok": 10.0,
            },
            "claude-sonnet-4": {
                "provider": "anthropic",
                "input_usd_per_mtok": 3.0,
                "cached_input_usd_per_mtok": 0.3,
                "output_usd_per_mtok": 15.0,
            },
        }
    }
)
U1 = Usage(input_tokens=10_000, cached_input_tokens=4_000, output_tokens=3_000, reasoning_tokens=500)
U2 = Usage(input_tokens=20_000, output_tokens=1_000)


def wall_bounce_result(outcome: str = "completed", **wb: Any) -> RunnerResult:
    runs = [
        ProviderRun(provider="gpt", model="gpt-5-codex", outcome="completed", final_message="A", usage=U1),
        # No model reported: priced with the configured one.
        ProviderRun(provider="anthropic", outcome="completed", final_message="A.", usage=U2),
    ]
    total = Usage(input_tokens=30_000, cached_input_tokens=4_000, output_tokens=4_000, reasoning_tokens=500)
    fields: dict[str, Any] = {
        "providers_used": ["gpt", "anthropic"],
        "consensus_score": 0.82,
        "confidence_score": 0.9,
        "chosen_provider": "gpt",
        "min_providers": 2,
        "quality_threshold": 0.7,
        "runs": runs,
        **wb,
    }
    return RunnerResult(
        outcome=outcome,  # type: ignore[arg-type]
        final_message="A",
        usage=total,
        exit_code=0 if outcome == "completed" else 1,
        errors=[] if outcome == "completed" else ["consensus 0.41 is below the quality threshold 0.7"],
        wall_bounce=WallBounceOutcome(**fields),
    )


def finished(result: RunnerResult) -> PodOutcome:
    ok = result.outcome == "completed"
    return PodOutcome("succeeded" if ok else "failed", 0 if ok else 1, "Completed", result.frame())


MODELS = {"gpt": "gpt-5-codex", "anthropic": "claude-sonnet-4"}


def test_wall_bounce_status_and_cost_per_provider() -> None:
    estimate = cost.estimate_providers("Review README.md", MODELS, PRICES)
    got = turn_result(
        finished(wall_bounce_result()), None, "gpt-5-codex", PRICES, estimate, provider_models=MODELS
    )
    assert got.phase == "Succeeded"
    assert got.status["wallBounce"] == {
        "providersUsed": ["gpt", "anthropic"],
        "consensusScore": 0.82,
        "confidenceScore": 0.9,
    }
    # gpt: 6000 * 1.25 + 4000 * 0.125 + 3000 * 10 = 0.038; anthropic: 20000 * 3 + 1000 * 15 = 0.075
    assert got.status["cost"] == {
        "estimatedUsd": estimate.estimated_usd,
        "actualUsd": 0.113,
        "providers": [
            {"provider": "gpt", "estimatedUsd": estimate.providers[0].estimated_usd, "actualUsd": 0.038},
            {
                "provider": "anthropic",
                "estimatedUsd": estimate.providers[1].estimated_usd,
                "actualUsd": 0.075,
            },
        ],
    }
    assert got.status["usage"]["inputTokens"] == 30_000
    assert got.status["response"] == "A"


def test_below_threshold_fails_but_keeps_scores_and_cost() -> None:
    result = wall_bounce_result("turn_failed", consensus_score=0.41, confidence_score=0.5)
    got = turn_result(finished(result), None, "gpt-5-codex", PRICES, None, provider_models=MODELS)
    assert (got.phase, got.reason) == ("Failed", "TurnFailed")
    assert "below the quality threshold" in got.message
    assert got.status["wallBounce"]["consensusScore"] == 0.41
    assert [p["provider"] for p in got.status["cost"]["providers"]] == ["gpt", "anthropic"]
    assert got.status["cost"]["actualUsd"] == 0.113
    assert "estimatedUsd" not in got.status["cost"]


def test_scores_left_out_when_unknown_and_no_runs_falls_back_to_the_total() -> None:
    result = wall_bounce_result(consensus_score=None, confidence_score=None, runs=[])
    got = turn_result(finished(result), None, "gpt-5-codex", PRICES, None, provider_models=MODELS)
    assert got.status["wallBounce"] == {"providersUsed": ["gpt", "anthropic"]}
    # 26000 * 1.25 + 4000 * 0.125 + 4000 * 10 = 0.073
    assert got.status["cost"]["actualUsd"] == 0.073
    assert len(got.status["cost"]["providers"]) == 1


def test_ordinary_turn_has_no_wall_bounce_status() -> None:
    result = RunnerResult(outcome="completed", final_message="ok", usage=U1)
    got = turn_result(finished(result), None, "gpt-5-codex", PRICES, None, provider_models=MODELS)
    assert "wallBounce" not in got.status


def test_estimate_and_actual_per_provider() -> None:
    est = cost.estimate_providers("x" * 4000, MODELS, PRICES)
    # 1000 input tokens + 2000 assumed output tokens per provider.
    assert est.providers == [
        ProviderCost(provider="gpt", estimated_usd=0.02125),
        ProviderCost(provider="anthropic", estimated_usd=0.033),
    ]
    assert est.estimated_usd == 0.05425
    got = cost.actual_providers([("gpt", U1, "gpt-5-codex"), ("anthropic", U2, "claude-sonnet-4")], PRICES)
    assert got == Cost(
        actual_usd=0.113,
        providers=[
            ProviderCost(provider="gpt", actual_usd=0.038),
            ProviderCost(provider="anthropic", actual_usd=0.075),
        ],
    )
