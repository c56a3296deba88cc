"""Estimated and actual session cost from the [cost] price table (codex_operator.cost)."""

from __future__ import annotations

from pathlib import Path

import pytest

from codex_api.config import CostConfig, ModelPrice, parse_config
from codex_api.session import Cost, ProviderCost, Usage
from codex_operator import cost

SEED_TEXT = (Path(__file__).resolve().parents[2] / "config" / "codex-mcp.toml").read_text()

PRICES_TOML = """
[cost]
chars_per_token = 4.0
estimated_output_tokens = 1000

[cost.default]
provider = "fallback-co"
input_usd_per_mtok = 2.0
cached_input_usd_per_mtok = 0.5
output_usd_per_mtok = 8.0

[cost.models."gpt-5-codex"]
input_usd_per_mtok = 1.25
cached_input_usd_per_mtok = 0.125
output_usd_per_mtok = 10.0

[cost.models."claude-sonnet"]
provider = "anthropic"
input_usd_per_mtok = 3.0
cached_input_usd_per_mtok = 0.3
output_usd_per_mtok = 15.0
"""


@pytest.fixture(scope="module")
def prices() -> CostConfig:
    return parse_config(SEED_TEXT + PRICES_TOML).cost


def test_seed_has_default_price_table() -> None:
    table = parse_config(SEED_TEXT).cost
    assert table.chars_per_token == 4.0
    assert table.estimated_output_tokens == 2000
    assert table.price("gpt-5-codex") == ModelPrice(
        provider="openai", input_usd_per_mtok=1.25, cached_input_usd_per_mtok=0.125, output_usd_per_mtok=10.0
    )
    assert table.price("o1").output_usd_per_mtok == 60.0
    assert table.price("no-such-model") == table.default


def test_estimate_seed_prices() -> None:
    table = CostConfig()
    # 4000 chars / 4 = 1000 input tokens * 1.25 = 0.00125; 2000 output tokens * 10 = 0.02
    got = cost.estimate("x" * 4000, "gpt-5-codex", table)
    assert got == Cost(
        estimated_usd=0.02125, providers=[ProviderCost(provider="openai", estimated_usd=0.02125)]
    )
    assert got.actual_usd is None
    # extra_chars (e.g. base instructions) count as prompt: 8000 chars = 2000 tokens
    assert cost.estimate("x" * 4000, "gpt-5-codex", table, extra_chars=4000).estimated_usd == 0.0225


def test_estimate_counts_characters_not_bytes(prices: CostConfig) -> None:
    # 400 characters of 3-byte text are still 100 tokens at 4 chars/token
    a = cost.estimate("日" * 400, "gpt-5-codex", prices)
    b = cost.estimate("x" * 400, "gpt-5-codex", prices)
    # 100 * 1.25 / 1e6 + 1000 * 10 / 1e6 = 0.000125 + 0.01
    assert a.estimated_usd == b.estimated_usd == 0.010125


def test_estimate_unknown_model_uses_default(prices: CostConfig) -> None:
    got = cost.estimate("y" * 400, "mystery-model", prices)
    # 100 tokens * 2.0 / 1e6 + 1000 * 8.0 / 1e6 = 0.0002 + 0.008
    assert got == Cost(
        estimated_usd=0.0082, providers=[ProviderCost(provider="fallback-co", estimated_usd=0.0082)]
    )


def test_estimate_per_provider_entry(prices: CostConfig) -> None:
    got = cost.estimate("z" * 4000, "claude-sonnet", prices)
    # 1000 * 3 / 1e6 + 1000 * 15 / 1e6 = 0.003 + 0.015
    assert got.estimated_usd == 0.018
    assert got.providers == [ProviderCost(provider="anthropic", estimated_usd=0.018)]


def test_estimate_fractional_tokens_and_chars_per_token() -> None:
    table = CostConfig(chars_per_token=2.5, estimated_output_tokens=0)
    # 10 chars / 2.5 = 4 tokens * 1.25 / 1e6 = 5e-06
    assert cost.estimate("a" * 10, "gpt-5", table).estimated_usd == 0.000005
    # 2 chars / 2.5 = 0.8 tokens * 1.25 / 1e6 = 1e-06
    assert cost.estimate("aa", "gpt-5", table).estimated_usd == 0.000001
    assert cost.estimate("", "gpt-5", table).estimated_usd == 0.0
    # 6 chars / 2.5 = 2.4 tokens * 1.25 / 1e6 = 3e-06
    assert cost.estimate("a" * 6, "gpt-5", table).estimated_usd == 0.000003


