"""Pure mapping between MCP tool calls and CodexSession objects.

Tool arguments -> a CodexSession body (the caller becomes ``requestedBy``,
defaults come from the TOML config); a CodexSession as read from the API
server -> the tool's structured result. No I/O here.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictStr

from codex_api import names
from codex_api.common import API_VERSION, DNS1123_SUBDOMAIN, MAX_SESSION_NAME, ApprovalMode, SandboxLevel
from codex_api.config import CodexMCPConfig
from codex_api.sandbox import MIN_WALL_BOUNCE_PROVIDERS, profile, wall_bounce_levels
from codex_api.session import (
    MAX_COST_USD,
    MAX_PROMPT,
    TERMINAL_PHASES,
    CodexSessionSpec,
    CodexSessionStatus,
    Mode,
    ReasoningEffort,
    Verbosity,
)
from codex_api.status import phase_of, session_status

GATEWAY = "codex-gateway"
ANNOTATION_TOOL = f"{names.PREFIX}tool"
SESSION_PREFIX = "cx-"

_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_SESSION_ID = re.compile(DNS1123_SUBDOMAIN)

Prompt = Annotated[
    StrictStr,
    Field(min_length=1, max_length=MAX_PROMPT, description="The coding task or question for Codex."),
]
ModelSlug = Annotated[
    StrictStr,
    Field(
        max_length=128,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$",
        description="Model slug (e.g. gpt-5-codex). Default: codex.model from the gateway config.",
    ),
]
MaxCostUsd = Annotated[
    float,
    Field(
        gt=0,
        le=MAX_COST_USD,
        allow_inf_nan=False,
        description=(
            "Most this turn may spend on model requests, in USD: once spent, its next model request "
            "is refused and the turn ends BudgetExceeded with what was done so far."
        ),
    ),
]
SessionId = Annotated[
    StrictStr,
    Field(
        min_length=1,
        max_length=MAX_SESSION_NAME,
        pattern=DNS1123_SUBDOMAIN,
        description="A session id returned by an earlier call (the CodexSession name).",
    ),
]


class CodexArgs(BaseModel):
    """Arguments of the ``codex`` tool. Strict: "true" is not a boolean."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    prompt: Prompt
    model: ModelSlug | None = None
    sandbox: SandboxLevel | None = None
    mode: Mode | None = None
    full_auto: StrictBool | None = None
    reasoning_effort: ReasoningEffort | None = None
    verbosity: Verbosity | None = None
    wall_bounce: StrictBool | None = None
    max_cost_usd: MaxCostUsd | None = None
    approvals: ApprovalMode | None = None


APPROVALS_DESCRIPTION = (
    "per-turn: a human approves the whole turn first where the risk matrix says so. per-action: the "
    "turn starts and each command or patch Codex asks for is decided on its own (by the cluster's "
    "policy or an approver), and Codex waits for it. Default: the cluster's configuration."
)

WALL_BOUNCE_DESCRIPTION = (
    "Ask every configured provider and compare the answers "
    f"({' or '.join(wall_bounce_levels())} sandbox only)."
)


