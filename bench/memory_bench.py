"""P5, the operator: resident memory with N CodexSessions (and their
ApprovalRequests) on a real control plane.

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

Usage: .venv/bin/python bench/memory_bench.py [--sessions 5000] [--limit 10] [--tracemalloc 25]
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

from kubernetes import client, config

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=5000)
    parser.add_argument("--approval-every", type=int, default=5)
    parser.add_argument("--limit", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--tracemalloc", type=int, default=0, metavar="TOP")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="codex-membench-"))
    cp = ControlPlane(work / "cp", ensure_binaries(), run_scheduler=False).start()
    op = bare = None
    try:
        cp.install_crds(REPO_ROOT / "crds")
        api_client = config.new_client_from_config(config_file=str(cp.kubeconfig("admin")))
        api_client.configuration.connection_pool_maxsize = 32
        core, custom = client.CoreV1Api(api_client), client.CustomObjectsApi(api_client)
        ns = "bench"
        core.create_namespace({"metadata": {"name": ns}})
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
            spec = {"sandbox": "full-access"} if i % args.approval_every == 0 else {}
            body = session_body(f"s-{i:05d}", requestedBy=f"user-{i % 50}", **spec)
            custom.create_namespaced_custom_object(GROUP, VERSION, ns, "codexsessions", body)

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
