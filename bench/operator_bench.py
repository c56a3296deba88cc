"""Operator benchmarks P1 and P2 on a real control plane.

P1: create a CodexSession -> its runner pod exists (p50, p99), with 1,000
    existing sessions. Baseline in the same run: a bare API round trip
    (create a ConfigMap), so the ratio says what the operator adds.
P2: 500 sessions created in a burst -> sessions/s until all 500 pods exist.
    Baseline in the same run: 500 bare pods created with the same concurrency.

Setups (docs/benchmarks.md says which row had which):
  default          the operator alone: no admission policies, no webhook, no PSS labels
  --real-install   what an install adds on every create: the shipped ValidatingAdmissionPolicies,
                   the operator's identity webhook (a mutating call per session), Pod Security
                   `restricted` on the namespace, sessions created by a user (alice), not the admin
  --node           kube-scheduler with a node to bind to: a hollow node (a Node object whose
                   status and Lease the bench keeps fresh, as kubemark's hollow nodes do; no kubelet
                   runs the pods), so each pod costs one binding instead of a FailedScheduling
  --no-scheduler   no kube-scheduler at all

Usage: .venv/bin/python bench/operator_bench.py [--real-install] [--node | --no-scheduler]
           [--existing 1000] [--samples 200] [--burst 500]
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
from typing import Any

from kubernetes import client, config, watch

from codex_api import names
from codex_devenv.assets import REPO_ROOT, ensure_binaries
from codex_devenv.controlplane import ControlPlane
from codex_devenv.measure import cpu_seconds, pct
from codex_devenv.operator_process import bind_operator, operator_kubeconfig, start_operator
from codex_devenv.process import free_port
from codex_devenv.testkit import session_body

HOLLOW_NODE = "hollow-node-0"

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


class HollowNode:
    """A Node object that looks alive to the scheduler and the node lifecycle
    controller: Ready, room for every pod, status and Lease renewed every 10 s."""

    def __init__(self, core: client.CoreV1Api, coordination: client.CoordinationV1Api) -> None:
        self.core, self.coordination = core, coordination
        self._stop = threading.Event()
        capacity = {"cpu": "100k", "memory": "100Pi", "pods": "100000", "ephemeral-storage": "100Pi"}
        self.status = {"capacity": capacity, "allocatable": capacity}
        labels = {"kubernetes.io/hostname": HOLLOW_NODE, "kubernetes.io/os": "linux"}
        core.create_node({"metadata": {"name": HOLLOW_NODE, "labels": labels}})
        coordination.create_namespaced_lease(
            "kube-node-lease",
            {
                "metadata": {"name": HOLLOW_NODE},
                "spec": {"holderIdentity": HOLLOW_NODE, "leaseDurationSeconds": 40},
            },
        )
        self._renew()
        threading.Thread(target=self._run, daemon=True).start()

    def _renew(self) -> None:
        from datetime import UTC, datetime

        now = datetime.now(UTC)
        ready = {
            "type": "Ready",
            "status": "True",
            "reason": "KubeletReady",
            "message": "hollow node",
            "lastHeartbeatTime": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "lastTransitionTime": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        self.core.patch_node_status(HOLLOW_NODE, {"status": {**self.status, "conditions": [ready]}})
        self.coordination.patch_namespaced_lease(
            HOLLOW_NODE, "kube-node-lease", {"spec": {"renewTime": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}}
        )

    def _run(self) -> None:
        while not self._stop.wait(10):
            try:
                self._renew()
            except Exception as err:
                print(f"hollow node renewal failed: {err}")

    def stop(self) -> None:
        self._stop.set()


WRITE_VERBS = ("POST", "PUT", "PATCH", "DELETE")


def api_writes(cp: ControlPlane) -> dict[str, float]:
    """The API server's own count of write requests so far, by verb and resource
    (apiserver_request_total), to say what one session costs the API server."""
    import re
    import ssl
    import urllib.request

    assert cp.certs is not None
    request = urllib.request.Request(
        f"{cp.server}/metrics", headers={"Authorization": f"Bearer {cp.users['admin'].token}"}
    )
    context = ssl.create_default_context(cafile=str(cp.certs.ca_cert))
    with urllib.request.urlopen(request, context=context, timeout=30) as resp:
        text = resp.read().decode()
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
        if labels.get("verb") in WRITE_VERBS:
            what = labels.get("resource", "") + (
                f"/{labels['subresource']}" if labels.get("subresource") else ""
            )
            key = f"{labels['verb']} {what}"
            counts[key] = counts.get(key, 0) + float(line.rsplit(" ", 1)[1])
    return counts


def writes_per(before: dict[str, float], after: dict[str, float], n: int) -> str:
    diff = {k: (after.get(k, 0) - before.get(k, 0)) / n for k in after}
    shown = sorted(((v, k) for k, v in diff.items() if v >= 0.05), reverse=True)
    return f"{sum(v for v, _ in shown):.1f} (" + ", ".join(f"{k} {v:.1f}" for v, k in shown) + ")"


def bare_pod(name: str) -> dict[str, Any]:
    """A minimal pod that Pod Security `restricted` admits."""
    return {
        "metadata": {"name": name},
        "spec": {
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 10001,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "c",
                    "image": "x",
                    "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                }
            ],
        },
    }


def real_install(cp: ControlPlane, kube_client: Any, ns: str, work: Path) -> dict[str, Any]:
    """What an install puts around the operator; returns start_operator's extra arguments."""
    from codex_devenv.gateway_process import GATEWAY_USER
    from codex_devenv.system import (
        fake_endpoint,
        install_admission,
        operator_config,
        prepare_sessions_namespace,
    )

    prepare_sessions_namespace(cp, kube_client, ns, "bench-key")
    install_admission(cp, kube_client, ns, ("alice",))
    assert cp.certs is not None
    cert, key = cp.certs.issue(work / "webhook", "operator-webhook", "IP:127.0.0.1")
    kubernetes_extra, extra = operator_config(
        fake_endpoint("10.244.77.1", 9), "codex-runner:bench", tolerate_test_node=False, auto_approve=False
    )
    return {
        "kubernetes_extra": kubernetes_extra,
        "extra_config": extra,
        "webhook_port": free_port(),
        "webhook_cert": cert,
        "webhook_key": key,
        "trusted_requesters": [GATEWAY_USER],
    }


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
    parser.add_argument(
        "--node", action="store_true", help="a hollow node for kube-scheduler to bind pods to"
    )
    parser.add_argument(
        "--real-install", action="store_true", help="admission policies, identity webhook, PSS, a real user"
    )
    args = parser.parse_args()
    if args.node and args.no_scheduler:
        parser.error("--node needs kube-scheduler")

    work = Path(tempfile.mkdtemp(prefix="codex-bench-"))
    cp = ControlPlane(work / "cp", ensure_binaries(), run_scheduler=not args.no_scheduler).start()
    scheduler = (
        "off"
        if args.no_scheduler
        else "on, " + ("a hollow node to bind to" if args.node else "no node: a FailedScheduling per pod")
    )
    print(
        f"kube-scheduler: {scheduler}; install: {'real (policies, webhook, PSS, user alice)' if args.real_install else 'operator only'}"
    )
    op = None
    pods: PodWatch | None = None
    node: HollowNode | None = None
    try:
        cp.install_crds(REPO_ROOT / "crds")
        api_client = config.new_client_from_config(config_file=str(cp.kubeconfig("admin")))
        api_client.configuration.connection_pool_maxsize = 64
        core, custom = client.CoreV1Api(api_client), client.CustomObjectsApi(api_client)
        ns = "bench"
        op_kubeconfig = operator_kubeconfig(cp, work)  # also the operator's namespace and RBAC
        extra: dict[str, Any] = {}
        if args.real_install:
            extra = real_install(cp, api_client, ns, work)
            user_client = config.new_client_from_config(config_file=str(cp.kubeconfig("alice")))
            user_client.configuration.connection_pool_maxsize = 64
            sessions = client.CustomObjectsApi(user_client)
        else:
            core.create_namespace({"metadata": {"name": ns}})
            bind_operator(cp, ns)
            sessions = custom
        if args.node:
            node = HollowNode(core, client.CoordinationV1Api(api_client))
        op = start_operator(cp, op_kubeconfig, ns, work, limit=10000, **extra)
        if args.real_install:
            from codex_devenv.system import install_webhook

            install_webhook(cp, api_client, ns, extra["webhook_port"])
        pods = PodWatch(core, ns)

        def create(name: str) -> float:
            body = session_body(name)
            if args.real_install:
                del body["spec"]["requestedBy"]  # the identity webhook stamps it
            t0 = time.perf_counter()
            sessions.create_namespaced_custom_object(GROUP, VERSION, ns, "codexsessions", body)
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
        def create_pod(name: str) -> None:
            core.create_namespaced_pod(ns, bare_pod(name))

        procs = {
            "operator": op.proc.pid,
            "kube-apiserver": cp.process("kube-apiserver").pid,
            "etcd": cp.process("etcd").pid,
            "kube-controller-manager": cp.process("kube-controller-manager").pid,
            **({} if args.no_scheduler else {"kube-scheduler": cp.process("kube-scheduler").pid}),
            "bench client": os.getpid(),
        }
        cpu_before = {k: cpu_seconds(v) for k, v in procs.items()}
        writes_before = api_writes(cp)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as pool:
            list(pool.map(create_pod, [f"bare-{i:04d}" for i in range(args.burst)]))
        t_bare = pods.wait_count("bare-", args.burst) - t0
        time.sleep(3)  # the scheduler binds after the pods exist: its tail belongs to this burst
        bare_cpu = sum(
            cpu_seconds(v) - cpu_before[k] for k, v in procs.items() if k not in ("bench client", "operator")
        )
        bare_writes = writes_per(writes_before, api_writes(cp), args.burst)
        cpu_before = {k: cpu_seconds(v) for k, v in procs.items()}
        writes_before = api_writes(cp)
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
        time.sleep(3)  # as for the bare pods: the scheduler's and the operator's tail
        cpu = {k: cpu_seconds(v) - cpu_before[k] for k, v in procs.items()}
        session_writes = writes_per(writes_before, api_writes(cp), args.burst)
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
            + f" (wall {t_burst:.1f}s, {os.cpu_count()} cores)"
        )
        # What a session costs the whole machine, and so the rate these cores
        # could reach if nothing else (not even the bench client) ran.
        per_session = sum(v for k, v in cpu.items() if k != "bench client") / args.burst
        print(
            f"   CPU per session, cluster side: {per_session * 1000:.1f} core-ms "
            f"(operator {cpu['operator'] / args.burst * 1000:.1f}); "
            f"ceiling on {os.cpu_count()} cores: {os.cpu_count() / per_session:.0f} sessions/s; "
            f"a bare pod {bare_cpu / args.burst * 1000:.1f} core-ms, "
            f"ceiling {(os.cpu_count() or 1) * args.burst / bare_cpu:.0f} pods/s"
        )
        print(f"   API writes per session: {session_writes}")
        print(f"   API writes per bare pod: {bare_writes}")
        if node:
            bound = sum(
                p.spec is not None and p.spec.node_name == HOLLOW_NODE
                for p in core.list_namespaced_pod(ns).items
            )
            print(f"   pods bound to the hollow node: {bound}")
    finally:
        if node:
            node.stop()
        if pods:
            pods.stop()
        if op:
            op.stop()
        cp.stop()


if __name__ == "__main__":
    main()
