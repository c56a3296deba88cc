"""The model proxy (codex-model-proxy, as a process) between the REAL Codex CLI
and the scripted fake model, with the real API server and a real Redis.

A session is "live" here as the proxy sees one in a cluster: a CodexSession
and a runner Pod it controls, whose status carries the caller's address (the
pod never runs: there is no node; its status is written by the admin, so
127.0.0.1 stands for the runner pod's IP). Every refusal is checked from
the outside (status and error code) and by what the fake model received:
nothing.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes import client

from codex_api.config import parse_config
from codex_api.model_credential import SessionRef, mint
from codex_api.pricing import usd
from codex_api.session import Usage as SessionUsage
from codex_devenv.codex_cli import FAKE_MODEL, ExecResult, exec_env, run_exec, write_codex_home
from codex_devenv.fake_model import FakeModelServer, Usage, exec_command, http_error, say
from codex_devenv.model_proxy_process import ModelProxyProcess, live_session, start_model_proxy

pytestmark = pytest.mark.timeout(300)

PROVIDER_KEY = "sk-provider-key-held-by-the-proxy-only-7f3a"
BUDGET_USD = 1.0
PREFIX = "proxy-test"


def _config(fake: FakeModelServer, *, max_request_bytes: int = 64 * 1024 * 1024) -> str:
    return f"""
[codex]
model = "{FAKE_MODEL}"

[kubernetes.model_endpoint]
provider_id = "fake"
base_url = "{fake.url}"
api_key_env = "CODEX_MODEL_API_KEY"

[[kubernetes.wall_bounce_providers]]
provider_id = "second"
base_url = "{fake.url}"
model = "{FAKE_MODEL}"

[[kubernetes.wall_bounce_providers]]
provider_id = "third"
base_url = "{fake.url}"
model = "{FAKE_MODEL}"

[cost.models."{FAKE_MODEL}"]
input_usd_per_mtok = 2.0
cached_input_usd_per_mtok = 0.5
output_usd_per_mtok = 8.0

[limits]
monthly_budget_usd = {BUDGET_USD}

[redis]
key_prefix = "{PREFIX}"

[model_proxy]
session_check_seconds = 0.3
max_request_bytes = {max_request_bytes}
"""


@pytest.fixture(scope="module")
def proxy_model() -> Iterator[FakeModelServer]:
    with FakeModelServer() as server:
        yield server


@pytest.fixture
def fake(proxy_model: FakeModelServer) -> Iterator[FakeModelServer]:
    proxy_model.reset()
    yield proxy_model


@pytest.fixture(scope="module")
def proxy(
    control_plane: Any,
    redis_server: Any,
    proxy_model: FakeModelServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ModelProxyProcess]:
    work = tmp_path_factory.mktemp("model-proxy")
    env = {"CODEX_MODEL_API_KEY": PROVIDER_KEY, "CODEX_WB_SECOND_API_KEY": PROVIDER_KEY + "-2"}
    proc = start_model_proxy(
        control_plane,
        work,
        _config(proxy_model, max_request_bytes=256 * 1024),
        provider_keys=env,
        redis_url=redis_server.url,
    )
    yield proc
    proc.stop()
    log = (work / "model-proxy.log").read_text()
    assert PROVIDER_KEY not in log, "the provider key is in the proxy's log"


@pytest.fixture
def redis(redis_server: Any) -> Iterator[Any]:
    import redis as redis_lib

    r = redis_lib.Redis.from_url(redis_server.url)
    for key in r.scan_iter(f"{PREFIX}:*"):
        r.delete(key)
    yield r
    r.close()


def _live(kube_client: Any, ns: str, name: str, *, ip: str | None = "127.0.0.1", **spec: Any) -> SessionRef:
    return live_session(kube_client, ns, name, ip=ip, **spec)


def _turn(proxy: ModelProxyProcess, credential: str, prompt: str, tmp_path: Path) -> ExecResult:
    """One real `codex exec` turn whose provider is the proxy, the credential as its key."""
    home = write_codex_home(tmp_path / "home", proxy.base_url("fake"), env_key="CODEX_MODEL_API_KEY")
    env = exec_env(home, api_key=credential, env_key="CODEX_MODEL_API_KEY")
    return run_exec(prompt, codex_home=home, cwd=tmp_path, env=env)


def _set_phase(kube_client: Any, ns: str, name: str, phase: str) -> None:
    client.CustomObjectsApi(kube_client).patch_namespaced_custom_object_status(
        "codex.techsapo.io", "v1alpha1", ns, "codexsessions", name, {"status": {"phase": phase}}
    )


async def _post(
    proxy: ModelProxyProcess, credential: str | None, *, provider: str = "fake", body: bytes | None = None
) -> tuple[int, bytes, list[float]]:
    """One streamed request: (status, body, arrival time of each chunk)."""
    headers = {"Content-Type": "application/json"}
    if credential is not None:
        headers["Authorization"] = f"Bearer {credential}"
    payload = (
        body if body is not None else json.dumps({"model": FAKE_MODEL, "stream": True, "input": []}).encode()
    )
    arrivals: list[float] = []
    data = bytearray()
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{proxy.base_url(provider)}/responses", data=payload, headers=headers) as resp,
    ):
        async for chunk in resp.content.iter_any():
            arrivals.append(time.monotonic())
            data += chunk
        return resp.status, bytes(data), arrivals


async def _get_usage(proxy: ModelProxyProcess, credential: str | None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {credential}"} if credential is not None else {}
    async with aiohttp.ClientSession() as http, http.get(f"{proxy.base}/v1/usage", headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


def _session_key(ref: SessionRef) -> str:
    return f"{PREFIX}:usage:s:{ref.namespace}%2F{ref.name}%2F{ref.uid}"


def _code(body: bytes) -> str:
    return str(json.loads(body)["error"]["code"])


def _usage(redis: Any, key: str) -> dict[str, float]:
    """A usage hash's counts (the per-provider model names left out)."""
    return {k.decode(): float(v) for k, v in redis.hgetall(key).items() if not k.endswith(b":model")}


