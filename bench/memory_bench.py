"""P5: resident memory of the operator with N CodexSessions (and their
ApprovalRequests), and of the gateway with M open MCP sessions and N sessions
in its watch-fed cache, on a real control plane.

--component operator (default):

Creates --sessions sessions (every --approval-every-th one full-access, so it
waits for a human with an ApprovalRequest), lets the operator settle, and
reads its RSS (and peak) from /proc. Baseline in the same run: a bare kopf
operator with no-op event handlers on the same three resources, over the
same objects, so the ratio says what our operator adds to kopf's floor.

With --limit 10 (the shipped max_concurrent_sessions) most sessions queue;
--limit 100000 gives every session that needs no approval a runner pod too
(pods stay Pending: there is no node), the worst case for the store.

--tracemalloc N writes the operator's N largest allocation sites (by line)
to stdout at the end: where the memory goes.

--component gateway: the real codex-gateway (its ServiceAccount's RBAC, Redis
on, as an install runs it) with --sessions sessions in its namespace, then
--mcp-sessions handshake-era MCP sessions opened and left open (the SDK keeps
them until its 30-minute idle timeout). Baseline in the same run: the bare
MCPServer of bench/gateway_bench.py with as many MCP sessions.

--soak-minutes M: both on one control plane (operator, gateway with Redis),
--sessions sessions and --mcp-sessions open MCP sessions, then M minutes of
steady traffic: every second two sessions created and the two oldest
deleted (the population stays), five short MCP sessions that each call
codex-session-info and read codex://sessions/active, then close. RSS of
both sampled every 30 s; flat means the last sample is within 5 % of the
one after the first five minutes. Bounded, loopback only.

Usage: .venv/bin/python bench/memory_bench.py [--sessions 5000] [--limit 10] [--tracemalloc 25]
       .venv/bin/python bench/memory_bench.py --component gateway [--sessions 5000] [--mcp-sessions 1000]
       .venv/bin/python bench/memory_bench.py --soak-minutes 20 [--sessions 5000] [--mcp-sessions 1000]
"""

from __future__ import annotations

import argparse
import os
import signal
import tempfile
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kubernetes import client, config

from codex_api import names
from codex_devenv.assets import REPO_ROOT, ensure_binaries
from codex_devenv.controlplane import ControlPlane
from codex_devenv.operator_process import bind_operator, operator_kubeconfig, start_operator
from codex_devenv.process import ManagedProcess
from codex_devenv.testkit import session_body

GROUP, VERSION = "codex.techsapo.io", "v1alpha1"

# A sitecustomize for the operator under --tracemalloc: SIGUSR2 writes the
# top allocation sites to $CODEX_TRACEMALLOC_OUT.
TRACE_HOOK = textwrap.dedent(
    """
    import os, signal, tracemalloc
    tracemalloc.start(int(os.environ.get("CODEX_TRACEMALLOC_FRAMES", "1")))
    def _dump(*_):
        snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
        top = snap.statistics("lineno")
        total = sum(s.size for s in top)
        with open(os.environ["CODEX_TRACEMALLOC_OUT"], "w") as out:
            out.write(f"traced {total / 2**20:.1f} MiB in {sum(s.count for s in top)} blocks\\n")
            for s in top[: int(os.environ.get("CODEX_TRACEMALLOC_TOP", "25"))]:
                out.write(f"{s.size / 2**20:8.2f} MiB {s.count:8d}  {s.traceback[0].filename}:{s.traceback[0].lineno}\\n")
    signal.signal(signal.SIGUSR2, _dump)
    """
)

BARE_KOPF = textwrap.dedent(
    """
    import kopf
    @kopf.on.startup()
    async def startup(settings, **_):
        settings.posting.enabled = False
        settings.scanning.disabled = True
    for group, version, plural in [
        ("codex.techsapo.io", "v1alpha1", "codexsessions"),
        ("codex.techsapo.io", "v1alpha1", "approvalrequests"),
        ("", "v1", "pods"),
    ]:
        kopf.on.event(group, version, plural)(lambda **_: None)
    """
)


