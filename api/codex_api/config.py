"""The TOML configuration file, as pydantic models.

This module is the single source of truth for configuration: the operator, the
gateway and the chart all read the same file through :func:`load_config`, and
the configuration reference docs are generated from the field descriptions.

The seed's ``config/codex-mcp.toml`` loads unchanged; cluster settings live in
the additional ``[kubernetes]`` table. Every field has a default, so an empty
file is a valid configuration. Unknown keys are errors: a misspelt key that is
silently ignored would leave a security setting at its default.

Secrets never belong in this file (API keys come from Kubernetes Secrets named
here, the Redis URL from an environment variable named here), so :func:`redacted_dict` currently has nothing to hide; it exists so that
every place that shows the configuration goes through one function.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import json
import os
import re
import tomllib
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from .actions import ActionKind
from .common import DNS1123_LABEL, DNS1123_SUBDOMAIN, RequesterDecides, RiskLevel, SandboxLevel
from .sandbox import MAX_WALL_BOUNCE_PROVIDERS, PROFILES

__all__ = [
    "DEFAULT_PROVIDER_ID",
    "RESERVED_CODEX_PROVIDER_IDS",
    "ActionApprovalsConfig",
    "ActionRule",
    "ApprovalPolicy",
    "ApprovalWorkflowsConfig",
    "CacheConfig",
    "CodexConfig",
    "CodexMCPConfig",
    "ConfigError",
    "ConfigIssue",
    "CostConfig",
    "KubernetesConfig",
    "LimitsConfig",
    "LogLevel",
    "LoggingConfig",
    "MCPConfig",
    "ModelEndpointConfig",
    "ModelPrice",
    "PullPolicy",
    "RedisConfig",
    "RiskLevel",
    "RiskLevelsConfig",
    "RunnerResourcesConfig",
    "RunnerToleration",
    "SandboxLevel",
    "SecurityConfig",
    "ServerConfig",
    "WallBounceProviderConfig",
    "format_key_path",
    "load_config",
    "parse_config",
    "redacted_dict",
    "wall_bounce_api_key_env",
]

ApprovalPolicy = Literal["risk-based", "always-manual", "auto-approve"]
LogLevel = Literal["trace", "debug", "info", "warn", "error"]
PullPolicy = Literal["Always", "IfNotPresent", "Never"]
WireApi = Literal["responses"]

_SEED_BASE_INSTRUCTIONS = (
    "You are a helpful coding assistant powered by OpenAI Codex.\n"
    "Focus on providing clear, well-documented, and secure code solutions.\n"
)

_DNS1123_LABEL = re.compile(DNS1123_LABEL)
_DNS1123_SUBDOMAIN = re.compile(DNS1123_SUBDOMAIN)
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_IDENTIFIER = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
# Provider ids built into the pinned Codex CLI (0.171.0). The runner writes
# the configured id as a [model_providers.<id>] table, and Codex refuses the
# whole config.toml when that id is a built-in one ("model_providers contains
# reserved built-in provider IDs: openai" for openai, ollama and lmstudio;
# amazon-bedrock only accepts base_url/auth/http_headers/aws.* there), so
# every turn would fail. tests/integration/test_codex_provider_ids.py runs the
# pinned binary with each of them (and with the default) to keep this honest.
RESERVED_CODEX_PROVIDER_IDS = ("openai", "ollama", "lmstudio", "amazon-bedrock")
DEFAULT_PROVIDER_ID = "openai-api"
_ENV_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SECRET_KEY = re.compile(r"^[-._A-Za-z0-9]+$")
# Kubernetes resource.Quantity without a sign: resources are never negative.
# The exponent alternative comes first so that "1E3" is 1000, while "1E" is exa.
_QUANTITY = re.compile(
    r"^(?P<number>\d+(?:\.\d*)?|\.\d+)(?P<suffix>[eE][+-]?\d+|Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])?$"
)
_QUANTITY_SUFFIXES: dict[str, Decimal] = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}
_QUANTITY_HINT = "must be a Kubernetes quantity such as 250m, 2, 512Mi or 1Gi"


def parse_quantity(value: str) -> Decimal:
    """A Kubernetes quantity (250m, 2, 512Mi, 1Gi, 1e3) as a number."""
    match = _QUANTITY.fullmatch(value)
    if match is None:
        raise ValueError(f"{_QUANTITY_HINT}, got {value!r}")
    suffix = match.group("suffix") or ""
    number = Decimal(match.group("number"))
    if suffix[:1] in ("e", "E") and len(suffix) > 1:
        return number.scaleb(int(suffix[1:]))
    return number * _QUANTITY_SUFFIXES[suffix]


def _check_dns_label(value: str) -> str:
    if len(value) > 63 or not _DNS1123_LABEL.fullmatch(value):
        raise ValueError(
            f"must be a DNS-1123 label (at most 63 lowercase letters, digits or '-', "
            f"starting and ending with a letter or digit), got {value!r}"
        )
    return value


def _check_env_var_name(value: str) -> str:
    if not _ENV_VAR.fullmatch(value):
        raise ValueError(
            "must be an environment variable name (letters, digits and '_', "
            f"not starting with a digit), got {value!r}"
        )
    return value


def _check_dns_subdomain(value: str) -> str:
    if len(value) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(value):
        raise ValueError(
            f"must be a DNS-1123 subdomain (lowercase letters, digits, '-' and '.', "
            f"starting and ending with a letter or digit), got {value!r}"
        )
    return value


def _check_labels(labels: dict[str, str]) -> dict[str, str]:
    for key, value in labels.items():
        prefix, _, name = key.rpartition("/")
        if prefix:
            try:
                _check_dns_subdomain(prefix)
            except ValueError:
                raise ValueError(f"label key {key!r} has an invalid prefix {prefix!r}") from None
        if len(name) > 63 or not _LABEL_NAME.fullmatch(name):
            raise ValueError(
                f"label key {key!r} is not a valid Kubernetes label name "
                "(at most 63 letters, digits, '-', '_' or '.', starting and ending alphanumeric)"
            )
        if value and (len(value) > 63 or not _LABEL_NAME.fullmatch(value)):
            raise ValueError(
                f"label value {value!r} of {key!r} is not a valid Kubernetes label value "
                "(empty, or at most 63 letters, digits, '-', '_' or '.', starting and ending alphanumeric)"
            )
    return labels


class _Section(BaseModel):
    # strict: TOML is typed, so "10" for an integer or 1 for a boolean is a
    # mistake to report, not something to coerce. frozen: a loaded config is a
    # snapshot; a reload builds a new object.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class ServerConfig(_Section):
    """``[server]``: identity announced to MCP clients."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        "codex-mcp-server",
        min_length=1,
        max_length=128,
        description="Server name reported to MCP clients in the initialize handshake.",
    )
    version: str = Field(
        "1.0.0",
        min_length=1,
        max_length=64,
        description="Server version reported to MCP clients in the initialize handshake.",
    )
    description: str = Field(
        "OpenAI Codex integration via Model Context Protocol",
        max_length=1024,
        description="Human-readable description of the server, shown by MCP clients.",
    )


