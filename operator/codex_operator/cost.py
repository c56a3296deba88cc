"""Session cost from the ``[cost]`` price table: an estimate before the run
(from the prompt's size) and the actual figure after it (from usage)."""

from __future__ import annotations

from collections.abc import Mapping

from codex_api.config import CostConfig
from codex_api.pricing import MTOK as _MTOK
from codex_api.pricing import round_usd as _round
from codex_api.pricing import usd
from codex_api.session import Cost, ProviderCost, Usage

__all__ = ["actual", "actual_providers", "estimate", "estimate_providers", "usd"]


def estimate(prompt: str, model: str, prices: CostConfig, *, extra_chars: int = 0) -> Cost:
    price = prices.price(model)
    input_tokens = (len(prompt) + extra_chars) / prices.chars_per_token
    usd = _round(
        input_tokens * price.input_usd_per_mtok / _MTOK
        + prices.estimated_output_tokens * price.output_usd_per_mtok / _MTOK
    )
    return Cost(estimated_usd=usd, providers=[ProviderCost(provider=price.provider, estimated_usd=usd)])


def estimate_providers(
    prompt: str, models: Mapping[str, str], prices: CostConfig, *, extra_chars: int = 0
) -> Cost:
    """The estimate of a turn every provider runs: one entry per provider id (priced with its model)."""
    providers = [
        ProviderCost(
            provider=provider,
            estimated_usd=estimate(prompt, model, prices, extra_chars=extra_chars).estimated_usd,
        )
        for provider, model in models.items()
    ]
    return Cost(estimated_usd=_round(sum(p.estimated_usd or 0.0 for p in providers)), providers=providers)


def actual_providers(
    runs: list[tuple[str, Usage, str]], prices: CostConfig, *, estimate_: Cost | None = None
) -> Cost:
    """The cost of a turn several providers ran: ``runs`` is (provider id, usage, model) per run;
    ``actualUsd`` is their sum, each provider keeps its own estimate."""
    estimates = {p.provider: p.estimated_usd for p in (estimate_.providers if estimate_ else [])}
    providers = [
        ProviderCost(
            provider=provider, estimated_usd=estimates.get(provider), actual_usd=usd(usage, model, prices)
        )
        for provider, usage, model in runs
    ]
    return Cost(
        estimated_usd=estimate_.estimated_usd if estimate_ else None,
        actual_usd=_round(sum(p.actual_usd or 0.0 for p in providers)),
        providers=providers,
    )


def actual(usage: Usage, model: str, prices: CostConfig, *, estimate_: Cost | None = None) -> Cost:
    price = prices.price(model)
    amount = usd(usage, model, prices)
    estimated = estimate_.estimated_usd if estimate_ else None
    return Cost(
        estimated_usd=estimated,
        actual_usd=amount,
        providers=[ProviderCost(provider=price.provider, estimated_usd=estimated, actual_usd=amount)],
    )
