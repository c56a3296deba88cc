"""What model usage costs, from the ``[cost]`` price table: the one formula the
operator (a turn's ``status.cost``) and the model proxy (metered spend) share."""

from __future__ import annotations

from codex_api.config import CostConfig
from codex_api.session import Usage

MTOK = 1_000_000


def round_usd(usd: float) -> float:
    return round(usd, 6)


def usd(usage: Usage, model: str, prices: CostConfig) -> float:
    """What ``usage`` of ``model`` costs."""
    price = prices.price(model)
    uncached = max(usage.input_tokens - usage.cached_input_tokens, 0)
    # Reasoning tokens are part of output; they bill as output.
    return round_usd(
        uncached * price.input_usd_per_mtok / MTOK
        + usage.cached_input_tokens * price.cached_input_usd_per_mtok / MTOK
        + usage.output_tokens * price.output_usd_per_mtok / MTOK
    )
