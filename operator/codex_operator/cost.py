"""Session cost from the ``[cost]`` price table: an estimate before the run
(from the prompt's size) and the actual figure after it (from usage)."""

from __future__ import annotations

from codex_api.config import CostConfig
from codex_api.session import Cost, ProviderCost, Usage

_MTOK = 1_000_000


def _round(usd: float) -> float:
    return round(usd, 6)


def estimate(prompt: str, model: str, prices: CostConfig, *, extra_chars: int = 0) -> Cost:
    price = prices.price(model)
    input_tokens = (len(prompt) + extra_chars) / prices.chars_per_token
    usd = _round(
        input_tokens * price.input_usd_per_mtok / _MTOK
        + prices.estimated_output_tokens * price.output_usd_per_mtok / _MTOK
    )
    return Cost(estimated_usd=usd, providers=[ProviderCost(provider=price.provider, estimated_usd=usd)])


def actual(usage: Usage, model: str, prices: CostConfig, *, estimate_: Cost | None = None) -> Cost:
    price = prices.price(model)
    uncached = max(usage.input_tokens - usage.cached_input_tokens, 0)
    # Codex reports reasoning tokens as part of output; they bill as output.
    usd = _round(
        uncached * price.input_usd_per_mtok / _MTOK
        + usage.cached_input_tokens * price.cached_input_usd_per_mtok / _MTOK
        + usage.output_tokens * price.output_usd_per_mtok / _MTOK
    )
    estimated = estimate_.estimated_usd if estimate_ else None
    return Cost(
        estimated_usd=estimated,
        actual_usd=usd,
        providers=[ProviderCost(provider=price.provider, estimated_usd=estimated, actual_usd=usd)],
    )
