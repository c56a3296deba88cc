"""A finished turn's usage and cost from the model proxy's meter, or the
runner's report marked unverified when the proxy cannot answer
(codex_operator.metered, and the session reconciler around it)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from codex_api import names
from codex_api.config import parse_config
from codex_api.metered import MeteredUsage, ProviderUsage
from codex_api.model_credential import SessionRef, verify
from codex_api.result import RunnerResult
from codex_api.session import Cost, ProviderCost, Usage
from codex_devenv.memory_kube import memory_context
from codex_devenv.process import free_port
from codex_operator import cost, metered, session_reconciler
from codex_operator.metered import Unavailable, choose, fetch, metered_cost

KEY = b"s" * 32
REF = SessionRef("team", "s", "uid-1")
PRICES = parse_config(
    '[cost.models."m-1"]\ninput_usd_per_mtok = 2.0\ncached_input_usd_per_mtok = 0.5\noutput_usd_per_mtok = 8.0\n'
    '[cost.models."m-2"]\ninput_usd_per_mtok = 1.0\ncached_input_usd_per_mtok = 0.1\noutput_usd_per_mtok = 4.0\n'
).cost
METERED_USAGE = Usage(input_tokens=2700, cached_input_tokens=1200, output_tokens=380, reasoning_tokens=40)
RUNNER_USAGE = Usage(input_tokens=1, output_tokens=1)


def one_provider(usage: Usage = METERED_USAGE, model: str = "m-1") -> MeteredUsage:
    return MeteredUsage(
        namespace=REF.namespace,
        name=REF.name,
        uid=REF.uid,
        usage=usage,
        requests=2,
        usd=0.0,
        providers=[ProviderUsage(provider="fake", model=model, usage=usage, requests=2)],
    )


def reported() -> dict[str, Any]:
    estimate = Cost(estimated_usd=0.5, providers=[ProviderCost(provider="openai", estimated_usd=0.5)])
    return {
        "usage": RUNNER_USAGE.to_k8s(),
        "cost": cost.actual(RUNNER_USAGE, "m-1", PRICES, estimate_=estimate).to_k8s(),
        "response": "done",
    }


# --------------------------------------------------------------------------- the choice


def test_the_metered_figure_replaces_the_runners_report() -> None:
    estimate = Cost(estimated_usd=0.5, providers=[ProviderCost(provider="openai", estimated_usd=0.5)])
    fields, condition = choose(
        reported(),
        one_provider(),
        wall_bounce=False,
        model="m-1",
        prices=PRICES,
        estimate=estimate,
        provider_models={},
    )
    assert fields["usage"] == METERED_USAGE.to_k8s()
    assert fields["cost"] == cost.actual(METERED_USAGE, "m-1", PRICES, estimate_=estimate).to_k8s()
    assert fields["cost"]["estimatedUsd"] == 0.5 and fields["cost"]["actualUsd"] > 0
    assert fields["response"] == "done"  # everything else is the runner's
    assert condition[:3] == ("UsageMetered", "True", "MeteredByProxy")


def test_priced_with_the_model_the_proxy_priced() -> None:
    fields, _ = choose(
        {},
        one_provider(model="m-2"),
        wall_bounce=False,
        model="m-1",
        prices=PRICES,
        estimate=None,
        provider_models={},
    )
    assert fields["cost"]["actualUsd"] == cost.actual(METERED_USAGE, "m-2", PRICES).actual_usd


def test_a_session_the_proxy_never_served_is_zero_not_the_runners_claim() -> None:
    empty = MeteredUsage(namespace=REF.namespace, name=REF.name, uid=REF.uid)
    fields, condition = choose(
        reported(), empty, wall_bounce=False, model="m-1", prices=PRICES, estimate=None, provider_models={}
    )
    assert fields["usage"] == Usage().to_k8s() and fields["cost"]["actualUsd"] == 0
    assert condition[1] == "True"


def test_wall_bounce_is_priced_per_provider_and_keeps_every_estimate() -> None:
    gpt, local = Usage(input_tokens=1000, output_tokens=100), Usage(input_tokens=500, output_tokens=50)
    answer = MeteredUsage(
        namespace=REF.namespace,
        name=REF.name,
        uid=REF.uid,
        usage=Usage(input_tokens=1500, output_tokens=150),
        requests=3,
        providers=[
            ProviderUsage(provider="gpt", model="m-1", usage=gpt, requests=2),
            ProviderUsage(provider="local", model=None, usage=local, requests=1),
        ],
    )
    estimate = cost.estimate_providers("p" * 400, {"gpt": "m-1", "local": "m-2", "idle": "m-1"}, PRICES)
    got = metered_cost(
        answer,
        wall_bounce=True,
        model="m-1",
        prices=PRICES,
        estimate=estimate,
        provider_models={"gpt": "m-1", "local": "m-2", "idle": "m-1"},
    )
    want = cost.actual_providers(
        [("gpt", gpt, "m-1"), ("local", local, "m-2"), ("idle", Usage(), "m-1")], PRICES, estimate_=estimate
    )
    assert got == want
    assert {p.provider: p.estimated_usd for p in got.providers} == {
        p.provider: p.estimated_usd for p in estimate.providers
    }


@pytest.mark.parametrize("has_report", [True, False])
def test_without_the_proxy_the_runners_report_stays_marked_unverified(has_report: bool) -> None:
    runner = reported() if has_report else {}
    fields, condition = choose(
        runner,
        Unavailable("the model proxy answered 503"),
        wall_bounce=False,
        model="m-1",
        prices=PRICES,
        estimate=None,
        provider_models={},
    )
    assert fields == runner
    assert condition[:3] == ("UsageMetered", "False", "RunnerReport")
    assert condition[3].startswith("the model proxy answered 503: ")
    assert ("unverified" in condition[3]) is has_report


# --------------------------------------------------------------------------- asking the proxy


class FakeProxy:
    """`GET /v1/usage` as scripted: a list of (status, body) answers, the last repeated."""

    def __init__(self, answers: list[tuple[int, Any]]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.asked.append(request.headers.get("Authorization", ""))
        status, body = self.answers[min(len(self.asked), len(self.answers)) - 1]
        return web.json_response(body, status=status)


@contextlib.asynccontextmanager
async def serving(proxy: FakeProxy) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/v1/usage", proxy.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def proxy_config(url: str) -> Any:
    return parse_config(f'[model_proxy]\nurl = "{url}"\negress_cidrs = ["127.0.0.1/32"]\n')


async def test_fetch_asks_with_the_sessions_own_credential() -> None:
    proxy = FakeProxy([(200, one_provider().to_k8s())])
    async with serving(proxy) as url:
        got = await fetch(proxy_config(url), KEY, REF)
    assert got == one_provider()
    scheme, _, credential = proxy.asked[0].partition(" ")
    assert scheme == "Bearer" and verify(KEY, credential) == REF


async def test_fetch_retries_a_proxy_that_is_not_ready() -> None:
    proxy = FakeProxy([(503, {}), (200, one_provider().to_k8s())])
    async with serving(proxy) as url:
        got = await fetch(proxy_config(url), KEY, REF, pause=0.01)
    assert got == one_provider() and len(proxy.asked) == 2


@pytest.mark.parametrize(
    ("answers", "asked", "why"),
    [
        ([(401, {})], 1, "answered 401"),  # not the proxy's key: asking again changes nothing
        ([(503, {})], 3, "answered 503"),
        ([(200, {"usage": {"inputTokens": -1}})], 1, "not a usage report"),
        ([(200, {**one_provider().to_k8s(), "uid": "other"})], 1, "another session"),
    ],
)
async def test_fetch_gives_up_with_a_reason(answers: list[tuple[int, Any]], asked: int, why: str) -> None:
    proxy = FakeProxy(answers)
    async with serving(proxy) as url:
        got = await fetch(proxy_config(url), KEY, REF, pause=0.01)
    assert isinstance(got, Unavailable) and why in got.reason
    assert len(proxy.asked) == asked


async def test_fetch_gives_up_on_a_proxy_that_is_not_there() -> None:
    got = await fetch(proxy_config(f"http://127.0.0.1:{free_port()}"), KEY, REF, pause=0.01, timeout=0.5)
    assert isinstance(got, Unavailable) and "did not answer" in got.reason


# --------------------------------------------------------------------------- the reconciler


def runner_result() -> RunnerResult:
    return RunnerResult(outcome="completed", thread_id="t-1", final_message="done", usage=RUNNER_USAGE)


async def finished_turn(url: str) -> tuple[dict[str, Any], Any]:
    ctx, api = memory_context(proxy_config(url))
    ctx.credential_key = KEY
    api.session("team", "s", {"requestedBy": "carol"})
    for _ in range(3):
        await session_reconciler.reconcile(ctx, "team", "s")
    api.finish_pod("team", "s-runner-1", runner_result())
    for _ in range(3):
        await session_reconciler.reconcile(ctx, "team", "s")
    return ctx.store.sessions[("team", "s")], (ctx, api)


async def test_a_finished_turns_status_and_metrics_are_the_metered_figure() -> None:
    async def answer(request: web.Request) -> web.Response:
        ref = verify(KEY, request.headers["Authorization"].split(" ", 1)[1])
        body = one_provider().model_copy(update={"uid": ref.uid}).to_k8s()
        return web.json_response(body)

    proxy = FakeProxy([])
    proxy.handle = answer  # type: ignore[method-assign]
    async with serving(proxy) as url:
        s, (ctx, _api) = await finished_turn(url)
    status = s["status"]
    assert status["phase"] == "Succeeded"
    assert status["usage"] == METERED_USAGE.to_k8s()
    metered_usd = cost.actual(METERED_USAGE, "m-1", ctx.config.cost).actual_usd
    assert status["cost"]["actualUsd"] == metered_usd
    condition = next(c for c in status["conditions"] if c["type"] == "UsageMetered")
    assert (condition["status"], condition["reason"]) == ("True", "MeteredByProxy")
    # The seed's cost metrics count the same figure.
    registry = ctx.metrics.registry
    assert registry.get_sample_value("codex_mcp_tokens_consumed_total", {"type": "input"}) == 2700
    assert registry.get_sample_value("codex_mcp_cost_usd_total", {"provider": "openai"}) == metered_usd


async def test_a_proxy_that_cannot_answer_leaves_the_runners_report_marked() -> None:
    s, (_ctx, api) = await finished_turn(f"http://127.0.0.1:{free_port()}")
    status = s["status"]
    assert status["phase"] == "Succeeded" and status["usage"] == RUNNER_USAGE.to_k8s()
    condition = next(c for c in status["conditions"] if c["type"] == "UsageMetered")
    assert (condition["status"], condition["reason"]) == ("False", "RunnerReport")
    warned = [e for e in api.events if e["reason"] == "UsageUnverified"]
    assert len(warned) == 1 and warned[0]["type"] == "Warning" and "unverified" in warned[0]["message"]
    assert _ctx.metrics.registry.get_sample_value("codex_mcp_tokens_consumed_total", {"type": "input"}) == 1


def metered_answer_for_its_session() -> FakeProxy:
    """A proxy that answers any session's credential with METERED_USAGE for that session."""

    async def answer(request: web.Request) -> web.Response:
        proxy.asked.append(request.headers["Authorization"])
        ref = verify(KEY, request.headers["Authorization"].split(" ", 1)[1])
        return web.json_response(one_provider().model_copy(update={"uid": ref.uid}).to_k8s())

    proxy = FakeProxy([])
    proxy.handle = answer  # type: ignore[method-assign]
    return proxy


