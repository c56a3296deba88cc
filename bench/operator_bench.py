"""Operator benchmarks P1 and P2 on a real control plane.

P1: create a CodexSession -> its runner pod exists (p50, p99), with 1,000
    existing sessions. Baseline in the same run: a bare API round trip
    (create a ConfigMap), so the ratio says what the operator adds.
P2: 500 sessions created in a burst -> sessions/s until all 500 pods exist.
    Baseline in the same run: 500 bare pods created with the same concurrency.

Usage: .venv/bin/python bench/operator_bench.py [--existing 1000] [--samples 200] [--burst 500]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kubernetes import client, config, watch

from codex_api import names
from codex_devenv.assets import REPO_ROOT, ensure_binaries
from codex_devenv.controlplane import ControlPlane
from codex_devenv.measure import cpu_seconds, pct
from codex_devenv.operator_process import bind_operator, operator_kubeconfig, start_operator
from codex_devenv.testkit import session_body

GROUP, VERSION = "codex.techsapo.io", "v1alpha1"


class PodWatch:
    """Records when each pod was first seen (ADDED), from a watch."""

    def __init__(self, api: client.CoreV1Api, namespace: str) -> None:
        self.api, self.namespace = api, namespace
        self.seen: dict[str, float] = {}
        self.cond = threading.Condition()
        self._stop = False
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        rv = self.api.list_namespaced_pod(self.namespace).metadata.resource_version
        while not self._stop:
            try:
                for event in watch.Watch().stream(
                    self.api.list_namespaced_pod, self.namespace, resource_version=rv, timeout_seconds=30
                ):
                    rv = event["object"].metadata.resource_version
                    if event["type"] == "ADDED":
                        with self.cond:
                            self.seen.setdefault(event["object"].metadata.name, time.perf_counter())
                            self.cond.notify_all()
            except Exception:
                if self._stop:
                    return  # the control plane is going away at the end of the run
                # A broken stream: re-list (pods added meanwhile count as seen now) and watch again.
                listing = self.api.list_namespaced_pod(self.namespace)
                rv = listing.metadata.resource_version
                with self.cond:
                    for pod in listing.items:
                        self.seen.setdefault(pod.metadata.name, time.perf_counter())
                    self.cond.notify_all()

    def stop(self) -> None:
        self._stop = True

    def wait(self, name: str, timeout: float = 30) -> float:
        with self.cond:
            if not self.cond.wait_for(lambda: name in self.seen, timeout=timeout):
                raise TimeoutError(name)
            return self.seen[name]

    def wait_count(self, prefix: str, count: int, timeout: float = 300) -> float:
        with self.cond:
            ok = self.cond.wait_for(
                lambda: sum(n.startswith(prefix) for n in self.seen) >= count, timeout=timeout
            )
            if not ok:
                raise TimeoutError(f"{prefix}: {sum(n.startswith(prefix) for n in self.seen)}/{count}")
            return max(t for n, t in self.seen.items() if n.startswith(prefix))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--existing", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--burst", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--no-scheduler",
        action="store_true",
        help="no kube-scheduler: without a node it writes a status and a FailedScheduling Event per pod",
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="codex-bench-"))
    cp = ControlPlane(work / "cp", ensure_binaries(), run_scheduler=not args.no_scheduler).start()
    print(
        f"kube-scheduler: {'off' if args.no_scheduler else 'on (no node: it writes a FailedScheduling per pod)'}"
    )
    op = None
    pods: PodWatch | None = None
    try:
        cp.install_crds(REPO_ROOT / "crds")
        api_client = config.new_client_from_config(config_file=str(cp.kubeconfig("admin")))
        api_client.configuration.connection_pool_maxsize = 64
        core, custom = client.CoreV1Api(api_client), client.CustomObjectsApi(api_client)
        ns = "bench"
        core.create_namespace({"metadata": {"name": ns}})
        bind_operator(cp, ns)
        op = start_operator(cp, operator_kubeconfig(cp, work), ns, work, limit=10000)
        pods = PodWatch(core, ns)

        def create(name: str) -> float:
            t0 = time.perf_counter()
            custom.create_namespaced_custom_object(GROUP, VERSION, ns, "codexsessions", session_body(name))
            return t0

        # 1,000 existing sessions, each with its runner pod.
        started = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as pool:
            list(pool.map(create, [f"old-{i:04d}" for i in range(args.existing)]))
        pods.wait_count("old-", args.existing)
        print(f"setup: {args.existing} existing sessions with pods in {time.perf_counter() - started:.1f}s")

        # Baseline for P1: one bare API round trip.
        base = []
        for i in range(args.samples):
            t0 = time.perf_counter()
            core.create_namespaced_config_map(ns, {"metadata": {"name": f"base-{i}"}})
            base.append(time.perf_counter() - t0)
        # P1: create -> pod exists, one at a time.
        p1 = []
        for i in range(args.samples):
            name = f"p1-{i:04d}"
            t0 = create(name)
            p1.append(pods.wait(names.runner_pod(name, 1)) - t0)
        p1_ms = [v * 1000 for v in p1]
        base_ms = [v * 1000 for v in base]
        print(
            f"P1 create->pod   p50 {statistics.median(p1_ms):7.1f} ms   p99 {pct(p1_ms, 99):7.1f} ms   "
            f"(n={len(p1)}, {args.existing + args.samples} sessions in the namespace)"
        )
        print(
            f"   baseline API  p50 {statistics.median(base_ms):7.1f} ms   p99 {pct(base_ms, 99):7.1f} ms   "
            f"ratio p50 {statistics.median(p1_ms) / statistics.median(base_ms):.1f}x"
        )

        # P2: a burst of sessions; baseline: a burst of bare pods.
        bare_pod = {"metadata": {"name": ""}, "spec": {"containers": [{"name": "c", "image": "x"}]}}

        def create_pod(name: str) -> None:
            core.create_namespaced_pod(ns, {**bare_pod, "metadata": {"name": name}})

        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as pool:
            list(pool.map(create_pod, [f"bare-{i:04d}" for i in range(args.burst)]))
        t_bare = pods.wait_count("bare-", args.burst) - t0
        procs = {
            "operator": op.proc.pid,
            "kube-apiserver": cp.process("kube-apiserver").pid,
            "etcd": cp.process("etcd").pid,
        }
        cpu_before = {k: cpu_seconds(v) for k, v in procs.items()}
        profiler = None
        if os.environ.get("BENCH_PROFILE"):
            import subprocess

            profiler = subprocess.Popen(
                [
                    str(REPO_ROOT / ".venv/bin/py-spy"),
                    "record",
                    "-d",
                    "8",
                    "-f",
                    "raw",
                    "-o",
                    os.environ["BENCH_PROFILE"],
                    "-p",
                    str(op.proc.pid),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as pool:
            list(pool.map(create, [f"p2-{i:04d}" for i in range(args.burst)]))
        t_burst = pods.wait_count("p2-", args.burst) - t0
        cpu = {k: cpu_seconds(v) - cpu_before[k] for k, v in procs.items()}
        if profiler:
            profiler.wait()
        print(f"P2 burst         {args.burst / t_burst:7.1f} sessions/s  ({args.burst} in {t_burst:.2f}s)")
        print(
            f"   baseline pods {args.burst / t_bare:7.1f} pods/s      ({args.burst} in {t_bare:.2f}s)   "
            f"ratio {t_burst / t_bare:.1f}x"
        )
        print(
            "   CPU during the burst: "
            + ", ".join(f"{k} {v:.1f}s" for k, v in cpu.items())
            + f" (wall {t_burst:.1f}s, 2 cores)"
        )
    finally:
        if pods:
            pods.stop()
        if op:
            op.stop()
        cp.stop()


if __name__ == "__main__":
    main()