def bench_namespace(cp: ControlPlane, ns: str) -> tuple[Any, Any]:
    """CRDs installed and `ns` created; (CoreV1Api, CustomObjectsApi) as the admin."""
    cp.install_crds(REPO_ROOT / "crds")
    api_client = config.new_client_from_config(config_file=str(cp.kubeconfig("admin")))
    api_client.configuration.connection_pool_maxsize = 32
    core, custom = client.CoreV1Api(api_client), client.CustomObjectsApi(api_client)
    namespace: Any = {"metadata": {"name": ns}}
    core.create_namespace(namespace)
    return core, custom


def session_name(i: int) -> str:
    return f"s-{i:06d}"


def create_session(custom: Any, ns: str, i: int, *, approval_every: int) -> None:
    """Session i: alice's every fifth (labelled as the gateway labels hers), 50
    users in all; every approval_every-th full-access (0: none)."""
    from codex_gateway.sessions import requester_label

    user = "alice" if i % 5 == 0 else f"user-{i % 50}"
    spec = {"sandbox": "full-access"} if approval_every and i % approval_every == 0 else {}
    body = session_body(session_name(i), requestedBy=user, **spec)
    body["metadata"]["labels"] = {names.LABEL_REQUESTER: requester_label(user)}
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, "codexsessions", body)


def stop_all(*things: Any) -> None:
    """Stop what was started (None: not started), in the order given."""
    for thing in things:
        if thing is not None:
            thing.stop()


def rss_mib(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process, MiB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
    )
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def settle(pid: int, quiet: float = 10, timeout: float = 600) -> None:
    """Until the process used under 5 % of a core over `quiet` seconds (its
    queues are empty; periodic work such as timers may go on)."""
    from codex_devenv.measure import cpu_seconds

    deadline = time.monotonic() + timeout
    samples = [(time.monotonic(), cpu_seconds(pid))]
    while time.monotonic() < deadline:
        time.sleep(1)
        samples.append((time.monotonic(), cpu_seconds(pid)))
        window = [s for s in samples if s[0] >= samples[-1][0] - quiet]
        if samples[-1][0] - samples[0][0] >= quiet and window[-1][1] - window[0][1] < 0.05 * quiet:
            return


def mcp_opening(token: str) -> tuple[dict[str, str], dict[str, Any]]:
    """The headers and the `initialize` request of a handshake-era MCP session."""
    headers = {
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "Authorization": f"Bearer {token}",
        "MCP-Protocol-Version": "2025-11-25",
    }
    params = {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "p5", "version": "1"},
    }
    return headers, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": params}


async def open_mcp_sessions(url: str, token: str, count: int, concurrency: int = 32) -> int:
    """Open `count` handshake-era MCP sessions and leave them open; returns how many opened."""
    import asyncio

    import httpx2

    headers, init = mcp_opening(token)
    done = 0
    gate = asyncio.Semaphore(concurrency)
    async with httpx2.AsyncClient(timeout=60) as http:

        async def one() -> None:
            nonlocal done
            async with gate:
                resp = await http.post(url, json=init, headers=headers)
                session = resp.headers.get("mcp-session-id")
                if resp.status_code != 200 or not session:
                    return
                ack = {"jsonrpc": "2.0", "method": "notifications/initialized"}
                await http.post(url, json=ack, headers={**headers, "Mcp-Session-Id": session})
                done += 1

        await asyncio.gather(*(one() for _ in range(count)))
    return done


