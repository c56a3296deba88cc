"""The gateway as an install runs it: its own ServiceAccount token (the
manifests' RBAC), the admission policies naming it a trusted requester, the
real operator, a real Redis. Cleanup, audit, metrics, health, Host/Origin
checks, limits and cache, Redis outages, stdio, both protocol eras, and a
gateway killed with 20 calls in flight."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client, StdioServerParameters

from codex_api.result import RunnerResult
from codex_api.session import Usage
from codex_devenv.admission_kit import ScopedAdmission
from codex_devenv.assets import REPO_ROOT
from codex_devenv.gateway_process import (
    GATEWAY_USER,
    GatewayProcess,
    bind_gateway,
    gateway_kubeconfig,
    start_gateway,
)
from codex_devenv.process import wait_for
from codex_devenv.testkit import finish_pod, get_session, list_sessions, play_next_session, set_pod_running

ALICE = "alice-token-" + secrets.token_hex(8)
BOB = "bob-token-" + secrets.token_hex(8)
DAVE = "dave-token-" + secrets.token_hex(8)
TOKENS: dict[str, Any] = {
    ALICE: "alice",
    BOB: "bob",
    DAVE: {"user": "dave", "groups": ["codex-admins"]},
}
# The seed's names the gateway owns (the session series are the operator's),
# and its own view of the sessions created through MCP.
SEED_METRICS = ("codex_mcp_response_time_seconds", "codex_mcp_wall_bounce_coordination_time_seconds")
MCP_SESSION_METRICS = (
    "codex_gateway_mcp_sessions_active",
    "codex_gateway_mcp_turn_duration_seconds",
    "codex_gateway_mcp_turn_success_rate",
    "codex_gateway_mcp_cost_usd_total",
    "codex_gateway_mcp_tokens_total",
)
OPERATOR_SEED_METRICS = (
    "codex_mcp_active_sessions_total",
    "codex_mcp_session_duration_seconds",
    "codex_mcp_session_success_rate",
    "codex_mcp_cost_usd_total",
    "codex_mcp_tokens_consumed_total",
)


@pytest.fixture(scope="module")
def gateway_sa_kubeconfig(control_plane: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return gateway_kubeconfig(control_plane, tmp_path_factory.mktemp("gateway-sa"))


@pytest.fixture
def installed(
    control_plane: Any, client_for: Any, namespace: str, run_operator: Any, gateway_sa_kubeconfig: Path
) -> Iterator[None]:
    """A namespace as an install prepares it, with the operator running."""
    bind_gateway(control_plane, namespace)
    policies = ScopedAdmission(control_plane, namespace).install(client_for, trusted=[GATEWAY_USER])
    run_operator()
    yield
    policies.uninstall()


@pytest.fixture
def launch(
    control_plane: Any, namespace: str, tmp_path: Path, gateway_sa_kubeconfig: Path, installed: None
) -> Iterator[Callable[..., GatewayProcess]]:
    started: list[GatewayProcess] = []

    def start(config: str = "", **kwargs: Any) -> GatewayProcess:
        config_file = None
        if config:
            config_file = tmp_path / f"gateway-{len(started)}.toml"
            config_file.write_text(config)
        gw = start_gateway(
            control_plane,
            namespace,
            tmp_path,
            TOKENS,
            kubeconfig=gateway_sa_kubeconfig,
            config_file=config_file,
            name=f"gateway-{len(started)}",
            **kwargs,
        )
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.stop()


def _result(message: str = "done", cost_tokens: int = 1000) -> RunnerResult:
    return RunnerResult(
        outcome="completed",
        thread_id="thread-" + secrets.token_hex(3),
        final_message=message,
        usage=Usage(input_tokens=cost_tokens, cached_input_tokens=0, output_tokens=200, reasoning_tokens=0),
    )


def _structured(result: Any) -> dict[str, Any]:
    assert not result.is_error, result.content
    return dict(result.structured_content)


def _error(result: Any) -> str:
    assert result.is_error, result.structured_content
    return str(result.content[0].text)


async def _codex_finished(
    mcp_client: Client, kube_client: Any, namespace: str, prompt: str, answer: str = "done"
) -> dict[str, Any]:
    known = {s["metadata"]["name"] for s in list_sessions(kube_client, namespace)}
    call = asyncio.create_task(mcp_client.call_tool("codex", {"prompt": prompt}))
    await asyncio.to_thread(play_next_session, kube_client, namespace, known, _result(answer))
    return _structured(await call)


def _names(kube_client: Any, namespace: str) -> set[str]:
    return {s["metadata"]["name"] for s in list_sessions(kube_client, namespace)}


# --------------------------------------------------------------------------- cleanup
async def test_cleanup_removes_finished_then_all_and_admins_reach_everyone(
    launch: Callable[..., GatewayProcess], kube_client: Any, namespace: str
) -> None:
    gw = launch(wait_seconds=2)
    async with gw.client(ALICE) as alice, gw.client(BOB) as bob, gw.client(DAVE) as dave:
        finished = (await _codex_finished(alice, kube_client, namespace, "first"))["session_id"]
        running = _structured(await alice.call_tool("codex", {"prompt": "long"}))["session_id"]
        bobs = _structured(await bob.call_tool("codex", {"prompt": "bob's"}))["session_id"]

        out = _structured(await alice.call_tool("codex-cleanup", {}))
        assert out["scope"] == "mine" and not out["force"]
        assert set(out["removed"]) | set(out["pending"]) == {finished}
        assert out["kept_active"] == 1 and out["cancelled"] == [] and out["failed"] == {}
        await asyncio.to_thread(
            wait_for, lambda: finished not in _names(kube_client, namespace), timeout=30, what="removal"
        )
        assert {running, bobs} <= _names(kube_client, namespace)

        # bob's force reaches only bob's sessions (bob is no admin)
        out = _structured(await bob.call_tool("codex-cleanup", {"force": True}))
        assert out["scope"] == "mine" and out["cancelled"] == [bobs]
        await asyncio.to_thread(
            wait_for, lambda: bobs not in _names(kube_client, namespace), timeout=30, what="bob's removal"
        )
        assert running in _names(kube_client, namespace)

        # an admin's force reaches everyone's
        out = _structured(await dave.call_tool("codex-cleanup", {"force": True}))
        assert out["scope"] == "all" and running in out["cancelled"]
        await asyncio.to_thread(
            wait_for, lambda: not _names(kube_client, namespace), timeout=30, what="everything removed"
        )
        # bad arguments
        assert "force" in _error(await alice.call_tool("codex-cleanup", {"force": "yes"}))


# --------------------------------------------------------------------------- audit, metrics, health
async def test_audit_metrics_health_and_stats(
    launch: Callable[..., GatewayProcess], kube_client: Any, namespace: str, redis_server: Any
) -> None:
    gw = launch(redis_url=redis_server.url)
    secret = "sk-proj-" + "A1b2C3d4E5f6G7h8I9j0" * 2
    async with gw.client(ALICE) as alice:
        out = await _codex_finished(alice, kube_client, namespace, f"use key {secret} to call the API")
        _error(await alice.call_tool("codex-session-info", {"session_id": "cx-nope"}))
        assert (await alice.call_tool("no-such-tool", {})).is_error
        await alice.read_resource("codex://sessions/active")

    def audited() -> bool:
        return len(gw.audit_events()) >= 4

    await asyncio.to_thread(wait_for, audited, timeout=10, what="audit events")
    events = gw.audit_events()
    codex = next(e for e in events if e["tool"] == "codex")
    assert codex["user"] == "alice" and codex["session"] == out["session_id"]
    assert codex["decision"] == "allowed" and codex["risk"] == "low" and codex["phase"] == "Succeeded"
    assert codex["cost_usd"] and codex["cost_usd"] > 0
    assert secret not in gw.log() and "sk-proj-" not in json.dumps(codex)
    missing = next(e for e in events if e["tool"] == "codex-session-info")
    assert missing["decision"] == "not_found"
    unknown = next(e for e in events if e["tool"].startswith("unknown:"))
    assert unknown["decision"] == "invalid"
    assert any(e["tool"] == "codex://sessions/active" and e["method"] == "resources/read" for e in events)

    # metrics: the seed's names on their own port, and real values
    text = gw.metrics()
    for name in (*SEED_METRICS, *MCP_SESSION_METRICS):
        assert f"# TYPE {name}" in text, name
    for name in OPERATOR_SEED_METRICS:  # one owner per name
        assert f"# TYPE {name} " not in text, name
    assert "no-such-tool" not in text  # unknown names do not mint series
    calls = gw.metric(
        "codex_mcp_response_time_seconds_count", 'method="tools/call",name="codex",outcome="ok"'
    )
    assert calls == 1

    def counted() -> bool:
        cost = gw.metric("codex_gateway_mcp_cost_usd_total", 'model="gpt-5-codex"')
        return cost is not None and cost > 0

    await asyncio.to_thread(wait_for, counted, timeout=10, what="the cost counter")
    assert gw.metric("codex_gateway_mcp_turn_success_rate") == 1.0
    assert (gw.metric("codex_gateway_mcp_tokens_total", 'type="input"') or 0) >= 1000

    # health and stats need a token; they report the API server and Redis
    assert httpx2.get(f"{gw.base}/mcp/codex/health", timeout=10).status_code == 401
    auth = {"Authorization": f"Bearer {ALICE}"}
    health = httpx2.get(f"{gw.base}/mcp/codex/health", headers=auth, timeout=10)
    assert health.status_code == 200
    body = health.json()
    assert body["kubernetes"]["reachable"] is True and body["redis"]["reachable"] is True
    stats = httpx2.get(f"{gw.base}/mcp/codex/stats", headers=auth, timeout=10).json()
    assert stats["tools"]["tools"]["codex"]["calls"] == 1

    redis_server.stop()
    try:
        body = httpx2.get(f"{gw.base}/mcp/codex/health", headers=auth, timeout=10).json()
        assert body["status"] == "ok" and body["redis"]["reachable"] is False
    finally:
        redis_server.start()


def test_host_and_origin_checks(launch: Callable[..., GatewayProcess]) -> None:
    gw = launch(extra_args=("--allowed-hosts", "gateway.example:*"))
    body = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    headers = {
        "Authorization": f"Bearer {ALICE}",
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "MCP-Protocol-Version": "2025-11-25",
    }
    evil_host = httpx2.post(gw.url, json=body, headers={**headers, "Host": "evil.example"}, timeout=10)
    assert evil_host.status_code == 421
    evil_origin = httpx2.post(
        gw.url, json=body, headers={**headers, "Origin": "http://evil.example"}, timeout=10
    )
    assert evil_origin.status_code == 403
    allowed = httpx2.post(
        gw.url, json=body, headers={**headers, "Host": f"gateway.example:{gw.port}"}, timeout=10
    )
    assert allowed.status_code not in (403, 421), allowed.text


# --------------------------------------------------------------------------- Redis: limits, cache, outage
def _room_in_this_minute(needed: float = 25) -> None:
    """Fixed one-minute windows: do not start counting just before one ends."""
    left = 60 - time.time() % 60
    if left < needed:
        time.sleep(left + 0.5)


async def test_limits_and_cache_then_redis_outage_and_recovery(
    launch: Callable[..., GatewayProcess], kube_client: Any, namespace: str, redis_server: Any
) -> None:
    config = (
        "[limits]\nrequests_per_minute_per_user = 5\n[cache]\nenabled = true\n[redis]\nretry_seconds = 0.5\n"
    )
    gw = launch(config, redis_url=redis_server.url)
    await asyncio.to_thread(_room_in_this_minute)
    async with gw.client(ALICE) as alice:
        first = await _codex_finished(alice, kube_client, namespace, "what is 2+2?", "4")
        again = _structured(await alice.call_tool("codex", {"prompt": "what is 2+2?"}))
        assert again["cached"] is True and again["response"] == "4"
        assert again["session_id"] == first["session_id"] and len(list_sessions(kube_client, namespace)) == 1
        for _ in range(3):
            _structured(await alice.call_tool("codex-session-info", {"list_active": True}))
        before = len(list_sessions(kube_client, namespace))
        limited = _error(await alice.call_tool("codex", {"prompt": "one more"}))
        assert "rate limited" in limited and "try again in" in limited
        assert len(list_sessions(kube_client, namespace)) == before

    # Redis down under load: 20 concurrent calls, then more, all served quickly
    # (limits and cache fail open)
    redis_server.stop()
    try:
        async with gw.client(BOB) as bob:

            async def timed_call() -> float:
                started = time.monotonic()
                _structured(await bob.call_tool("codex-session-info", {"list_active": True}))
                return time.monotonic() - started

            for _ in range(2):
                durations = await asyncio.gather(*(timed_call() for _ in range(20)))
                assert max(durations) < 10, durations
    finally:
        redis_server.start()

    # Redis back: limits resume without a restart
    await asyncio.sleep(1)
    await asyncio.to_thread(_room_in_this_minute)
    async with gw.client(BOB) as bob:
        outcomes = []
        for _ in range(7):
            result = await bob.call_tool("codex-session-info", {"list_active": True})
            outcomes.append(result.is_error)
        assert outcomes[-1] is True, outcomes
        assert any(e["decision"] == "rate_limited" and e["user"] == "bob" for e in gw.audit_events())
        # and the cache again: a new question, asked twice
        _room_in_this_minute(0)
    async with gw.client(DAVE) as dave:
        await _codex_finished(dave, kube_client, namespace, "what is 3+3?", "6")
        assert _structured(await dave.call_tool("codex", {"prompt": "what is 3+3?"}))["cached"] is True


# --------------------------------------------------------------------------- transports and eras
@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_both_protocol_eras(
    launch: Callable[..., GatewayProcess], kube_client: Any, namespace: str, mode: str
) -> None:
    gw = launch(wait_seconds=2)
    async with gw.client(ALICE, mode=mode) as alice:
        tools = {t.name for t in (await alice.list_tools()).tools}
        assert tools == {"codex", "codex-reply", "codex-session-info", "codex-cleanup"}
        out = await _codex_finished(alice, kube_client, namespace, f"era {mode}")
        assert out["status"] == "completed"
        info = _structured(await alice.call_tool("codex-session-info", {"session_id": out["session_id"]}))
        assert info["session"]["response"] == "done"
        prompts = {p.name for p in (await alice.list_prompts()).prompts}
        assert prompts == {"code-review", "debug-helper", "refactor-code"}
        assert _error(await alice.call_tool("codex", {"prompt": "p", "sandbox": "root"}))


async def test_stdio_transport(
    control_plane: Any, namespace: str, installed: None, kube_client: Any, tmp_path: Path
) -> None:
    params = StdioServerParameters(
        command=str(REPO_ROOT / ".venv" / "bin" / "codex-gateway"),
        args=[
            "--transport",
            "stdio",
            "--namespace",
            namespace,
            "--kubeconfig",
            str(control_plane.kubeconfig("admin")),
            "--user",
            "admin",
            "--metrics-port",
            "0",
            "--wait-seconds",
            "2",
        ],
    )
    async with Client(params) as mcp_client:
        tools = {t.name for t in (await mcp_client.list_tools()).tools}
        assert "codex-cleanup" in tools
        out = _structured(await mcp_client.call_tool("codex", {"prompt": "over stdio"}))
        assert out["requested_by"] == "admin" and out["status"] == "running"
        assert get_session(kube_client, namespace, out["session_id"])["spec"]["requestedBy"] == "admin"


# --------------------------------------------------------------------------- crash
async def test_killing_the_gateway_with_20_calls_in_flight_loses_nothing(
    launch: Callable[..., GatewayProcess], kube_client: Any, namespace: str
) -> None:
    gw = launch(wait_seconds=60)
    killed = False
    outcomes: list[Any] = []
    try:
        async with gw.client(ALICE) as alice:
            calls = [asyncio.create_task(alice.call_tool("codex", {"prompt": f"job {i}"})) for i in range(20)]
            await asyncio.to_thread(
                wait_for,
                lambda: len(list_sessions(kube_client, namespace)) == 20,
                timeout=60,
                what="20 sessions",
            )
            gw.kill()
            killed = True
            outcomes = await asyncio.gather(*calls, return_exceptions=True)
    except BaseException:
        # The client's transport dies with the connection; only that is expected here.
        if not killed:
            raise
    # No call got an answer from the dead gateway (none of them is a result).
    assert not any(getattr(o, "structured_content", None) for o in outcomes), outcomes
    names = _names(kube_client, namespace)
    assert len(names) == 20
    restarted = launch(wait_seconds=2, port=gw.port)
    async with restarted.client(ALICE) as alice:
        active = _structured(await alice.call_tool("codex-session-info", {"list_active": True}))
        assert {s["session_id"] for s in active["sessions"]} == names
        # the turns run on (ten at a time: the concurrency limit); their results are there when asked for
        finished: set[str] = set()

        def play() -> bool:
            for obj in list_sessions(kube_client, namespace):
                name, status = obj["metadata"]["name"], obj.get("status") or {}
                if status.get("phase") == "Running" and status.get("podName") and name not in finished:
                    set_pod_running(kube_client, namespace, status["podName"])
                    finish_pod(kube_client, namespace, status["podName"], _result(name))
                    finished.add(name)
            return all(
                (o.get("status") or {}).get("phase") == "Succeeded"
                for o in list_sessions(kube_client, namespace)
            )

        await asyncio.to_thread(wait_for, play, timeout=120, what="all 20 to succeed")
        for name in names:
            info = _structured(await alice.call_tool("codex-session-info", {"session_id": name}))
            assert info["session"]["response"] == name


# --------------------------------------------------------------------------- TokenReview
async def test_token_review_accepts_cluster_tokens_for_the_audience(
    launch: Callable[..., GatewayProcess], control_plane: Any, namespace: str
) -> None:
    """gateway.tokenReview as the chart installs it: the auth-delegator binding
    from the rendered chart, the gateway's own ServiceAccount, an audience."""
    from codex_devenv import helm

    rendered = helm.template({"gateway": {"tokenReview": {"enabled": True, "audiences": ["codex-gateway"]}}})
    binding = next(o for o in rendered if o["kind"] == "ClusterRoleBinding")
    control_plane.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(binding))
    control_plane.kubectl("create", "serviceaccount", "mcp-robot", "-n", namespace)

    def token(audience: str | None) -> str:
        extra = ["--audience", audience] if audience else []
        return str(
            control_plane.kubectl("create", "token", "mcp-robot", "-n", namespace, *extra).stdout.strip()
        )

    gw = launch(extra_args=("--token-review", "--token-audience", "codex-gateway"))
    try:
        async with gw.client(token("codex-gateway")) as robot:
            out = _structured(await robot.call_tool("codex", {"prompt": "from a robot"}))
            assert out["requested_by"] == f"system:serviceaccount:{namespace}:mcp-robot"
        # a token for the API server's own audience is not for the gateway
        headers = {"Authorization": f"Bearer {token(None)}"}
        assert httpx2.get(f"{gw.base}/mcp/codex/health", headers=headers, timeout=10).status_code == 401
        # nor is one minted for another service
        headers = {"Authorization": f"Bearer {token('another-service')}"}
        assert httpx2.get(f"{gw.base}/mcp/codex/health", headers=headers, timeout=10).status_code == 401
        # the static tokens still work next to it
        async with gw.client(ALICE) as alice:
            _structured(await alice.call_tool("codex-session-info", {"list_active": True}))
    finally:
        control_plane.kubectl("delete", "-f", "-", input=json.dumps(binding), check=False)