class CodexConfig(_Section):
    """``[codex]``: defaults for Codex sessions that do not set them."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        "gpt-5-codex",
        min_length=1,
        max_length=128,
        description="Default model for sessions whose CodexSession spec does not name one.",
    )
    sandbox: SandboxLevel = Field(
        "read-only",
        description=(
            "Default sandbox level: read-only (restricted pod, read-only workspace), isolated "
            "(restricted pod, writable workspace) or full-access (wider egress, never more privileges)."
        ),
    )
    base_instructions: str = Field(
        _SEED_BASE_INSTRUCTIONS,
        max_length=65536,
        description="Default base instructions given to Codex when a session does not provide its own.",
    )
    working_directory: str = Field(
        ".",
        validate_default=True,
        min_length=1,
        max_length=4096,
        description=(
            "Working directory for Codex, relative to the session workspace unless absolute; "
            "a leading ~ is expanded to the home directory of the process reading the file."
        ),
    )

    @field_validator("working_directory")
    @classmethod
    def _expand_home(cls, value: str) -> str:
        return os.path.expanduser(value)


class MCPConfig(_Section):
    """``[mcp]``: gateway behaviour and session limits."""

    model_config = ConfigDict(extra="forbid")

    approval_policy: ApprovalPolicy = Field(
        "risk-based",
        description=(
            "How sessions are approved: risk-based (follow [security.approval_workflows] per risk "
            "level), always-manual (every session waits for a human decision) or auto-approve "
            "(no approvals; for trusted single-user clusters only)."
        ),
    )
    max_concurrent_sessions: int = Field(
        10,
        ge=1,
        le=10000,
        description="Maximum number of runner pods running at once; further approved sessions are Queued.",
    )
    max_concurrent_sessions_per_user: int = Field(
        5,
        ge=1,
        le=10000,
        description=(
            "Share of max_concurrent_sessions one requester may hold at once (at most all of it): "
            "their further sessions wait while other users' sessions take the free slots."
        ),
    )
    session_timeout_ms: int = Field(
        300000,
        ge=1000,
        le=86400000,
        description=(
            "Default session timeout in milliseconds, used when a CodexSession does not set "
            "timeoutSeconds; a session running longer ends as TimedOut."
        ),
    )
    enable_wall_bounce: bool = Field(
        True,
        description="Allow wall-bounce sessions that consult several providers and compare their answers.",
    )
    min_providers: int = Field(
        2,
        ge=1,
        le=16,
        description="Default minimum number of providers a wall-bounce session consults.",
    )
    quality_threshold: float = Field(
        0.7,
        ge=0.0,
        le=1.0,
        description="Default consensus score (0 to 1) a wall-bounce session must reach to succeed.",
    )


class LoggingConfig(_Section):
    """``[logging]``: log verbosity and location for Codex and the components."""

    model_config = ConfigDict(extra="forbid")

    rust_log_level: LogLevel = Field(
        "info",
        description="Log level passed to the Codex CLI as RUST_LOG, and the level of the Python components.",
    )
    enable_tracing: bool = Field(
        True,
        description="Log each tool call and reconciliation step with its timing.",
    )
    log_directory: str = Field(
        "~/.codex/log",
        # validate_default: the default itself starts with ~ and must be expanded.
        validate_default=True,
        min_length=1,
        max_length=4096,
        description=(
            "Directory for Codex log files; a leading ~ is expanded to the home directory "
            "of the process reading the file."
        ),
    )

    @field_validator("log_directory")
    @classmethod
    def _expand_home(cls, value: str) -> str:
        return os.path.expanduser(value)


class RiskLevelsConfig(_Section):
    """``[security.risk_levels]``: the base risk level of each sandbox level."""

    # Keys are the sandbox names themselves ("read-only", ...); the snake_case
    # attribute names are not accepted in the file so that only one spelling exists.
    model_config = ConfigDict(extra="forbid")

    read_only: RiskLevel = Field(
        PROFILES["read-only"].default_risk,
        alias="read-only",
        description="Risk level of a read-only session before mode and fullAuto raise it.",
    )
    isolated: RiskLevel = Field(
        PROFILES["isolated"].default_risk,
        alias="isolated",
        description="Risk level of an isolated session before mode and fullAuto raise it.",
    )
    full_access: RiskLevel = Field(
        PROFILES["full-access"].default_risk,
        alias="full-access",
        description="Risk level of a full-access session before mode and fullAuto raise it.",
    )

    def for_sandbox(self, sandbox: SandboxLevel) -> RiskLevel:
        """The configured risk level of ``sandbox``."""
        levels: dict[str, RiskLevel] = {
            "read-only": self.read_only,
            "isolated": self.isolated,
            "full-access": self.full_access,
        }
        return levels[sandbox]


class ApprovalWorkflowsConfig(_Section):
    """``[security.approval_workflows]``: which sessions need a human decision."""

    model_config = ConfigDict(extra="forbid")

    auto_approve_read_only: bool = Field(
        PROFILES["read-only"].auto_approve_default,
        description="Start read-only sessions without an ApprovalRequest (unless ci mode requires one).",
    )
    auto_approve_isolated: bool = Field(
        PROFILES["isolated"].auto_approve_default,
        description="Start isolated sessions without an ApprovalRequest (unless ci mode requires one).",
    )
    auto_approve_full_access: bool = Field(
        PROFILES["full-access"].auto_approve_default,
        description="Start full-access sessions without an ApprovalRequest (unless ci mode requires one).",
    )
    require_manual_approval_for_ci: bool = Field(
        True,
        description="Sessions in ci mode always wait for a human decision, whatever their sandbox level.",
    )


ActionDecision = Literal["accept", "ask", "decline"]
ACTION_KINDS: tuple[ActionKind, ...] = ("command", "file_change", "permissions")
MAX_RULES = 64
ACTION_WORKSPACE = "/workspace"


AbsolutePath = Annotated[str, Field(min_length=1, max_length=4096, pattern=r"^/")]


class ActionRule(_Section):
    """One ``[[security.action_approvals.rules]]`` entry. Every condition given
    must hold for the rule to match; a rule with none matches every action of
    its kinds."""

    name: str = Field(
        min_length=1,
        max_length=63,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description="The rule's name, unique; recorded with each action it matched.",
    )
    kinds: list[ActionKind] = Field(
        default_factory=lambda: list(ACTION_KINDS),
        min_length=1,
        description="Kinds of action the rule applies to: command, file_change, permissions.",
    )
    command: str | None = Field(
        default=None,
        max_length=1024,
        description=(
            "Python regular expression searched in the command's script (Codex's "
            "`/bin/bash -lc` wrapper removed); anchor it with ^ and $ to match the whole script."
        ),
    )
    outside: list[AbsolutePath] | None = Field(
        default=None,
        max_length=32,
        description="Matches when any path the action touches or asks for lies outside all these directories.",
    )
    inside: list[AbsolutePath] | None = Field(
        default=None,
        max_length=32,
        description="Matches when every path the action touches or asks for lies inside one of these directories.",
    )
    network: bool | None = Field(
        default=None,
        description="true: matches actions that ask for network access (or name a host); false: those that do not.",
    )
    risk: RiskLevel | None = Field(default=None, description="Risk level of a matching action (at least).")
    decide: ActionDecision | None = Field(
        default=None,
        description="accept or decline without a human, or ask one; unset leaves the decision to other rules.",
    )

    @field_validator("command")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from None
        return value

    @model_validator(mode="after")
    def _does_something(self) -> ActionRule:
        if self.risk is None and self.decide is None:
            raise ValueError("a rule needs a risk, a decision or both")
        if self.command is not None and self.kinds != ["command"]:
            raise ValueError("a command pattern applies to kinds = ['command'] only")
        return self


def _default_rules() -> list[ActionRule]:
    return [
        ActionRule(
            name="outside-the-workspace",
            outside=[ACTION_WORKSPACE],
            risk="high",
        ),
        ActionRule(name="network", network=True, risk="high"),
        ActionRule(
            name="privilege-or-destruction",
            kinds=["command"],
            command=r"(^|[;&|(\s])(sudo|su|doas|dd|mkfs\S*|chmod|chown|rm\s+-\S*[rf])(\s|$)",
            risk="high",
        ),
        ActionRule(
            name="pipe-to-shell",
            kinds=["command"],
            command=r"(curl|wget)\b[^|\n]{0,1024}\|\s*(sudo\s+)?(ba|z|da)?sh\b",
            risk="critical",
        ),
    ]


class ActionApprovalsConfig(_Section):
    """``[security.action_approvals]``: how risky each action Codex asks to take
    is (a command, a patch, wider permissions), and which are decided without
    a human. Every matching rule counts: the risk is the highest of the kind's
    base risk and the rules' risks; the decision the most careful one named
    (decline over ask over accept). An accept holds only up to
    `auto_accept_up_to`: above it a human decides, so a rule that raises the
    risk (a path outside the workspace) is never overridden by a broader
    accept."""

    levels: list[SandboxLevel] = Field(
        default_factory=list,
        max_length=3,
        description=(
            "Sandbox levels whose turns run with per-action approvals unless the session says "
            "approvals = per-turn (a session may also ask for per-action itself). Needs warm runners "
            "(kubernetes.warm_runners.idle_seconds > 0): the decision goes to the turn's live pod."
        ),
    )
    command_risk: RiskLevel = Field("medium", description="Base risk of a command Codex asks to run.")
    file_change_risk: RiskLevel = Field("medium", description="Base risk of a patch Codex asks to apply.")
    permissions_risk: RiskLevel = Field(
        "high", description="Base risk of widening the sandbox (paths, network) for the turn or session."
    )
    auto_accept_up_to: RiskLevel = Field(
        "medium",
        description="Highest risk a rule may accept without a human; riskier actions wait for one.",
    )
    requester_decides_up_to: RequesterDecides = Field(
        "none",
        description=(
            "Highest risk of an action its own requester may approve (kubectl, or an MCP client's "
            "tasks/update): none, low or medium. A requester may always deny their own actions; "
            "high and critical stay with the approver groups. Must equal the admission params' "
            "requesterDecidesUpTo (the chart derives it from this key)."
        ),
    )
    rules: list[ActionRule] = Field(
        default_factory=_default_rules,
        max_length=MAX_RULES,
        description=(
            "Rules raising the risk of, or deciding, matching actions. The defaults: paths outside "
            f"{ACTION_WORKSPACE} and network access are high; sudo, rm -r/-f, chmod and the like are high; "
            "curl|sh is critical. Nothing is accepted without a human by default."
        ),
    )

    @field_validator("rules")
    @classmethod
    def _unique_names(cls, rules: list[ActionRule]) -> list[ActionRule]:
        names = [rule.name for rule in rules]
        if len(set(names)) != len(names):
            raise ValueError(
                f"rule names must be unique: {sorted(n for n in set(names) if names.count(n) > 1)}"
            )
        return rules

    def base_risk(self, kind: ActionKind) -> RiskLevel:
        risks: dict[ActionKind, RiskLevel] = {
            "command": self.command_risk,
            "file_change": self.file_change_risk,
            "permissions": self.permissions_risk,
        }
        return risks[kind]


class SecurityConfig(_Section):
    """``[security]``: risk assessment, auditing and approval policy."""

    model_config = ConfigDict(extra="forbid")

    risk_assessment: bool = Field(
        True,
        description="Compute a risk level for every session and record it in CodexSession status.",
    )
    audit_logging: bool = Field(
        True,
        description="Write an audit log entry for every session, approval decision and tool call.",
    )
    sensitive_data_detection: bool = Field(
        True,
        description="Redact likely secrets (API keys, tokens, private keys) from prompts, logs and status.",
    )
    risk_levels: RiskLevelsConfig = Field(
        default_factory=RiskLevelsConfig,
        description="Base risk level per sandbox level; keys are the sandbox names.",
    )
    approval_workflows: ApprovalWorkflowsConfig = Field(
        default_factory=ApprovalWorkflowsConfig,
        description="Which sessions are approved automatically and which wait for a human decision.",
    )
    action_approvals: ActionApprovalsConfig = Field(
        default_factory=ActionApprovalsConfig,
        description="Risk and decision for each action Codex asks to take (command, patch, permissions).",
    )


class RunnerResourcesConfig(_Section):
    """``[kubernetes.runner_resources]``: resources of each runner pod and its workspace."""

    model_config = ConfigDict(extra="forbid")

    cpu_request: str = Field(
        "250m", min_length=1, max_length=64, description="CPU request of the runner container."
    )
    memory_request: str = Field(
        "256Mi", min_length=1, max_length=64, description="Memory request of the runner container."
    )
    cpu_limit: str = Field(
        "2",
        validate_default=True,
        min_length=1,
        max_length=64,
        description="CPU limit of the runner container; must not be below cpu_request.",
    )
    memory_limit: str = Field(
        "2Gi",
        validate_default=True,
        min_length=1,
        max_length=64,
        description="Memory limit of the runner container; must not be below memory_request.",
    )
    ephemeral_storage_limit: str = Field(
        "1Gi",
        min_length=1,
        max_length=64,
        description="Ephemeral storage limit of the runner pod (scratch space, /tmp).",
    )
    workspace_size: str = Field(
        "1Gi",
        min_length=1,
        max_length=64,
        description="Size of the workspace volume (holds CODEX_HOME and the working tree of a conversation).",
    )
    max_workspace_size: str = Field(
        "20Gi",
        validate_default=True,
        min_length=1,
        max_length=64,
        description=(
            "Largest workspace a session may ask for (spec.workspace.size); a larger one is refused "
            "with WorkspaceTooLarge before it needs an approval. Must not be below workspace_size."
        ),
    )
    storage_class_name: str = Field(
        "",
        max_length=253,
        description="StorageClass of persistent workspace volumes; empty means the cluster's default class.",
    )

    @field_validator("cpu_request", "memory_request")
    @classmethod
    def _check_request(cls, value: str) -> str:
        parse_quantity(value)
        return value

    @field_validator("ephemeral_storage_limit", "workspace_size")
    @classmethod
    def _check_size(cls, value: str) -> str:
        if parse_quantity(value) <= 0:
            raise ValueError(f"must be greater than zero, got {value!r}")
        return value

    @field_validator("max_workspace_size")
    @classmethod
    def _check_max_workspace(cls, value: str, info: ValidationInfo) -> str:
        most = parse_quantity(value)
        size = info.data.get("workspace_size")
        if isinstance(size, str) and parse_quantity(size) > most:
            raise ValueError(f"must not be below workspace_size ({size!r}), got {value!r}")
        return value

    # Kubernetes rejects a pod whose request exceeds its limit; catching it here
    # names the config key instead of failing every pod creation later. The
    # limits use validate_default so a raised request is checked against the
    # default limit too.
    @field_validator("cpu_limit", "memory_limit")
    @classmethod
    def _check_limit(cls, value: str, info: ValidationInfo) -> str:
        limit = parse_quantity(value)
        if limit <= 0:
            raise ValueError(f"must be greater than zero, got {value!r}")
        request_key = "cpu_request" if info.field_name == "cpu_limit" else "memory_request"
        request = info.data.get(request_key)
        if isinstance(request, str) and parse_quantity(request) > limit:
            raise ValueError(f"must not be below {request_key} ({request!r}), got {value!r}")
        return value

    @field_validator("storage_class_name")
    @classmethod
    def _check_storage_class(cls, value: str) -> str:
        return _check_dns_subdomain(value) if value else value


def _check_not_reserved(provider_id: str) -> str:
    if provider_id in RESERVED_CODEX_PROVIDER_IDS:
        raise ValueError(
            f"{provider_id!r} is a built-in provider id of Codex, which refuses to redefine it (every turn "
            f"would fail); choose another id, e.g. {provider_id + '-api'!r} (reserved: "
            + ", ".join(RESERVED_CODEX_PROVIDER_IDS)
            + ")"
        )
    return provider_id


def _cidrs(values: list[str]) -> list[str]:
    normalized = []
    for value in values:
        try:
            network = ipaddress.ip_network(value, strict=True)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a CIDR range: {exc}") from None
        # NetworkPolicy ipBlock.cidr needs the prefix length spelled out.
        normalized.append(str(network))
    return normalized


class ModelEndpointConfig(_Section):
    """``[kubernetes.model_endpoint]``: the model API the runners talk to, and their egress."""

    model_config = ConfigDict(extra="forbid")

    provider_id: str = Field(
        DEFAULT_PROVIDER_ID,
        min_length=1,
        max_length=63,
        description=(
            "Codex model provider id written into the runner's Codex config (model_providers.<id>); "
            "not one of Codex's built-in ids (" + ", ".join(RESERVED_CODEX_PROVIDER_IDS) + "), which "
            "Codex refuses to redefine."
        ),
        # helm checks values against this schema, so a reserved id fails at install time.
        json_schema_extra={"not": {"enum": list(RESERVED_CODEX_PROVIDER_IDS)}},
    )
    base_url: str = Field(
        "https://api.openai.com/v1",
        min_length=1,
        max_length=2048,
        description="Base URL of the model API (http or https), passed to Codex as the provider's base_url.",
    )
    wire_api: WireApi = Field(
        "responses",
        description="Wire protocol Codex uses with the provider; only the Responses API is supported.",
    )
    api_key_env: str = Field(
        "CODEX_MODEL_API_KEY",
        min_length=1,
        max_length=128,
        description="Environment variable in the runner that holds the API key (the provider's env_key).",
    )
    api_key_secret_name: str = Field(
        "codex-model-api-key",
        min_length=1,
        max_length=253,
        description=(
            "Secret holding the API key, in the sessions namespace (runner pods read it) or, with "
            "[model_proxy].url, in the proxy's namespace (only the proxy reads it); the key itself is "
            "never in this file."
        ),
    )
    api_key_secret_key: str = Field(
        "api-key",
        min_length=1,
        max_length=253,
        description="Key inside that Secret whose value is the API key.",
    )
    egress_cidrs: list[str] = Field(
        default_factory=list,
        max_length=64,
        description=(
            "IP ranges (CIDR) runner pods may reach besides DNS, i.e. where the model endpoint lives; "
            "empty allows no external range."
        ),
    )
    egress_ports: list[Annotated[int, Field(ge=1, le=65535)]] = Field(
        default_factory=lambda: [443],
        min_length=1,
        max_length=32,
        description="TCP ports runner pods may reach in egress_cidrs and on the in-cluster endpoint.",
    )
    in_cluster_namespace_labels: dict[str, str] = Field(
        default_factory=dict,
        max_length=32,
        description=(
            "For a model endpoint inside the cluster: labels selecting its namespace "
            "in the runners' egress NetworkPolicy. Empty means no in-cluster endpoint."
        ),
    )
    in_cluster_pod_labels: dict[str, str] = Field(
        default_factory=dict,
        max_length=32,
        description="For a model endpoint inside the cluster: labels selecting its pods.",
    )

    @field_validator("provider_id")
    @classmethod
    def _check_provider_id(cls, value: str) -> str:
        if not _IDENTIFIER.fullmatch(value):
            raise ValueError(
                f"must start with a letter and contain only letters, digits, '_' or '-', got {value!r}"
            )
        return _check_not_reserved(value)

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises ValueError on a malformed port
        except ValueError as exc:
            raise ValueError(f"must be an http or https URL, got {value!r} ({exc})") from None
        if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in value):
            raise ValueError(f"must be an http or https URL with a host, got {value!r}")
        return value

    @field_validator("api_key_env")
    @classmethod
    def _check_env(cls, value: str) -> str:
        return _check_env_var_name(value)

    @field_validator("api_key_secret_name")
    @classmethod
    def _check_secret_name(cls, value: str) -> str:
        return _check_dns_subdomain(value)

    @field_validator("api_key_secret_key")
    @classmethod
    def _check_secret_key(cls, value: str) -> str:
        if not _SECRET_KEY.fullmatch(value):
            raise ValueError(f"must contain only letters, digits, '-', '_' or '.', got {value!r}")
        return value

    @field_validator("egress_cidrs")
    @classmethod
    def _check_cidrs(cls, values: list[str]) -> list[str]:
        return _cidrs(values)

    @field_validator("in_cluster_namespace_labels", "in_cluster_pod_labels")
    @classmethod
    def _check_selector(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_labels(value)


# What CodexSession spec.wallBounce.providers accepts (the CRD's item pattern)
# intersected with a Codex provider id: a configured provider must be nameable
# in a session.
_WALL_BOUNCE_ID = re.compile(r"^[a-z][a-z0-9_-]*$")
_MODEL_SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")


def wall_bounce_api_key_env(provider_id: str) -> str:
    """The default ``api_key_env`` of a wall-bounce provider: ``CODEX_WB_<PROVIDER_ID>_API_KEY``."""
    return f"CODEX_WB_{provider_id.upper().replace('-', '_')}_API_KEY"


class WallBounceProviderConfig(ModelEndpointConfig):
    """``[[kubernetes.wall_bounce_providers]]``: one provider a wall-bounce session consults.

    Everything a ``[kubernetes.model_endpoint]`` has (its endpoint, API key Secret
    and egress), plus the model to ask. ``provider_id`` and ``model`` are required.
    """

    model_config = ConfigDict(extra="forbid")

    provider_id: str = Field(
        min_length=1,
        max_length=63,
        description=(
            "Id of this provider (required, unique among the wall-bounce providers): what "
            "spec.wallBounce.providers names and status.wallBounce.providersUsed reports; a lowercase "
            "letter, then lowercase letters, digits, '_' or '-'; not one of Codex's built-in ids ("
            + ", ".join(RESERVED_CODEX_PROVIDER_IDS)
            + ")."
        ),
        json_schema_extra={"not": {"enum": list(RESERVED_CODEX_PROVIDER_IDS)}},
    )
    model: str = Field(
        min_length=1,
        max_length=128,
        description="Model slug to ask at this provider (required), e.g. gpt-5-codex.",
    )
    api_key_env: str = Field(
        "",
        max_length=128,
        description=(
            "Environment variable in the runner that holds this provider's API key. Default: "
            "CODEX_WB_<PROVIDER_ID>_API_KEY (the id upper-cased, '-' as '_'). Must differ from every "
            "other provider's and from [kubernetes.model_endpoint].api_key_env."
        ),
    )

    @model_validator(mode="before")
    @classmethod
    def _default_env(cls, data: Any) -> Any:
        # Derived from the id rather than the position, so reordering the
        # providers does not rename their variables.
        if isinstance(data, dict) and "api_key_env" not in data and isinstance(data.get("provider_id"), str):
            return {**data, "api_key_env": wall_bounce_api_key_env(data["provider_id"])}
        return data

    @field_validator("provider_id")
    @classmethod
    def _check_provider_id(cls, value: str) -> str:
        if not _WALL_BOUNCE_ID.fullmatch(value):
            raise ValueError(
                "must start with a lowercase letter and contain only lowercase letters, digits, '_' or '-' "
                f"(spec.wallBounce.providers names it), got {value!r}"
            )
        # Each provider's run writes its id as a Codex provider table too.
        return _check_not_reserved(value)

    @field_validator("model")
    @classmethod
    def _check_model(cls, value: str) -> str:
        if not _MODEL_SLUG.fullmatch(value):
            raise ValueError(
                "must be a model slug (a letter or digit, then letters, digits, '.', '_', ':', '/' or '-'), "
                f"got {value!r}"
            )
        return value


class RunnerToleration(_Section):
    """A toleration added to runner pods (e.g. for a dedicated, tainted node pool)."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(min_length=1, max_length=253, description="Taint key to tolerate.")
    operator: Literal["Equal", "Exists"] = Field("Equal", description="Equal (matches value) or Exists.")
    value: str = Field("", max_length=63, description="Taint value, for operator Equal.")
    effect: Literal["", "NoSchedule", "PreferNoSchedule", "NoExecute"] = Field(
        "", description="Taint effect to tolerate; empty tolerates all effects."
    )