async def running_turn(url: str, spec: dict[str, Any]) -> tuple[Any, Any]:
    ctx, api = memory_context(proxy_config(url))
    ctx.credential_key = KEY
    api.session("team", "s", {"requestedBy": "carol", **spec})
    for _ in range(3):
        await session_reconciler.reconcile(ctx, "team", "s")
    assert ctx.store.sessions[("team", "s")]["status"]["phase"] == "Running"
    return ctx, api


@pytest.mark.parametrize("stop", ["cancel", "timeout"])
async def test_a_turn_stopped_midway_is_charged_what_the_proxy_metered(stop: str) -> None:
    """A cancelled or timed-out turn ran model requests before it was stopped: its
    status carries what the proxy metered, not nothing (which a model that stalls
    on purpose would like)."""
    proxy = metered_answer_for_its_session()
    async with serving(proxy) as url:
        ctx, api = await running_turn(url, {"timeoutSeconds": 60})
        if stop == "cancel":
            api.change(
                "codexsessions",
                "team",
                "s",
                {"metadata": {"annotations": {names.ANNOTATION_CANCEL: "carol"}}},
            )
        else:
            api.change(
                "codexsessions", "team", "s", {"status": {"timings": {"startedAt": "2020-01-01T00:00:00Z"}}}
            )
        for _ in range(3):
            await session_reconciler.reconcile(ctx, "team", "s")
    status = ctx.store.sessions[("team", "s")]["status"]
    assert status["phase"] == ("Cancelled" if stop == "cancel" else "TimedOut")
    assert status["usage"] == METERED_USAGE.to_k8s()
    assert status["cost"]["actualUsd"] == cost.actual(METERED_USAGE, "m-1", ctx.config.cost).actual_usd
    assert len(proxy.asked) == 1


async def test_a_turn_cancelled_before_its_pod_asks_nobody() -> None:
    proxy = metered_answer_for_its_session()
    async with serving(proxy) as url:
        ctx, api = memory_context(proxy_config(url))
        ctx.credential_key = KEY
        api.session("team", "s", {"requestedBy": "carol", "sandbox": "full-access"})  # waits for approval
        await session_reconciler.reconcile(ctx, "team", "s")
        api.change(
            "codexsessions", "team", "s", {"metadata": {"annotations": {names.ANNOTATION_CANCEL: "carol"}}}
        )
        for _ in range(2):
            await session_reconciler.reconcile(ctx, "team", "s")
    status = ctx.store.sessions[("team", "s")]["status"]
    assert status["phase"] == "Cancelled" and "usage" not in status
    assert proxy.asked == []


def test_a_reconcile_waits_seconds_at_most() -> None:
    assert metered.ATTEMPTS * metered.TIMEOUT_SECONDS + metered.PAUSE_SECONDS * metered.ATTEMPTS < 10
