"""The gateway guard against a real redis-server: rate limits, monthly budget,
idempotent spend, the response cache, and a Redis outage and its recovery
without a restart (same Guard object, same port)."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import redis

from codex_api.config import CodexMCPConfig
from codex_gateway.guard import BudgetExceeded, Guard, RateLimited

pytestmark = pytest.mark.redis

# 2025-03-14T15:00:10Z: ten seconds into a minute, mid-month.
T0 = 1741964410.0


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_config(prefix: str, **sections: dict[str, Any]) -> CodexMCPConfig:
    redis_section = {"key_prefix": prefix, **sections.pop("redis", {})}
    return CodexMCPConfig.model_validate({"redis": redis_section, **sections})


@pytest.fixture
def prefix() -> str:
    return f"t{secrets.token_hex(4)}"


# The guards live on the test's own event loop, so their fixture does too.
@pytest_asyncio.fixture(loop_scope="function")
async def new_guard(redis_server: Any, prefix: str) -> AsyncIterator[Callable[..., Guard]]:
    made: list[Guard] = []

    def make(clock: Clock | None = None, url: str | None = None, **sections: dict[str, Any]) -> Guard:
        guard = Guard(make_config(prefix, **sections), url or redis_server.url, clock=clock or Clock())
        made.append(guard)
        return guard

    yield make
    for guard in made:
        await guard.close()


def keys(redis_server: Any, prefix: str) -> dict[str, int]:
    """Every key under `prefix` with its TTL in seconds."""
    r = redis.Redis.from_url(redis_server.url)
    try:
        return {k.decode(): r.ttl(k) for k in r.scan_iter(f"{prefix}:*")}
    finally:
        r.close()


# --------------------------------------------------------------------------- rate limits


async def test_user_limit_trips_at_the_exact_count_and_resets_next_minute(
    new_guard: Callable[..., Guard], redis_server: Any, prefix: str
) -> None:
    clock = Clock()
    guard = new_guard(clock, limits={"requests_per_minute_per_user": 3, "requests_per_minute_per_session": 0})
    for _ in range(3):
        await guard.check_rate("alice", "s-1")
    with pytest.raises(RateLimited) as caught:
        await guard.check_rate("alice")
    assert caught.value.retry_after_seconds == 50
    assert "at most 3 tool calls per minute" in str(caught.value)
    with pytest.raises(RateLimited):  # refused calls count too: still refused
        await guard.check_rate("alice")
    await guard.check_rate("bob")  # per user
    clock.now += 49.5  # last half second of the minute
    with pytest.raises(RateLimited) as caught:
        await guard.check_rate("alice")
    assert caught.value.retry_after_seconds == 1
    clock.now += 0.5  # the next minute
    for _ in range(3):
        await guard.check_rate("alice")
    with pytest.raises(RateLimited):
        await guard.check_rate("alice")
    ttls = keys(redis_server, prefix)
    assert len(ttls) == 3  # alice twice, bob once
    assert all(0 < ttl <= 120 for ttl in ttls.values())


async def test_session_limit_is_per_user_and_session(new_guard: Callable[..., Guard]) -> None:
    clock = Clock()
    guard = new_guard(clock, limits={"requests_per_minute_per_user": 0, "requests_per_minute_per_session": 2})
    await guard.check_rate("alice", "s-1")
    await guard.check_rate("alice", "s-1")
    with pytest.raises(RateLimited) as caught:
        await guard.check_rate("alice", "s-1")
    assert "at most 2 calls per minute naming session 's-1'" in str(caught.value)
    await guard.check_rate("alice", "s-2")
    for _ in range(10):
        await guard.check_rate("alice")  # calls naming no session: no session limit
    # Naming alice's session does not use up alice's limit.
    await guard.check_rate("mallory", "s-1")
    await guard.check_rate("mallory", "s-1")
    with pytest.raises(RateLimited):
        await guard.check_rate("mallory", "s-1")
    with pytest.raises(RateLimited):
        await guard.check_rate("alice", "s-1")
    clock.now += 60
    await guard.check_rate("alice", "s-1")


async def test_both_limits_together(new_guard: Callable[..., Guard]) -> None:
    guard = new_guard(limits={"requests_per_minute_per_user": 4, "requests_per_minute_per_session": 2})
    await guard.check_rate("alice", "s-1")
    await guard.check_rate("alice", "s-1")
    with pytest.raises(RateLimited, match="session"):
        await guard.check_rate("alice", "s-1")  # third for s-1, third for alice
    await guard.check_rate("alice", "s-2")  # fourth for alice
    with pytest.raises(RateLimited, match="tool calls per minute"):
        await guard.check_rate("alice", "s-3")  # fifth for alice


async def test_limits_off_touch_no_redis(
    new_guard: Callable[..., Guard], redis_server: Any, prefix: str
) -> None:
    guard = new_guard(limits={"requests_per_minute_per_user": 0, "requests_per_minute_per_session": 0})
    for _ in range(100):
        await guard.check_rate("alice", "s-1")
    await guard.check_budget("alice")  # no budget either
    assert keys(redis_server, prefix) == {}
    assert guard.status() == {"configured": True, "reachable": None, "last_error": None}
    assert await guard.ping() is True
    assert guard.status() == {"configured": True, "reachable": True, "last_error": None}


# --------------------------------------------------------------------------- budget


async def test_budget_trips_and_resets_next_month(
    new_guard: Callable[..., Guard], redis_server: Any, prefix: str
) -> None:
    clock = Clock()
    guard = new_guard(clock, limits={"monthly_budget_usd": 1.0})
    await guard.check_budget("alice")
    assert await guard.add_cost("alice", "s-1", 0.6) is True
    await guard.check_budget("alice")
    assert await guard.add_cost("alice", "s-2", 0.39) is True
    await guard.check_budget("alice")
    assert await guard.add_cost("alice", "s-3", 0.01) is True
    assert await guard.month_spend("alice") == pytest.approx(1.0)
    with pytest.raises(BudgetExceeded) as caught:
        await guard.check_budget("alice")
    assert "1.00 of 1.00 USD spent in 2025-03 (UTC)" in str(caught.value)
    await guard.check_budget("bob")
    ttls = keys(redis_server, prefix)
    assert set(ttls) == {
        f"{prefix}:spend:alice:2025-03",
        f"{prefix}:charged:s-1",
        f"{prefix}:charged:s-2",
        f"{prefix}:charged:s-3",
    }
    assert all(39 * 86400 < ttl <= 40 * 86400 for ttl in ttls.values())
    clock.now += 31 * 86400  # April
    await guard.check_budget("alice")
    assert await guard.month_spend("alice") == 0.0
    # A session counted in March is not counted again in April.
    assert await guard.add_cost("alice", "s-1", 0.6) is False
    assert await guard.month_spend("alice") == 0.0


async def test_add_cost_is_idempotent_per_session(new_guard: Callable[..., Guard]) -> None:
    guard = new_guard(limits={"monthly_budget_usd": 100.0})
    assert await guard.add_cost("alice", "s-1", 1e-05) is True
    assert await guard.add_cost("alice", "s-1", 1e-05) is False
    results = await asyncio.gather(*(guard.add_cost("alice", "s-2", 0.25) for _ in range(20)))
    assert results.count(True) == 1
    assert await guard.month_spend("alice") == pytest.approx(0.25001)
    assert await guard.add_cost("alice", "s-3", 0.0) is False  # nothing to count
    # Spend is recorded even without a budget, so one set mid-month sees it.
    unbudgeted = new_guard()
    assert await unbudgeted.add_cost("bob", "s-9", 2.5) is True
    assert await unbudgeted.month_spend("bob") == 2.5


# --------------------------------------------------------------------------- cache


async def test_cache_is_off_by_default(
    new_guard: Callable[..., Guard], redis_server: Any, prefix: str
) -> None:
    guard = new_guard()
    assert await guard.cache_put("alice", "codex", {"prompt": "x"}, {"answer": "y"}) is False
    assert await guard.cache_get("alice", "codex", {"prompt": "x"}) is None
    assert keys(redis_server, prefix) == {}


async def test_cache_hits_per_user_and_expires(
    new_guard: Callable[..., Guard], redis_server: Any, prefix: str
) -> None:
    guard = new_guard(cache={"enabled": True, "ttl_seconds": 120, "max_response_bytes": 2048})
    args = {"prompt": "explain main.py", "sandbox": "read-only"}
    answer = {"status": "Succeeded", "response": "It prints hello. é", "usage": {"input_tokens": 12}}
    assert await guard.cache_get("alice", "codex", args) is None
    assert await guard.cache_put("alice", "codex", args, answer) is True
    assert await guard.cache_get("alice", "codex", args) == answer
    same = {"sandbox": "read-only", "prompt": "explain main.py", "model": None}
    assert await guard.cache_get("alice", "codex", same) == answer
    assert await guard.cache_get("bob", "codex", args) is None  # never another user's answer
    assert await guard.cache_get("alice", "codex-reply", args) is None
    assert await guard.cache_get("alice", "codex", {**args, "prompt": "explain x.py"}) is None
    # Too big for max_response_bytes: not stored.
    big = {"response": "x" * 2048}
    assert await guard.cache_put("alice", "codex", {"prompt": "big"}, big) is False
    assert await guard.cache_get("alice", "codex", {"prompt": "big"}) is None
    ttls = keys(redis_server, prefix)
    assert len(ttls) == 1
    assert all(110 < ttl <= 120 for ttl in ttls.values())


# --------------------------------------------------------------------------- outage


async def _quick(awaitable: Any, limit: float = 0.5) -> Any:
    started = time.monotonic()
    result = await awaitable
    assert time.monotonic() - started < limit
    return result


async def test_redis_outage_fails_open_and_recovers_without_restart(
    tmp_path: Path, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    from codex_devenv.redis_server import RedisServer

    server = RedisServer(tmp_path / "redis").start()
    port = server.port
    guard = Guard(
        make_config(
            prefix,
            redis={"timeout_ms": 200, "retry_seconds": 0.5},
            limits={
                "requests_per_minute_per_user": 3,
                "requests_per_minute_per_session": 0,
                "monthly_budget_usd": 1.0,
            },
            cache={"enabled": True},
        ),
        server.url,
        clock=Clock(),
    )
    try:
        await guard.check_rate("alice")
        assert await guard.cache_put("alice", "codex", {"prompt": "p"}, {"a": 1}) is True
        assert guard.status()["reachable"] is True

        server.stop()
        with caplog.at_level(logging.INFO, logger="codex_gateway.guard"):
            # Limit 3, one call already counted: 20 more are allowed (fail open), each quickly.
            for _ in range(20):
                await _quick(guard.check_rate("alice"))
                await _quick(guard.check_budget("alice"))
                assert await _quick(guard.cache_get("alice", "codex", {"prompt": "p"})) is None
                assert await _quick(guard.cache_put("alice", "codex", {"prompt": "q"}, {"b": 2})) is False
            assert await _quick(guard.add_cost("alice", "s-1", 0.5)) is False
            status = guard.status()
            assert status["configured"] is True and status["reachable"] is False
            assert "ConnectionError" in str(status["last_error"])
            assert await _quick(guard.ping()) is False

            server.start()  # a fresh, empty Redis on the same port
            assert server.port == port
            await asyncio.sleep(0.6)  # retry_seconds
            for _ in range(3):
                await guard.check_rate("alice")
            with pytest.raises(RateLimited):
                await guard.check_rate("alice")
            assert await guard.cache_get("alice", "codex", {"prompt": "p"}) is None  # Redis forgot
            assert await guard.cache_put("alice", "codex", {"prompt": "p"}, {"a": 3}) is True
            assert await guard.cache_get("alice", "codex", {"prompt": "p"}) == {"a": 3}
            assert await guard.add_cost("alice", "s-1", 1.0) is True
            with pytest.raises(BudgetExceeded):
                await guard.check_budget("alice")
            assert guard.status() == {"configured": True, "reachable": True, "last_error": None}
        messages = [r.getMessage() for r in caplog.records]
        warnings = [m for m in messages if "rate limits and cache fail open" in m]
        assert len(warnings) == 1, messages
        assert sum("reachable again" in m for m in messages) == 1
        assert any("spend of session s-1 (user=alice, 0.5 USD) not recorded" in m for m in messages)
    finally:
        await guard.close()
        server.stop()


async def test_fail_closed_budget_refuses_while_redis_is_down(tmp_path: Path, prefix: str) -> None:
    from codex_devenv.redis_server import RedisServer

    server = RedisServer(tmp_path / "redis").start()
    guard = Guard(
        make_config(
            prefix,
            redis={"timeout_ms": 200, "retry_seconds": 0.3},
            limits={"monthly_budget_usd": 5.0, "budget_fail_closed": True},
        ),
        server.url,
    )
    try:
        await guard.check_budget("alice")
        server.stop()
        for _ in range(5):
            with pytest.raises(BudgetExceeded, match=r"^budget cannot be checked: Redis unavailable$"):
                await _quick(guard.check_budget("alice"))
        await _quick(guard.check_rate("alice"))  # rate limits still fail open
        server.start()
        await asyncio.sleep(0.4)
        await guard.check_budget("alice")
        assert guard.status()["reachable"] is True
    finally:
        await guard.close()
        server.stop()


async def test_password_in_url_works_and_a_wrong_one_is_never_logged(
    tmp_path: Path, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    from codex_devenv.redis_server import RedisServer

    server = RedisServer(tmp_path / "redis").start()
    admin = redis.Redis.from_url(server.url)
    admin.config_set("requirepass", "right-pw-0815")
    admin.close()
    cfg = make_config(prefix, limits={"requests_per_minute_per_user": 1})
    good = Guard(cfg, server.url.replace("redis://", "redis://:right-pw-0815@"))
    bad = Guard(cfg, server.url.replace("redis://", "redis://:not-the-pw-4711@"))
    try:
        with caplog.at_level(logging.DEBUG, logger="codex_gateway.guard"):
            await good.check_rate("alice")
            with pytest.raises(RateLimited):
                await good.check_rate("alice")
            for _ in range(3):
                await bad.check_rate("bob")  # fails open
        assert bad.status()["reachable"] is False
        assert "AuthenticationError" in str(bad.status()["last_error"])
        for secret in ("not-the-pw-4711", "right-pw-0815"):
            assert secret not in caplog.text
            assert secret not in str(bad.status())
        assert f"url=redis://:***@127.0.0.1:{server.port}/0" in caplog.text
    finally:
        await good.close()
        await bad.close()
        server.stop()
