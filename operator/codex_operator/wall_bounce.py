"""Wall-bounce sessions: which configured providers a session consults, and
whether it may run at all. Pure functions of the spec and the configuration.

A wall-bounce turn asks every provider the same prompt in one runner pod and
compares the answers, so it is only offered where running the prompt several
times changes nothing: a read-only sandbox, and a first turn (each provider
would need its own Codex thread to resume).

Defaults: ``minProviders`` and ``qualityThreshold`` come from the spec. The
CRD defaults them (2 and 0.7, the same as ``[mcp].min_providers`` and
``quality_threshold``), so the API server fills them in and the operator cannot
tell an unset value from an explicit one; the gateway's ``codex`` tool writes
the configured values into the spec. ``consensusThreshold`` is not used: the
runner compares the chosen answer's confidence with ``qualityThreshold``.
"""

from __future__ import annotations

from dataclasses import dataclass

from codex_api.config import CodexMCPConfig, WallBounceProviderConfig
from codex_api.sandbox import MIN_WALL_BOUNCE_PROVIDERS, profile, wall_bounce_levels
from codex_api.session import CodexSessionSpec
from codex_runner.contract import WallBounceProvider, WallBounceSettings

__all__ = [
    "MIN_WALL_BOUNCE_PROVIDERS",
    "WallBouncePlan",
    "WallBounceRefused",
    "plan_wall_bounce",
]


class WallBounceRefused(ValueError):
    """A wall-bounce session that cannot run; ``reason`` is the session's status reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class WallBouncePlan:
    """The providers a wall-bounce session consults, in configuration order."""

    providers: tuple[WallBounceProviderConfig, ...]
    min_providers: int
    quality_threshold: float

    def settings(self) -> WallBounceSettings:
        return WallBounceSettings(
            providers=tuple(
                WallBounceProvider(
                    provider_id=p.provider_id, base_url=p.base_url, api_key_env=p.api_key_env, model=p.model
                )
                for p in self.providers
            ),
            min_providers=self.min_providers,
            quality_threshold=self.quality_threshold,
        )

    def models(self) -> dict[str, str]:
        """Provider id -> the configured model, to price a run that reports no model."""
        return {p.provider_id: p.model for p in self.providers}


def plan_wall_bounce(spec: CodexSessionSpec, config: CodexMCPConfig) -> WallBouncePlan | None:
    """The session's plan; None for an ordinary session; :class:`WallBounceRefused` when it cannot run."""
    wb = spec.wall_bounce
    if wb is None:
        return None
    if not config.mcp.enable_wall_bounce:
        raise WallBounceRefused(
            "WallBounceDisabled", "wall-bounce sessions are disabled ([mcp].enable_wall_bounce = false)"
        )
    configured = {p.provider_id: p for p in config.kubernetes.wall_bounce_providers}
    if wb.providers:
        unknown = [p for p in wb.providers if p not in configured]
        if unknown:
            known = ", ".join(configured) or "none"
            raise WallBounceRefused(
                "InvalidWallBounce",
                f"wallBounce.providers: unknown provider(s) {', '.join(map(repr, unknown))} "
                f"(configured: {known})",
            )
        duplicates = sorted({p for p in wb.providers if wb.providers.count(p) > 1})
        if duplicates:
            raise WallBounceRefused(
                "InvalidWallBounce",
                f"wallBounce.providers: {', '.join(map(repr, duplicates))} listed more than once",
            )
        chosen = tuple(configured[p] for p in wb.providers)
    else:
        chosen = tuple(configured.values())
    if len(chosen) < MIN_WALL_BOUNCE_PROVIDERS:
        where = "listed" if wb.providers else "configured ([[kubernetes.wall_bounce_providers]])"
        raise WallBounceRefused(
            "InvalidWallBounce",
            f"a wall-bounce session needs at least {MIN_WALL_BOUNCE_PROVIDERS} providers; "
            f"{len(chosen)} {where}",
        )
    if wb.min_providers > len(chosen):
        raise WallBounceRefused(
            "InvalidWallBounce",
            f"wallBounce.minProviders is {wb.min_providers} but the session consults only "
            f"{len(chosen)} provider(s)",
        )
    if not profile(spec.sandbox).wall_bounce:
        raise WallBounceRefused(
            "InvalidWallBounce",
            f"a wall-bounce session must use the {' or '.join(wall_bounce_levels())} sandbox, not {spec.sandbox} "
            "(every provider runs the prompt)",
        )
    if spec.resume_from:
        raise WallBounceRefused(
            "InvalidWallBounce",
            "a wall-bounce session cannot continue a conversation (resumeFrom is set); start a new one",
        )
    return WallBouncePlan(
        providers=chosen, min_providers=wb.min_providers, quality_threshold=wb.quality_threshold
    )
