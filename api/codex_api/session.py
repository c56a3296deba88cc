"""CodexSession: one turn of a Codex conversation, run in its own runner pod."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from pydantic import ConfigDict, Field

from .common import (
    CONDITIONS_FIELD_EXTRA,
    DNS1123_SUBDOMAIN,
    MAX_SESSION_NAME,
    ApprovalMode,
    Condition,
    KubeModel,
    RiskLevel,
    SandboxLevel,
    cel,
)
from .sandbox import MAX_WALL_BOUNCE_PROVIDERS, MIN_WALL_BOUNCE_PROVIDERS

KIND = "CodexSession"
PLURAL = "codexsessions"
SHORT_NAMES = ["cxs"]

MAX_PROMPT = 65536
MAX_RESPONSE = 16384
MAX_PROGRESS = 1024
TIMEOUT_MIN, TIMEOUT_MAX = 10, 86400
TTL_MAX = 30 * 86400
# A per-session cost cap above this is a typo, not a cap.
MAX_COST_USD = 10_000

SessionPhase = Literal[
    "Pending",
    "AwaitingApproval",
    "Queued",
    "Running",
    "Succeeded",
    "Failed",
    "Denied",
    "TimedOut",
    "Cancelled",
]
TERMINAL_PHASES: frozenset[str] = frozenset({"Succeeded", "Failed", "Denied", "TimedOut", "Cancelled"})
Mode = Literal["interactive", "non-interactive", "ci"]
ReasoningEffort = Literal["minimal", "low", "medium", "high"]
Verbosity = Literal["low", "medium", "high"]


class Workspace(KubeModel):
    """Where the turn's files and Codex state (CODEX_HOME) live."""

    type: Literal["scratch", "persistent"] = Field(
        default="scratch",
        description=(
            "scratch: an emptyDir that disappears with the pod (the conversation cannot be continued). "
            "persistent: a PersistentVolumeClaim shared by every turn of the conversation, so a reply "
            "sees the files and the Codex history of earlier turns."
        ),
    )
    size: str | None = Field(
        default=None,
        max_length=32,
        pattern=r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$",
        description="Size of the persistent volume (a Kubernetes quantity such as 1Gi). Default from config.",
    )
    storage_class_name: str | None = Field(
        default=None,
        max_length=253,
        pattern=DNS1123_SUBDOMAIN,
        description="StorageClass of the persistent volume. Default from config, else the cluster default.",
    )


