"""Model proxy overhead (issue 13): a streamed model answer through
`codex-model-proxy` against the same answer straight from the fake model, in
one run, interleaved.

Setup: a real control plane (the proxy checks each session against it), a
real Redis (metering and the budget check on every request), the proxy as a
process, the scripted fake model in this process. Each session is a
CodexSession plus a runner Pod it controls whose status gives 127.0.0.1 as
the pod's address, so the proxy's source-address check passes for this
process.

Phase 0, turns: --turns real `codex exec` turns (the pinned CLI; the model
runs one command, then answers), alternating straight to the fake model and
through the proxy with a session credential. Prints each side's median wall
time and the ratio: the issue's "time to last byte of a streamed turn".

Phase 1, latency: --requests answers of --events events each (one
`response.output_item.done` per event, then `response.completed`), one at a
time, alternating direct and proxied. Prints time to first byte and to last
byte, p50 and p95 each, and the ratios; "added" is proxied minus direct at
the median. --check-seconds sets `session_check_seconds` (default 2, the
shipped value: most requests reuse the session answer; 0 makes every
request ask the API server).

Phase 2, concurrency: --streams streams at once through the proxy, one per
session, each --events events --delay seconds apart (so they overlap); the
proxy's RSS (VmRSS, VmHWM) is sampled while they run.

Usage: .venv/bin/python bench/proxy_bench.py [--requests 300] [--events 20] [--streams 200]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes import client, config

from codex_api.model_credential import SessionRef, mint
from codex_devenv.assets import REPO_ROOT, ensure_binaries
from codex_devenv.codex_cli import exec_env, run_exec, write_codex_home
from codex_devenv.controlplane import ControlPlane
from codex_devenv.fake_model import FakeModelServer, Usage, exec_command, message_item, respond, say
from codex_devenv.model_proxy_process import live_session, start_model_proxy
from codex_devenv.redis_server import RedisServer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from memory_bench import rss_mib

KEY = "sk-bench-provider-key-0000000000"
BODY = b'{"model":"fake-model","stream":true,"input":[{"role":"user","content":"hi"}]}'


def proxy_config(fake: FakeModelServer, check_seconds: float) -> str:
    return f"""