class WarmRunnersConfig(_Section):
    """``[kubernetes.warm_runners]``: a conversation keeps its runner pod between
    turns, and a reply is handed to the live pod instead of a new one (issue 14).

    The pod runs the runner's agent (codex_runner.agent) with one Codex
    app-server; the operator signs each turn it hands over with an Ed25519 key
    whose public half the pod holds. After ``idle_seconds`` without a turn the
    agent ends the pod, and the next reply starts cold from the persistent
    workspace, as every turn does with this section off."""

    model_config = ConfigDict(extra="forbid")

    idle_seconds: int = Field(
        0,
        ge=0,
        le=86400,
        description=(
            "How long a conversation's pod waits for the next reply before it ends; 0 turns warm "
            "runners off (every turn is a new pod)."
        ),
    )
    max_pod_lifetime_seconds: int = Field(
        3600,
        ge=60,
        le=7 * 86400,
        description="A live pod ends after this long whatever it does (its activeDeadlineSeconds).",
    )
    max_idle_pods: int = Field(
        20,
        ge=1,
        le=10000,
        description=(
            "Most live pods waiting for a reply at once; past it the longest-idle ones end. An idle pod "
            "keeps its resource requests: the nodes must fit max_concurrent_sessions running pods plus these."
        ),
    )
    agent_port: int = Field(8470, ge=1024, le=65535, description="Port of the agent in a live runner pod.")
    signing_key_file: str = Field(
        "",
        max_length=4096,
        description=(
            "PEM file with the operator's Ed25519 private key that signs turns for live pods (every "
            "operator replica reads the same one). Empty: each operator process makes its own, and "
            "pods started by another process are not handed turns (their replies start cold)."
        ),
    )
    operator_cidrs: list[str] = Field(
        default_factory=list,
        max_length=64,
        description=(
            "IP ranges (CIDR) the operator calls live pods from, for their ingress rule (an operator "
            "outside the cluster)."
        ),
    )
    operator_namespace_labels: dict[str, str] = Field(
        default_factory=dict,
        max_length=32,
        description="Labels of the operator's namespace, for the live pods' ingress rule.",
    )
    operator_pod_labels: dict[str, str] = Field(
        default_factory=dict,
        max_length=32,
        description="Labels of the operator's pods, for the live pods' ingress rule.",
    )

    pool_sizes: dict[SandboxLevel, Annotated[int, Field(ge=0, le=100)]] = Field(
        default_factory=dict,
        description=(
            "Warm pool per sandbox level: how many started, unclaimed runner pods (each with a fresh "
            "workspace) wait for a conversation's first turn in each sessions namespace, e.g. "
            '{ "isolated" = 2 }. A level left out, or 0, has no pool: its first turns start a pod. '
            "Pool pods hold no credential (it comes with each turn): a pool needs [model_proxy].url."
        ),
    )
    pool_max_age_seconds: int = Field(
        1800,
        ge=60,
        le=7 * 86400,
        description=(
            "An unclaimed pool pod older than this is replaced (at most half of "
            "max_pod_lifetime_seconds, so a claimed pod has time left for its conversation)."
        ),
    )

    @field_validator("operator_cidrs")
    @classmethod
    def _check_cidrs(cls, values: list[str]) -> list[str]:
        return _cidrs(values)

    @field_validator("operator_namespace_labels", "operator_pod_labels")
    @classmethod
    def _check_selector(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_labels(value)

    @model_validator(mode="after")
    def _reachable(self) -> WarmRunnersConfig:
        if self.idle_seconds and not (
            self.operator_cidrs or self.operator_namespace_labels or self.operator_pod_labels
        ):
            raise ValueError(
                "idle_seconds is set but the live pods' ingress rule would have no peer: set "
                "operator_cidrs, or operator_namespace_labels / operator_pod_labels of the operator's pods"
            )
        if self.pool_size and not self.idle_seconds:
            raise ValueError("pool_sizes needs idle_seconds > 0: a pool pod is a live pod")
        if self.pool_size > self.max_idle_pods:
            raise ValueError(
                f"pool_sizes add up to {self.pool_size}, more than max_idle_pods ({self.max_idle_pods}): "
                "pool pods count as idle pods"
            )
        if self.pool_max_age_seconds * 2 > self.max_pod_lifetime_seconds:
            raise ValueError(
                f"pool_max_age_seconds ({self.pool_max_age_seconds}) must be at most half of "
                f"max_pod_lifetime_seconds ({self.max_pod_lifetime_seconds})"
            )
        return self

    @property
    def pool_size(self) -> int:
        """Pool pods in all levels together (per sessions namespace)."""
        return sum(self.pool_sizes.values())

    @property
    def enabled(self) -> bool:
        return self.idle_seconds > 0


class KubernetesConfig(_Section):
    """``[kubernetes]``: cluster settings of the operator and the runner pods."""

    model_config = ConfigDict(extra="forbid")

    sessions_namespace: str = Field(
        "codex-sessions",
        min_length=1,
        max_length=63,
        description="Namespace where CodexSession, ApprovalRequest and runner pods live.",
    )
    operator_namespace: str = Field(
        "codex-system",
        min_length=1,
        max_length=63,
        description="Namespace of the operator and gateway deployments.",
    )
    runner_image: str = Field(
        "localhost/codex-runner:0.1.0",
        min_length=1,
        max_length=512,
        description="Container image of the runner pods (the Codex CLI and the runner wrapper).",
    )
    runner_image_pull_policy: PullPolicy = Field(
        "IfNotPresent",
        description="imagePullPolicy of the runner container: Always, IfNotPresent or Never.",
    )
    approver_groups: list[Annotated[str, Field(min_length=1, max_length=253)]] = Field(
        default_factory=lambda: ["codex-approvers"],
        max_length=32,
        description="Kubernetes groups whose members may approve or deny ApprovalRequests.",
    )
    admin_groups: list[Annotated[str, Field(min_length=1, max_length=253)]] = Field(
        default_factory=lambda: ["codex-admins"],
        max_length=32,
        description="Kubernetes groups whose members administer sessions (cancel, delete, approve any).",
    )
    cleanup_interval_seconds: int = Field(
        60,
        ge=5,
        le=86400,
        description="How often the operator looks for expired approvals and finished sessions to clean up.",
    )
    default_ttl_seconds_after_finished: int = Field(
        86400,
        ge=0,
        le=2592000,
        description=(
            "How long a finished CodexSession is kept before deletion, when its spec sets no "
            "ttlSecondsAfterFinished; 0 deletes it as soon as it finishes."
        ),
    )
    max_pod_attempts: int = Field(
        2,
        ge=1,
        le=5,
        description=(
            "Runner pods started for one turn at most. A pod that is evicted or deleted before it "
            "finished is replaced while attempts remain; then the session fails with the reason."
        ),
    )
    approval_timeout_seconds: int = Field(
        3600,
        ge=10,
        le=604800,
        description="How long an ApprovalRequest waits for a decision before it expires (counts as denied).",
    )
    network_fence_seconds: float = Field(
        10,
        ge=0,
        le=300,
        description=(
            "Before Codex starts, the runner waits until its pod can no longer open a connection to the "
            "API server's Service, which every sandbox level's NetworkPolicy denies: network plugins "
            "program a new pod's policy asynchronously, and until then the pod reaches what the node "
            "reaches. After this many seconds the turn fails with NetworkNotEnforced. 0 turns the check "
            "off, for clusters whose network plugin does not enforce NetworkPolicy (the sandbox levels' "
            "network rules then do not hold)."
        ),
    )
    runner_uid: int = Field(
        10001,
        ge=1,
        le=2147483647,
        description="Non-root user and group id the runner container runs as.",
    )
    runner_service_account: str = Field(
        "codex-runner",
        min_length=1,
        max_length=253,
        description="ServiceAccount of runner pods; it needs no RBAC and its token is never mounted.",
    )
    runner_priority_class: str = Field(
        "",
        max_length=253,
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)?$",
        description=(
            "PriorityClass of runner pods (empty: the cluster's default). The chart makes one below "
            "the default that never preempts, so when a node is full the cluster's own pods (the "
            "gateway, Redis, the operator) preempt idle runner pods, never the other way round."
        ),
    )
    runner_node_selector: dict[str, str] = Field(
        default_factory=dict,
        max_length=16,
        description="nodeSelector of runner pods (e.g. a dedicated sandbox node pool).",
    )
    runner_tolerations: list[RunnerToleration] = Field(
        default_factory=list,
        max_length=16,
        description="Tolerations of runner pods (``[[kubernetes.runner_tolerations]]``).",
    )
    runner_resources: RunnerResourcesConfig = Field(
        default_factory=RunnerResourcesConfig,
        description="CPU, memory and storage of each runner pod.",
    )
    model_endpoint: ModelEndpointConfig = Field(
        default_factory=ModelEndpointConfig,
        description="The model API runners call, its API key Secret, and the egress it needs.",
    )
    warm_runners: WarmRunnersConfig = Field(
        default_factory=WarmRunnersConfig,
        description="``[kubernetes.warm_runners]``: live conversation pods (off by default).",
    )
    wall_bounce_providers: list[WallBounceProviderConfig] = Field(
        default_factory=list,
        max_length=MAX_WALL_BOUNCE_PROVIDERS,
        description=(
            "Providers a wall-bounce session consults (``[[kubernetes.wall_bounce_providers]]``, at most "
            f"{MAX_WALL_BOUNCE_PROVIDERS}); each is a model endpoint plus a model. Ids and api_key_env "
            "values must be unique. Empty: no wall-bounce sessions can run."
        ),
    )

    @field_validator("sessions_namespace", "operator_namespace")
    @classmethod
    def _check_namespace(cls, value: str) -> str:
        return _check_dns_label(value)

    @field_validator("runner_image")
    @classmethod
    def _check_image(cls, value: str) -> str:
        if any(c.isspace() for c in value):
            raise ValueError(f"must be an image reference without whitespace, got {value!r}")
        return value

    @field_validator("wall_bounce_providers")
    @classmethod
    def _check_wall_bounce_providers(
        cls, providers: list[WallBounceProviderConfig], info: ValidationInfo
    ) -> list[WallBounceProviderConfig]:
        ids: dict[str, int] = {}
        envs: dict[str, str] = {}
        main = info.data.get("model_endpoint")
        if isinstance(main, ModelEndpointConfig):
            envs[main.api_key_env] = "[kubernetes.model_endpoint].api_key_env"
        for index, provider in enumerate(providers):
            first = ids.setdefault(provider.provider_id, index)
            if first != index:
                raise _conflict(
                    index,
                    "provider_id",
                    f"provider_id {provider.provider_id!r} is already used by wall_bounce_providers[{first}]",
                )
            owner = envs.setdefault(provider.api_key_env, f"wall_bounce_providers[{index}].api_key_env")
            if owner != f"wall_bounce_providers[{index}].api_key_env":
                raise _conflict(
                    index,
                    "api_key_env",
                    f"api_key_env {provider.api_key_env!r} is already used by {owner}; "
                    "every provider needs its own variable (set api_key_env explicitly)",
                )
        return providers