class WallBounceSpec(KubeModel):
    """Multi-provider coordination: ask several providers and require agreement."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.providers) || size(self.providers) == 0 || self.minProviders <= size(self.providers)",
                    "minProviders must not exceed the number of providers",
                    field_path=".minProviders",
                )
            ]
        }
    )

    providers: list[str] = Field(
        default_factory=list,
        max_length=MAX_WALL_BOUNCE_PROVIDERS,
        description="Provider ids to consult, from [[kubernetes.wall_bounce_providers]] (e.g. gpt, claude, gemini).",
        json_schema_extra={
            "items": {"type": "string", "maxLength": 64, "pattern": r"^[a-z0-9][a-z0-9._-]*$"}
        },
    )
    min_providers: int = Field(
        default=MIN_WALL_BOUNCE_PROVIDERS,
        ge=1,
        le=MAX_WALL_BOUNCE_PROVIDERS,
        description="Minimum providers that must answer.",
    )
    quality_threshold: float = Field(
        default=0.7, ge=0, le=1, description="Minimum confidence score (0..1) for an answer to be accepted."
    )
    consensus_threshold: float = Field(
        default=0.6, ge=0, le=1, description="Minimum agreement (0..1) between providers."
    )


class CodexSessionSpec(KubeModel):
    """Desired state of a CodexSession. Immutable after creation: a new turn is a new CodexSession."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("self == oldSelf", "spec is immutable after creation; create a new CodexSession instead"),
            ]
        }
    )

    prompt: str = Field(
        min_length=1, max_length=MAX_PROMPT, description="The coding task or question for Codex (required)."
    )
    model: str | None = Field(
        default=None,
        max_length=128,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$",
        description="Model slug (e.g. gpt-5-codex). Default: codex.model from the operator config.",
    )
    sandbox: SandboxLevel = Field(
        default="read-only",
        description=(
            "Sandbox level. read-only: Codex may read the workspace only. isolated: Codex may write the "
            "workspace. full-access: no Codex sandbox inside the pod (the pod is still non-root); "
            "needs approval by default."
        ),
    )
    mode: Mode = Field(default="interactive", description="Execution mode; ci raises the risk level.")
    full_auto: bool = Field(
        default=False, description="Autonomous execution without a human in the loop; raises the risk level."
    )
    reasoning_effort: ReasoningEffort | None = Field(
        default=None, description="Model reasoning effort. Default: the model's own."
    )
    verbosity: Verbosity | None = Field(default=None, description="Verbosity of the answer.")
    resume_from: str | None = Field(
        default=None,
        max_length=253,
        pattern=DNS1123_SUBDOMAIN,
        description=(
            "Name of the previous CodexSession of the same conversation (same namespace): this turn "
            "continues its Codex thread and workspace."
        ),
    )
    base_instructions: str | None = Field(
        default=None, max_length=16384, description="Instructions that replace Codex's base instructions."
    )
    response_language: str | None = Field(
        default=None,
        max_length=35,
        pattern=r"^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*$",
        description="BCP 47 language tag for the answer (e.g. en, ja).",
    )
    timeout_seconds: int | None = Field(
        default=None,
        ge=TIMEOUT_MIN,
        le=TIMEOUT_MAX,
        description=(
            f"Wall-clock limit of the turn in seconds ({TIMEOUT_MIN}..{TIMEOUT_MAX}). "
            "Default: mcp.session_timeout_ms from the operator config."
        ),
    )
    ttl_seconds_after_finished: int | None = Field(
        default=None,
        ge=0,
        le=TTL_MAX,
        description=(
            f"Seconds after the turn finished before the session and its children are deleted "
            f"(0..{TTL_MAX}). Default from the operator config."
        ),
    )
    requested_by: str | None = Field(
        default=None,
        max_length=256,
        description="The user on whose behalf the session runs (set by the gateway from the caller's identity).",
    )
    business_justification: str | None = Field(
        default=None, max_length=2048, description="Why this session is needed; shown to approvers."
    )
    workspace: Workspace | None = Field(default=None, description="Where files and Codex state live.")
    wall_bounce: WallBounceSpec | None = Field(
        default=None, description="Optional multi-provider coordination settings."
    )
    approvals: ApprovalMode | None = Field(
        default=None,
        description=(
            "per-turn: a human approves the whole turn before it starts, where the risk matrix says so "
            "(the seed's gate). per-action: the turn starts, and every command, patch or permission "
            "Codex asks for becomes an ApprovalRequest of its own, decided by "
            "[security.action_approvals] or a human (needs warm runners and a persistent workspace). "
            "Default: per-action for the levels in security.action_approvals.levels, else per-turn."
        ),
    )
    max_cost_usd: float | None = Field(
        default=None,
        gt=0,
        le=MAX_COST_USD,
        description=(
            f"Most this turn may spend on model requests, in USD (above 0, at most {MAX_COST_USD:g}). "
            "Enforced by the model proxy from the usage it meters: once the session's spend reaches it, "
            "the next model request is refused and the turn ends BudgetExceeded with what was done so "
            "far. Needs [model_proxy] (without it the cap is not enforced). Default: no cap besides "
            "the user's monthly budget."
        ),
    )