def test_a_codex_turn_through_the_proxy_never_sees_the_key_and_is_metered(
    proxy: ModelProxyProcess,
    fake: FakeModelServer,
    kube_client: Any,
    namespace: str,
    redis: Any,
    tmp_path: Path,
) -> None:
    ref = _live(kube_client, namespace, "metered")
    credential = mint(proxy.signing_key, ref)
    first, second = (
        Usage(1200, 80, cached_tokens=200),
        Usage(1500, 300, cached_tokens=1000, reasoning_tokens=40),
    )
    fake.set_script(exec_command("echo $CODEX_MODEL_API_KEY; env", usage=first), say("done", usage=second))
    result = _turn(proxy, credential, "run a command", tmp_path)
    assert result.returncode == 0, result.describe()
    assert result.agent_messages == ["done"]
    assert PROVIDER_KEY not in result.stdout + result.stderr
    requests = fake.responses_requests
    assert len(requests) == 2
    # Upstream sees the provider's key and never the session's credential.
    assert all(r.authorization == f"Bearer {PROVIDER_KEY}" for r in requests)
    assert not any(credential in json.dumps(r.headers) for r in requests)
    # Metered from the provider's own usage, the same formula as status.cost.
    config = parse_config(_config(fake))
    expected = {
        "input": 2700.0,
        "cached_input": 1200.0,
        "output": 380.0,
        "reasoning": 40.0,
        "requests": 2.0,
    }
    cost = sum(
        usd(SessionUsage.from_responses_api(u.to_json()), FAKE_MODEL, config.cost) for u in (first, second)
    )
    session = _usage(redis, _session_key(ref))
    assert {k: v for k, v in session.items() if ":" not in k and k != "usd"} == expected
    assert session["usd"] == pytest.approx(cost)
    # What the operator reads when the turn has ended: the same figure, per provider too.
    status, answer = asyncio.run(_get_usage(proxy, credential))
    assert status == 200, answer
    assert answer["usage"] == {
        "inputTokens": 2700,
        "cachedInputTokens": 1200,
        "outputTokens": 380,
        "reasoningTokens": 40,
    }
    assert (answer["requests"], answer["usd"]) == (2, pytest.approx(cost))
    assert [(p["provider"], p["model"], p["requests"]) for p in answer["providers"]] == [
        ("fake", FAKE_MODEL, 2)
    ]
    assert answer["providers"][0]["usage"] == answer["usage"]
    month = time.strftime("%Y-%m", time.gmtime())
    assert _usage(redis, f"{PREFIX}:usage:p:fake:{month}")["requests"] == 2
    assert float(redis.get(f"{PREFIX}:spend:alice:{month}")) == pytest.approx(cost)
    assert redis.get(f"{PREFIX}:charged:metered") == b"metered"  # the gateway does not add it again