def gateway_main(args: argparse.Namespace) -> None:
    import asyncio
    import json
    import sys
    import urllib.request

    from codex_devenv.gateway_process import bind_gateway, gateway_kubeconfig, start_gateway
    from codex_devenv.process import free_port, wait_for
    from codex_devenv.redis_server import RedisServer

    token = "p5-alice-token-0123456789"
    tokens = {token: "alice"}
    work = Path(tempfile.mkdtemp(prefix="codex-membench-gw-"))
    cp = ControlPlane(work / "cp", ensure_binaries(), run_scheduler=False).start()
    redis = RedisServer(work / "redis").start()
    gw = baseline = None
    try:
        ns = "bench"
        _core, custom = bench_namespace(cp, ns)

        def create(i: int) -> None:
            create_session(custom, ns, i, approval_every=0)

        with ThreadPoolExecutor(args.concurrency) as pool:
            list(pool.map(create, range(args.sessions)))
        bind_gateway(cp, ns)
        gw = start_gateway(cp, ns, work, tokens, kubeconfig=gateway_kubeconfig(cp, work), redis_url=redis.url)
        assert gw.proc.pid is not None
        tokens_file = work / "baseline-tokens.json"
        tokens_file.write_text(json.dumps(tokens))
        port = free_port()
        baseline = ManagedProcess(
            "baseline-mcp",
            [
                sys.executable,
                str(REPO_ROOT / "bench/gateway_bench.py"),
                "--serve-baseline",
                str(port),
                str(tokens_file),
            ],
            work / "baseline.log",
        ).start()
        assert baseline.pid is not None

        def healthy() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as resp:
                    return bool(resp.status == 200)
            except OSError:
                return False

        wait_for(healthy, timeout=30, what="the baseline MCP server")
        wait_for(
            lambda: gw.metric("codex_gateway_mcp_connections_open") is not None,
            timeout=30,
            what="the gateway's metrics",
        )
        settle(gw.proc.pid, quiet=5)
        idle = {"gateway": rss_mib(gw.proc.pid)[0], "baseline": rss_mib(baseline.pid)[0]}
        opened = {
            "gateway": asyncio.run(open_mcp_sessions(gw.url, token, args.mcp_sessions)),
            "baseline": asyncio.run(
                open_mcp_sessions(f"http://127.0.0.1:{port}/mcp", token, args.mcp_sessions)
            ),
        }
        settle(gw.proc.pid, quiet=5)
        held = gw.metric("codex_gateway_mcp_connections_open")
        rss = {"gateway": rss_mib(gw.proc.pid), "baseline": rss_mib(baseline.pid)}
        print(f"objects: {args.sessions} sessions in the gateway's namespace (its cache); Redis on")
        for name in ("gateway", "baseline"):
            print(
                f"{name:9s} RSS {rss[name][0]:6.1f} MiB  peak {rss[name][1]:6.1f} MiB  with {opened[name]} MCP sessions "
                f"(before them: {idle[name]:.1f} MiB)"
            )
        print(
            f"gateway holds {held:.0f} MCP sessions; ratio RSS {rss['gateway'][0] / rss['baseline'][0]:.2f}x"
        )
    finally:
        stop_all(gw, baseline, redis, cp)


async def mcp_round(http: Any, url: str, token: str) -> int:
    """One short MCP session: initialize, a tool call, a resource read, DELETE; errors seen."""
    headers, init = mcp_opening(token)
    resp = await http.post(url, json=init, headers=headers)
    session = resp.headers.get("mcp-session-id")
    if resp.status_code != 200 or not session:
        return 1
    headers["Mcp-Session-Id"] = session
    errors = 0
    for body in (
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": "codex-session-info", "arguments": {"list_active": True}},
        },
        {"jsonrpc": "2.0", "id": 3, "method": "resources/read", "params": {"uri": "codex://sessions/active"}},
    ):
        answer = await http.post(url, json=body, headers=headers)
        bad = answer.status_code >= 400 or '"error"' in answer.text[:200] or '"isError":true' in answer.text
        if bad and os.environ.get("SOAK_DEBUG"):
            print("error answer:", body.get("method"), answer.status_code, answer.text[:400])
        errors += bad
    await http.delete(url, headers=headers)
    return errors