class Usage(KubeModel):
    """Token usage of this turn (not cumulative over the conversation)."""

    input_tokens: int = Field(default=0, ge=0, description="Input tokens.")
    cached_input_tokens: int = Field(
        default=0, ge=0, description="Input tokens served from the prompt cache."
    )
    output_tokens: int = Field(default=0, ge=0, description="Output tokens.")
    reasoning_tokens: int = Field(default=0, ge=0, description="Reasoning output tokens.")

    @classmethod
    def from_codex(cls, raw: Any) -> Usage:
        """Usage from Codex's own spelling (``turn.completed.usage`` in its JSONL):
        the one place that spelling is read; everything after uses this model."""
        raw = raw if isinstance(raw, dict) else {}

        def tokens(*keys: str) -> int:
            for key in keys:
                value = raw.get(key)
                if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                    return value
            return 0

        return cls(
            input_tokens=tokens("input_tokens"),
            cached_input_tokens=tokens("cached_input_tokens"),
            output_tokens=tokens("output_tokens"),
            reasoning_tokens=tokens("reasoning_output_tokens", "reasoning_tokens"),
        )

    @classmethod
    def from_app_server(cls, raw: Any) -> Usage:
        """Usage from Codex app-server's spelling (``thread/tokenUsage/updated``'s
        ``tokenUsage.last``: this turn's, not the thread's running total)."""
        raw = raw if isinstance(raw, dict) else {}
        return cls.from_codex(
            {
                "input_tokens": raw.get("inputTokens"),
                "cached_input_tokens": raw.get("cachedInputTokens"),
                "output_tokens": raw.get("outputTokens"),
                "reasoning_output_tokens": raw.get("reasoningOutputTokens"),
            }
        )

    @classmethod
    def from_responses_api(cls, raw: Any) -> Usage:
        """Usage from the model API's own spelling (``response.usage`` of the
        Responses API: ``input_tokens_details.cached_tokens``,
        ``output_tokens_details.reasoning_tokens``), as the model proxy meters it."""
        raw = raw if isinstance(raw, dict) else {}
        details_in = raw.get("input_tokens_details")
        details_out = raw.get("output_tokens_details")
        return cls.from_codex(
            {
                "input_tokens": raw.get("input_tokens"),
                "output_tokens": raw.get("output_tokens"),
                "cached_input_tokens": details_in.get("cached_tokens") if isinstance(details_in, dict) else 0,
                "reasoning_tokens": details_out.get("reasoning_tokens")
                if isinstance(details_out, dict)
                else 0,
            }
        )

    def by_kind(self) -> dict[str, int]:
        """Tokens per kind, keyed by the ``kind`` label of the token metrics."""
        return {
            "input": self.input_tokens,
            "cached_input": self.cached_input_tokens,
            "output": self.output_tokens,
            "reasoning": self.reasoning_tokens,
        }

    @classmethod
    def from_kinds(cls, kinds: Mapping[str, int]) -> Usage:
        """The inverse of :meth:`by_kind` (missing kinds are 0)."""
        return cls(
            input_tokens=kinds.get("input", 0),
            cached_input_tokens=kinds.get("cached_input", 0),
            output_tokens=kinds.get("output", 0),
            reasoning_tokens=kinds.get("reasoning", 0),
        )


class ProviderCost(KubeModel):
    """Cost attributed to one provider."""

    provider: str = Field(max_length=64, description="Provider id.")
    estimated_usd: float | None = Field(default=None, ge=0, description="Estimate before the run, USD.")
    actual_usd: float | None = Field(default=None, ge=0, description="Cost from the reported usage, USD.")


class Cost(KubeModel):
    """Estimated and actual cost in USD."""

    estimated_usd: float | None = Field(default=None, ge=0, description="Estimate from the prompt size, USD.")
    actual_usd: float | None = Field(default=None, ge=0, description="Cost computed from usage, USD.")
    providers: list[ProviderCost] = Field(
        default_factory=list, max_length=16, description="Cost per provider."
    )


class Timings(KubeModel):
    """When the turn moved through its lifecycle."""

    queued_at: datetime | None = Field(default=None, description="When the session entered the queue.")
    started_at: datetime | None = Field(default=None, description="When the runner pod started.")
    completed_at: datetime | None = Field(default=None, description="When the turn finished.")
    duration_seconds: float | None = Field(default=None, ge=0, description="Run time of the turn in seconds.")


class Progress(KubeModel):
    """Latest progress reported by the runner (bounded)."""

    last_event: str | None = Field(default=None, max_length=MAX_PROGRESS, description="Last event summary.")
    event_count: int = Field(default=0, ge=0, description="Codex events seen so far.")
    commands: int = Field(default=0, ge=0, description="Commands Codex ran.")
    file_changes: int = Field(default=0, ge=0, description="File changes Codex made.")
    updated_at: datetime | None = Field(default=None, description="When progress was last updated.")


