"""A session's usage as the model proxy metered it: the body of the proxy's
``GET /v1/usage`` answer, which the operator turns into ``status.usage`` and
``status.cost``.

The proxy counts what the provider reported in each answer's final event, in
a place the runner pod cannot write; so this, not the runner's own report,
is the figure a turn's status, the budget and the cost metrics use. One model
on both sides of the wire, so the two cannot disagree about its shape.
"""

from __future__ import annotations

from pydantic import ConfigDict, Field

from .common import KubeModel
from .session import Usage


class _Wire(KubeModel):
    # A newer proxy may say more than this operator knows: ignore, do not refuse.
    model_config = ConfigDict(extra="ignore")


class ProviderUsage(_Wire):
    """One provider's share of a session's metered usage."""

    provider: str = Field(
        max_length=64, description="Provider id ([kubernetes.model_endpoint] or wall-bounce)."
    )
    model: str | None = Field(default=None, max_length=128, description="The model the proxy priced.")
    usage: Usage = Field(default_factory=Usage, description="Tokens by kind.")
    requests: int = Field(default=0, ge=0, description="Model requests metered.")
    usd: float = Field(default=0.0, ge=0, description="USD metered.")


class MeteredUsage(_Wire):
    """A session's metered usage: totals and per provider. Zeros for a session
    the proxy never served."""

    namespace: str = Field(default="", max_length=253)
    name: str = Field(default="", max_length=253)
    uid: str = Field(default="", max_length=64)
    usage: Usage = Field(default_factory=Usage, description="Tokens by kind, all providers.")
    requests: int = Field(default=0, ge=0, description="Model requests metered, all providers.")
    usd: float = Field(default=0.0, ge=0, description="USD metered, all providers.")
    providers: list[ProviderUsage] = Field(default_factory=list, max_length=64)
