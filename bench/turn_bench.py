"""P3: one trivial turn end to end, divided by a bare `codex exec` against
the same fake model, in one run; without and through the gateway.

End to end = create a CodexSession through the API -> the operator -> a
runner pod (image from the project's Dockerfile) on a real kubelet -> the
real Codex CLI in the container -> the fake model on the pod bridge ->
status Succeeded, as seen by a watch. Bare = the same Codex binary run
directly on the host with a CODEX_HOME for the same fake model.

Through the gateway (default; --no-through-gateway to skip) = an MCP `codex`
tool call to the real `codex-gateway` (its own ServiceAccount, SDK client,
handshake era) until it returns the completed result. The gateway's sessions
have a persistent workspace (a PersistentVolumeClaim per conversation, bound
here by the devenv's hostPath provisioner), so the same turn is also
measured through the API with a persistent workspace: the difference between
those two rows is the gateway's own cost. The kinds of turn alternate.

Warm runners (default; --no-warm to skip): the operator runs with
`[kubernetes.warm_runners]` on, and a conversation's replies are measured,
each handed to the conversation's live pod: through the API (create a reply
CodexSession -> Succeeded) and through the gateway (`codex-reply` ->
completed). Persistent first turns then start a live pod (cold, as before).

Usage: .venv/bin/python bench/turn_bench.py [--turns 10] [--no-through-gateway] [--no-warm]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench_node import RUNNER_UID
from kubernetes import client, config, watch

from codex_api import names
from codex_api.turn_request import generate_private_key, private_key_pem
from codex_devenv import fake_model as fm
from codex_devenv.assets import REPO_ROOT, ensure_binaries
from codex_devenv.cluster_network import api_server_address
from codex_devenv.codex_cli import run_exec, write_codex_home
from codex_devenv.controlplane import ControlPlane
from codex_devenv.gateway_process import GatewayProcess, bind_gateway, gateway_kubeconfig, start_gateway
from codex_devenv.images import load_into
from codex_devenv.local_volumes import LocalVolumeProvisioner
from codex_devenv.node import TestNode, ensure_kubelet, node_env
from codex_devenv.operator_process import operator_kubeconfig, start_operator
from codex_devenv.process import free_port
from codex_devenv.system import fake_endpoint, operator_config, prepare_sessions_namespace
from codex_devenv.testkit import session_body

GROUP, VERSION, NS = "codex.techsapo.io", "v1alpha1", "bench"
TOKEN = "bench-turn-" + secrets.token_hex(8)


@dataclass
class Turn:
    session: str
    started: float  # perf_counter when the session was created / the tool was called
    ended: float  # ... and when the result was seen

    @property
    def seconds(self) -> float:
        return self.ended - self.started


class PodTimeline:
    """When each pod first reached each milestone, as a watch sees it: created,
    bound to the node, container running (or already exited), container
    exited, pod phase Succeeded/Failed."""

    def __init__(self, api_client: Any) -> None:
        self.core = client.CoreV1Api(api_client)
        self.seen: dict[str, dict[str, float]] = {}
        self.lock = threading.Lock()
        self._stop = False
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        rv = self._list_rv()
        while not self._stop:
            try:
                for event in watch.Watch().stream(
                    self.core.list_namespaced_pod, NS, resource_version=rv, timeout_seconds=30
                ):
                    now, pod = time.perf_counter(), event["object"]
                    rv = pod.metadata.resource_version
                    with self.lock:
                        marks = self.seen.setdefault(pod.metadata.name, {})
                        marks.setdefault("created", now)
                        if pod.spec.node_name:
                            marks.setdefault("bound", now)
                        for cs in pod.status.container_statuses or []:
                            if cs.state.running or cs.state.terminated:
                                marks.setdefault("running", now)
                            if cs.state.terminated:
                                marks.setdefault("exited", now)
                        if pod.status.phase in ("Succeeded", "Failed"):
                            marks.setdefault("pod done", now)
            except Exception:
                if self._stop:
                    return
                rv = self._list_rv()

    def _list_rv(self) -> str:
        listing: Any = self.core.list_namespaced_pod(NS)
        return str(listing.metadata.resource_version)

    def stop(self) -> None:
        self._stop = True

    def breakdown(self, turns: list[Turn]) -> str:
        """Median time between the milestones of these turns' runner pods."""
        steps = (
            ("create->pod", "start", "created"),
            ("pod->bound", "created", "bound"),
            ("bound->running", "bound", "running"),
            ("running->exited", "running", "exited"),
            ("exited->pod done", "exited", "pod done"),
            ("pod done->result", "pod done", "end"),
        )
        spans: dict[str, list[float]] = {label: [] for label, _, _ in steps}
        with self.lock:
            for turn in turns:
                marks = {
                    **self.seen.get(names.runner_pod(turn.session, 1), {}),
                    "start": turn.started,
                    "end": turn.ended,
                }
                for label, a, b in steps:
                    if a in marks and b in marks:
                        spans[label].append(marks[b] - marks[a])
        return "  ".join(f"{label} {statistics.median(v) * 1000:.0f}" for label, v in spans.items() if v)


