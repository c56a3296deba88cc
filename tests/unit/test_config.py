"""The TOML configuration layer (codex_api.config) and `codex-operator config`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from codex_api.config import (
    RESERVED_CODEX_PROVIDER_IDS,
    CodexMCPConfig,
    ConfigError,
    ConfigIssue,
    KubernetesConfig,
    ModelEndpointConfig,
    RiskLevelsConfig,
    RunnerResourcesConfig,
    WarmRunnersConfig,
    load_config,
    parse_config,
    redacted_dict,
)
from codex_operator.cli import main

REPO = Path(__file__).resolve().parents[2]
SEED_CONFIG = REPO / "config" / "codex-mcp.toml"
DEV_CONFIG = REPO / "config" / "dev.toml"
SEED_DOC = REPO.parent / "shared" / "seed" / "codex-mcp-server-implementation.md"
SEED_COPY = REPO / "tests" / "data" / "seed-codex-mcp.toml"  # the seed document's TOML block


def _issues(text: str) -> tuple[ConfigError, dict[str, ConfigIssue]]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source="bad.toml")
    return caught.value, {issue.path: issue for issue in caught.value.errors}


# --------------------------------------------------------------------------- good files


def test_seed_config_loads_with_seed_values() -> None:
    cfg = load_config(SEED_CONFIG)
    assert cfg.server.name == "codex-mcp-server"
    assert cfg.server.version == "1.0.0"
    assert cfg.server.description == "OpenAI Codex integration via Model Context Protocol"
    assert cfg.codex.model == "gpt-5-codex"
    assert cfg.codex.sandbox == "read-only"
    assert cfg.codex.base_instructions == (
        "You are a helpful coding assistant powered by OpenAI Codex.\n"
        "Focus on providing clear, well-documented, and secure code solutions.\n"
    )
    assert cfg.codex.working_directory == "."
    assert cfg.mcp.approval_policy == "risk-based"
    assert cfg.mcp.max_concurrent_sessions == 10
    assert cfg.mcp.session_timeout_ms == 300000
    assert cfg.mcp.enable_wall_bounce is True
    assert cfg.mcp.min_providers == 2
    assert cfg.mcp.quality_threshold == 0.7
    assert cfg.logging.rust_log_level == "info"
    assert cfg.logging.enable_tracing is True
    assert cfg.logging.log_directory == os.path.expanduser("~/.codex/log")
    assert not cfg.logging.log_directory.startswith("~")
    assert (cfg.security.risk_assessment, cfg.security.audit_logging) == (True, True)
    assert cfg.security.sensitive_data_detection is True
    levels = cfg.security.risk_levels
    assert (levels.read_only, levels.isolated, levels.full_access) == ("low", "medium", "high")
    assert levels.for_sandbox("full-access") == "high"
    flows = cfg.security.approval_workflows
    assert flows.auto_approve_read_only is True
    assert flows.auto_approve_isolated is False
    assert flows.auto_approve_full_access is False
    assert flows.require_manual_approval_for_ci is True
    # The seed has no [kubernetes] table: its defaults apply.
    assert cfg.kubernetes.sessions_namespace == "codex-sessions"
    assert cfg.kubernetes.model_endpoint.egress_ports == [443]


def test_seed_config_is_byte_identical_to_the_seed_document() -> None:
    """config/codex-mcp.toml is the seed's TOML block unchanged. The block is kept
    in the repository (tests/data), so the check runs in every clean clone."""
    assert SEED_CONFIG.read_bytes() == SEED_COPY.read_bytes()


def test_the_seed_copy_matches_the_seed_document_where_it_is_present() -> None:
    if not SEED_DOC.is_file():
        pytest.skip(f"seed document not beside the repository ({SEED_DOC}); the copy is checked above")
    doc = SEED_DOC.read_text(encoding="utf-8")
    section = doc.index("### TOML Configuration File")
    match = re.compile(r"```toml\n(.*?)```", re.DOTALL).search(doc, section)
    assert match is not None, "no ```toml block after the TOML Configuration File heading"
    assert SEED_COPY.read_bytes() == match.group(1).encode("utf-8")


def test_dev_config_loads_with_local_endpoint() -> None:
    cfg = load_config(DEV_CONFIG)
    endpoint = cfg.kubernetes.model_endpoint
    assert endpoint.provider_id == "fake"
    assert endpoint.base_url == "http://127.0.0.1:18080/v1"
    assert endpoint.egress_cidrs == ["127.0.0.1/32"]
    assert endpoint.egress_ports == [18080]
    # Seed content is kept as is.
    assert cfg.codex.model == "gpt-5-codex"
    assert cfg.security.approval_workflows.require_manual_approval_for_ci is True


def test_dev_config_spells_out_every_kubernetes_key() -> None:
    data = tomllib.loads(DEV_CONFIG.read_text(encoding="utf-8"))["kubernetes"]
    assert set(data) == set(KubernetesConfig.model_fields)
    assert set(data["runner_resources"]) == set(RunnerResourcesConfig.model_fields)
    assert set(data["model_endpoint"]) == set(ModelEndpointConfig.model_fields)
    assert set(data["warm_runners"]) == set(WarmRunnersConfig.model_fields)


def test_empty_file_gives_all_defaults(tmp_path: Path) -> None:
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    cfg = load_config(empty)
    assert cfg == CodexMCPConfig()
    assert cfg.mcp.max_concurrent_sessions == 10
    assert cfg.codex.sandbox == "read-only"
    k8s = cfg.kubernetes
    assert (k8s.sessions_namespace, k8s.operator_namespace) == ("codex-sessions", "codex-system")
    assert k8s.runner_image == "localhost/codex-runner:0.1.0"
    assert k8s.runner_image_pull_policy == "IfNotPresent"
    assert (k8s.approver_groups, k8s.admin_groups) == (["codex-approvers"], ["codex-admins"])
    assert (k8s.cleanup_interval_seconds, k8s.default_ttl_seconds_after_finished) == (60, 86400)
    res = k8s.runner_resources
    assert (res.cpu_request, res.memory_request, res.cpu_limit, res.memory_limit) == (
        "250m",
        "256Mi",
        "2",
        "2Gi",
    )
    assert (res.ephemeral_storage_limit, res.workspace_size, res.storage_class_name) == ("1Gi", "1Gi", "")
    ep = k8s.model_endpoint
    # Not "openai": Codex 0.171 refuses a provider table with a built-in id.
    assert (ep.provider_id, ep.base_url, ep.wire_api) == (
        "openai-api",
        "https://api.openai.com/v1",
        "responses",
    )
    assert (ep.api_key_env, ep.api_key_secret_name, ep.api_key_secret_key) == (
        "CODEX_MODEL_API_KEY",
        "codex-model-api-key",
        "api-key",
    )
    assert (ep.egress_cidrs, ep.egress_ports) == ([], [443])
    assert (ep.in_cluster_namespace_labels, ep.in_cluster_pod_labels) == ({}, {})


def test_seed_values_equal_the_defaults() -> None:
    # An empty file and the seed must mean the same thing, apart from the
    # sections the seed leaves out.
    assert load_config(SEED_CONFIG) == parse_config("")


def test_tilde_is_expanded_in_path_fields(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = parse_config('[logging]\nlog_directory = "~/logs/codex"\n[codex]\nworking_directory = "~/work"\n')
    assert cfg.logging.log_directory == f"{tmp_path}/logs/codex"
    assert cfg.codex.working_directory == f"{tmp_path}/work"
    assert parse_config('[logging]\nlog_directory = "/var/log/codex"\n').logging.log_directory == (
        "/var/log/codex"
    )


def test_valid_kubernetes_values_are_accepted() -> None:
    cfg = parse_config(
        "[kubernetes]\n"
        'sessions_namespace = "team-a"\n'
        "approver_groups = []\n"
        "default_ttl_seconds_after_finished = 0\n"
        "[kubernetes.runner_resources]\n"
        'cpu_request = "0.5"\n'
        'cpu_limit = "500m"\n'
        'memory_request = "1e9"\n'
        'memory_limit = "1G"\n'
        'storage_class_name = "fast-ssd.example.com"\n'
        "[kubernetes.model_endpoint]\n"
        'base_url = "http://model.models.svc:8080/v1"\n'
        'egress_cidrs = ["10.0.0.0/8", "fd00::/8", "192.0.2.7"]\n'
        "egress_ports = [80, 8080]\n"
        'in_cluster_namespace_labels = { "kubernetes.io/metadata.name" = "models" }\n'
        'in_cluster_pod_labels = { app = "vllm" }\n'
    )
    assert cfg.kubernetes.sessions_namespace == "team-a"
    assert cfg.kubernetes.approver_groups == []
    # A bare address becomes an explicit /32 because NetworkPolicy needs a CIDR.
    assert cfg.kubernetes.model_endpoint.egress_cidrs == ["10.0.0.0/8", "fd00::/8", "192.0.2.7/32"]
    assert cfg.kubernetes.model_endpoint.in_cluster_pod_labels == {"app": "vllm"}


def test_wall_bounce_providers_are_model_endpoints_with_a_model() -> None:
    cfg = parse_config(
        "[kubernetes.model_endpoint]\n"
        'api_key_env = "MAIN_KEY"\n'
        + _WB_GPT
        + _WB_ANTHROPIC
        + 'base_url = "http://claude.models.svc:8080/v1"\n'
        'api_key_env = "ANTHROPIC_KEY"\n'
        'api_key_secret_name = "anthropic"\n'
        'egress_cidrs = ["192.0.2.7"]\n'
        "egress_ports = [8080]\n"
        "[[kubernetes.wall_bounce_providers]]\n"
        'provider_id = "local-llm"\n'
        'model = "qwen/qwen3-coder:30b"\n'
    )
    first, second, third = cfg.kubernetes.wall_bounce_providers
    assert isinstance(second, ModelEndpointConfig)
    assert (first.provider_id, first.model, first.base_url) == (
        "gpt",
        "gpt-5-codex",
        "https://api.openai.com/v1",
    )
    # The default variable is derived from the id, never the main endpoint's.
    assert first.api_key_env == "CODEX_WB_GPT_API_KEY"
    assert third.api_key_env == "CODEX_WB_LOCAL_LLM_API_KEY"
    assert (second.api_key_env, second.api_key_secret_name, second.api_key_secret_key) == (
        "ANTHROPIC_KEY",
        "anthropic",
        "api-key",
    )
    # The endpoint validators apply: a bare address becomes a /32.
    assert (second.egress_cidrs, second.egress_ports) == (["192.0.2.7/32"], [8080])
    data = redacted_dict(cfg)
    assert data["kubernetes"]["wall_bounce_providers"][0]["api_key_env"] == "CODEX_WB_GPT_API_KEY"
    assert CodexMCPConfig.model_validate(data) == cfg


def test_redacted_dict_uses_toml_spellings_and_round_trips() -> None:
    cfg = load_config(DEV_CONFIG)
    data = redacted_dict(cfg)
    assert data["security"]["risk_levels"] == {
        "read-only": "low",
        "isolated": "medium",
        "full-access": "high",
    }
    assert json.loads(json.dumps(data)) == data
    assert CodexMCPConfig.model_validate(data) == cfg


def _all_models(model: type[BaseModel], seen: set[type[BaseModel]]) -> set[type[BaseModel]]:
    seen.add(model)
    for info in model.model_fields.values():
        annotation = info.annotation
        if typing.get_origin(annotation) is list:  # arrays of tables
            (annotation,) = typing.get_args(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel) and annotation not in seen:
            _all_models(annotation, seen)
    return seen


def test_every_model_forbids_extra_keys_and_documents_every_field() -> None:
    models = _all_models(CodexMCPConfig, set())
    assert (
        len(models) == 22
    )  # with RunnerToleration, WallBounceProviderConfig, ModelProxyConfig and ActionRule
    for model in models:
        assert model.model_config.get("extra") == "forbid", model.__name__
        for name, info in model.model_fields.items():
            assert info.description and len(info.description) > 10, f"{model.__name__}.{name}"


def test_config_is_immutable() -> None:
    cfg = parse_config("")
    with pytest.raises(ValueError, match="frozen"):
        cfg.mcp.max_concurrent_sessions = 5  # type: ignore[misc]


def test_risk_levels_only_accept_the_dashed_sandbox_names() -> None:
    assert RiskLevelsConfig.model_validate({"full-access": "critical"}).full_access == "critical"
    _, issues = _issues('[security.risk_levels]\nfull_access = "critical"\n')
    assert "unknown key" in issues["security.risk_levels.full_access"].reason


# --------------------------------------------------------------------------- bad files

_WB_GPT = '[[kubernetes.wall_bounce_providers]]\nprovider_id = "gpt"\nmodel = "gpt-5-codex"\n\n'
_WB_ANTHROPIC = '[[kubernetes.wall_bounce_providers]]\nprovider_id = "anthropic"\nmodel = "claude-sonnet-4"\n'

# (id, TOML text, dotted key path that must be reported, reason fragment, line)
BAD_CONFIGS = [
    ("unknown-table", "[bogus]\nx = 1\n", "bogus", "unknown key; allowed keys here: server, codex", 1),
    (
        "unknown-key-in-section",
        "[mcp]\nmax_sessions = 3\n",
        "mcp.max_sessions",
        "unknown key; allowed keys here: approval_policy, max_concurrent_sessions",
        2,
    ),
    (
        "unknown-approval-workflow",
        "[security.approval_workflows]\nauto_approve_everything = true\n",
        "security.approval_workflows.auto_approve_everything",
        "unknown key",
        2,
    ),
    (
        "string-for-int",
        '[mcp]\nmax_concurrent_sessions = "ten"\n',
        "mcp.max_concurrent_sessions",
        "expected an integer, got 'ten'",
        2,
    ),
    (
        "numeric-string-for-int",
        '[mcp]\nsession_timeout_ms = "300000"\n',
        "mcp.session_timeout_ms",
        "expected an integer, got '300000'",
        2,
    ),
    (
        "float-for-int",
        "[mcp]\nmin_providers = 2.0\n",
        "mcp.min_providers",
        "expected an integer, got 2.0",
        2,
    ),
    (
        "int-for-bool",
        "[mcp]\nenable_wall_bounce = 1\n",
        "mcp.enable_wall_bounce",
        "expected a boolean (true or false), got 1",
        2,
    ),
    (
        "list-for-string",
        '[codex]\nmodel = ["gpt-5-codex"]\n',
        "codex.model",
        "expected a string, got an array",
        2,
    ),
    ("scalar-for-table", "kubernetes = 5\n", "kubernetes", "expected a table, got 5", 1),
    (
        "max-sessions-zero",
        "[mcp]\nmax_concurrent_sessions = 0\n",
        "mcp.max_concurrent_sessions",
        "must be >= 1",
        2,
    ),
    (
        "max-sessions-huge",
        "[mcp]\nmax_concurrent_sessions = 100000\n",
        "mcp.max_concurrent_sessions",
        "must be <= 10000, got 100000",
        2,
    ),
    (
        "timeout-too-small",
        "[mcp]\nsession_timeout_ms = 999\n",
        "mcp.session_timeout_ms",
        "must be >= 1000",
        2,
    ),
    (
        "quality-above-one",
        "[mcp]\nquality_threshold = 1.5\n",
        "mcp.quality_threshold",
        "must be <= 1",
        2,
    ),
    ("quality-nan", "[mcp]\nquality_threshold = nan\n", "mcp.quality_threshold", "finite number", 2),
    (
        "bad-sandbox",
        '[codex]\nsandbox = "sandboxed"\n',
        "codex.sandbox",
        "must be one of: read-only, isolated, full-access; got 'sandboxed'",
        2,
    ),
    (
        "bad-log-level",
        '[logging]\nrust_log_level = "verbose"\n',
        "logging.rust_log_level",
        "must be one of: trace, debug, info, warn, error",
        2,
    ),
    (
        "bad-approval-policy",
        '[mcp]\napproval_policy = "sometimes"\n',
        "mcp.approval_policy",
        "must be one of: risk-based, always-manual, auto-approve",
        2,
    ),
    (
        "bad-risk-level-value",
        '[security.risk_levels]\n"read-only" = "low"\n"full-access" = "extreme"\n',
        "security.risk_levels.full-access",
        "must be one of: low, medium, high, critical",
        3,
    ),
    (
        "unknown-risk-levels-key",
        '[security.risk_levels]\n"danger-zone" = "low"\n',
        "security.risk_levels.danger-zone",
        "unknown key; allowed keys here: read-only, isolated, full-access",
        2,
    ),
    (
        "namespace-uppercase",
        '[kubernetes]\nsessions_namespace = "Codex-Sessions"\n',
        "kubernetes.sessions_namespace",
        "must be a DNS-1123 label",
        2,
    ),
    (
        "namespace-too-long",
        f'[kubernetes]\noperator_namespace = "{"a" * 64}"\n',
        "kubernetes.operator_namespace",
        "must be at most 63 characters",
        2,
    ),
    (
        "bad-pull-policy",
        '[kubernetes]\nrunner_image_pull_policy = "Sometimes"\n',
        "kubernetes.runner_image_pull_policy",
        "must be one of: Always, IfNotPresent, Never",
        2,
    ),
    (
        "empty-runner-image",
        '[kubernetes]\nrunner_image = ""\n',
        "kubernetes.runner_image",
        "must not be empty",
        2,
    ),
    (
        "too-many-approver-groups",
        "[kubernetes]\napprover_groups = [" + ", ".join(f'"g{i}"' for i in range(33)) + "]\n",
        "kubernetes.approver_groups",
        "must have at most 32 items",
        2,
    ),
    (
        "empty-group-name",
        '[kubernetes]\nadmin_groups = ["ok", ""]\n',
        "kubernetes.admin_groups[1]",
        "must not be empty",
        2,
    ),
    (
        "cleanup-interval-too-short",
        "[kubernetes]\ncleanup_interval_seconds = 1\n",
        "kubernetes.cleanup_interval_seconds",
        "must be >= 5",
        2,
    ),
    (
        "bad-quantity",
        '[kubernetes.runner_resources]\nmemory_limit = "2GB"\n',
        "kubernetes.runner_resources.memory_limit",
        "must be a Kubernetes quantity such as 250m, 2, 512Mi or 1Gi, got '2GB'",
        2,
    ),
    (
        "negative-quantity",
        '[kubernetes.runner_resources]\ncpu_request = "-1"\n',
        "kubernetes.runner_resources.cpu_request",
        "Kubernetes quantity",
        2,
    ),
    (
        "zero-workspace",
        '[kubernetes.runner_resources]\nworkspace_size = "0"\n',
        "kubernetes.runner_resources.workspace_size",
        "must be greater than zero",
        2,
    ),
    (
        # The limit is the default (2): the header is the nearest line.
        "request-above-limit",
        '[kubernetes.runner_resources]\ncpu_request = "4"\n',
        "kubernetes.runner_resources.cpu_limit",
        "must not be below cpu_request ('4'), got '2'",
        1,
    ),
    (
        "bad-storage-class",
        '[kubernetes.runner_resources]\nstorage_class_name = "Fast_SSD"\n',
        "kubernetes.runner_resources.storage_class_name",
        "DNS-1123 subdomain",
        2,
    ),
    (
        "bad-cidr",
        '[kubernetes.model_endpoint]\negress_cidrs = ["10.0.0.0/33"]\n',
        "kubernetes.model_endpoint.egress_cidrs",
        "'10.0.0.0/33' is not a CIDR range",
        2,
    ),
    (
        "cidr-host-bits",
        '[kubernetes.model_endpoint]\negress_cidrs = ["10.1.2.3/8"]\n',
        "kubernetes.model_endpoint.egress_cidrs",
        "has host bits set",
        2,
    ),
    (
        "bad-base-url-scheme",
        '[kubernetes.model_endpoint]\nbase_url = "ftp://api.openai.com/v1"\n',
        "kubernetes.model_endpoint.base_url",
        "must be an http or https URL",
        2,
    ),
    (
        "base-url-without-host",
        '[kubernetes.model_endpoint]\nbase_url = "https:///v1"\n',
        "kubernetes.model_endpoint.base_url",
        "must be an http or https URL with a host",
        2,
    ),
    (
        "port-out-of-range",
        "[kubernetes.model_endpoint]\negress_ports = [443, 70000]\n",
        "kubernetes.model_endpoint.egress_ports[1]",
        "must be <= 65535, got 70000",
        2,
    ),
    (
        "no-ports",
        "[kubernetes.model_endpoint]\negress_ports = []\n",
        "kubernetes.model_endpoint.egress_ports",
        "must have at least 1 item",
        2,
    ),
    (
        "bad-wire-api",
        '[kubernetes.model_endpoint]\nwire_api = "chat"\n',
        "kubernetes.model_endpoint.wire_api",
        "must be one of: responses",
        2,
    ),
    (
        "bad-provider-id",
        '[kubernetes.model_endpoint]\nprovider_id = "my provider"\n',
        "kubernetes.model_endpoint.provider_id",
        "must start with a letter",
        2,
    ),
    (
        # Codex 0.171 refuses the whole config.toml of every turn with this id.
        "reserved-provider-id",
        '[kubernetes.model_endpoint]\nprovider_id = "openai"\n',
        "kubernetes.model_endpoint.provider_id",
        "'openai' is a built-in provider id of Codex, which refuses to redefine it (every turn would fail); "
        "choose another id, e.g. 'openai-api' (reserved: openai, ollama, lmstudio, amazon-bedrock)",
        2,
    ),
    (
        "wall-bounce-reserved-provider-id",
        _WB_ANTHROPIC
        + '[[kubernetes.wall_bounce_providers]]\nprovider_id = "ollama"\nmodel = "qwen3-coder"\n',
        "kubernetes.wall_bounce_providers[1].provider_id",
        "'ollama' is a built-in provider id of Codex, which refuses to redefine it",
        5,
    ),
    (
        "bad-env-var-name",
        '[kubernetes.model_endpoint]\napi_key_env = "1API-KEY"\n',
        "kubernetes.model_endpoint.api_key_env",
        "must be an environment variable name",
        2,
    ),
    (
        "bad-label-selector",
        '[kubernetes.model_endpoint]\nin_cluster_pod_labels = { app = "-vllm" }\n',
        "kubernetes.model_endpoint.in_cluster_pod_labels",
        "label value '-vllm' of 'app' is not a valid Kubernetes label value",
        2,
    ),
    (
        "wall-bounce-duplicate-id",
        _WB_GPT + _WB_ANTHROPIC + '[[kubernetes.wall_bounce_providers]]\nprovider_id = "gpt"\nmodel = "o1"\n',
        "kubernetes.wall_bounce_providers[2].provider_id",
        "provider_id 'gpt' is already used by wall_bounce_providers[0]",
        9,
    ),
    (
        "wall-bounce-env-collides-with-main-endpoint",
        _WB_GPT + '[[kubernetes.wall_bounce_providers]]\nprovider_id = "b"\nmodel = "m"\n'
        'api_key_env = "CODEX_MODEL_API_KEY"\n',
        "kubernetes.wall_bounce_providers[1].api_key_env",
        "api_key_env 'CODEX_MODEL_API_KEY' is already used by [kubernetes.model_endpoint].api_key_env",
        8,
    ),
    (
        "wall-bounce-derived-env-collides",
        # "a-b" and "a_b" both derive CODEX_WB_A_B_API_KEY.
        '[[kubernetes.wall_bounce_providers]]\nprovider_id = "a-b"\nmodel = "m"\n'
        '[[kubernetes.wall_bounce_providers]]\nprovider_id = "a_b"\nmodel = "m"\n',
        "kubernetes.wall_bounce_providers[1].api_key_env",
        "'CODEX_WB_A_B_API_KEY' is already used by wall_bounce_providers[0].api_key_env; every provider "
        "needs its own variable (set api_key_env explicitly)",
        4,
    ),
    (
        "wall-bounce-model-missing",
        _WB_GPT + '[[kubernetes.wall_bounce_providers]]\nprovider_id = "b"\n',
        "kubernetes.wall_bounce_providers[1].model",
        "required key is missing",
        5,
    ),
    (
        "wall-bounce-provider-id-missing",
        '[[kubernetes.wall_bounce_providers]]\nmodel = "m"\n',
        "kubernetes.wall_bounce_providers[0].provider_id",
        "required key is missing",
        1,
    ),
    (
        "wall-bounce-uppercase-id",
        '[[kubernetes.wall_bounce_providers]]\nprovider_id = "OpenAI"\nmodel = "m"\n',
        "kubernetes.wall_bounce_providers[0].provider_id",
        "must start with a lowercase letter",
        2,
    ),
    (
        "wall-bounce-bad-model",
        _WB_GPT + _WB_ANTHROPIC.replace('"claude-sonnet-4"', '"claude sonnet"'),
        "kubernetes.wall_bounce_providers[1].model",
        "must be a model slug",
        7,
    ),
    (
        "wall-bounce-empty-env",
        '[[kubernetes.wall_bounce_providers]]\nprovider_id = "a"\nmodel = "m"\napi_key_env = ""\n',
        "kubernetes.wall_bounce_providers[0].api_key_env",
        "must be an environment variable name",
        4,
    ),
    (
        "wall-bounce-unknown-key",
        _WB_GPT + _WB_ANTHROPIC + "api_key = 'sk-x'\n",
        "kubernetes.wall_bounce_providers[1].api_key",
        "unknown key; allowed keys here: provider_id, base_url",
        8,
    ),
    (
        "wall-bounce-too-many",
        "".join(
            f'[[kubernetes.wall_bounce_providers]]\nprovider_id = "p{i}"\nmodel = "m"\n' for i in range(9)
        ),
        "kubernetes.wall_bounce_providers",
        "must have at most 8 items, got 9",
        1,
    ),
    (
        "unknown-nested-kubernetes-key",
        '[kubernetes]\nsessions_namespace = "codex-sessions"\n\n'
        '[kubernetes.model_endpoint]\napi_key = "sk-x"\n',
        "kubernetes.model_endpoint.api_key",
        "unknown key; allowed keys here: provider_id, base_url",
        5,
    ),
]


@pytest.mark.parametrize(
    ("text", "path", "reason", "line"),
    [case[1:] for case in BAD_CONFIGS],
    ids=[case[0] for case in BAD_CONFIGS],
)
def test_bad_config_names_the_key(text: str, path: str, reason: str, line: int) -> None:
    error, issues = _issues(text)
    assert path in issues, f"{path!r} not among {sorted(issues)}"
    issue = issues[path]
    assert reason in issue.reason
    assert issue.line == line
    assert f"bad.toml: {path}: {issue.reason} (line {line})" in str(error).splitlines()


def test_bad_config_ids_are_distinct() -> None:
    assert len({case[0] for case in BAD_CONFIGS}) == len(BAD_CONFIGS) >= 20
    assert len({case[1] for case in BAD_CONFIGS}) == len(BAD_CONFIGS)


@pytest.mark.parametrize("reserved", RESERVED_CODEX_PROVIDER_IDS)
def test_every_reserved_codex_provider_id_is_refused_for_both_kinds_of_provider(reserved: str) -> None:
    # Both become a [model_providers.<id>] table in the runner's Codex config.
    _, issues = _issues(
        f'[kubernetes.model_endpoint]\nprovider_id = "{reserved}"\n'
        f'[[kubernetes.wall_bounce_providers]]\nprovider_id = "{reserved}"\nmodel = "m"\n'
    )
    for path in ("kubernetes.model_endpoint.provider_id", "kubernetes.wall_bounce_providers[0].provider_id"):
        assert f"{reserved!r} is a built-in provider id of Codex" in issues[path].reason, issues
    assert parse_config(f'[kubernetes.model_endpoint]\nprovider_id = "{reserved}-api"\n')


def test_every_problem_is_reported_not_just_the_first() -> None:
    error, issues = _issues(
        '[mcp]\nmax_concurrent_sessions = 0\nquality_threshold = 2.0\n[codex]\nsandbox = "none"\n'
    )
    assert set(issues) == {"mcp.max_concurrent_sessions", "mcp.quality_threshold", "codex.sandbox"}
    assert [issue.line for issue in error.errors] == [2, 3, 5]
    assert len(str(error).splitlines()) == 3


def test_line_numbers_skip_multiline_strings() -> None:
    text = (
        '[codex]\nbase_instructions = """\n[mcp]\nmax_concurrent_sessions = 0\n"""\n'
        "[mcp]\nmax_concurrent_sessions = 0\n"
    )
    _, issues = _issues(text)
    assert issues["mcp.max_concurrent_sessions"].line == 7


@pytest.mark.parametrize(
    ("text", "line", "column"),
    [
        ("[mcp]\nmax_concurrent_sessions = \n", 2, 27),
        ('[server]\nname = "x"\ndescription = "unterminated\n', 3, 28),
        ("[mcp]\n[mcp]\n", 2, 5),
    ],
    ids=["missing-value", "unterminated-string", "duplicate-table"],
)
def test_invalid_toml_reports_the_line(text: str, line: int, column: int) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source="broken.toml")
    [issue] = caught.value.errors
    assert issue.path == ""
    assert issue.reason.startswith("invalid TOML: ")
    assert (issue.line, issue.column) == (line, column)
    message = str(caught.value)
    assert message.startswith("broken.toml: invalid TOML: ")
    assert f"line {line}" in message


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as caught:
        load_config(missing)
    assert str(caught.value) == f"{missing}: cannot read file: No such file or directory"


def test_non_utf8_file_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'[server]\nname = "caf\xe9"\n')
    with pytest.raises(ConfigError, match="not valid UTF-8"):
        load_config(bad)


def test_file_source_is_used_in_messages(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[mcp]\nmin_providers = 17\n")
    with pytest.raises(ConfigError) as caught:
        load_config(bad)
    assert str(caught.value) == f"{bad}: mcp.min_providers: must be <= 16, got 17 (an integer) (line 2)"


# --------------------------------------------------------------------------- CLI


def _cli(*args: str, home: Path | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if home is not None:
        env["HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "codex_operator", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=cwd,
    )


def test_cli_validate_accepts_the_shipped_configs(tmp_path: Path) -> None:
    result = _cli("config", "validate", str(SEED_CONFIG), str(DEV_CONFIG), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"ok: {SEED_CONFIG}", f"ok: {DEV_CONFIG}"]
    assert result.stderr == ""


def test_cli_validate_names_the_bad_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[mcp]\nmax_concurrent_sessions = 0\n[security.risk_levels]\n"full-access" = "severe"\n')
    result = _cli("config", "validate", str(SEED_CONFIG), str(bad), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [f"ok: {SEED_CONFIG}"]
    assert result.stderr.splitlines() == [
        f"{bad}: mcp.max_concurrent_sessions: must be >= 1, got 0 (an integer) (line 2)",
        f"{bad}: security.risk_levels.full-access: must be one of: low, medium, high, critical; "
        "got 'severe' (a string) (line 4)",
    ]


def test_cli_validate_reports_invalid_toml_and_missing_files(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[mcp]\nmax_concurrent_sessions = = 3\n")
    missing = tmp_path / "missing.toml"
    result = _cli("config", "validate", str(broken), str(missing), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"{broken}: invalid TOML: ")
    assert "(line 2, column" in lines[0]
    assert lines[1] == f"{missing}: cannot read file: No such file or directory"


@pytest.mark.parametrize(
    "args",
    [(), ("config",), ("config", "validate"), ("config", "frobnicate"), ("nonsense",)],
    ids=["no-command", "no-action", "no-file", "unknown-action", "unknown-command"],
)
def test_cli_usage_errors_exit_2(args: tuple[str, ...], tmp_path: Path) -> None:
    result = _cli(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert "usage: codex-operator" in result.stderr
    assert result.stdout == ""


def test_cli_show_prints_effective_config(tmp_path: Path) -> None:
    home = tmp_path / "home"
    result = _cli("config", "show", str(SEED_CONFIG), home=home, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["logging"]["log_directory"] == f"{home}/.codex/log"
    assert shown["mcp"]["max_concurrent_sessions"] == 10
    assert shown["security"]["risk_levels"]["read-only"] == "low"
    # Defaults for the table the seed leaves out are shown too.
    assert shown["kubernetes"]["runner_resources"]["memory_limit"] == "2Gi"
    assert shown["kubernetes"]["model_endpoint"]["egress_ports"] == [443]


def test_cli_show_of_a_bad_file_exits_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[logging]\nrust_log_level = "loud"\n')
    result = _cli("config", "show", str(bad), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    assert f"{bad}: logging.rust_log_level: must be one of: trace" in result.stderr


def test_main_returns_exit_codes_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "validate", str(SEED_CONFIG)]) == 0
    assert capsys.readouterr().out == f"ok: {SEED_CONFIG}\n"
    assert main(["config"]) == 2
    assert "usage:" in capsys.readouterr().err
    assert main(["--help"]) == 0
    assert "config" in capsys.readouterr().out


def test_default_log_directory_is_expanded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert parse_config("").logging.log_directory == f"{tmp_path}/.codex/log"
    assert CodexMCPConfig().logging.log_directory == f"{tmp_path}/.codex/log"