[codex]
model = "fake-model"
[kubernetes.model_endpoint]
provider_id = "fake"
base_url = "{fake.url}"
[limits]
monthly_budget_usd = 1000000
[model_proxy]
session_check_seconds = {check_seconds}
"""


def live_sessions(kube: Any, ns: str, count: int) -> list[SessionRef]:
    return [live_session(kube, ns, f"bench-{i:04d}") for i in range(count)]


async def one(http: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> tuple[float, float]:
    start = time.perf_counter()
    first = None
    async with http.post(url, data=BODY, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        async for _ in resp.content.iter_any():
            if first is None:
                first = time.perf_counter()
    end = time.perf_counter()
    return (first or end) - start, end - start


def turns(fake: FakeModelServer, proxy_base: str, credential: str, count: int, work: Path) -> None:
    homes = {
        "direct": (write_codex_home(work / "home-direct", fake.url, env_key="CODEX_MODEL_API_KEY"), KEY),
        "proxied": (
            write_codex_home(work / "home-proxied", proxy_base, env_key="CODEX_MODEL_API_KEY"),
            credential,
        ),
    }
    times: dict[str, list[float]] = {"direct": [], "proxied": []}
    for i in range(count + 1):
        for name, (home, key) in homes.items():
            fake.set_script(exec_command("echo hi"), say("done"))
            result = run_exec(
                "run it",
                codex_home=home,
                cwd=work,
                env=exec_env(home, api_key=key, env_key="CODEX_MODEL_API_KEY"),
            )
            assert result.returncode == 0, result.describe()
            if i:  # the first of each is a warm-up
                times[name].append(result.duration * 1000)
    med = {name: statistics.median(t) for name, t in times.items()}
    print(f"codex turns (a command, then an answer: 2 model requests), {count} each, median wall time:")
    print(
        f"  direct {med['direct']:.0f} ms   proxied {med['proxied']:.0f} ms   ratio {med['proxied'] / med['direct']:.3f}x"
    )


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


async def latency(fake_url: str, proxy_url: str, credential: str, requests: int) -> None:
    # Both identity: the fake model gzips whole answers for clients that accept it.
    direct_headers = {
        "Authorization": f"Bearer {KEY}",
        "Content-Type": "application/json",
        "Accept-Encoding": "identity",
    }
    proxy_headers = {**direct_headers, "Authorization": f"Bearer {credential}"}
    results: dict[str, list[tuple[float, float]]] = {"direct": [], "proxied": []}
    async with aiohttp.ClientSession() as http:
        for _ in range(5):  # warm both paths
            await one(http, f"{fake_url}/responses", direct_headers)
            await one(http, f"{proxy_url}/responses", proxy_headers)
        for _ in range(requests):
            results["direct"].append(await one(http, f"{fake_url}/responses", direct_headers))
            results["proxied"].append(await one(http, f"{proxy_url}/responses", proxy_headers))
    print(
        f"{'':8s} {'first byte p50':>15s} {'p95':>8s} {'last byte p50':>15s} {'p95':>8s}   (ms, {requests} each)"
    )
    med = {}
    for name, rows in results.items():
        ttfb, ttlb = [r[0] * 1000 for r in rows], [r[1] * 1000 for r in rows]
        med[name] = (statistics.median(ttfb), statistics.median(ttlb))
        print(
            f"{name:8s} {med[name][0]:15.2f} {pct(ttfb, 0.95):8.2f} {med[name][1]:15.2f} {pct(ttlb, 0.95):8.2f}"
        )
    print(
        f"ratio    last byte {med['proxied'][1] / med['direct'][1]:.2f}x   "
        f"added p50 {med['proxied'][1] - med['direct'][1]:.2f} ms (first byte {med['proxied'][0] - med['direct'][0]:.2f} ms)"
    )


async def streams(url: str, keys: list[str]) -> tuple[float, list[tuple[float, float]]]:
    """All at once: (wall seconds, per-stream times)."""
    start = time.perf_counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        times = await asyncio.gather(
            *(
                one(
                    http,
                    f"{url}/responses",
                    {"Authorization": f"Bearer {k}", "Content-Type": "application/json"},
                )
                for k in keys
            )
        )
    return time.perf_counter() - start, list(times)


def concurrency(
    fake_url: str, proxy_url: str, credentials: list[str], pid: int, delay: float, events: int
) -> None:
    samples: list[tuple[float, float]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            samples.append(rss_mib(pid))
            time.sleep(0.1)

    direct_wall, direct = asyncio.run(streams(fake_url, [KEY] * len(credentials)))
    before = rss_mib(pid)[0]
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    proxied_wall, proxied = asyncio.run(streams(proxy_url, credentials))
    # Again at once: each session's answer from the API server is still fresh
    # if session_check_seconds outlasts the first round.
    again_wall, again = asyncio.run(streams(proxy_url, credentials))
    done.set()
    sampler.join()
    print(
        f"{len(credentials)} concurrent streams ({events} events, {delay * 1000:.0f} ms apart: "
        f"{delay * events:.2f} s each), all done in / last byte p50:"
    )
    rows = (("direct", direct_wall, direct), ("proxied", proxied_wall, proxied), ("again", again_wall, again))
    for name, wall, times in rows:
        print(f"  {name:8s} {wall:.2f} s / {statistics.median(t[1] for t in times):.2f} s")
    print(f"  ratio    {proxied_wall / direct_wall:.2f}x, again {again_wall / direct_wall:.2f}x")
    print(
        f"proxy RSS before {before:.1f} MiB, during max {max(s[0] for s in samples):.1f} MiB, "
        f"peak (VmHWM) {max(s[1] for s in samples):.1f} MiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--delay", type=float, default=0.05)
    parser.add_argument("--check-seconds", type=float, default=2.0)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="codex-proxybench-"))
    cp = ControlPlane(work / "cp", ensure_binaries(), run_scheduler=False).start()
    cp.install_crds(REPO_ROOT / "crds")
    redis = RedisServer(work / "redis").start()
    fake = FakeModelServer().start()
    proxy = None
    try:
        kube = config.new_client_from_config(config_file=str(cp.kubeconfig("admin")))
        client.CoreV1Api(kube).create_namespace({"metadata": {"name": "bench"}})
        refs = live_sessions(kube, "bench", max(args.streams, 1))
        proxy = start_model_proxy(
            cp,
            work,
            proxy_config(fake, args.check_seconds),
            provider_keys={"CODEX_MODEL_API_KEY": KEY},
            redis_url=redis.url,
        )
        if args.turns:
            turns(fake, proxy.base_url("fake"), mint(proxy.signing_key, refs[0]), args.turns, work)
        items = [message_item(f"part {i} " + "lorem ipsum " * 20) for i in range(args.events)]
        fake.set_script(then=respond(*items, usage=Usage(1000, 200)))
        credentials = [mint(proxy.signing_key, r) for r in refs]
        print(
            f"streamed answer: {args.events + 2} SSE events; Redis on; session_check_seconds {args.check_seconds}"
        )
        asyncio.run(latency(fake.url, proxy.base_url("fake"), credentials[0], args.requests))
        fake.set_script(then=respond(*items, usage=Usage(1000, 200), delay=args.delay))
        assert proxy.proc.pid is not None
        streams_of = credentials[: args.streams]
        concurrency(fake.url, proxy.base_url("fake"), streams_of, proxy.proc.pid, args.delay, args.events)
    finally:
        if proxy is not None:
            proxy.stop()
        fake.stop()
        redis.stop()
        cp.stop()


if __name__ == "__main__":
    main()
