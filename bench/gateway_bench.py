"""Gateway benchmark P4: session-info and resource reads at 100 concurrent
MCP clients, against a bare MCPServer measured in the same run.

Gateway = the real `codex-gateway` process, as an install runs it (its own
ServiceAccount token and RBAC), on a real control plane, with finished and
running sessions of the calling user in its namespace (made by the real
operator; the bench plays the node). Calls: the `codex-session-info` tool
with a session_id (one GET on the API server) and `resources/read` of
codex://sessions/active (one LIST by the requester label).

Baseline = a bare MCPServer with one `echo` tool and one static resource,
served by uvicorn (default logging: an access line per request, as the
gateway logs one) in its own process on 127.0.0.1 with the same streamable
HTTP app, the same bearer-token check (the gateway's token store behind the
SDK's auth middleware) and the same Host/Origin protection.

Load = this process: N SDK clients (mcp.Client over streamable HTTP with
httpx2, as GatewayProcess.client), each making its calls one after the
other, all clients at once. The servers are separate processes, but on a
2-core machine the load generator competes with them for CPU: the bench
prints the CPU every process spent per call, so the ratio can be read
against what each side costs.

With --real-install the gateway runs as an install runs it: Redis on (rate
limits checked on every tool call, set high enough never to refuse so every
call pays its Redis round trips; handshake-era MCP sessions recorded and
touched in Redis for scale-out) and the operator running beside it.

Usage: .venv/bin/python bench/gateway_bench.py [--clients 100] [--calls-per-client 10] [--rounds 3]
           [--eras legacy,2026-07-28] [--quick] [--real-install]
       BENCH_PROFILE=/tmp/gw  records the gateway with py-spy during its phases
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import uvicorn
from kubernetes import client, config
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server import MCPServer
from mcp.server.auth.settings import AuthSettings
from mcp.server.transport_security import TransportSecuritySettings
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from codex_api.config import parse_config
from codex_api.result import RunnerResult
from codex_api.session import Usage
from codex_devenv.assets import REPO_ROOT, ensure_binaries
from codex_devenv.controlplane import ControlPlane
from codex_devenv.gateway_process import bind_gateway, gateway_kubeconfig, start_gateway
from codex_devenv.measure import cpu_seconds, pct
from codex_devenv.operator_process import bind_operator, operator_kubeconfig, start_operator
from codex_devenv.process import ManagedProcess, free_port, wait_for
from codex_devenv.testkit import finish_pod, list_sessions, set_pod_running
from codex_gateway.auth import TokenStore
from codex_gateway.sessions import CodexArgs, build_session

ALICE = "bench-alice-" + secrets.token_hex(8)
BOB = "bench-bob-" + secrets.token_hex(8)
TOKENS = {ALICE: "alice", BOB: "bob"}
STATIC_URI = "bench://static"
ERAS = ("legacy", "2026-07-28")
ERA_NOTE = {
    "legacy": "initialize handshake, Mcp-Session-Id",
    "2026-07-28": "stateless, no handshake",
}


# --------------------------------------------------------------------------- the baseline server
def serve_baseline(port: int, tokens_file: str) -> None:
    """The bare MCPServer: one echo tool, one static resource (runs in its own process)."""
    url = f"http://127.0.0.1:{port}/mcp"
    server: MCPServer = MCPServer(
        "baseline",
        token_verifier=TokenStore.from_file(tokens_file),
        auth=AuthSettings(issuer_url=url, resource_server_url=url, validate_token_resource=False),
    )
    static = json.dumps({"user": "alice", "count": 0, "by_phase": {}, "sessions": []}, indent=2)

    @server.tool(name="echo", description="Echo the text back.")
    async def echo(text: str) -> str:
        return text

    @server.resource(STATIC_URI, name="static", mime_type="application/json")
    async def static_resource() -> str:
        return static

    @server.custom_route("/health", methods=["GET"])
    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=["127.0.0.1:*", "localhost:*"],
        allowed_origins=["http://127.0.0.1:*", "http://localhost:*"],
    )
    app = server.streamable_http_app(
        streamable_http_path="/mcp", host="127.0.0.1", transport_security=security
    )
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="info", lifespan="on")


# --------------------------------------------------------------------------- measuring
@dataclass
class Phase:
    label: str
    latencies: list[float]
    wall: float
    errors: int
    cpu: dict[str, float]
    payload: int

    @staticmethod
    def merge(phases: list[Phase]) -> Phase:
        cpu: dict[str, float] = {}
        for p in phases:
            for k, v in p.cpu.items():
                cpu[k] = cpu.get(k, 0.0) + v
        return Phase(
            phases[0].label,
            [v for p in phases for v in p.latencies],
            sum(p.wall for p in phases),
            sum(p.errors for p in phases),
            cpu,
            max(p.payload for p in phases),
        )

    @property
    def server_cpu(self) -> float:
        """CPU seconds per call of the serving side (everything but the load generator)."""
        return sum(v for k, v in self.cpu.items() if k != "bench client") / len(self.latencies)

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.wall

    def line(self) -> str:
        if not self.latencies:
            return f"  {self.label:<34} no call succeeded ({self.errors} errors)"
        ms = [v * 1000 for v in self.latencies]
        calls = len(self.latencies)
        cpu = ", ".join(f"{k} {v / calls * 1000:.2f}" for k, v in self.cpu.items() if v > 0)
        errors = f"  ERRORS {self.errors}" if self.errors else ""
        return (
            f"  {self.label:<34} {self.rate:7.1f} req/s  p50 {statistics.median(ms):7.1f} ms  "
            f"p99 {pct(ms, 99):7.1f} ms  ({calls} calls, {self.payload} B)  CPU ms/call: {cpu}{errors}"
        )


@dataclass
class Procs:
    pids: dict[str, int | None] = field(default_factory=dict)

    def snapshot(self) -> dict[str, float]:
        snap = {k: cpu_seconds(v) for k, v in self.pids.items()}
        snap["bench client"] = time.process_time()
        return snap


@asynccontextmanager
async def connect(url: str, token: str, mode: str) -> AsyncIterator[Any]:
    """One SDK client as GatewayProcess.client makes it, without the response cache
    (every read must reach the server)."""
    http = httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {token}"}, timeout=httpx2.Timeout(30, read=120)
    )
    transport = streamable_http_client(url, http_client=http)
    async with http, Client(transport, mode=mode, cache=None) as mcp_client:
        yield mcp_client


Call = Callable[[Any, int, int], Awaitable[int]]


async def run_phase(
    label: str, clients: list[Any], call: Call, calls_per_client: int, procs: Procs, only: tuple[str, ...]
) -> Phase:
    """Every client makes `calls_per_client` calls one after the other, all clients at once."""
    # One warm-up call per client (connections, schema caches), not measured.
    sizes = await asyncio.gather(*(call(c, i, -1) for i, c in enumerate(clients)))
    latencies: list[float] = []
    errors = 0

    async def worker(index: int, mcp_client: Any) -> None:
        nonlocal errors
        for k in range(calls_per_client):
            t0 = time.perf_counter()
            try:
                await call(mcp_client, index, k)
            except Exception as err:  # counted and shown, the run goes on
                errors += 1
                if errors <= 3:
                    print(f"    {label}: {type(err).__name__}: {err}", file=sys.stderr)
                continue
            latencies.append(time.perf_counter() - t0)

    before = procs.snapshot()
    t0 = time.perf_counter()
    await asyncio.gather(*(worker(i, c) for i, c in enumerate(clients)))
    wall = time.perf_counter() - t0
    after = procs.snapshot()
    cpu = {k: after[k] - before[k] for k in after if k in only or k == "bench client"}
    return Phase(label, latencies, wall, errors, cpu, max(sizes))


def ok_tool(result: Any) -> int:
    if result.is_error:
        raise RuntimeError(str(result.content[0].text if result.content else result))
    return len(json.dumps(result.structured_content or {})) + sum(
        len(getattr(c, "text", "") or "") for c in result.content
    )


def ok_read(result: Any) -> int:
    return sum(len(getattr(c, "text", "") or "") for c in result.contents)


# --------------------------------------------------------------------------- setup
def seed_sessions(
    cp: Any, api: Any, ns: str, work: Path, finished: int, running: int, others: int, *, keep_operator: bool
) -> tuple[list[str], Any]:
    """Sessions as the gateway creates them (its labels), made real by the
    operator: `finished` of alice's end Succeeded with a result, `running` stay
    Running, `others` are bob's (finished). Returns alice's finished ids, and
    the operator if `keep_operator` (else it is stopped: it would only idle)."""
    settings = parse_config("")
    custom = client.CustomObjectsApi(api)
    bind_operator(cp, ns)
    op = start_operator(cp, operator_kubeconfig(cp, work), ns, work, limit=10000, timeout_ms=86_400_000)
    try:
        plan = [("alice", "done")] * finished + [("alice", "run")] * running + [("bob", "done")] * others
        names: dict[str, tuple[str, str]] = {}
        for i, (user, fate) in enumerate(plan):
            # The gateway's own bodies (its labels), created directly: setup, not measured.
            body = build_session(
                CodexArgs(prompt=f"bench question {i}: explain this repository"), user=user, config=settings
            )
            custom.create_namespaced_custom_object("codex.techsapo.io", "v1alpha1", ns, "codexsessions", body)
            names[body["metadata"]["name"]] = (user, fate)

        result = RunnerResult(
            outcome="completed",
            thread_id="thread-bench",
            final_message="The repository runs Codex sessions in runner pods. " * 8,
            usage=Usage(input_tokens=1200, cached_input_tokens=0, output_tokens=300, reasoning_tokens=0),
        )
        pending = dict(names)
        deadline = time.monotonic() + 120
        while pending and time.monotonic() < deadline:
            for s in list_sessions(api, ns):
                name, status = s["metadata"]["name"], s.get("status") or {}
                if name in pending and status.get("phase") == "Running" and status.get("podName"):
                    if pending[name][1] == "done":
                        set_pod_running(api, ns, status["podName"])
                        finish_pod(api, ns, status["podName"], result)
                    del pending[name]
            time.sleep(0.1)
        if pending:
            raise TimeoutError(f"sessions without a pod: {sorted(pending)}")
        wanted = {n for n, (_, fate) in names.items() if fate == "done"}
        while time.monotonic() < deadline:
            phases = {
                s["metadata"]["name"]: (s.get("status") or {}).get("phase") for s in list_sessions(api, ns)
            }
            if all(phases.get(n) == "Succeeded" for n in wanted):
                break
            time.sleep(0.1)
        else:
            raise TimeoutError("finished sessions did not reach Succeeded")
    except BaseException:
        op.stop()
        raise
    if not keep_operator:
        op.stop()
        op = None
    return sorted(n for n, (user, fate) in names.items() if user == "alice" and fate == "done"), op


# --------------------------------------------------------------------------- main
async def bench_era(
    mode: str,
    args: argparse.Namespace,
    gateway_url: str,
    baseline_url: str,
    alice_sessions: list[str],
    procs: Procs,
    profile: Callable[[str], Any],
) -> list[tuple[Phase, Phase]]:
    print(
        f"\nera {mode} ({ERA_NOTE[mode]}): {args.clients} clients x {args.calls_per_client} calls"
        f" x {args.rounds} rounds"
    )
    async with AsyncExitStack() as stack:
        connected = {}
        for target, url in (("baseline", baseline_url), ("gateway", gateway_url)):
            # One after the other: anyio wants a client closed by the task that opened it.
            t0 = time.perf_counter()
            connected[target] = [
                await stack.enter_async_context(connect(url, ALICE, mode)) for _ in range(args.clients)
            ]
            each = (time.perf_counter() - t0) / args.clients * 1000
            print(f"  connect {target:<9} {each:6.1f} ms per client (sequential, {args.clients} clients)")
        # Tool listings first: the 2026-07-28 client wants one before it calls a tool.
        for clients in connected.values():
            await asyncio.gather(*(c.list_tools() for c in clients))

        async def echo(c: Any, i: int, k: int) -> int:
            return ok_tool(await c.call_tool("echo", {"text": f"client {i} call {k}"}))

        async def info(c: Any, i: int, k: int) -> int:
            sid = alice_sessions[(i + max(k, 0)) % len(alice_sessions)]
            return ok_tool(await c.call_tool("codex-session-info", {"session_id": sid}))

        async def read_static(c: Any, i: int, k: int) -> int:
            return ok_read(await c.read_resource(STATIC_URI))

        async def read_active(c: Any, i: int, k: int) -> int:
            return ok_read(await c.read_resource("codex://sessions/active"))

        server_side = ("baseline",)
        gateway_side = tuple(
            p for p in ("gateway", "kube-apiserver", "etcd", "redis", "operator") if p in procs.pids
        )
        pairs = []
        for kind, base_call, gw_call, base_label, gw_label in (
            ("tool", echo, info, "baseline echo", "gateway codex-session-info"),
            (
                "resource",
                read_static,
                read_active,
                f"baseline read {STATIC_URI}",
                "gateway read sessions/active",
            ),
        ):
            # Alternate baseline and gateway round by round, so drift in the
            # machine's other load hits both sides alike.
            rounds: list[tuple[Phase, Phase]] = []
            for r in range(args.rounds):
                base = await run_phase(
                    base_label, connected["baseline"], base_call, args.calls_per_client, procs, server_side
                )
                async with profile(f"{mode}-{kind}" if r == 0 else ""):
                    gw = await run_phase(
                        gw_label, connected["gateway"], gw_call, args.calls_per_client, procs, gateway_side
                    )
                rounds.append((base, gw))
            base, gw = Phase.merge([b for b, _ in rounds]), Phase.merge([g for _, g in rounds])
            print(base.line())
            print(gw.line())
            per_round = " ".join(f"{g.rate / b.rate:.2f}" for b, g in rounds)
            print(
                f"  {'':<34} ratio gateway/baseline: throughput {gw.rate / base.rate:.2f}x "
                f"(rounds: {per_round}), p99 {pct(gw.latencies, 99) / pct(base.latencies, 99):.1f}x, "
                f"server CPU per call {gw.server_cpu / base.server_cpu:.1f}x"
            )
            pairs.append((base, gw))
    return pairs


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve-baseline":
        serve_baseline(int(sys.argv[2]), sys.argv[3])
        return

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--calls-per-client", type=int, default=10, help="per round")
    parser.add_argument(
        "--rounds", type=int, default=3, help="baseline and gateway phases alternate this often"
    )
    parser.add_argument("--eras", default=",".join(ERAS), help="comma-separated: legacy, 2026-07-28")
    parser.add_argument("--finished", type=int, default=20, help="alice's finished sessions")
    parser.add_argument("--running", type=int, default=4, help="alice's running sessions")
    parser.add_argument("--others", type=int, default=20, help="bob's finished sessions")
    parser.add_argument("--quick", action="store_true", help="legacy era only, 1 round of 5 calls per client")
    parser.add_argument("--real-install", action="store_true", help="Redis on and the operator running")
    args = parser.parse_args()
    eras = [e.strip() for e in args.eras.split(",") if e.strip()]
    if args.quick:
        eras, args.calls_per_client, args.rounds = ["legacy"], 5, 1
    for era in eras:
        if era not in ERAS:
            parser.error(f"unknown era {era!r}")

    work = Path(tempfile.mkdtemp(prefix="codex-gateway-bench-"))
    cp = ControlPlane(work / "cp", ensure_binaries(), run_scheduler=False).start()
    gw = None
    baseline = None
    op = redis = None
    try:
        cp.install_crds(REPO_ROOT / "crds")
        api = config.new_client_from_config(config_file=str(cp.kubeconfig("admin")))
        ns = "bench"
        namespace: Any = {"metadata": {"name": ns}}
        client.CoreV1Api(api).create_namespace(namespace)
        started = time.perf_counter()
        alice_sessions, op = seed_sessions(
            cp, api, ns, work, args.finished, args.running, args.others, keep_operator=args.real_install
        )
        print(
            f"setup: {args.finished} finished + {args.running} running sessions of alice, "
            f"{args.others} of bob, in {time.perf_counter() - started:.1f}s"
        )
        bind_gateway(cp, ns)
        gateway_config = None
        if args.real_install:
            from codex_devenv.redis_server import RedisServer

            redis = RedisServer(work / "redis").start()
            gateway_config = work / "gateway.toml"
            gateway_config.write_text(
                "[limits]\nrequests_per_minute_per_user = 1000000\nrequests_per_minute_per_session = 1000000\n"
            )
        gw = start_gateway(
            cp,
            ns,
            work,
            TOKENS,
            kubeconfig=gateway_kubeconfig(cp, work),
            extra_args=("--observe-seconds", "5"),  # the gateway's default, as an install runs it
            redis_url=redis.url if redis else None,
            config_file=gateway_config,
        )
        tokens_file = work / "baseline-tokens.json"
        tokens_file.write_text(json.dumps(TOKENS))
        port = free_port()
        baseline = ManagedProcess(
            "baseline-mcp",
            [sys.executable, str(Path(__file__).resolve()), "--serve-baseline", str(port), str(tokens_file)],
            work / "baseline.log",
        ).start()

        def healthy() -> bool:
            assert baseline is not None
            baseline.check_alive()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as resp:
                return bool(resp.status == 200)

        wait_for(healthy, timeout=30, what="the baseline MCP server")
        procs = Procs(
            {
                "baseline": baseline.pid,
                "gateway": gw.proc.pid,
                "kube-apiserver": cp.process("kube-apiserver").pid,
                "etcd": cp.process("etcd").pid,
                **({"operator": op.proc.pid} if op else {}),
                **({"redis": redis.proc.pid} if redis and redis.proc else {}),
            }
        )
        setup = (
            "Redis on (limits checked, MCP sessions shared), the operator running"
            if args.real_install
            else "no Redis (limits, cache off), the operator stopped"
        )
        print(
            f"gateway: the real codex-gateway as its ServiceAccount, {setup}, audit on; "
            "baseline: bare MCPServer, same auth and transport settings"
        )

        profile_dir = os.environ.get("BENCH_PROFILE")

        @asynccontextmanager
        async def profile(tag: str) -> AsyncIterator[None]:
            if not profile_dir or not tag:
                yield
                return
            Path(profile_dir).mkdir(parents=True, exist_ok=True)
            assert gw is not None
            spy = subprocess.Popen(
                [
                    str(REPO_ROOT / ".venv/bin/py-spy"),
                    "record",
                    "--gil",  # only the thread holding the GIL: where the CPU goes
                    "-r",
                    "100",
                    "-f",
                    "raw",
                    "-o",
                    f"{profile_dir}/gateway-{tag}.txt",
                    "-p",
                    str(gw.proc.pid),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            await asyncio.sleep(1)
            try:
                yield
            finally:
                spy.send_signal(2)
                spy.wait(timeout=30)

        for era in eras:
            asyncio.run(
                bench_era(era, args, gw.url, f"http://127.0.0.1:{port}/mcp", alice_sessions, procs, profile)
            )
        print(
            "\nCPU ms/call: per process over the phase, divided by its calls; 'bench client' is this "
            "process (the load generator), which shares the 2 cores with the servers."
        )
    finally:
        if baseline:
            baseline.stop()
        if gw:
            gw.stop()
        if op:
            op.stop()
        if redis:
            redis.stop()
        cp.stop()


if __name__ == "__main__":
    main()