def _conflict(index: int, key: str, message: str) -> PydanticCustomError:
    """A problem with one list entry found by a validator of the whole list.

    ``at`` is appended to the error's location by :func:`parse_config`, so the
    message names (and the line points at) the entry and key, not just the list.
    """
    return PydanticCustomError("config_conflict", "{message}", {"message": message, "at": [index, key]})


class ModelPrice(_Section):
    """Price of one model, in USD per million tokens."""

    model_config = ConfigDict(extra="forbid")

    provider: str = Field(
        "openai", min_length=1, max_length=64, description="Provider that bills for this model."
    )
    input_usd_per_mtok: float = Field(ge=0, le=10000, description="USD per million input tokens.")
    cached_input_usd_per_mtok: float = Field(
        ge=0, le=10000, description="USD per million input tokens served from the prompt cache."
    )
    output_usd_per_mtok: float = Field(
        ge=0, le=10000, description="USD per million output tokens (reasoning tokens included)."
    )


def _default_prices() -> dict[str, ModelPrice]:
    gpt5 = ModelPrice(input_usd_per_mtok=1.25, cached_input_usd_per_mtok=0.125, output_usd_per_mtok=10.0)
    return {
        "gpt-5": gpt5,
        "gpt-5-codex": gpt5,
        "o1": ModelPrice(input_usd_per_mtok=15.0, cached_input_usd_per_mtok=7.5, output_usd_per_mtok=60.0),
        "o1-mini": ModelPrice(
            input_usd_per_mtok=1.1, cached_input_usd_per_mtok=0.55, output_usd_per_mtok=4.4
        ),
    }


