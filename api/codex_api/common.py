"""Building blocks shared by the custom resources: group/version, field
helpers that carry Kubernetes schema hints, and the standard Condition type."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "codex.techsapo.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# DNS-1123 subdomain: what Kubernetes accepts as an object name.
DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# Children are named "<session>-<suffix>"; 50 leaves room for suffixes and
# keeps pod names under the 63-character label limit.
MAX_SESSION_NAME = 50

SandboxLevel = Literal["read-only", "isolated", "full-access"]
RiskLevel = Literal["low", "medium", "high", "critical"]
# Who decides a turn: a human before it starts, or each action Codex asks for (issue 15).
ApprovalMode = Literal["per-turn", "per-action"]
SANDBOX_LEVELS: tuple[SandboxLevel, ...] = ("read-only", "isolated", "full-access")
RISK_LEVELS: tuple[RiskLevel, ...] = ("low", "medium", "high", "critical")
# How far the requester of an action may approve it themselves ([security.action_approvals]).
RequesterDecides = Literal["none", "low", "medium"]


class KubeModel(BaseModel):
    """Base for everything that becomes part of a CRD schema: camelCase on the
    wire, snake_case in Python, unknown fields rejected."""

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        use_attribute_docstrings=False,
    )

    def to_k8s(self) -> dict[str, Any]:
        """The object as the API server expects it: aliases, JSON types, no unset fields."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def cel(
    rule: str, message: str, *, field_path: str | None = None, reason: str | None = None
) -> dict[str, Any]:
    """One x-kubernetes-validations entry."""
    entry: dict[str, Any] = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    if reason:
        entry["reason"] = reason
    return entry


class Condition(KubeModel):
    """Standard Kubernetes condition: the latest observation of one aspect of the object's state."""

    type: str = Field(
        description="Type of the condition, in CamelCase (e.g. Approved, PodReady, Completed).",
        max_length=64,
        pattern=r"^[A-Za-z][A-Za-z0-9]*$",
    )
    status: Literal["True", "False", "Unknown"] = Field(description="Status of the condition.")
    reason: str = Field(
        default="",
        description="Machine-readable CamelCase reason for the last transition.",
        max_length=64,
    )
    message: str = Field(
        default="", description="Human-readable details of the last transition.", max_length=1024
    )
    last_transition_time: datetime | None = Field(
        default=None, description="When the status of this condition last changed."
    )
    observed_generation: int | None = Field(
        default=None, ge=0, description="The .metadata.generation this condition was computed from."
    )


CONDITIONS_FIELD_EXTRA: dict[str, Any] = {
    "x-kubernetes-list-type": "map",
    "x-kubernetes-list-map-keys": ["type"],
}