class ReplyArgs(BaseModel):
    """Arguments of the ``codex-reply`` tool: exactly one of session_id / conversation_id."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    prompt: Prompt
    session_id: SessionId | None = None
    conversation_id: SessionId | None = None

    def target(self) -> tuple[Literal["session", "conversation"], str]:
        if bool(self.session_id) == bool(self.conversation_id):
            raise InvalidArguments("codex-reply needs exactly one of session_id or conversation_id")
        if self.session_id:
            return "session", self.session_id
        assert self.conversation_id is not None
        return "conversation", self.conversation_id


class InvalidArguments(ValueError):
    """Tool arguments that are well-typed but do not make sense together."""


# --------------------------------------------------------------------------- identity and names
def new_session_name() -> str:
    return f"{SESSION_PREFIX}{secrets.token_hex(6)}"


def requester_label(user: str) -> str:
    """A label value for `user`: the name itself when it is a valid label value,
    else a stable hash (e.g. for ``alice@example.com``). Always compare
    ``spec.requestedBy`` as well: the label is an index, not the proof."""
    if len(user) <= 63 and _LABEL_VALUE.fullmatch(user):
        return user
    return "h-" + hashlib.sha256(user.encode()).hexdigest()[:40]


def valid_session_id(value: str) -> bool:
    return 0 < len(value) <= MAX_SESSION_NAME and bool(_SESSION_ID.fullmatch(value))


def owner(obj: dict[str, Any]) -> str | None:
    return (obj.get("spec") or {}).get("requestedBy")


def conversation_of(obj: dict[str, Any], status: CodexSessionStatus | None = None) -> str:
    """The conversation a session belongs to: its status, else its label, else itself."""
    meta = obj.get("metadata") or {}
    status = status if status is not None else session_status(obj)
    return status.conversation_id or (meta.get("labels") or {}).get(names.LABEL_CONVERSATION) or meta["name"]


def latest_turn(turns: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The newest session of a conversation: the end of the resumeFrom chain
    (creationTimestamp has one-second resolution, so it cannot order quick
    turns); among several ends (concurrent replies) the latest created."""
    if not turns:
        return None
    parents = {(t.get("spec") or {}).get("resumeFrom") for t in turns}
    leaves = [t for t in turns if (t.get("metadata") or {}).get("name") not in parents] or turns
    return max(
        leaves,
        key=lambda o: (
            (o.get("metadata") or {}).get("creationTimestamp") or "",
            (o.get("metadata") or {}).get("name") or "",
        ),
    )