class WallBounceStatus(KubeModel):
    """Outcome of multi-provider coordination."""

    providers_used: list[str] = Field(
        default_factory=list,
        max_length=8,
        description="Providers that answered.",
        json_schema_extra={"items": {"type": "string", "maxLength": 64}},
    )
    consensus_score: float | None = Field(
        default=None, ge=0, le=1, description="Agreement between providers."
    )
    confidence_score: float | None = Field(default=None, ge=0, le=1, description="Confidence in the answer.")


class CodexSessionStatus(KubeModel):
    """Observed state of a CodexSession, written only by the operator."""

    phase: SessionPhase | None = Field(default=None, description="Lifecycle phase of the turn.")
    reason: str | None = Field(default=None, max_length=64, description="CamelCase reason for the phase.")
    message: str | None = Field(default=None, max_length=1024, description="Human-readable phase details.")
    observed_generation: int | None = Field(default=None, ge=0, description="Last generation processed.")
    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=16,
        description="Conditions of the session (Approved, Scheduled, Completed, ...).",
        json_schema_extra=CONDITIONS_FIELD_EXTRA,
    )
    risk_level: RiskLevel | None = Field(default=None, description="Risk level from the risk matrix.")
    model: str | None = Field(default=None, max_length=128, description="Model actually used.")
    approval_ref: str | None = Field(default=None, max_length=253, description="Name of the ApprovalRequest.")
    approvals: ApprovalMode | None = Field(
        default=None,
        description=(
            "How this turn is approved, fixed when it was admitted: per-turn, or per-action (each "
            "action Codex asks for is an ApprovalRequest labelled with this session)."
        ),
    )
    actions_asked: int | None = Field(
        default=None, ge=0, description="Actions Codex asked to take in this turn (per-action approvals)."
    )
    pod_name: str | None = Field(default=None, max_length=253, description="Name of the runner pod.")
    conversation_id: str | None = Field(
        default=None,
        max_length=253,
        description="Id shared by every turn of the conversation (the name of its first session).",
    )
    workspace_claim: str | None = Field(
        default=None,
        max_length=253,
        description=(
            "The conversation's workspace PersistentVolumeClaim (a conversation that began in a warm pool "
            "pod keeps the claim that pod was made with)."
        ),
    )
    thread_id: str | None = Field(default=None, max_length=128, description="The Codex thread id.")
    response: str | None = Field(
        default=None, max_length=MAX_RESPONSE, description="Codex's final message (truncated if longer)."
    )
    response_truncated: bool | None = Field(default=None, description="True when response was truncated.")
    usage: Usage | None = Field(default=None, description="Token usage of this turn.")
    cost: Cost | None = Field(default=None, description="Estimated and actual cost.")
    timings: Timings | None = Field(default=None, description="Lifecycle timestamps.")
    progress: Progress | None = Field(default=None, description="Latest progress.")
    attempts: int | None = Field(default=None, ge=0, le=100, description="Runner pods started for this turn.")
    wall_bounce: WallBounceStatus | None = Field(default=None, description="Multi-provider outcome.")


ROOT_VALIDATIONS: list[dict[str, Any]] = [
    cel(
        f"size(self.metadata.name) <= {MAX_SESSION_NAME}",
        f"metadata.name must be at most {MAX_SESSION_NAME} characters (child objects append a suffix)",
    ),
]

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase", "description": "Lifecycle phase."},
    {"name": "Sandbox", "type": "string", "jsonPath": ".spec.sandbox", "description": "Sandbox level."},
    {"name": "Risk", "type": "string", "jsonPath": ".status.riskLevel", "description": "Risk level."},
    {"name": "Model", "type": "string", "jsonPath": ".status.model", "description": "Model used."},
    {
        "name": "Requester",
        "type": "string",
        "jsonPath": ".spec.requestedBy",
        "priority": 1,
        "description": "Who asked for the session.",
    },
    {
        "name": "Reason",
        "type": "string",
        "jsonPath": ".status.reason",
        "priority": 1,
        "description": "Reason for the phase.",
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]