def test_refused_credentials_send_nothing_upstream(
    proxy: ModelProxyProcess, fake: FakeModelServer, kube_client: Any, namespace: str, redis: Any
) -> None:
    mine = _live(kube_client, namespace, "mine")
    elsewhere = _live(kube_client, namespace, "elsewhere", ip="10.244.77.99")  # its pod is not the caller
    ended = _live(kube_client, namespace, "ended")
    _set_phase(kube_client, namespace, "ended", "Succeeded")
    reborn = _live(kube_client, namespace, "reborn")
    client.CoreV1Api(kube_client).delete_namespaced_pod("reborn-runner", namespace, grace_period_seconds=0)
    client.CustomObjectsApi(kube_client).delete_namespaced_custom_object(
        "codex.techsapo.io", "v1alpha1", namespace, "codexsessions", "reborn"
    )
    _live(kube_client, namespace, "reborn")  # same name, another object
    key = proxy.signing_key
    good = mint(key, mine)
    forged = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    cases = [
        ("no credential", None, "fake", 401, "invalid_credential"),
        ("the provider key itself", PROVIDER_KEY, "fake", 401, "invalid_credential"),
        ("a forged signature", forged, "fake", 401, "invalid_credential"),
        ("another installation's", mint(b"k" * 48, mine), "fake", 401, "invalid_credential"),
        ("a session whose pod is elsewhere", mint(key, elsewhere), "fake", 403, "session_refused"),
        ("an ended session", mint(key, ended), "fake", 403, "session_refused"),
        ("a deleted session's, name reused", mint(key, reborn), "fake", 403, "session_refused"),
        (
            "a session that does not exist",
            mint(key, SessionRef(namespace, "nope", "x")),
            "fake",
            403,
            "session_refused",
        ),
        ("a provider the session may not use", good, "second", 403, "session_refused"),
        ("an unknown provider", good, "nope", 404, "unknown_provider"),
        ("an oversized credential", "cxs1." + "A" * 5000 + ".x", "fake", 401, "invalid_credential"),
    ]

    async def run() -> None:
        for what, credential, provider, status, code in cases:
            got, body, _ = await _post(proxy, credential, provider=provider)
            assert (got, _code(body)) == (status, code), what
            assert PROVIDER_KEY not in body.decode()
        got, body, _ = await _post(proxy, good, body=b"x" * (300 * 1024))
        assert (got, _code(body)) == (413, "request_too_large")

    asyncio.run(run())
    assert fake.requests == [], "a refused request reached the model"
    assert not list(redis.scan_iter(f"{PREFIX}:usage:*"))


def test_a_runners_first_request_may_beat_its_pods_address_to_the_api_server(
    proxy: ModelProxyProcess, fake: FakeModelServer, kube_client: Any, namespace: str, redis: Any
) -> None:
    """The kubelet reports a pod's address after its containers may already run: a
    request from an address the session's pod does not have yet waits for it (a few
    seconds) instead of being refused; one from an address that never comes is
    refused after that wait."""
    ref = _live(kube_client, namespace, "early", ip=None)  # no address reported yet
    credential = mint(proxy.signing_key, ref)
    fake.set_script(then=say("hi"))

    def report_the_address() -> None:
        time.sleep(1.0)
        status = {"phase": "Running", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}]}
        client.CoreV1Api(kube_client).patch_namespaced_pod_status(
            "early-runner", namespace, {"status": status}
        )

    import threading

    reporter = threading.Thread(target=report_the_address)
    reporter.start()
    started = time.monotonic()
    status, body, _ = asyncio.run(_post(proxy, credential))
    reporter.join()
    assert status == 200, body
    assert 0.9 <= time.monotonic() - started < 5, "answered before the address was known, or too late"
    assert len(fake.responses_requests) == 1


def test_a_session_is_refused_once_it_has_ended(
    proxy: ModelProxyProcess, fake: FakeModelServer, kube_client: Any, namespace: str, redis: Any
) -> None:
    ref = _live(kube_client, namespace, "ending")
    credential = mint(proxy.signing_key, ref)
    fake.set_script(then=say("hi"))
    assert asyncio.run(_post(proxy, credential))[0] == 200
    _set_phase(kube_client, namespace, "ending", "Cancelled")
    time.sleep(0.5)  # session_check_seconds = 0.3
    status, body, _ = asyncio.run(_post(proxy, credential))
    assert (status, _code(body)) == (403, "session_refused")
    assert b"Cancelled" in body
    assert len(fake.responses_requests) == 1