class CostConfig(_Section):
    """``[cost]``: the price table behind estimated and actual session cost."""

    model_config = ConfigDict(extra="forbid")

    models: dict[Annotated[str, Field(min_length=1, max_length=128)], ModelPrice] = Field(
        default_factory=_default_prices,
        max_length=256,
        description='Prices per model slug (``[cost.models."gpt-5-codex"]``).',
    )
    default: ModelPrice = Field(
        default_factory=lambda: ModelPrice(
            input_usd_per_mtok=1.25, cached_input_usd_per_mtok=0.125, output_usd_per_mtok=10.0
        ),
        description="Price used for a model missing from ``models``.",
    )
    chars_per_token: float = Field(
        4.0, gt=0, le=100, description="Characters per token when estimating a prompt's size before a run."
    )
    estimated_output_tokens: int = Field(
        2000, ge=0, le=10_000_000, description="Output tokens assumed for a turn's estimate."
    )

    def price(self, model: str) -> ModelPrice:
        return self.models.get(model, self.default)


_KEY_PREFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")


class RedisConfig(_Section):
    """``[redis]``: where the gateway's Redis is and how long it waits for it.

    Redis only holds rate-limit counters, monthly spend and cached responses: a
    cache, never the truth (sessions and their cost live in CodexSessions).
    """

    model_config = ConfigDict(extra="forbid")

    url_env: str = Field(
        "REDIS_URL",
        min_length=1,
        max_length=128,
        description=(
            "Environment variable holding the Redis URL (redis://[:password@]host:port/db, rediss:// "
            "for TLS). The URL may carry a password, so it never lives in this file; an unset or empty "
            "variable means no Redis (no rate limits, budget or cache)."
        ),
    )
    key_prefix: str = Field(
        "codex-mcp",
        min_length=1,
        max_length=64,
        description="Prefix of every key the gateway writes, so several gateways can share one Redis.",
    )
    timeout_ms: int = Field(
        250,
        ge=10,
        le=10000,
        description="Time limit of each Redis operation in milliseconds; a slower Redis counts as down.",
    )
    retry_seconds: float = Field(
        5.0,
        ge=0.1,
        le=3600,
        description=(
            "After a Redis failure, how long the gateway skips Redis (adding no latency to tool calls) "
            "before trying it again; it recovers by itself, without a restart."
        ),
    )

    @field_validator("url_env")
    @classmethod
    def _check_env(cls, value: str) -> str:
        return _check_env_var_name(value)

    @field_validator("key_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if not _KEY_PREFIX.fullmatch(value):
            raise ValueError(
                "must start with a letter or digit and contain only letters, digits, '_', '.', ':' "
                f"or '-', got {value!r}"
            )
        return value


class LimitsConfig(_Section):
    """``[limits]``: per-user and per-session rate limits and a monthly budget per user (in Redis)."""

    model_config = ConfigDict(extra="forbid")

    requests_per_minute_per_user: int = Field(
        60,
        ge=0,
        le=1_000_000,
        description="Tool calls one user may make per minute (fixed one-minute windows); 0 turns it off.",
    )
    requests_per_minute_per_session: int = Field(
        30,
        ge=0,
        le=1_000_000,
        description=(
            "Tool calls one user may make per minute that name the same session (codex-reply, "
            "codex-session-info with session_id); 0 turns it off."
        ),
    )
    monthly_budget_usd: float = Field(
        0.0,
        ge=0,
        le=1_000_000,
        description=(
            "Spend in USD per user and calendar month (UTC) after which new sessions are refused; "
            "0 means no budget."
        ),
    )
    budget_fail_closed: bool = Field(
        False,
        description=(
            "With Redis unreachable, refuse new sessions (the gateway) and further model requests "
            "(the model proxy) because the budget cannot be checked (true), or let them run "
            "unchecked (false, the default)."
        ),
    )


class CacheConfig(_Section):
    """``[cache]``: a per-user response cache for repeated identical read-only queries (opt-in)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        False,
        description=(
            "Answer a repeated identical read-only query from Redis instead of running a new session; "
            "entries are per user, never shared between users."
        ),
    )
    ttl_seconds: int = Field(
        300,
        ge=1,
        le=86400,
        description="How long a cached response is served, in seconds.",
    )
    max_response_bytes: int = Field(
        262144,
        ge=1024,
        le=16_777_216,
        description="Responses larger than this (as JSON, in bytes) are not cached.",
    )


class ModelProxyConfig(_Section):
    """``[model_proxy]``: the model proxy, the only holder of provider keys. Runner
    pods send it a per-session credential (codex_api.model_credential); it adds
    the provider's key, streams the answer back and meters the usage."""

    model_config = ConfigDict(extra="forbid")

    signing_key_env: str = Field(
        "CODEX_PROXY_SIGNING_KEY",
        min_length=1,
        max_length=128,
        description=(
            "Environment variable holding the key (at least 32 bytes) that signs per-session "
            "credentials; the operator and the proxy read it from the same Secret."
        ),
    )
    session_check_seconds: float = Field(
        2.0,
        ge=0,
        le=60,
        description=(
            "How long the proxy reuses its answer to 'is this session live, and is this its runner "
            "pod' before asking the API server again; an ended session is refused at most this late."
        ),
    )
    check_source_address: bool = Field(
        True,
        description="Accept a session's credential only from the address of that session's runner pod.",
    )
    max_request_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024,
        le=1024 * 1024 * 1024,
        description="Largest request body forwarded (Codex resends the whole conversation each time).",
    )
    upstream_timeout_seconds: float = Field(
        900,
        gt=0,
        le=86400,
        description="Longest a single model request may take, streaming included.",
    )

    url: str = Field(
        "",
        max_length=2048,
        description=(
            "Where runner pods reach the proxy (http://codex-model-proxy.codex-system.svc:8090); when set, "
            "runners get a per-session credential instead of any provider key, and their egress goes to "
            "the proxy and DNS only (besides full-access's public rule). Empty: runners hold the key."
        ),
    )
    egress_cidrs: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="IP ranges (CIDR) of the proxy, for the runners' egress rule (a proxy outside the cluster).",
    )
    namespace_labels: dict[str, str] = Field(
        default_factory=dict,
        max_length=32,
        description="Labels of the proxy's namespace, for the runners' egress rule (a proxy in the cluster).",
    )
    pod_labels: dict[str, str] = Field(
        default_factory=dict,
        max_length=32,
        description="Labels of the proxy's pods, for the runners' egress rule.",
    )

    @field_validator("signing_key_env")
    @classmethod
    def _check_env(cls, value: str) -> str:
        return _check_env_var_name(value)

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not value:
            return value
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises ValueError on a malformed port
        except ValueError as exc:
            raise ValueError(f"must be an http or https URL, got {value!r} ({exc})") from None
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
            raise ValueError(f"must be an http or https URL with a host and no path, got {value!r}")
        return value.rstrip("/")

    @field_validator("egress_cidrs")
    @classmethod
    def _check_cidrs(cls, values: list[str]) -> list[str]:
        return _cidrs(values)

    @field_validator("namespace_labels", "pod_labels")
    @classmethod
    def _check_selector(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_labels(value)

    @model_validator(mode="after")
    def _reachable(self) -> ModelProxyConfig:
        if self.url and not (self.egress_cidrs or self.namespace_labels or self.pod_labels):
            raise ValueError(
                "url is set but the runners' egress rule would have no peer: set egress_cidrs, or "
                "namespace_labels / pod_labels of the proxy's pods"
            )
        return self

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (443 if parts.scheme == "https" else 80)

    def base_url(self, provider_id: str) -> str:
        """A provider's base_url as a runner sees it: the proxy's path for that provider."""
        return f"{self.url}/v1/{provider_id}"


class CodexMCPConfig(_Section):
    """The whole configuration file (``config/codex-mcp.toml``)."""

    model_config = ConfigDict(extra="forbid")

    server: ServerConfig = Field(
        default_factory=ServerConfig, description="Identity announced to MCP clients."
    )
    codex: CodexConfig = Field(
        default_factory=CodexConfig, description="Defaults for Codex sessions that do not set them."
    )
    mcp: MCPConfig = Field(default_factory=MCPConfig, description="Gateway behaviour and session limits.")
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="Log verbosity and location.")
    security: SecurityConfig = Field(
        default_factory=SecurityConfig, description="Risk assessment, auditing and approval policy."
    )
    kubernetes: KubernetesConfig = Field(
        default_factory=KubernetesConfig, description="Cluster settings of the operator and runner pods."
    )
    cost: CostConfig = Field(default_factory=CostConfig, description="Price table for cost tracking.")
    redis: RedisConfig = Field(
        default_factory=RedisConfig,
        description="The gateway's Redis (rate-limit counters, monthly spend, response cache).",
    )
    limits: LimitsConfig = Field(
        default_factory=LimitsConfig, description="Per-user and per-session rate limits and monthly budget."
    )
    cache: CacheConfig = Field(
        default_factory=CacheConfig, description="Per-user response cache for repeated read-only queries."
    )
    model_proxy: ModelProxyConfig = Field(
        default_factory=ModelProxyConfig, description="The model proxy: credentials, checks, limits."
    )

    @model_validator(mode="after")
    def _per_action_needs_live_pods(self) -> CodexMCPConfig:
        if self.security.action_approvals.levels and not self.kubernetes.warm_runners.idle_seconds:
            raise ValueError(
                "security.action_approvals.levels needs kubernetes.warm_runners.idle_seconds > 0: "
                "an action's decision goes to the live pod whose Codex waits for it"
            )
        return self

    @model_validator(mode="after")
    def _pool_needs_proxy(self) -> CodexMCPConfig:
        if self.kubernetes.warm_runners.pool_size and not self.model_proxy.url:
            raise ValueError(
                "kubernetes.warm_runners.pool_sizes needs [model_proxy].url: a pool pod waits for a "
                "conversation nobody has chosen yet, so it may hold no credential until a turn brings one"
            )
        return self


