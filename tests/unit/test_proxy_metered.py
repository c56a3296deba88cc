"""The model proxy's metered usage: the session hash as `GET /v1/usage`
answers it, the endpoint's refusals, and the per-session cost cap
(codex_proxy.meter, codex_proxy.server, codex_proxy.sessions)."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from codex_api.config import CodexMCPConfig, parse_config
from codex_api.metered import MeteredUsage
from codex_api.model_credential import SessionRef, mint
from codex_api.session import Usage
from codex_devenv.fake_model import Usage as Reported
from codex_devenv.fake_model import message_item, respond, sse_events
from codex_gateway.guard import BudgetExceeded, Guard, RedisUnavailable
from codex_proxy.meter import Meter, cap_refusal, metered_from_hash
from codex_proxy.server import ModelProxy, Upstream
from codex_proxy.sessions import LiveSession, SessionChecker, cost_cap

KEY = b"k" * 32
REF = SessionRef("team", "fix-bug", "6f1c1f57-0c38-4b7e-9d43-3c2f0c3f0a11")


def config(extra: str = "") -> CodexMCPConfig:
    return parse_config('[redis]\nkey_prefix = "p"\n' + extra)


# --------------------------------------------------------------------------- the hash


def test_a_session_hash_reads_as_totals_and_per_provider() -> None:
    raw = {
        b"input": b"2700",
        b"cached_input": b"1200",
        b"output": b"380",
        b"reasoning": b"40",
        b"requests": b"3",
        b"usd": b"0.00712",
        b"gpt:input": b"2000",
        b"gpt:cached_input": b"1200",
        b"gpt:output": b"300",
        b"gpt:reasoning": b"40",
        b"gpt:requests": b"2",
        b"gpt:usd": b"0.0061",
        b"gpt:model": b"gpt-5",
        b"local:input": b"700",
        b"local:output": b"80",
        b"local:requests": b"1",
        b"local:usd": b"0.00102",
        b"local:model": b"qwen",
    }
    metered = metered_from_hash(REF, raw)
    assert (metered.namespace, metered.name, metered.uid) == (REF.namespace, REF.name, REF.uid)
    assert metered.usage == Usage(
        input_tokens=2700, cached_input_tokens=1200, output_tokens=380, reasoning_tokens=40
    )
    assert (metered.requests, metered.usd) == (3, 0.00712)
    assert [(p.provider, p.model, p.requests, p.usd) for p in metered.providers] == [
        ("gpt", "gpt-5", 2, 0.0061),
        ("local", "qwen", 1, 0.00102),
    ]
    assert metered.providers[1].usage == Usage(input_tokens=700, output_tokens=80)
    # The wire shape: camelCase, the same model reads it back.
    wire = metered.to_k8s()
    assert wire["usage"] == {
        "inputTokens": 2700,
        "cachedInputTokens": 1200,
        "outputTokens": 380,
        "reasoningTokens": 40,
    }
    assert wire["providers"][0]["usage"]["inputTokens"] == 2000
    assert MeteredUsage.model_validate(wire) == metered


def test_an_unknown_session_is_zeros_and_garbage_counts_nothing() -> None:
    empty = metered_from_hash(REF, {})
    assert (empty.usage, empty.requests, empty.usd, empty.providers) == (Usage(), 0, 0.0, [])
    odd = metered_from_hash(REF, {"input": "x", "usd": "-3", "requests": "2.0"})
    assert (odd.usage.input_tokens, odd.usd, odd.requests) == (0, 0.0, 2)


# --------------------------------------------------------------------------- the cap


@pytest.mark.parametrize(
    ("spec", "cap"),
    [
        ({}, None),
        ({"maxCostUsd": 0.5}, 0.5),
        ({"maxCostUsd": 2}, 2.0),
        ({"maxCostUsd": 0}, None),
        ({"maxCostUsd": -1}, None),
        ({"maxCostUsd": "1"}, None),
        ({"maxCostUsd": True}, None),
        ({"maxCostUsd": math.nan}, None),
    ],
)
def test_the_cap_is_read_from_the_spec(spec: dict[str, Any], cap: float | None) -> None:
    assert cost_cap(spec) == cap


def test_the_cap_refuses_once_reached() -> None:
    assert cap_refusal(0.05, 0.0) is None
    assert cap_refusal(0.05, 0.049999) is None
    assert cap_refusal(0.05, 0.05) == "session cost cap of $0.05 spent (0.05 USD metered for this session)"
    assert "session cost cap of $2 spent" in (cap_refusal(2.0, 3.5) or "")


class FakeRedis:
    def __init__(self, fields: dict[str, bytes]) -> None:
        self.fields = fields

    async def hget(self, key: str, field: str) -> bytes | None:
        return self.fields.get(f"{key}#{field}")

    async def hgetall(self, key: str) -> dict[bytes, bytes]:
        prefix = f"{key}#"
        return {k[len(prefix) :].encode(): v for k, v in self.fields.items() if k.startswith(prefix)}


class FakeGuard:
    """The guard's surface the meter uses: the key spelling is the real one."""

    def __init__(self, cfg: CodexMCPConfig, redis: FakeRedis | None, *, down: bool = False) -> None:
        self._real = Guard(cfg, None)
        self.redis, self.down = redis, down
        self.budget_checked: list[str] = []

    @property
    def configured(self) -> bool:
        return self.redis is not None

    def key(self, kind: str, name: str) -> str:
        return self._real.key(kind, name)

    async def check_budget(self, user: str) -> None:
        self.budget_checked.append(user)

    async def call(self, operation: str, command: Callable[[Any], Awaitable[Any]]) -> Any:
        if self.down or self.redis is None:
            raise RedisUnavailable(operation)
        return await command(self.redis)