def test_a_spent_budget_stops_a_running_turn_at_its_next_model_request(
    proxy: ModelProxyProcess,
    fake: FakeModelServer,
    kube_client: Any,
    namespace: str,
    redis: Any,
    tmp_path: Path,
) -> None:
    ref = _live(kube_client, namespace, "spender")
    credential = mint(proxy.signing_key, ref)
    # 200k output tokens at 8 USD per million: 1.6 USD, over the 1 USD budget in one request.
    fake.set_script(exec_command("echo working", usage=Usage(1000, 200_000)), say("never sent"))
    result = _turn(proxy, credential, "spend it all", tmp_path)
    assert result.returncode != 0, result.describe()
    assert "budget" in (result.failure or result.stderr).lower(), result.describe()
    assert len(fake.responses_requests) == 1, "the request after the budget was spent reached the model"
    assert result.items("command_execution"), "the work done before the budget ran out is reported"


def test_an_upstream_error_comes_back_without_the_provider_key(
    proxy: ModelProxyProcess, fake: FakeModelServer, kube_client: Any, namespace: str, redis: Any
) -> None:
    ref = _live(kube_client, namespace, "echoes")
    fake.set_script(http_error(401, f"Incorrect API key provided: {PROVIDER_KEY}"))
    status, body, _ = asyncio.run(_post(proxy, mint(proxy.signing_key, ref)))
    assert status == 401
    assert PROVIDER_KEY not in body.decode() and "Incorrect API key" in body.decode()


def test_the_answer_streams_through_as_it_arrives(
    proxy: ModelProxyProcess, fake: FakeModelServer, kube_client: Any, namespace: str, redis: Any
) -> None:
    ref = _live(kube_client, namespace, "streams")
    fake.set_script(say("slow answer", delay=0.4))  # created, item, completed: 0.4 s apart
    start = time.monotonic()
    status, body, arrivals = asyncio.run(_post(proxy, mint(proxy.signing_key, ref)))
    assert status == 200 and b"response.completed" in body
    assert len(arrivals) >= 3
    # The first event arrived long before the last was sent: nothing waits for the whole answer.
    assert arrivals[0] - start < 0.35 and arrivals[-1] - arrivals[0] > 0.7


def test_usage_is_metered_per_provider_and_each_credential_reads_only_its_own(
    proxy: ModelProxyProcess, fake: FakeModelServer, kube_client: Any, namespace: str, redis: Any
) -> None:
    bounce = _live(kube_client, namespace, "bounce", wallBounce={"providers": ["second", "third"]})
    plain = _live(kube_client, namespace, "plain")
    key = proxy.signing_key
    main, second, other = (
        Usage(1000, 100, cached_tokens=400),
        Usage(300, 30, reasoning_tokens=7),
        Usage(50, 5),
    )
    fake.set_script(say("a", usage=main), say("b", usage=second), say("c", usage=other))

    async def run() -> None:
        assert (await _post(proxy, mint(key, bounce)))[0] == 200
        assert (await _post(proxy, mint(key, bounce), provider="second"))[0] == 200
        assert (await _post(proxy, mint(key, plain)))[0] == 200

    asyncio.run(run())
    config = parse_config(_config(fake))

    def priced(u: Usage) -> float:
        return usd(SessionUsage.from_responses_api(u.to_json()), FAKE_MODEL, config.cost)

    status, answer = asyncio.run(_get_usage(proxy, mint(key, bounce)))
    assert status == 200, answer
    assert (answer["name"], answer["uid"]) == ("bounce", bounce.uid)
    by_provider = {p["provider"]: p for p in answer["providers"]}
    assert set(by_provider) == {"fake", "second"}
    for provider, reported in (("fake", main), ("second", second)):
        got = by_provider[provider]
        assert got["usage"] == SessionUsage.from_responses_api(reported.to_json()).to_k8s(), provider
        assert (got["requests"], got["model"]) == (1, FAKE_MODEL)
        assert got["usd"] == pytest.approx(priced(reported))
    assert answer["usage"]["inputTokens"] == 1300 and answer["requests"] == 2
    assert answer["usd"] == pytest.approx(priced(main) + priced(second))
    # The other session's credential reads the other session's, and nothing of this one.
    status, mine = asyncio.run(_get_usage(proxy, mint(key, plain)))
    assert status == 200 and mine["name"] == "plain"
    assert [p["provider"] for p in mine["providers"]] == ["fake"] and mine["usage"]["inputTokens"] == 50
    # Readable after the session has ended (the operator asks then), and for a session
    # the proxy never served: zeros.
    _set_phase(kube_client, namespace, "plain", "Succeeded")
    time.sleep(0.5)
    assert asyncio.run(_get_usage(proxy, mint(key, plain)))[1]["requests"] == 1
    unknown = asyncio.run(_get_usage(proxy, mint(key, SessionRef(namespace, "never", "u-1"))))
    assert unknown[0] == 200 and (unknown[1]["requests"], unknown[1]["providers"]) == (0, [])