def soak_main(args: argparse.Namespace) -> None:
    import asyncio

    import httpx2

    from codex_devenv.gateway_process import bind_gateway, gateway_kubeconfig, start_gateway
    from codex_devenv.redis_server import RedisServer

    token = "soak-alice-token-0123456789"
    # Steady traffic from ten users, each well under the per-user rate limit
    # (60 tool calls a minute by default), so an error is an error, not a 429.
    traffic_tokens = [f"soak-user{n}-token-0123456789" for n in range(10)]
    users = {token: "alice"} | {t: f"user{n}" for n, t in enumerate(traffic_tokens)}
    work = Path(tempfile.mkdtemp(prefix="codex-soak-"))
    cp = ControlPlane(work / "cp", ensure_binaries(), run_scheduler=False).start()
    redis = RedisServer(work / "redis").start()
    op = gw = None
    try:
        ns = "bench"
        _core, custom = bench_namespace(cp, ns)
        bind_operator(cp, ns)
        bind_gateway(cp, ns)
        op = start_operator(
            cp, operator_kubeconfig(cp, work), ns, work, limit=args.limit, approval_timeout=86400
        )
        gw = start_gateway(cp, ns, work, users, kubeconfig=gateway_kubeconfig(cp, work), redis_url=redis.url)
        assert op.proc.pid is not None and gw.proc.pid is not None
        pids = {"operator": op.proc.pid, "gateway": gw.proc.pid}

        def create(i: int) -> None:
            create_session(custom, ns, i, approval_every=args.approval_every)

        def delete(i: int) -> None:
            custom.delete_namespaced_custom_object(GROUP, VERSION, ns, "codexsessions", session_name(i))

        with ThreadPoolExecutor(args.concurrency) as pool:
            list(pool.map(create, range(args.sessions)))
        opened = asyncio.run(open_mcp_sessions(gw.url, token, args.mcp_sessions))
        for pid in pids.values():
            settle(pid, quiet=5)
        print(
            f"soak: {args.sessions} sessions, {opened} open MCP sessions, {args.soak_minutes} min of traffic"
        )
        samples: list[tuple[float, dict[str, float]]] = []

        async def traffic() -> tuple[int, int]:
            calls = errors = 0
            oldest, newest = 0, args.sessions
            start = time.monotonic()
            next_sample = start
            async with httpx2.AsyncClient(timeout=30) as http:
                while (elapsed := time.monotonic() - start) < args.soak_minutes * 60:
                    tick = time.monotonic()
                    if tick >= next_sample:
                        samples.append((elapsed / 60, {k: rss_mib(v)[0] for k, v in pids.items()}))
                        next_sample += 30
                    for i in (newest, newest + 1):
                        await asyncio.to_thread(create, i)
                    for i in (oldest, oldest + 1):
                        await asyncio.to_thread(delete, i)
                    newest, oldest = newest + 2, oldest + 2
                    results = await asyncio.gather(
                        *(mcp_round(http, gw.url, traffic_tokens[(calls + n) % 10]) for n in range(5))
                    )
                    calls, errors = calls + 5, errors + sum(results)
                    await asyncio.sleep(max(0.0, 1 - (time.monotonic() - tick)))
            samples.append((args.soak_minutes, {k: rss_mib(v)[0] for k, v in pids.items()}))
            return calls, errors

        calls, errors = asyncio.run(traffic())
        print(
            f"{calls} short MCP sessions ({errors} errors), {2 * len(samples) * 30} sessions churned (approx.)"
        )
        print("minute   " + "  ".join(f"{k:>9s}" for k in pids))
        for minute, rss in samples:
            print(f"{minute:6.1f}   " + "  ".join(f"{rss[k]:9.1f}" for k in pids))
        warm = next((rss for minute, rss in samples if minute >= 5), samples[0][1])
        end = samples[-1][1]
        for k in pids:
            peak = max(rss[k] for _, rss in samples)
            growth = (end[k] - warm[k]) / warm[k] * 100
            verdict = "flat" if abs(growth) <= 5 else "GROWING"
            print(
                f"{k:9s} after 5 min {warm[k]:6.1f} MiB, end {end[k]:6.1f} MiB ({growth:+.1f} %), peak {peak:6.1f} MiB: {verdict}"
            )
    finally:
        stop_all(gw, op, redis, cp)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--soak-minutes", type=float, default=0)
    parser.add_argument("--component", choices=["operator", "gateway"], default="operator")
    parser.add_argument("--mcp-sessions", type=int, default=1000)
    parser.add_argument("--sessions", type=int, default=5000)
    parser.add_argument("--approval-every", type=int, default=5)
    parser.add_argument("--limit", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--tracemalloc", type=int, default=0, metavar="TOP")
    args = parser.parse_args()
    if args.soak_minutes:
        soak_main(args)
        return
    if args.component == "gateway":
        gateway_main(args)
        return
    work = Path(tempfile.mkdtemp(prefix="codex-membench-"))
    cp = ControlPlane(work / "cp", ensure_binaries(), run_scheduler=False).start()
    op = bare = None
    try:
        ns = "bench"
        core, custom = bench_namespace(cp, ns)
        bind_operator(cp, ns)
        env = None
        if args.tracemalloc:
            hook = work / "hook"
            hook.mkdir()
            (hook / "sitecustomize.py").write_text(TRACE_HOOK)
            env = {
                "PYTHONPATH": str(hook),
                "CODEX_TRACEMALLOC_OUT": str(work / "tracemalloc.txt"),
                "CODEX_TRACEMALLOC_TOP": str(args.tracemalloc),
            }
        op = start_operator(
            cp, operator_kubeconfig(cp, work), ns, work, limit=args.limit, approval_timeout=86400, env=env
        )
        assert op.proc.pid is not None
        settle(op.proc.pid, quiet=3)
        idle, _ = rss_mib(op.proc.pid)

        def create(i: int) -> None:
            create_session(custom, ns, i, approval_every=args.approval_every)

        t0 = time.monotonic()
        with ThreadPoolExecutor(args.concurrency) as pool:
            list(pool.map(create, range(args.sessions)))
        created = time.monotonic() - t0
        settle(op.proc.pid)
        rss, peak = rss_mib(op.proc.pid)
        approvals = len(custom.list_namespaced_custom_object(GROUP, VERSION, ns, "approvalrequests")["items"])
        pods = len(core.list_namespaced_pod(ns).items)
        if args.tracemalloc:
            os.kill(op.proc.pid, signal.SIGUSR2)
            time.sleep(3)
        op.stop()
        # Baseline: a bare kopf operator over the same objects.
        bare_file = work / "bare_kopf.py"
        bare_file.write_text(BARE_KOPF)
        bare = ManagedProcess(
            "bare-kopf",
            [
                str(REPO_ROOT / ".venv/bin/kopf"),
                "run",
                "--namespace",
                ns,
                "--standalone",
                str(bare_file),
            ],
            work / "bare-kopf.log",
            env={**os.environ, "KUBECONFIG": str(cp.kubeconfig("admin"))},
        ).start()
        assert bare.pid is not None
        time.sleep(3)
        settle(bare.pid, quiet=5)
        bare_rss, bare_peak = rss_mib(bare.pid)
        print(
            f"objects: {args.sessions} sessions ({approvals} ApprovalRequests, {pods} runner pods), "
            f"created in {created:.0f}s; limit {args.limit}"
        )
        print(
            f"operator   RSS {rss:6.1f} MiB  peak {peak:6.1f} MiB  (idle before the sessions: {idle:.1f} MiB)"
        )
        print(
            f"bare kopf  RSS {bare_rss:6.1f} MiB  peak {bare_peak:6.1f} MiB  (same watches, no-op handlers)"
        )
        print(f"ratio      RSS {rss / bare_rss:.2f}x   peak {peak / bare_peak:.2f}x")
        if args.tracemalloc:
            print((work / "tracemalloc.txt").read_text())
    finally:
        if bare:
            bare.stop()
        if op:
            op.stop()
        cp.stop()


if __name__ == "__main__":
    main()
