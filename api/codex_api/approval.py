"""ApprovalRequest: a human decision gating a risky CodexSession."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field

from .actions import (
    MAX_COMMAND,
    MAX_DIFF_TOTAL,
    MAX_FILES,
    MAX_ID,
    MAX_PATH,
    MAX_PATHS,
    MAX_REASON,
    Action,
    ActionKind,
    Answer,
)
from .binding import DIGEST_PATTERN
from .common import (
    CONDITIONS_FIELD_EXTRA,
    DNS1123_SUBDOMAIN,
    RISK_LEVELS,
    Condition,
    KubeModel,
    RequesterDecides,
    RiskLevel,
    cel,
)

KIND = "ApprovalRequest"
PLURAL = "approvalrequests"
SHORT_NAMES = ["cxar"]

Decision = Literal["Approved", "Denied"]
ApprovalPhase = Literal["Pending", "Approved", "Denied", "Expired"]


def requester_risks(up_to: RequesterDecides) -> tuple[RiskLevel, ...]:
    """The risks of their own actions a requester may approve."""
    return () if up_to == "none" else RISK_LEVELS[: RISK_LEVELS.index(up_to) + 1]


def requester_may_decide(spec: Mapping[str, Any], decision: str | None, up_to: RequesterDecides) -> bool:
    """Whether the requester of this request may make `decision` themselves.

    Only on an action (a per-turn request is the seed's four-eyes gate), and
    only to deny it, which can only make the turn do less, or to approve it up
    to `up_to` risk ([security.action_approvals].requester_decides_up_to):
    what Codex on a laptop asks its own user. The `approval-decision`
    admission policy says the same in CEL; the operator and the gateway ask
    this function.
    """
    if not spec.get("action") or spec.get("policyDecision"):
        return False
    if decision == "Denied":
        return True
    return decision == "Approved" and spec.get("riskLevel") in requester_risks(up_to)


# Everything the operator writes at creation is frozen; only the human's
# decision (and its reason) may be added later, once.
_IMMUTABLE_REQUIRED = (
    "sessionRef",
    "sessionUid",
    "specDigest",
    "toolName",
    "operation",
    "riskLevel",
    "requestedBy",
    "expiresAt",
)
_IMMUTABLE_OPTIONAL = ("arguments", "businessJustification", "action", "policyDecision")


def _immutability_rules() -> list[dict[str, Any]]:
    rules = [
        cel(f"self.{f} == oldSelf.{f}", f"{f} is immutable", field_path=f".{f}") for f in _IMMUTABLE_REQUIRED
    ]
    rules += [
        cel(
            f"has(self.{f}) == has(oldSelf.{f}) && (!has(self.{f}) || self.{f} == oldSelf.{f})",
            f"{f} is immutable",
            field_path=f".{f}",
        )
        for f in _IMMUTABLE_OPTIONAL
    ]
    return rules


class ActionFileChange(KubeModel):
    """One file of a patch Codex asks to apply, with its diff."""

    path: str = Field(max_length=MAX_PATH, description="Absolute path of the file.")
    change: Literal["add", "delete", "update"] = Field(description="add, delete or update.")
    move_to: str | None = Field(
        default=None, max_length=MAX_PATH, description="New path when the file moves."
    )
    diff: str = Field(max_length=MAX_DIFF_TOTAL, description="The diff (the content of an added file).")


class ActionPermissions(KubeModel):
    """Sandbox permissions Codex asks for."""

    network: bool = Field(default=False, description="Network access.")
    read: list[Annotated[str, Field(max_length=MAX_PATH)]] = Field(
        default_factory=list, max_length=MAX_PATHS, description="Paths to read."
    )
    write: list[Annotated[str, Field(max_length=MAX_PATH)]] = Field(
        default_factory=list, max_length=MAX_PATHS, description="Paths to write."
    )


class ApprovalAction(KubeModel):
    """One action a running turn's Codex asks to take, exactly as it will run
    (codex_api.actions.Action): set when the request is per action, not per turn."""

    kind: ActionKind = Field(description="command, file_change or permissions.")
    turn_id: str = Field(max_length=MAX_ID, description="Codex's turn that asks.")
    item_id: str = Field(max_length=MAX_ID, description="Codex's item the action is.")
    approval_id: str | None = Field(
        default=None, max_length=MAX_ID, description="Codex's callback id, if any."
    )
    command: str | None = Field(
        default=None, max_length=MAX_COMMAND, description="The command as Codex runs it (command)."
    )
    cwd: str | None = Field(default=None, max_length=MAX_PATH, description="Its working directory.")
    network_host: str | None = Field(
        default=None, max_length=MAX_PATH, description="The host a network approval is for."
    )
    changes: list[ActionFileChange] = Field(
        default_factory=list, max_length=MAX_FILES, description="Every file of the patch (file_change)."
    )
    permissions: ActionPermissions | None = Field(default=None, description="What is asked (permissions).")
    reason: str | None = Field(default=None, max_length=MAX_REASON, description="Why, in Codex's words.")
    offered: list[Answer] = Field(
        min_length=1,
        max_length=4,
        description="Answers Codex offers: accept, acceptForSession, decline, cancel.",
    )
    hidden_characters: bool = Field(
        default=False,
        description=(
            "The action holds characters a terminal hides or acts on (escapes, carriage returns, "
            "bidi overrides): read it with `kubectl codex describe`, not in a terminal as is."
        ),
    )

    @classmethod
    def of(cls, action: Action) -> ApprovalAction:
        """The request's record of `action` (Codex's thread is the session's, not recorded twice)."""
        return cls.model_validate(action.model_dump(exclude={"thread_id"}))


class PolicyDecision(KubeModel):
    """An action decided by [security.action_approvals], not by a human: recorded
    for the audit trail, final when the request is made."""

    decision: Decision = Field(description="Approved (accepted) or Denied (declined) by the policy.")
    rules: list[Annotated[str, Field(max_length=63)]] = Field(
        default_factory=list, max_length=64, description="The rules that matched, in config order."
    )


class ApprovalRequestSpec(KubeModel):
    """What needs approving, and the decision a human makes with kubectl patch."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                *_immutability_rules(),
                cel(
                    "!has(oldSelf.decision) || (has(self.decision) && self.decision == oldSelf.decision)",
                    "decision can be set only once",
                    field_path=".decision",
                ),
                cel(
                    "!has(oldSelf.decision) || (has(self.reason) == has(oldSelf.reason)"
                    " && (!has(self.reason) || self.reason == oldSelf.reason))",
                    "reason cannot change after the decision was made",
                    field_path=".reason",
                ),
                # The decider is recorded in the same write as the decision, so
                # no one can attach their name to someone else's decision later.
                cel(
                    "!has(self.decidedBy) || has(self.decision)",
                    "decidedBy can be set only together with the decision",
                    field_path=".decidedBy",
                ),
                cel(
                    "!has(oldSelf.decision) || (has(self.decidedBy) == has(oldSelf.decidedBy)"
                    " && (!has(self.decidedBy) || self.decidedBy == oldSelf.decidedBy))",
                    "decidedBy cannot change after the decision was made",
                    field_path=".decidedBy",
                ),
                cel(
                    "!has(self.decision) || self.decision != 'Denied' || (has(self.reason) && size(self.reason) > 0)",
                    "a Denied decision needs a reason",
                    field_path=".reason",
                ),
                cel(
                    "!has(self.policyDecision) || !has(self.decision)",
                    "the policy decided this action already; it takes no other decision",
                    field_path=".decision",
                ),
                cel(
                    "!has(self.policyDecision) || has(self.action)",
                    "only an action is decided by the action policy",
                    field_path=".policyDecision",
                ),
                # "Accept for this session": only with an approval, only where Codex offers it.
                cel(
                    "!has(self.scope) || (has(self.decision) && self.decision == 'Approved')",
                    "scope goes only with an Approved decision",
                    field_path=".scope",
                ),
                cel(
                    "!has(self.scope) || self.scope == 'turn'"
                    " || (has(self.action) && self.action.offered.exists(a, a == 'acceptForSession'))",
                    "scope session only where Codex offers acceptForSession",
                    field_path=".scope",
                ),
                cel(
                    "!has(oldSelf.decision) || (has(self.scope) == has(oldSelf.scope)"
                    " && (!has(self.scope) || self.scope == oldSelf.scope))",
                    "scope cannot change after the decision was made",
                    field_path=".scope",
                ),
            ]
        }
    )

    session_ref: str = Field(
        max_length=253, pattern=DNS1123_SUBDOMAIN, description="Name of the CodexSession awaiting approval."
    )
    session_uid: str = Field(
        min_length=1,
        max_length=64,
        description=(
            "uid of the CodexSession this request was made for: a decision counts only for that "
            "object, never for a later session of the same name."
        ),
    )
    spec_digest: str = Field(
        pattern=DIGEST_PATTERN,
        max_length=71,
        description=(
            "sha256 of the session's spec (canonical JSON) when the request was made: the decision "
            "counts only for exactly that spec. `kubectl codex describe` shows the spec and checks it."
        ),
    )
    tool_name: str = Field(
        max_length=64, pattern=r"^[a-z][a-z0-9-]*$", description="MCP tool that asked for the session."
    )
    operation: str = Field(
        max_length=256, description="What will run, e.g. 'codex exec (sandbox=full-access)'."
    )
    arguments: dict[str, str] | None = Field(
        default=None,
        max_length=32,
        description="Tool arguments, with secrets redacted and long values shortened.",
        json_schema_extra={
            "maxProperties": 32,
            "additionalProperties": {"type": "string", "maxLength": 4096},
        },
    )
    risk_level: RiskLevel = Field(description="Risk level from the risk matrix.")
    requested_by: str = Field(max_length=256, description="The user who asked for the session.")
    business_justification: str | None = Field(
        default=None, max_length=2048, description="Why the requester needs it."
    )
    expires_at: datetime = Field(description="After this time the request is Expired and counts as denied.")
    decision: Decision | None = Field(
        default=None, description="The approver's decision, set once with kubectl patch: Approved or Denied."
    )
    reason: str | None = Field(default=None, max_length=1024, description="Why; required when Denied.")
    action: ApprovalAction | None = Field(
        default=None,
        description="The one action of a running turn this request is about (per-action approvals).",
    )
    policy_decision: PolicyDecision | None = Field(
        default=None,
        description="Set when [security.action_approvals] decided the action without a human.",
    )
    scope: Literal["turn", "session"] | None = Field(
        default=None,
        description=(
            "With Approved on an action: turn (this action) or session (Codex may repeat it in this "
            "conversation without asking: acceptForSession, where Codex offers it)."
        ),
    )
    decided_by: str | None = Field(
        default=None,
        max_length=256,
        description=(
            "Who decided: stamped from the authenticated user of the API request by admission "
            "(the operator's webhook) and verified by the ValidatingAdmissionPolicy, so typing "
            "someone else's name is rejected. Set only together with the decision; never changes."
        ),
    )


class ApprovalRequestStatus(KubeModel):
    """Observed state of an ApprovalRequest, written only by the operator."""

    phase: ApprovalPhase | None = Field(default=None, description="Pending, Approved, Denied or Expired.")
    decided_by: str | None = Field(
        default=None,
        max_length=256,
        description=(
            "Authenticated user of the API request that made the decision (never a typed value); "
            "policy:security.action_approvals for an action the policy decided."
        ),
    )
    decided_at: datetime | None = Field(default=None, description="When the decision was recorded.")
    message: str | None = Field(default=None, max_length=1024, description="Human-readable details.")
    observed_generation: int | None = Field(default=None, ge=0, description="Last generation processed.")
    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=8,
        description="Conditions of the request.",
        json_schema_extra=CONDITIONS_FIELD_EXTRA,
    )


ROOT_VALIDATIONS: list[dict[str, Any]] = []

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase", "description": "Pending/Approved/..."},
    {
        "name": "Session",
        "type": "string",
        "jsonPath": ".spec.sessionRef",
        "description": "Session to approve.",
    },
    {"name": "Risk", "type": "string", "jsonPath": ".spec.riskLevel", "description": "Risk level."},
    {"name": "Requester", "type": "string", "jsonPath": ".spec.requestedBy", "description": "Who asked."},
    {"name": "Decided-By", "type": "string", "jsonPath": ".status.decidedBy", "description": "Who decided."},
    # A string, not a date: kubectl renders a date column as an age, "<invalid>" for the future.
    {
        "name": "Expires",
        "type": "string",
        "format": "date-time",
        "jsonPath": ".spec.expiresAt",
        "priority": 1,
        "description": "When an undecided request counts as denied.",
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]
