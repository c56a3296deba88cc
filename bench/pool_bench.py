"""P3 with a warm pool (issue 14): a conversation's first turn on a pool pod,
against a bare `codex exec` on the same fake model, in one run.

The system is the warm-runners system of the tests (codex_devenv.live_system):
the operator with `[kubernetes.warm_runners]` on and `pool_sizes = {isolated
= 1}`, the model proxy (a pool needs it: pool pods hold no credential), the
runner image on a real kubelet, a persistent workspace per conversation.

Measured, kinds alternating so noise spreads evenly:
- bare: `codex exec` on the host;
- first turn from the pool: create an isolated persistent CodexSession while
  the pool holds a ready pod -> Succeeded (as a watch sees it);
- cold first turn: the same at read-only, which has no pool (it starts a
  live pod, as every first turn did before the pool);
- refill: from creating the turn that claims the pool pod to the next pool
  pod running with an address;
- memory of an idle pool pod (the sum of its processes' RSS).

Usage: .venv/bin/python bench/pool_bench.py [--turns 8]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from bench_node import bench_node
from kubernetes import client
from turn_bench import NS, RSS_SUM, Turn, end_to_end, median, summary

from codex_api import names
from codex_devenv import fake_model as fm
from codex_devenv.codex_cli import run_exec, write_codex_home
from codex_devenv.live_system import live_system
from codex_devenv.operator_process import operator_kubeconfig
from codex_devenv.process import wait_for

POOLED, COLD = "isolated", "read-only"


def ready_pool_pods(core: client.CoreV1Api) -> list[Any]:
    found: Any = core.list_namespaced_pod(NS, label_selector=f"{names.LABEL_POOL}={POOLED}")
    return [
        p
        for p in found.items
        if not p.metadata.deletion_timestamp and p.status.phase == "Running" and p.status.pod_ip
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=8)
    args = parser.parse_args()
    with bench_node("codex-pool-bench-") as bn:
        cp, model, api, work = bn.cp, bn.model, bn.api, bn.work
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        warm = {
            "idle_seconds": "600",
            # A 2-core node: idle pods keep their CPU requests.
            "max_idle_pods": "2",
            "pool_sizes": f'{{ "{POOLED}" = 1 }}',
        }
        with live_system(
            cp,
            bn.refs["runner"],
            NS,
            model,
            operator_kubeconfig(cp, work),
            bn.redis.url,
            work,
            api,
            warm=warm,
        ) as system:
            model.set_script(then=fm.say("hi"))
            persistent: dict[str, Any] = {"workspace": {"type": "persistent"}}
            # Warm-ups: image unpacking, the first volume.
            end_to_end(custom, "warmup", timeout=120)
            end_to_end(custom, "warmup-cold", timeout=120, sandbox=COLD, **persistent)
            pooled: list[Turn] = []
            cold: list[Turn] = []
            refills: list[float] = []
            for i in range(args.turns):
                wait_for(lambda: bool(ready_pool_pods(core)), timeout=120, what="a ready pool pod")
                (slot,) = ready_pool_pods(core)
                turn = end_to_end(custom, f"pool-turn-{i:02d}", sandbox=POOLED, **persistent)
                got = custom.get_namespaced_custom_object(
                    "codex.techsapo.io", "v1alpha1", NS, "codexsessions", turn.session
                )
                if got["status"]["podName"] != slot.metadata.name:  # type: ignore[index]
                    raise RuntimeError(f"{turn.session} did not get the pool pod: {got['status']}")  # type: ignore[index]
                pooled.append(turn)
                wait_for(
                    lambda taken=slot.metadata.name: any(
                        p.metadata.name != taken for p in ready_pool_pods(core)
                    ),
                    timeout=120,
                    what="the pool to refill",
                )
                refills.append(time.perf_counter() - turn.started)
                cold.append(end_to_end(custom, f"cold-turn-{i:02d}", sandbox=COLD, **persistent))
            wait_for(lambda: bool(ready_pool_pods(core)), timeout=120, what="a ready pool pod")
            time.sleep(5)  # its app-server started ahead of any turn
            (slot,) = ready_pool_pods(core)
            out = cp.kubectl(
                "exec",
                "-n",
                NS,
                slot.metadata.name,
                "-c",
                "runner",
                "--",
                "python3",
                "-c",
                RSS_SUM,
                check=False,
            )
            pool_memory = int(out.stdout.strip()) / 1024 if out.stdout.strip().isdigit() else None
            claims = system["ops"][-1].metric("codex_operator_warm_pool_claims_total", f'sandbox="{POOLED}"')

        home = write_codex_home(work / "bare" / "codex-home", model.url)
        (work / "bare" / "ws").mkdir()
        bare = []
        for _ in range(args.turns + 1):
            t0 = time.perf_counter()
            result = run_exec("hi", codex_home=home, cwd=work / "bare" / "ws", sandbox="read-only")
            assert result.returncode == 0, result.describe()
            bare.append(Turn("bare", t0, time.perf_counter()))
        bare = bare[1:]
        m_bare = median(bare)
        print("P3 with a warm pool: a conversation's first turn")
        print(summary("bare codex exec (same fake model)", bare))
        print(
            summary("first turn on a pool pod: API -> Succeeded", pooled)
            + f"  {median(pooled) / m_bare:5.1f}x"
        )
        print(summary("cold first turn (starts a live pod)", cold) + f"  {median(cold) / m_bare:5.1f}x")
        refills.sort()
        print(
            f"   refill, claim -> next pool pod ready: median {refills[len(refills) // 2]:.1f} s  "
            f"max {refills[-1]:.1f} s  (n={len(refills)})"
        )
        print(f"   pool claims counted by the operator: {claims}")
        if pool_memory is not None:
            print(f"   memory of an idle pool pod (RSS of its processes): {pool_memory:.0f} MiB")


if __name__ == "__main__":
    main()