def live(cap: float | None) -> LiveSession:
    return LiveSession(REF, "alice", frozenset({"fake"}), frozenset(), max_cost_usd=cap)


def meter(guard: FakeGuard, cfg: CodexMCPConfig) -> Meter:
    return Meter(cast(Guard, guard), cfg)


async def test_the_meter_checks_the_users_month_then_the_sessions_cap() -> None:
    cfg = config()
    key = f"p:usage:s:team%2Ffix-bug%2F{REF.uid}"
    guard = FakeGuard(cfg, FakeRedis({f"{key}#usd": b"0.2"}))
    m = meter(guard, cfg)
    assert m.session_key(REF) == key  # the UID is part of it: a reused name starts at zero
    await m.check_budget(live(None))
    await m.check_budget(live(0.5))
    with pytest.raises(BudgetExceeded, match=r"session cost cap of \$0\.2 spent"):
        await m.check_budget(live(0.2))
    assert guard.budget_checked == ["alice"] * 3


@pytest.mark.parametrize("fail_closed", [False, True])
async def test_redis_down_keeps_the_budgets_fail_open_or_closed_choice(fail_closed: bool) -> None:
    cfg = config(f"[limits]\nbudget_fail_closed = {str(fail_closed).lower()}\n")
    m = meter(FakeGuard(cfg, FakeRedis({}), down=True), cfg)
    if fail_closed:
        with pytest.raises(BudgetExceeded, match="cannot be checked"):
            await m.check_budget(live(1.0))
    else:
        await m.check_budget(live(1.0))
    await m.check_budget(live(None))  # no cap: nothing more to read
    # No Redis configured at all: nothing is metered, so nothing is capped (as the monthly budget).
    await meter(FakeGuard(cfg, None), cfg).check_budget(live(1.0))


# --------------------------------------------------------------------------- GET /v1/usage


async def _client(guard: FakeGuard, cfg: CodexMCPConfig) -> TestClient[Any, Any]:
    proxy = ModelProxy(cfg, KEY, cast(SessionChecker, object()), meter(guard, cfg), {})
    client: TestClient[Any, Any] = TestClient(TestServer(proxy.app()))
    await client.start_server()
    return client


@contextlib.asynccontextmanager
async def usage_client() -> AsyncIterator[TestClient[Any, Any]]:
    cfg = config()
    key = f"p:usage:s:team%2Ffix-bug%2F{REF.uid}"
    redis = FakeRedis(
        {
            f"{key}#input": b"10",
            f"{key}#output": b"5",
            f"{key}#requests": b"1",
            f"{key}#usd": b"0.00006",
            f"{key}#fake:input": b"10",
            f"{key}#fake:output": b"5",
            f"{key}#fake:requests": b"1",
            f"{key}#fake:usd": b"0.00006",
            f"{key}#fake:model": b"fake-model",
        }
    )
    client = await _client(FakeGuard(cfg, redis), cfg)
    yield client
    await client.close()


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


async def test_the_usage_endpoint_answers_the_credentials_own_session() -> None:
    async with usage_client() as client:
        await _own_session(client)