# --------------------------------------------------------------------------- client disconnect
async def test_a_client_that_disconnects_stops_the_wait_not_the_session(
    launch: Callable[..., GatewayProcess], kube_client: Any, namespace: str
) -> None:
    gw = launch(wait_seconds=60)
    cancelled = False
    outcome: Any = None
    try:
        async with gw.client(ALICE) as alice:
            call = asyncio.create_task(alice.call_tool("codex", {"prompt": "walk away"}))
            await asyncio.to_thread(
                wait_for,
                lambda: len(list_sessions(kube_client, namespace)) == 1,
                timeout=30,
                what="the session",
            )
            call.cancel()  # the client gives up and goes away
            cancelled = True
            outcome = (await asyncio.gather(call, return_exceptions=True))[0]
    except BaseException:
        # The transport may report the abandoned request on the way out; nothing before that.
        if not cancelled:
            raise
    assert isinstance(outcome, asyncio.CancelledError), outcome
    (name,) = _names(kube_client, namespace)
    # the session runs on and finishes; the gateway still serves and has the result
    await asyncio.to_thread(play_next_session, kube_client, namespace, set(), _result("still here"))
    async with gw.client(ALICE) as alice:

        async def answer() -> dict[str, Any]:
            return _structured(await alice.call_tool("codex-session-info", {"session_id": name}))

        deadline = time.monotonic() + 30
        info = await answer()
        while not info["session"]["done"] and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            info = await answer()
        assert info["session"]["status"] == "completed" and info["session"]["response"] == "still here"
    assert gw.proc.alive()