# --------------------------------------------------------------------------- errors


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a configuration file.

    ``path`` is the TOML key path (``mcp.max_concurrent_sessions``,
    ``kubernetes.model_endpoint.egress_ports[0]``); it is empty for problems with
    the file as a whole (unreadable, invalid TOML).
    """

    path: str
    reason: str
    line: int | None = None
    column: int | None = None

    def render(self, source: str) -> str:
        where = ""
        if self.line is not None and self.column is not None:
            where = f" (line {self.line}, column {self.column})"
        elif self.line is not None:
            where = f" (line {self.line})"
        if self.path:
            return f"{source}: {self.path}: {self.reason}{where}"
        return f"{source}: {self.reason}{where}"


class ConfigError(Exception):
    """A configuration file that cannot be used; ``str()`` gives one line per issue."""

    def __init__(self, errors: list[ConfigIssue], source: str = "<string>") -> None:
        self.errors = list(errors)
        self.source = source
        super().__init__(self.__str__())

    def __str__(self) -> str:
        return "\n".join(issue.render(self.source) for issue in self.errors)


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def format_key_path(loc: tuple[str | int, ...]) -> str:
    """Render a pydantic ``loc`` as a TOML dotted key, quoting keys that need it."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            segment = part if _BARE_KEY.fullmatch(part) else json.dumps(part)
            out += f".{segment}" if out else segment
    return out


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, int):
        return f"{value} (an integer)"
    if isinstance(value, float):
        return f"{value!r} (a float)"
    if isinstance(value, str):
        text = repr(value)
        return (text if len(text) <= 60 else text[:57] + "...'") + " (a string)"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, _dt.date | _dt.time):
        return f"{value.isoformat()} (a date/time)"
    return type(value).__name__