def end_to_end(custom: client.CustomObjectsApi, name: str, timeout: float = 120, **spec: Any) -> Turn:
    t0 = time.perf_counter()
    created: Any = custom.create_namespaced_custom_object(
        GROUP, VERSION, NS, "codexsessions", session_body(name, prompt="hi", **spec)
    )
    stream = watch.Watch()
    for event in stream.stream(
        custom.list_namespaced_custom_object,
        GROUP,
        VERSION,
        NS,
        "codexsessions",
        field_selector=f"metadata.name={name}",
        resource_version=created["metadata"]["resourceVersion"],
        timeout_seconds=int(timeout),
    ):
        phase = (event["object"].get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed", "TimedOut"):
            stream.stop()
            if phase != "Succeeded":
                raise RuntimeError(f"{name} ended {phase}: {event['object']['status']}")
            return Turn(name, t0, time.perf_counter())
    last: Any = custom.get_namespaced_custom_object(GROUP, VERSION, NS, "codexsessions", name)
    status = last.get("status")
    raise TimeoutError(f"{name}: {status}")


def warm_replies(custom: client.CustomObjectsApi, turns: int) -> tuple[Turn, list[Turn]]:
    """A conversation's first turn (it starts the live pod), then `turns` replies,
    each to the previous one: each is handed to the live pod."""
    persistent: dict[str, Any] = {"workspace": {"type": "persistent"}}
    first = end_to_end(custom, "conv-00", **persistent)
    replies, parent = [], "conv-00"
    for i in range(1, turns + 1):
        name = f"conv-{i:02d}"
        replies.append(end_to_end(custom, name, resumeFrom=parent, **persistent))
        parent = name
    return first, replies


RSS_SUM = (
    "import glob, re\n"
    "total = 0\n"
    "for path in glob.glob('/proc/[0-9]*/status'):\n"
    "    try:\n"
    "        found = re.search(r'VmRSS:\\s+(\\d+)', open(path).read())\n"
    "    except OSError:\n"
    "        continue\n"
    "    total += int(found.group(1)) if found else 0\n"
    "print(total)\n"
)


def live_pod_memory(cp: ControlPlane, api: Any) -> list[float]:
    """MiB resident in each running live pod (the agent, the app-server and what
    they started; the sum of its processes' RSS, shared pages counted in each):
    what an idle conversation costs a node."""
    found = []
    pods: Any = client.CoreV1Api(api).list_namespaced_pod(NS)
    for pod in pods.items:
        annotations = pod.metadata.annotations or {}
        if names.ANNOTATION_AGENT_KEY not in annotations or pod.status.phase != "Running":
            continue
        out = cp.kubectl(
            "exec", "-n", NS, pod.metadata.name, "-c", "runner", "--", "python3", "-c", RSS_SUM, check=False
        )
        if out.returncode == 0 and out.stdout.strip().isdigit():
            found.append(int(out.stdout.strip()) / 1024)
        else:
            print(f"   (memory of {pod.metadata.name} not read: {out.stderr.strip()[:200]})")
    return found


async def warm_through_gateway(gw: GatewayProcess, turns: int) -> list[Turn]:
    """One MCP `codex` call, then `turns` `codex-reply` calls on its conversation."""
    done = []
    async with gw.client(TOKEN, mode="legacy") as mcp_client:
        result = await mcp_client.call_tool("codex", {"prompt": "hi"})
        previous = (result.structured_content or {}).get("session_id")
        for _ in range(turns):
            t0 = time.perf_counter()
            result = await mcp_client.call_tool(
                "codex-reply", {"prompt": "and then?", "session_id": previous}
            )
            t1 = time.perf_counter()
            out = result.structured_content or {}
            if result.is_error or out.get("status") != "completed":
                raise RuntimeError(f"gateway reply did not complete: {result.content}")
            previous = out["session_id"]
            done.append(Turn(previous, t0, t1))
    return done


async def through_gateway(gw: GatewayProcess, turns: int) -> list[Turn]:
    """`turns` MCP `codex` calls on one connected client, each timed until the
    completed result is back."""
    done = []
    async with gw.client(TOKEN, mode="legacy") as mcp_client:
        for _ in range(turns):
            t0 = time.perf_counter()
            result = await mcp_client.call_tool("codex", {"prompt": "hi"})
            t1 = time.perf_counter()
            out = result.structured_content or {}
            if result.is_error or out.get("status") != "completed" or out.get("cached"):
                raise RuntimeError(f"gateway turn did not complete: {result.content}")
            done.append(Turn(out["session_id"], t0, t1))
    return done


def summary(label: str, turns: list[Turn]) -> str:
    values = sorted(t.seconds for t in turns)
    p99 = values[min(len(values) - 1, round(0.99 * (len(values) - 1)))]
    return (
        f"   {label:<48} median {statistics.median(values) * 1000:7.0f} ms  "
        f"min {min(values) * 1000:6.0f} ms  p99 {p99 * 1000:6.0f} ms  (n={len(values)})"
    )


def median(turns: list[Turn]) -> float:
    return statistics.median(t.seconds for t in turns)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument(
        "--through-gateway",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure the turn as an MCP codex call through the real gateway (default on)",
    )
    parser.add_argument(
        "--warm",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="warm runners on, and measure replies handed to a conversation's live pod (default on)",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="codex-turn-bench-"))
    cp = ControlPlane(work / "cp", ensure_binaries(), address=api_server_address()).start()
    node: TestNode | None = None
    model = None
    op = None
    gw = None
    volumes = None
    try:
        cp.install_crds(REPO_ROOT / "crds")
        ensure_kubelet(cp.bin_dir)
        node = TestNode(work / "node", cp.bin_dir, name="codex-bench-node", taints=()).start(cp)
        refs = load_into(node)
        model = fm.FakeModelServer(
            port=free_port(), host=node_env()["NODE_BRIDGE_ADDR"].split("/")[0]
        ).start()
        api = config.new_client_from_config(config_file=str(cp.kubeconfig("admin")))
        prepare_sessions_namespace(cp, api, NS, "fake-key")
        kubernetes_extra, extra = operator_config(
            fake_endpoint(model.host, model.port),
            refs["runner"],
            tolerate_test_node=False,
            auto_approve=False,
        )
        if args.warm:
            key_file = work / "agent-signing-key.pem"
            key_file.write_bytes(private_key_pem(generate_private_key()))
            extra += (
                # A 2-core node: idle pods keep their CPU requests.
                "\n[kubernetes.warm_runners]\nidle_seconds = 600\nmax_idle_pods = 2\n"
                f'operator_cidrs = ["{model.host}/32"]\nsigning_key_file = "{key_file}"\n'
            )
        op = start_operator(
            cp, operator_kubeconfig(cp, work), NS, work, kubernetes_extra=kubernetes_extra, extra_config=extra
        )
        custom = client.CustomObjectsApi(api)
        if args.through_gateway:
            volumes = LocalVolumeProvisioner(api, work / "volumes", owner_uid=RUNNER_UID).start()
            bind_gateway(cp, NS)
            gateway_config = work / "gateway.toml"
            gateway_config.write_text(extra)  # the same model and endpoint as the operator's
            gw = start_gateway(
                cp,
                NS,
                work,
                {TOKEN: "alice"},
                kubeconfig=gateway_kubeconfig(cp, work),
                config_file=gateway_config,
                wait_seconds=120,  # the call returns the result, never "running"
            )

        # Warm-ups: the first pod on the node pays for image unpacking, the
        # first persistent one for the first volume.
        end_to_end(custom, "warmup", timeout=60)
        e2e: list[Turn] = []
        persistent: list[Turn] = []
        gateway: list[Turn] = []
        if gw is not None:
            end_to_end(custom, "warmup-pvc", timeout=60, workspace={"type": "persistent"})
            asyncio.run(through_gateway(gw, 1))
        pods = PodTimeline(api)
        for i in range(args.turns):
            e2e.append(end_to_end(custom, f"turn-{i:02d}"))
            if gw is not None:
                persistent.append(end_to_end(custom, f"pvc-{i:02d}", workspace={"type": "persistent"}))
                gateway += asyncio.run(through_gateway(gw, 1))
        warm_first: Turn | None = None
        warm: list[Turn] = []
        warm_gw: list[Turn] = []
        idle_memory: list[float] = []
        if args.warm:
            warm_first, warm = warm_replies(custom, args.turns)
            idle_memory = live_pod_memory(cp, api)
            if gw is not None:
                warm_gw = asyncio.run(warm_through_gateway(gw, args.turns))
        pods.stop()

        home = write_codex_home(work / "bare" / "codex-home", model.url)
        (work / "bare" / "ws").mkdir()
        bare = []
        for _ in range(args.turns + 1):
            t0 = time.perf_counter()
            result = run_exec("hi", codex_home=home, cwd=work / "bare" / "ws", sandbox="read-only")
            assert result.returncode == 0, result.describe()
            bare.append(Turn("bare", t0, time.perf_counter()))
        bare = bare[1:]

        m_e2e, m_bare = median(e2e), median(bare)
        print("P3 one trivial turn, end to end")
        print(summary("bare codex exec (same fake model)", bare))
        print(summary("API create -> Succeeded (scratch workspace)", e2e) + f"  {m_e2e / m_bare:5.1f}x")
        rows = [("scratch", e2e)]
        if gw is not None:
            m_pvc, m_gw = median(persistent), median(gateway)
            print(
                summary("API create -> Succeeded (persistent workspace)", persistent)
                + f"  {m_pvc / m_bare:5.1f}x"
            )
            print(summary("MCP codex call -> completed (gateway)", gateway) + f"  {m_gw / m_bare:5.1f}x")
            rows += [("persistent", persistent), ("gateway", gateway)]
        if warm_first is not None:
            print(
                summary("first turn starting a live pod (cold)", [warm_first])
                + f"  {warm_first.seconds / m_bare:5.1f}x"
            )
            print(
                summary("reply on the live pod: API create -> Succeeded", warm)
                + f"  {median(warm) / m_bare:5.1f}x"
            )
            if warm_gw:
                print(
                    summary("reply on the live pod: MCP codex-reply -> done", warm_gw)
                    + f"  {median(warm_gw) / m_bare:5.1f}x"
                )
            print(f"   live pods handed a reply: {op.metric('codex_operator_runner_pods_handed_over_total')}")
            if idle_memory:
                print(
                    f"   memory of an idle live pod (RSS of its processes): "
                    f"{', '.join(f'{m:.0f}' for m in idle_memory)} MiB"
                )
        print("   where the time goes (median ms between what a pod watch saw):")
        for label, turns in rows:
            print(f"     {label:<11} {pods.breakdown(turns)}")
        if gw is not None:
            print(
                f"   gateway's own cost (median, vs the same turn through the API): {(m_gw - m_pvc) * 1000:+.0f} ms"
            )
            print(f"   ratio through the gateway {m_gw / m_bare:.1f}x  (goal: <= 2.0)")
        else:
            print(f"   ratio {m_e2e / m_bare:.1f}x  (goal with the gateway on top: <= 2.0)")
    finally:
        if gw:
            gw.stop()
        if volumes:
            volumes.stop()
            volumes.cleanup()
        if op:
            op.stop()
        if model:
            model.stop()
        if node:
            node.stop()
        cp.stop()


if __name__ == "__main__":
    main()