def test_the_usage_endpoint_refuses_without_the_sessions_credential(
    proxy: ModelProxyProcess, kube_client: Any, namespace: str, redis: Any
) -> None:
    ref = _live(kube_client, namespace, "reader")
    good = mint(proxy.signing_key, ref)
    forged = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    for what, credential in (
        ("no credential", None),
        ("the provider key", PROVIDER_KEY),
        ("a forged signature", forged),
        ("another installation's", mint(b"k" * 48, ref)),
    ):
        status, body = asyncio.run(_get_usage(proxy, credential))
        assert (status, body["error"]["code"]) == (401, "invalid_credential"), what


def test_a_sessions_cost_cap_refuses_its_next_request(
    proxy: ModelProxyProcess, fake: FakeModelServer, kube_client: Any, namespace: str, redis: Any
) -> None:
    ref = _live(kube_client, namespace, "capped", maxCostUsd=0.05)
    neighbour = _live(kube_client, namespace, "uncapped")  # same user, no cap of its own
    credential = mint(proxy.signing_key, ref)
    # 1000 input + 10k output tokens: 0.082 USD, over the 0.05 cap, well under alice's 1 USD month.
    fake.set_script(say("first", usage=Usage(1000, 10_000)), then=say("more"))
    assert asyncio.run(_post(proxy, credential))[0] == 200
    status, body, _ = asyncio.run(_post(proxy, credential))
    assert (status, _code(body)) == (402, "budget_exceeded")
    message = json.loads(body)["error"]["message"]
    assert message.startswith("budget exceeded: session cost cap of $0.05 spent"), message
    assert len(fake.responses_requests) == 1, "the request over the cap reached the model"
    # The cap is the session's: the same user's other session goes on.
    assert asyncio.run(_post(proxy, mint(proxy.signing_key, neighbour)))[0] == 200


def test_the_usage_is_in_redis_before_the_client_sees_the_end_of_the_answer(
    proxy: ModelProxyProcess, fake: FakeModelServer, kube_client: Any, namespace: str, redis: Any
) -> None:
    """A runner may exit the moment it has `response.completed`, and the operator then
    reads the session's usage: it must already be there."""
    ref = _live(kube_client, namespace, "racer")
    fake.set_script(say("quick", usage=Usage(700, 70)))
    seen: list[dict[str, float]] = []

    async def run() -> None:
        headers = {"Authorization": f"Bearer {mint(proxy.signing_key, ref)}"}
        payload = json.dumps({"model": FAKE_MODEL, "stream": True, "input": []}).encode()
        data = bytearray()
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{proxy.base_url('fake')}/responses", data=payload, headers=headers) as resp,
        ):
            async for chunk in resp.content.iter_any():
                data += chunk
                end = data.find(b"event: response.completed")
                if end >= 0 and b"\n\n" in data[end:] and not seen:
                    seen.append(_usage(redis, _session_key(ref)))  # at once, before reading on

    asyncio.run(run())
    assert seen, "no response.completed arrived"
    assert seen[0].get("requests") == 1 and seen[0].get("input") == 700, seen


def test_metrics_on_a_port_of_their_own_are_not_on_the_runners_port(
    control_plane: Any, proxy: ModelProxyProcess, proxy_model: FakeModelServer, tmp_path: Path
) -> None:
    """Runner pods must reach the proxy's port; with --metrics-port they do not also
    read every provider's traffic there. Without it, /metrics stays where it was."""
    import urllib.error
    import urllib.request

    from codex_devenv.process import free_port

    assert "codex_proxy_requests" in proxy.metrics()  # the module's proxy: one port
    separate = start_model_proxy(
        control_plane,
        tmp_path,
        _config(proxy_model, max_request_bytes=1024 * 1024),
        provider_keys={"CODEX_MODEL_API_KEY": PROVIDER_KEY},
        metrics_port=free_port(),
        name="separate",
    )
    try:
        assert "codex_proxy_requests" in separate.metrics()
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{separate.base}/metrics", timeout=5)
        assert refused.value.code == 404
        with urllib.request.urlopen(f"{separate.base}/healthz", timeout=5) as resp:
            assert resp.status == 200
    finally:
        separate.stop()