def test_actual_bills_cached_tokens_at_cached_price() -> None:
    usage = Usage(input_tokens=10_000, cached_input_tokens=4_000, output_tokens=3_000)
    got = cost.actual(usage, "gpt-5-codex", CostConfig())
    # uncached 6000 * 1.25 = 0.0075; cached 4000 * 0.125 = 0.0005; output 3000 * 10 = 0.03
    assert got == Cost(
        estimated_usd=None,
        actual_usd=0.038,
        providers=[ProviderCost(provider="openai", estimated_usd=None, actual_usd=0.038)],
    )


def test_actual_all_cached_vs_none_cached() -> None:
    table = CostConfig()
    none_cached = cost.actual(Usage(input_tokens=1_000_000), "gpt-5", table)
    all_cached = cost.actual(Usage(input_tokens=1_000_000, cached_input_tokens=1_000_000), "gpt-5", table)
    assert none_cached.actual_usd == 1.25
    assert all_cached.actual_usd == 0.125


def test_actual_uncached_never_negative() -> None:
    # inconsistent usage (cached > input): uncached clamps to 0, cached still billed
    usage = Usage(input_tokens=100, cached_input_tokens=1_000_000, output_tokens=0)
    assert cost.actual(usage, "gpt-5", CostConfig()).actual_usd == 0.125


def test_actual_reasoning_tokens_not_billed_twice() -> None:
    table = CostConfig()
    base = Usage(input_tokens=0, output_tokens=1000)
    with_reasoning = Usage(input_tokens=0, output_tokens=1000, reasoning_tokens=800)
    assert cost.actual(base, "gpt-5", table).actual_usd == 0.01
    assert cost.actual(with_reasoning, "gpt-5", table).actual_usd == 0.01


def test_actual_zero_usage() -> None:
    got = cost.actual(Usage(), "gpt-5", CostConfig())
    assert got.actual_usd == 0.0
    assert got.providers == [ProviderCost(provider="openai", actual_usd=0.0)]


def test_actual_carries_estimate(prices: CostConfig) -> None:
    est = cost.estimate("z" * 4000, "claude-sonnet", prices)
    usage = Usage(input_tokens=2_000, cached_input_tokens=1_000, output_tokens=500)
    got = cost.actual(usage, "claude-sonnet", prices, estimate_=est)
    # 1000 * 3 + 1000 * 0.3 + 500 * 15 = 3000 + 300 + 7500 = 10800 / 1e6
    assert got == Cost(
        estimated_usd=0.018,
        actual_usd=0.0108,
        providers=[ProviderCost(provider="anthropic", estimated_usd=0.018, actual_usd=0.0108)],
    )
    assert got.to_k8s() == {
        "estimatedUsd": 0.018,
        "actualUsd": 0.0108,
        "providers": [{"provider": "anthropic", "estimatedUsd": 0.018, "actualUsd": 0.0108}],
    }


def test_actual_unknown_model_uses_default(prices: CostConfig) -> None:
    usage = Usage(input_tokens=3_000, cached_input_tokens=1_000, output_tokens=250)
    got = cost.actual(usage, "mystery-model", prices)
    # 2000 * 2.0 + 1000 * 0.5 + 250 * 8.0 = 4000 + 500 + 2000 = 6500 / 1e6
    assert got.actual_usd == 0.0065
    assert got.providers == [ProviderCost(provider="fallback-co", actual_usd=0.0065)]


def test_actual_rounds_to_micro_dollars() -> None:
    # one cached token: 0.125 / 1e6 = 1.25e-07 -> 0.0
    assert cost.actual(Usage(input_tokens=1, cached_input_tokens=1), "gpt-5", CostConfig()).actual_usd == 0.0
    # 7 uncached input tokens at 1.25: 8.75e-06 -> 9e-06
    assert cost.actual(Usage(input_tokens=7), "gpt-5", CostConfig()).actual_usd == 0.000009