# --------------------------------------------------------------------------- args -> body
def build_session(
    args: CodexArgs,
    *,
    user: str,
    config: CodexMCPConfig,
    name: str | None = None,
    tool: str = "codex",
    parent: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The CodexSession body for a tool call. With `parent` (codex-reply) the
    turn resumes from it, joins its conversation and inherits the parent's
    settings where `args` leaves them unset."""
    name = name or new_session_name()
    inherited: dict[str, Any] = dict((parent or {}).get("spec") or {})

    def pick(value: Any, key: str, default: Any = None) -> Any:
        if value is not None:
            return value
        return inherited.get(key, default)

    spec: dict[str, Any] = {
        "prompt": args.prompt,
        "model": pick(args.model, "model", config.codex.model),
        "sandbox": pick(args.sandbox, "sandbox", config.codex.sandbox),
        "requestedBy": user,
        "workspace": {"type": "persistent"},
    }
    for key, value in (
        ("mode", args.mode),
        ("fullAuto", args.full_auto),
        ("reasoningEffort", args.reasoning_effort),
        ("verbosity", args.verbosity),
        ("maxCostUsd", args.max_cost_usd),
        ("approvals", args.approvals),
    ):
        chosen = pick(value, key)
        if chosen is not None:
            spec[key] = chosen
    if args.wall_bounce:
        spec["wallBounce"] = _wall_bounce(spec["sandbox"], config)
    conversation = name
    if parent is not None:
        spec["resumeFrom"] = parent["metadata"]["name"]
        conversation = conversation_of(parent)
    # The same model the API server's schema enforces: a body that passes here
    # is not rejected there for its shape.
    checked = CodexSessionSpec.model_validate(spec).to_k8s()
    if "wallBounce" in checked and not checked["wallBounce"].get("providers"):
        # Left out, not []: empty means "all configured" to the operator, but the
        # CRD's rule checks minProviders against the size of a list that is present.
        del checked["wallBounce"]["providers"]
    return {
        "apiVersion": API_VERSION,
        "kind": "CodexSession",
        "metadata": {
            "name": name,
            "labels": {
                names.LABEL_REQUESTER: requester_label(user),
                names.LABEL_CONVERSATION: conversation,
                names.LABEL_PART_OF: names.PART_OF,
                "app.kubernetes.io/created-by": GATEWAY,
            },
            "annotations": {ANNOTATION_TOOL: tool},
        },
        "spec": checked,
    }


def _wall_bounce(sandbox: str, config: CodexMCPConfig) -> dict[str, Any]:
    """spec.wallBounce for a ``wall_bounce=true`` call: every configured provider
    (``providers`` left out), the thresholds from ``[mcp]``. Refuses what the
    operator would fail, so nothing is created for it."""
    if not config.mcp.enable_wall_bounce:
        raise InvalidArguments("wall_bounce: wall-bounce sessions are disabled on this server")
    if not profile(sandbox).wall_bounce:
        raise InvalidArguments(
            f"wall_bounce needs sandbox {' or '.join(wall_bounce_levels())}, not {sandbox}"
        )
    configured = len(config.kubernetes.wall_bounce_providers)
    if configured < MIN_WALL_BOUNCE_PROVIDERS:
        raise InvalidArguments(
            f"wall_bounce needs at least {MIN_WALL_BOUNCE_PROVIDERS} configured providers; "
            f"this server has {configured}"
        )
    if config.mcp.min_providers > configured:
        raise InvalidArguments(
            f"wall_bounce: the server requires {config.mcp.min_providers} providers to answer "
            f"but has only {configured} configured"
        )
    return {"minProviders": config.mcp.min_providers, "qualityThreshold": config.mcp.quality_threshold}


# --------------------------------------------------------------------------- status -> result
class UsageOut(BaseModel):
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0


class CostOut(BaseModel):
    estimated_usd: float | None = None
    actual_usd: float | None = None


class WallBounceOut(BaseModel):
    """A wall-bounce turn's outcome: who answered and how well they agreed."""

    providers_used: list[str] = Field(default_factory=list)
    consensus_score: float | None = None
    confidence_score: float | None = None


def _rfc3339(value: Any) -> Any:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if isinstance(value, datetime) else value


# As the API server writes it, so a result is plain JSON wherever it is dumped.
Timestamp = Annotated[str | None, BeforeValidator(_rfc3339)]


class TimingsOut(BaseModel):
    queued_at: Timestamp = None
    started_at: Timestamp = None
    completed_at: Timestamp = None
    duration_seconds: float | None = None


class ApprovalOut(BaseModel):
    approval_request: str = Field(description="Name of the ApprovalRequest (kubectl get cxar NAME).")
    namespace: str
    command: str = Field(description="The kubectl command an approver (not the requester) runs.")
    plugin_command: str = Field(description="The same with the kubectl plugin (it fills in who decided).")


class SessionResult(BaseModel):
    """One turn as the client sees it."""

    session_id: str
    conversation_id: str
    thread_id: str | None = Field(default=None, description="The Codex thread id.")
    phase: str = Field(description="Pending, AwaitingApproval, Queued, Running, Succeeded, Failed, ...")
    done: bool = Field(description="True when the phase is terminal.")
    status: Literal["completed", "failed", "running", "awaiting_approval"]
    response: str | None = None
    response_truncated: bool | None = None
    reason: str | None = None
    message: str | None = None
    risk_level: str | None = None
    model: str | None = None
    sandbox: str | None = None
    requested_by: str | None = None
    usage: UsageOut | None = None
    cost: CostOut | None = None
    timings: TimingsOut | None = None
    last_event: str | None = None
    wall_bounce: WallBounceOut | None = None
    approval: ApprovalOut | None = None
    next_step: str | None = Field(default=None, description="What to do to get the outcome, when not done.")
    cached: bool | None = Field(
        default=None,
        description="True when answered from the response cache (an earlier identical read-only turn).",
    )


class SessionInfoResult(BaseModel):
    """``codex-session-info``: one session, or the caller's active ones."""

    session: SessionResult | None = None
    sessions: list[SessionResult] = Field(default_factory=list)


def approval_command(name: str, namespace: str) -> str:
    return (
        f'kubectl patch cxar {name} -n {namespace} --type merge -p \'{{"spec":{{"decision":"Approved"}}}}\''
    )


def _status_kind(phase: str) -> Literal["completed", "failed", "running", "awaiting_approval"]:
    if phase == "Succeeded":
        return "completed"
    if phase in TERMINAL_PHASES:
        return "failed"
    if phase == "AwaitingApproval":
        return "awaiting_approval"
    return "running"


def session_result(obj: dict[str, Any]) -> SessionResult:
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = session_status(obj)
    name = meta["name"]
    namespace = meta.get("namespace") or ""
    phase = status.phase or "Pending"
    kind = _status_kind(phase)
    approval = None
    if phase == "AwaitingApproval":
        ar = status.approval_ref or names.approval_request(name)
        approval = ApprovalOut(
            approval_request=ar,
            namespace=namespace,
            command=approval_command(ar, namespace),
            plugin_command=f"kubectl codex approve {ar} -n {namespace}",
        )
    next_step = None
    if kind == "running":
        next_step = f"still {phase}: call codex-session-info with session_id={name!r} to get the result"
    elif kind == "awaiting_approval":
        next_step = (
            f"an approver other than the requester runs: {approval.command if approval else ''} "
            f"(or {approval.plugin_command if approval else ''}); without the operator's webhook the "
            'patch also needs "decidedBy": the approver\'s own username. '
            f"Then call codex-session-info with session_id={name!r}"
        )

    def out(model: type[BaseModel], value: BaseModel | None) -> Any:
        # The status models and the *Out models share their snake_case field names.
        return model.model_validate(value, from_attributes=True) if value else None

    return SessionResult(
        session_id=name,
        conversation_id=conversation_of(obj, status),
        thread_id=status.thread_id,
        phase=phase,
        done=phase in TERMINAL_PHASES,
        status=kind,
        response=status.response,
        response_truncated=status.response_truncated,
        reason=status.reason,
        message=status.message,
        risk_level=status.risk_level,
        model=status.model or spec.get("model"),
        sandbox=spec.get("sandbox"),
        requested_by=spec.get("requestedBy"),
        usage=out(UsageOut, status.usage),
        cost=out(CostOut, status.cost),
        timings=out(TimingsOut, status.timings),
        last_event=status.progress.last_event if status.progress else None,
        wall_bounce=out(WallBounceOut, status.wall_bounce),
        approval=approval,
        next_step=next_step,
    )


def settled(obj: dict[str, Any]) -> bool:
    """A tool call stops waiting: the turn ended, or it needs a human."""
    phase = phase_of(obj)
    return phase in TERMINAL_PHASES or phase == "AwaitingApproval"


def progress_message(obj: dict[str, Any]) -> str:
    status = session_status(obj)
    phase = status.phase or "Pending"
    last = status.progress.last_event if status.progress else None
    return f"{phase}: {last}" if last else phase


# --------------------------------------------------------------------------- cleanup
class CleanupResult(BaseModel):
    """``codex-cleanup``: which sessions were removed (the operator deletes them
    on the gateway's request; a running one is cancelled first)."""

    scope: Literal["mine", "all"] = Field(description="Your sessions, or (admins with force) everyone's.")
    force: bool
    removed: list[str] = Field(default_factory=list, description="Gone by the time of the answer.")
    pending: list[str] = Field(
        default_factory=list, description="Removal requested; the operator finishes it shortly."
    )
    cancelled: list[str] = Field(
        default_factory=list, description="Were still running or waiting: cancelled, then removed."
    )
    failed: dict[str, str] = Field(default_factory=dict, description="Session -> why it could not be marked.")
    kept_active: int = Field(0, description="Your unfinished sessions left alone (use force to remove them).")


def cleanup_targets(sessions: list[dict[str, Any]], force: bool) -> tuple[list[dict[str, Any]], int]:
    """What codex-cleanup removes: finished ("expired") sessions, or with
    `force` every session; and how many unfinished ones it leaves."""
    finished = [o for o in sessions if phase_of(o) in TERMINAL_PHASES]
    if force:
        return list(sessions), 0
    return finished, len(sessions) - len(finished)