_EXPECTED = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "bool_type": "a boolean (true or false)",
    "bool_parsing": "a boolean (true or false)",
    "float_type": "a number",
    "float_parsing": "a number",
    "string_type": "a string",
    "list_type": "an array",
    "dict_type": "a table",
    "model_type": "a table",
    "model_attributes_type": "a table",
}

_BOUNDS = {
    "greater_than_equal": (">=", "ge"),
    "greater_than": (">", "gt"),
    "less_than_equal": ("<=", "le"),
    "less_than": ("<", "lt"),
}


def _model_at(loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The model class that validates the table at ``loc``, to list its allowed keys."""
    model: type[BaseModel] = CodexMCPConfig
    item: type[BaseModel] | None = None  # the item model, after a key holding an array of tables
    for part in loc:
        if isinstance(part, int):
            if item is None:
                return None
            model, item = item, None
            continue
        if item is not None:
            return None
        by_key = {(info.alias or name): info for name, info in model.model_fields.items()}
        info = by_key.get(part)
        annotation = info.annotation if info is not None else None
        if get_origin(annotation) is list:
            (inner,) = get_args(annotation)
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                item = inner
                continue
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return None if item is not None else model


def _reason(error: ErrorDetails) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    value = error.get("input")
    if kind == "extra_forbidden":
        model = _model_at(tuple(error["loc"][:-1]))
        if model is None:
            return "unknown key"
        allowed = ", ".join(info.alias or name for name, info in model.model_fields.items())
        return f"unknown key; allowed keys here: {allowed}"
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {_describe(value)}"
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        return f"must be one of: {', '.join(choices)}; got {_describe(value)}"
    if kind in _BOUNDS:
        op, key = _BOUNDS[kind]
        return f"must be {op} {ctx.get(key)}, got {_describe(value)}"
    if kind == "finite_number":
        return f"must be a finite number, got {_describe(value)}"
    if kind == "string_too_short":
        minimum = ctx.get("min_length", 1)
        return "must not be empty" if minimum == 1 else f"must be at least {minimum} characters long"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters long"
    if kind == "too_short":
        return f"must have at least {ctx.get('min_length')} item(s)"
    if kind == "too_long":
        return f"must have at most {ctx.get('max_length')} items, got {ctx.get('actual_length')}"
    if kind == "missing":
        return "required key is missing"
    message = error["msg"]
    if kind == "value_error":
        message = message.removeprefix("Value error, ")
    return message[:1].lower() + message[1:]


# --------------------------------------------------------------------------- line numbers


def _read_key(line: str, pos: int) -> tuple[tuple[str, ...], int] | None:
    """Parse a (dotted) TOML key at ``pos``; return its parts and the position after it."""
    parts: list[str] = []
    size = len(line)
    while True:
        while pos < size and line[pos] in " \t":
            pos += 1
        if pos >= size:
            return None
        if line[pos] == '"':
            end = pos + 1
            while end < size and line[end] != '"':
                end += 2 if line[end] == "\\" else 1
            if end >= size:
                return None
            raw = line[pos : end + 1]
            try:
                parts.append(json.loads(raw))
            except ValueError:
                parts.append(raw[1:-1])
            pos = end + 1
        elif line[pos] == "'":
            end = line.find("'", pos + 1)
            if end < 0:
                return None
            parts.append(line[pos + 1 : end])
            pos = end + 1
        else:
            match = _BARE_KEY.match(line, pos)
            if match is None:
                return None
            parts.append(match.group())
            pos = match.end()
        while pos < size and line[pos] in " \t":
            pos += 1
        if pos < size and line[pos] == ".":
            pos += 1
            continue
        return tuple(parts), pos


def _key_lines(text: str) -> dict[tuple[str | int, ...], int]:
    """Best-effort map of key paths and table headers to their line numbers.

    Entries of an array of tables (``[[a.b]]``) get their index in the path,
    ``("a", "b", 1, "key")``, so a problem in the second entry points at its
    own line. Only used to point at a line in error messages, after tomllib
    has accepted the text; anything this scanner does not understand just
    gets no line.
    """
    found: dict[tuple[str | int, ...], int] = {}
    table: tuple[str | int, ...] = ()
    arrays: dict[tuple[str, ...], int] = {}  # array-of-tables path -> index of its latest entry
    closing: str | None = None

    def indexed(keys: tuple[str, ...]) -> tuple[str | int, ...]:
        path: list[str | int] = []
        for size in range(1, len(keys) + 1):
            path.append(keys[size - 1])
            if keys[:size] in arrays and size < len(keys):
                path.append(arrays[keys[:size]])
        return tuple(path)

    for lineno, line in enumerate(text.splitlines(), start=1):
        if closing is not None:
            if closing in line:
                closing = None
            continue
        stripped = line.lstrip()
        if stripped.startswith("["):
            is_array = stripped.startswith("[[")
            parsed = _read_key(stripped, 2 if is_array else 1)
            if parsed is not None and stripped[parsed[1] : parsed[1] + 1] == "]":
                keys = parsed[0]
                table = indexed(keys)
                found.setdefault(table, lineno)
                if is_array:
                    arrays[keys] = arrays.get(keys, -1) + 1
                    table = (*table, arrays[keys])
                    found.setdefault(table, lineno)
            continue
        parsed = _read_key(line, 0)
        if parsed is None or line[parsed[1] : parsed[1] + 1] != "=":
            continue
        key, pos = parsed
        for size in range(1, len(key) + 1):
            found.setdefault(table + key[:size], lineno)
        value = line[pos + 1 :].lstrip()
        for delimiter in ('"""', "'''"):
            if value.startswith(delimiter) and delimiter not in value[3:]:
                closing = delimiter
    return found


def _line_of(loc: tuple[str | int, ...], lines: dict[tuple[str | int, ...], int]) -> int | None:
    for size in range(len(loc), 0, -1):
        line = lines.get(loc[:size])
        if line is not None:
            return line
    return None


# --------------------------------------------------------------------------- loading

_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")


def parse_config(text: str, source: str = "<string>") -> CodexMCPConfig:
    """Parse and validate configuration text; raise :class:`ConfigError` listing every problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = _TOML_POSITION.search(message)
        line = column = None
        if match is not None:
            line, column = int(match.group(1)), int(match.group(2))
            message = message[: match.start()]
        raise ConfigError([ConfigIssue("", f"invalid TOML: {message}", line, column)], source) from None
    try:
        return CodexMCPConfig.model_validate(data)
    except ValidationError as exc:
        lines = _key_lines(text)
        issues = []
        for err in exc.errors(include_url=False):
            loc = tuple(err["loc"]) + tuple((err.get("ctx") or {}).get("at") or ())
            issues.append(ConfigIssue(format_key_path(loc), _reason(err), _line_of(loc, lines)))
        # File order reads better than model field order; issues without a line last.
        issues.sort(key=lambda issue: (issue.line is None, issue.line or 0))
        raise ConfigError(issues, source) from None


def load_config(path: str | Path) -> CodexMCPConfig:
    """Read, parse and validate a configuration file; raise :class:`ConfigError` on any problem."""
    source = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError([ConfigIssue("", f"cannot read file: {exc.strerror or exc}")], source) from None
    try:
        # utf-8-sig: a byte-order mark from a Windows editor is not a TOML error.
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [ConfigIssue("", f"file is not valid UTF-8 (byte offset {exc.start})")], source
        ) from None
    return parse_config(text, source)


def redacted_dict(cfg: CodexMCPConfig) -> dict[str, Any]:
    """The effective configuration as JSON-ready data, with TOML key spellings.

    The file holds no secrets by design (they live in Kubernetes Secrets that it
    only names); anything that shows the configuration still goes through here
    so that a future secret-bearing field has one place to be masked.
    """
    return cfg.model_dump(mode="json", by_alias=True)