async def _own_session(usage_client: TestClient[Any, Any]) -> None:
    resp = await usage_client.get("/v1/usage", headers=bearer(mint(KEY, REF)))
    assert resp.status == 200
    body = await resp.json()
    assert body == {
        "namespace": "team",
        "name": "fix-bug",
        "uid": REF.uid,
        "usage": {"inputTokens": 10, "cachedInputTokens": 0, "outputTokens": 5, "reasoningTokens": 0},
        "requests": 1,
        "usd": 0.00006,
        "providers": [
            {
                "provider": "fake",
                "model": "fake-model",
                "usage": {"inputTokens": 10, "cachedInputTokens": 0, "outputTokens": 5, "reasoningTokens": 0},
                "requests": 1,
                "usd": 0.00006,
            }
        ],
    }
    other = SessionRef("team", "fix-bug", "another-uid")  # same name, another object
    resp = await usage_client.get("/v1/usage", headers=bearer(mint(KEY, other)))
    body = await resp.json()
    assert resp.status == 200 and body["uid"] == "another-uid"
    assert (body["requests"], body["usd"], body["providers"]) == (0, 0.0, [])


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer "},
        bearer(mint(b"x" * 32, REF)),  # another installation's
        bearer(mint(KEY, REF)[:-4] + "AAAA"),  # forged
        bearer("sk-not-a-credential"),
    ],
)
async def test_the_usage_endpoint_refuses_without_a_valid_credential(headers: dict[str, str]) -> None:
    async with usage_client() as client:
        resp = await client.get("/v1/usage", headers=headers)
        assert resp.status == 401
        assert (await resp.json())["error"]["code"] == "invalid_credential"


@pytest.mark.parametrize("redis", ["down", "unconfigured"])
async def test_the_usage_endpoint_says_so_when_redis_cannot_answer(redis: str) -> None:
    cfg = config()
    guard = FakeGuard(cfg, FakeRedis({}), down=True) if redis == "down" else FakeGuard(cfg, None)
    client = await _client(guard, cfg)
    try:
        resp = await client.get("/v1/usage", headers=bearer(mint(KEY, REF)))
        assert resp.status == 503
        assert (await resp.json())["error"]["code"] == "usage_unavailable"
    finally:
        await client.close()


# --------------------------------------------------------------------------- metered before the end


class RecordingMeter:
    def __init__(self) -> None:
        self.recorded: list[tuple[str, str, Usage]] = []

    async def check_budget(self, session: LiveSession) -> None:
        return None

    async def record(self, session: LiveSession, provider: str, model: str, usage: Usage) -> float:
        self.recorded.append((provider, model, usage))
        return 0.0


class LiveChecker:
    async def check(self, ref: SessionRef, peer: str | None, provider: str) -> LiveSession:
        return live(None)


async def test_the_usage_is_recorded_before_the_client_can_see_the_answer_end() -> None:
    """The upstream sends `response.completed` and then keeps the connection open:
    the client has the whole final event long before the body ends, and by then
    the usage must already be recorded."""

    events = [
        e
        for e in sse_events(respond(message_item("hi"), usage=Reported(70, 7)), response_id="r1", model="m-1")
        if e is not None
    ]

    async def upstream(request: web.Request) -> web.StreamResponse:
        out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await out.prepare(request)
        for event in events:
            await out.write(event)
        await asyncio.sleep(1.0)  # the body has not ended yet
        await out.write_eof()
        return out

    up = web.Application()
    up.router.add_post("/v1/responses", upstream)
    upstream_client: TestClient[Any, Any] = TestClient(TestServer(up))
    await upstream_client.start_server()
    cfg = config()
    rec = RecordingMeter()
    url = str(upstream_client.make_url("/v1/responses"))
    proxy = ModelProxy(
        cfg,
        KEY,
        cast(SessionChecker, LiveChecker()),
        cast(Meter, rec),
        {"fake": Upstream("fake", url, "sk-upstream", "m-1")},
    )
    client: TestClient[Any, Any] = TestClient(TestServer(proxy.app()))
    await client.start_server()
    try:
        resp = await client.post("/v1/fake/responses", data=b"{}", headers=bearer(mint(KEY, REF)))
        assert resp.status == 200
        data = b""
        seen_at_completed: list[int] = []
        async for chunk in resp.content.iter_any():
            data += chunk
            end = data.find(b"event: response.completed")
            if end >= 0 and b"\n\n" in data[end:] and not seen_at_completed:
                seen_at_completed.append(len(rec.recorded))
        assert seen_at_completed == [1]
        assert rec.recorded == [("fake", "m-1", Usage(input_tokens=70, output_tokens=7))]
    finally:
        await client.close()
        await upstream_client.close()
