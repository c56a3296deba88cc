"""The gateway guard's pure parts (keys, canonical JSON, months, URL redaction),
its `[redis]`/`[limits]`/`[cache]` configuration, and its behaviour without a
Redis or against a dead port (no redis-server needed: local sockets only)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from codex_api.config import CodexMCPConfig, ConfigError, parse_config, redacted_dict
from codex_gateway.guard import (
    BudgetExceeded,
    Guard,
    RateLimited,
    _plain_decimal,
    cache_key,
    canonical_json,
    charged_key,
    month_key,
    rate_keys,
    redact_url,
    redis_url_from_env,
    spend_key,
    window_of,
)


def _config(**sections: dict[str, Any]) -> CodexMCPConfig:
    return CodexMCPConfig.model_validate(sections)


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --------------------------------------------------------------------------- configuration


def test_new_tables_default_when_absent() -> None:
    cfg = parse_config("")
    assert (cfg.redis.url_env, cfg.redis.key_prefix) == ("REDIS_URL", "codex-mcp")
    assert (cfg.redis.timeout_ms, cfg.redis.retry_seconds) == (250, 5.0)
    limits = cfg.limits
    assert (limits.requests_per_minute_per_user, limits.requests_per_minute_per_session) == (60, 30)
    assert (limits.monthly_budget_usd, limits.budget_fail_closed) == (0.0, False)
    assert (cfg.cache.enabled, cfg.cache.ttl_seconds, cfg.cache.max_response_bytes) == (False, 300, 262144)


def test_new_tables_accept_valid_values_and_round_trip() -> None:
    cfg = parse_config(
        "[redis]\n"
        'url_env = "CODEX_REDIS_URL"\n'
        'key_prefix = "team-a:codex.mcp_1"\n'
        "timeout_ms = 10\n"
        "retry_seconds = 2\n"
        "[limits]\n"
        "requests_per_minute_per_user = 0\n"
        "requests_per_minute_per_session = 1000000\n"
        "monthly_budget_usd = 25\n"
        "budget_fail_closed = true\n"
        "[cache]\n"
        "enabled = true\n"
        "ttl_seconds = 86400\n"
        "max_response_bytes = 1024\n"
    )
    # Integers are fine where a number is expected; they become floats.
    assert cfg.redis.retry_seconds == 2.0 and isinstance(cfg.redis.retry_seconds, float)
    assert cfg.limits.monthly_budget_usd == 25.0 and isinstance(cfg.limits.monthly_budget_usd, float)
    assert cfg.redis.key_prefix == "team-a:codex.mcp_1"
    data = redacted_dict(cfg)
    assert data["redis"]["url_env"] == "CODEX_REDIS_URL"
    assert data["limits"]["budget_fail_closed"] is True
    assert CodexMCPConfig.model_validate(data) == cfg


# (id, TOML text, key path, reason fragment, line)
BAD = [
    ("redis-url-in-file", '[redis]\nurl = "redis://:pw@h/0"\n', "redis.url", "allowed keys here: url_env", 2),
    ("url-env-not-a-name", '[redis]\nurl_env = "redis-url"\n', "redis.url_env", "environment variable", 2),
    ("url-env-empty", '[redis]\nurl_env = ""\n', "redis.url_env", "must not be empty", 2),
    ("prefix-with-space", '[redis]\nkey_prefix = "codex mcp"\n', "redis.key_prefix", "must start with", 2),
    ("prefix-too-long", f'[redis]\nkey_prefix = "{"p" * 65}"\n', "redis.key_prefix", "at most 64", 2),
    ("timeout-too-small", "[redis]\ntimeout_ms = 5\n", "redis.timeout_ms", "must be >= 10, got 5", 2),
    ("timeout-too-big", "[redis]\ntimeout_ms = 10001\n", "redis.timeout_ms", "must be <= 10000", 2),
    ("timeout-string", '[redis]\ntimeout_ms = "250"\n', "redis.timeout_ms", "expected an integer", 2),
    ("retry-zero", "[redis]\nretry_seconds = 0\n", "redis.retry_seconds", "must be >= 0.1", 2),
    ("retry-huge", "[redis]\nretry_seconds = 3601\n", "redis.retry_seconds", "must be <= 3600", 2),
    ("retry-inf", "[redis]\nretry_seconds = inf\n", "redis.retry_seconds", "finite number", 2),
    (
        "per-user-negative",
        "[limits]\nrequests_per_minute_per_user = -1\n",
        "limits.requests_per_minute_per_user",
        "must be >= 0, got -1",
        2,
    ),
    (
        "per-session-float",
        "[limits]\nrequests_per_minute_per_session = 1.5\n",
        "limits.requests_per_minute_per_session",
        "expected an integer, got 1.5",
        2,
    ),
    (
        "per-user-huge",
        "[limits]\nrequests_per_minute_per_user = 1000001\n",
        "limits.requests_per_minute_per_user",
        "must be <= 1000000",
        2,
    ),
    (
        "budget-negative",
        "[limits]\nmonthly_budget_usd = -5.0\n",
        "limits.monthly_budget_usd",
        "must be >= 0",
        2,
    ),
    (
        "budget-string",
        '[limits]\nmonthly_budget_usd = "10"\n',
        "limits.monthly_budget_usd",
        "expected a number, got '10'",
        2,
    ),
    ("budget-nan", "[limits]\nmonthly_budget_usd = nan\n", "limits.monthly_budget_usd", "finite", 2),
    (
        "fail-closed-string",
        '[limits]\nbudget_fail_closed = "yes"\n',
        "limits.budget_fail_closed",
        "expected a boolean",
        2,
    ),
    ("cache-enabled-int", "[cache]\nenabled = 1\n", "cache.enabled", "expected a boolean", 2),
    ("cache-ttl-zero", "[cache]\nttl_seconds = 0\n", "cache.ttl_seconds", "must be >= 1", 2),
    ("cache-ttl-huge", "[cache]\nttl_seconds = 86401\n", "cache.ttl_seconds", "must be <= 86400", 2),
    (
        "cache-max-tiny",
        "[cache]\nmax_response_bytes = 100\n",
        "cache.max_response_bytes",
        "must be >= 1024",
        2,
    ),
    (
        "cache-max-huge",
        "[cache]\nmax_response_bytes = 16777217\n",
        "cache.max_response_bytes",
        "must be <= 16777216",
        2,
    ),
    ("cache-unknown-key", "[cache]\nsize = 3\n", "cache.size", "allowed keys here: enabled, ttl_seconds", 2),
    ("limits-not-a-table", "limits = 5\n", "limits", "expected a table", 1),
]


@pytest.mark.parametrize(("text", "path", "reason", "line"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_guard_config_names_the_key(text: str, path: str, reason: str, line: int) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source="bad.toml")
    issues = {issue.path: issue for issue in caught.value.errors}
    assert path in issues, f"{path!r} not among {sorted(issues)}"
    issue = issues[path]
    assert reason in issue.reason
    assert issue.line == line
    assert f"bad.toml: {path}: {issue.reason} (line {line})" in str(caught.value).splitlines()


def test_bad_guard_config_cases_are_distinct() -> None:
    assert len({c[0] for c in BAD}) == len({c[1] for c in BAD}) == len(BAD)


# --------------------------------------------------------------------------- pure parts


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:hunter2@redis:6379/0", "redis://:***@redis:6379/0"),
        ("rediss://alice:s3cr%40t@redis.example.com:6380/1", "rediss://alice:***@redis.example.com:6380/1"),
        ("redis://tokenlike@redis/0", "redis://***@redis/0"),
        ("redis://redis/0?password=hunter2&db=1", "redis://redis/0?password=***&db=1"),
        ("unix://:pw123@/run/redis.sock?db=2", "unix://:***@/run/redis.sock?db=2"),
        ("redis://:pw@host:notaport/0", "<unparseable URL>"),
    ],
)
def test_redact_url_masks_credentials(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_redis_url_from_env() -> None:
    cfg = _config(redis={"url_env": "MY_REDIS"})
    assert redis_url_from_env(cfg, {}) is None
    assert redis_url_from_env(cfg, {"MY_REDIS": "  "}) is None
    assert redis_url_from_env(cfg, {"REDIS_URL": "redis://x/0"}) is None
    assert redis_url_from_env(cfg, {"MY_REDIS": "redis://x/0\n"}) == "redis://x/0"


def test_canonical_json_has_one_spelling() -> None:
    a = canonical_json({"b": [1, {"y": 2, "x": 1}], "a": "é"})
    b = canonical_json({"a": "é", "b": [1, {"x": 1, "y": 2}]})
    assert a == b == '{"a":"é","b":[1,{"x":1,"y":2}]}'
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})
    with pytest.raises(TypeError):
        canonical_json({"x": object()})


def test_cache_key_is_per_user_tool_and_args() -> None:
    key = cache_key("p", "alice", "codex", {"prompt": "hi", "sandbox": "read-only"})
    assert key.startswith("p:cache:") and len(key.split(":")[-1]) == 64
    # Argument order and omitted-vs-null do not matter.
    assert key == cache_key("p", "alice", "codex", {"sandbox": "read-only", "prompt": "hi", "model": None})
    others = {
        cache_key("p", "bob", "codex", {"prompt": "hi", "sandbox": "read-only"}),
        cache_key("p", "alice", "codex-reply", {"prompt": "hi", "sandbox": "read-only"}),
        cache_key("p", "alice", "codex", {"prompt": "hi!", "sandbox": "read-only"}),
        cache_key("q", "alice", "codex", {"prompt": "hi", "sandbox": "read-only"}),
    }
    assert key not in others and len(others) == 4
    # The parts are JSON-encoded together: no concatenation ambiguity.
    assert cache_key("p", "a", "bc", {}) != cache_key("p", "ab", "c", {})


def test_rate_keys_encode_names_injectively() -> None:
    assert rate_keys("p", "alice", None, 7) == ("p:rate:u:alice:7", None)
    assert rate_keys("p", "alice", "s-1", 7) == ("p:rate:u:alice:7", "p:rate:s:alice:s-1:7")
    # A ':' in a name cannot spell another user's or session's key.
    assert rate_keys("p", "a:b", "c", 7)[1] == "p:rate:s:a%3Ab:c:7"
    assert rate_keys("p", "a", "b:c", 7)[1] == "p:rate:s:a:b%3Ac:7"
    assert rate_keys("p", "a%3Ab", None, 7)[0] == "p:rate:u:a%253Ab:7"
    assert (
        spend_key("p", "system:serviceaccount:x", "2025-01") == "p:spend:system%3Aserviceaccount%3Ax:2025-01"
    )
    assert charged_key("p", "hello-1") == "p:charged:hello-1"


def test_windows_and_months_are_utc() -> None:
    assert window_of(0) == 0 and window_of(59.999) == 0 and window_of(60) == 1
    assert month_key(0) == "1970-01"
    end_of_january = 1738367999  # 2025-01-31T23:59:59Z
    assert month_key(end_of_january) == "2025-01"
    assert month_key(end_of_january + 1) == "2025-02"
    assert month_key(1735689599) == "2024-12"  # new year's eve, 23:59:59Z


def test_plain_decimal_never_uses_exponents() -> None:
    assert _plain_decimal(1e-05) == "0.00001"
    assert _plain_decimal(0.1) == "0.1"
    assert _plain_decimal(12.0) == "12.0"
    assert float(_plain_decimal(1.2345678901234e-7)) == 1.2345678901234e-7


# --------------------------------------------------------------------------- without Redis


async def test_without_redis_everything_is_allowed(caplog: pytest.LogCaptureFixture) -> None:
    cfg = _config(
        limits={"requests_per_minute_per_user": 1, "monthly_budget_usd": 1.0, "budget_fail_closed": True},
        cache={"enabled": True},
    )
    with caplog.at_level(logging.WARNING, logger="codex_gateway.guard"):
        guard = Guard(cfg, None)
    assert "budget of 1.0 USD is not enforced" in caplog.text
    for _ in range(5):
        await guard.check_rate("alice", "s-1")
        await guard.check_budget("alice")
    assert await guard.add_cost("alice", "s-1", 5.0) is False
    assert await guard.cache_put("alice", "codex", {"prompt": "x"}, {"answer": 1}) is False
    assert await guard.cache_get("alice", "codex", {"prompt": "x"}) is None
    assert await guard.month_spend("alice") is None
    assert guard.status() == {"configured": False, "reachable": None, "last_error": None}
    assert await guard.ping() is False
    await guard.close()


@pytest.mark.parametrize("usd", [-0.01, float("nan"), float("inf")])
async def test_add_cost_rejects_nonsense(usd: float) -> None:
    with pytest.raises(ValueError, match="finite number >= 0"):
        await Guard(_config(), None).add_cost("alice", "s-1", usd)


def test_bad_url_is_refused_without_showing_the_password() -> None:
    with pytest.raises(ValueError) as caught:
        Guard(_config(), "http://:topsecret99@127.0.0.1:1/0")
    assert "$REDIS_URL is not a usable Redis URL (http://:***@127.0.0.1:1/0)" in str(caught.value)
    assert "topsecret99" not in str(caught.value)


# --------------------------------------------------------------------------- a dead Redis


class Listener:
    """A local TCP port that counts connections and either closes them at once
    (a broken Redis) or holds them open without answering (a hung one)."""

    def __init__(self, hang: bool) -> None:
        self.hang = hang
        self.connections = 0
        self.port = 0
        self._held: list[asyncio.StreamWriter] = []

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.hang:
            self._held.append(writer)
        else:
            writer.close()


@contextlib.asynccontextmanager
async def listening(hang: bool) -> AsyncIterator[Listener]:
    listener = Listener(hang)
    server = await asyncio.start_server(listener._handle, "127.0.0.1", 0)
    listener.port = server.sockets[0].getsockname()[1]
    try:
        yield listener
    finally:
        for writer in listener._held:
            writer.close()
        server.close()
        await server.wait_closed()


def _dead_config(**limits: Any) -> CodexMCPConfig:
    return _config(
        redis={"timeout_ms": 100, "retry_seconds": 30},
        limits={"requests_per_minute_per_user": 1, "requests_per_minute_per_session": 1, **limits},
        cache={"enabled": True},
    )


@pytest.mark.parametrize("hang", [False, True], ids=["closes", "hangs"])
async def test_dead_redis_fails_open_and_is_skipped_until_retry(
    hang: bool, caplog: pytest.LogCaptureFixture
) -> None:
    mono = FakeMonotonic()
    async with listening(hang) as port:
        url = f"redis://:hunter2-pw@127.0.0.1:{port.port}/0"
        guard = Guard(_dead_config(monthly_budget_usd=1.0), url, monotonic=mono)
        with caplog.at_level(logging.DEBUG, logger="codex_gateway.guard"):
            started = time.monotonic()
            await guard.check_rate("alice", "s-1")  # the failure: bounded by timeout_ms
            assert time.monotonic() - started < 0.9
            attempts = port.connections
            assert attempts >= 1
            status = guard.status()
            assert status["configured"] is True and status["reachable"] is False
            assert status["last_error"]
            # Within retry_seconds Redis is not even tried: no latency, no connection.
            started = time.monotonic()
            for _ in range(50):
                await guard.check_rate("alice", "s-1")
                await guard.check_budget("alice")
                assert await guard.cache_get("alice", "codex", {"prompt": "p"}) is None
                assert await guard.cache_put("alice", "codex", {"prompt": "p"}, {"a": 1}) is False
            assert time.monotonic() - started < 0.5
            assert port.connections == attempts
            assert await guard.add_cost("alice", "s-1", 0.5) is False
            # After retry_seconds, the next call tries again (and fails again, quietly).
            mono.now += 30
            await guard.check_rate("alice")
            assert port.connections > attempts
        outage = [r for r in caplog.records if "rate limits and cache fail open" in r.getMessage()]
        assert len(outage) == 1 and outage[0].levelno == logging.WARNING
        assert "redis://:***@127.0.0.1" in outage[0].getMessage()
        assert "operation=rate limit" in outage[0].getMessage()
        assert any("spend of session s-1" in r.getMessage() for r in caplog.records)
        assert "hunter2-pw" not in caplog.text
        assert "hunter2-pw" not in str(guard.status())
        await guard.close()


async def test_dead_redis_with_fail_closed_budget_refuses_at_once() -> None:
    mono = FakeMonotonic()
    async with listening(hang=False) as port:
        guard = Guard(
            _dead_config(monthly_budget_usd=10.0, budget_fail_closed=True),
            f"redis://127.0.0.1:{port.port}/0",
            monotonic=mono,
        )
        for _ in range(3):
            started = time.monotonic()
            with pytest.raises(BudgetExceeded, match=r"^budget cannot be checked: Redis unavailable$"):
                await guard.check_budget("alice")
            assert time.monotonic() - started < 0.9
        # Rate limits still fail open.
        await guard.check_rate("alice", "s-1")
        await guard.close()


async def test_ping_probes_even_during_the_pause() -> None:
    mono = FakeMonotonic()
    async with listening(hang=False) as port:
        guard = Guard(_dead_config(), f"redis://127.0.0.1:{port.port}/0", monotonic=mono)
        await guard.check_rate("alice")
        before = port.connections
        assert await guard.ping() is False
        assert port.connections > before
        assert guard.status()["reachable"] is False
        await guard.close()


def test_rate_limited_carries_retry_after() -> None:
    err = RateLimited("slow down", 12)
    assert (str(err), err.retry_after_seconds) == ("slow down", 12)
