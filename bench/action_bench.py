"""P8 (issue 15): from a human's decision on an action's ApprovalRequest to
Codex going on, on the node.

The system is the warm-runners system of the tests (codex_devenv.live_system):
the operator, the runner image's agent and Codex app-server on a real
kubelet, the model proxy, Redis, the fake model. One per-action turn runs
`--actions` commands, each asked for; for each, the bench waits for its
ApprovalRequest, approves it with a merge patch (as `kubectl patch` does)
and measures until the model's next request arrives: the CR update seen by
the operator (watch), the answer to the agent, the command run by Codex,
and Codex's next model request.

Baseline in the same run: a per-turn turn running the same commands with
nobody asked (Codex's own step: run the command, send the next request).
The ratio says what deciding adds beyond the step itself.

Usage: .venv/bin/python bench/action_bench.py [--actions 30]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from typing import Any

from bench_node import bench_node
from kubernetes import client
from turn_bench import NS

from codex_api.common import GROUP, VERSION
from codex_devenv import fake_model as fm
from codex_devenv.live_system import finished, live_system
from codex_devenv.operator_process import operator_kubeconfig
from codex_devenv.process import wait_for
from codex_devenv.testkit import session_body


def percentiles(values: list[float]) -> tuple[float, float]:
    ms = sorted(v * 1000 for v in values)
    return statistics.median(ms), ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))]


def script(n: int, tag: str) -> list[Any]:
    return [fm.exec_command(f"touch {tag}-{i:03d}") for i in range(n)] + [fm.say("done")]


def requests_after(model: fm.FakeModelServer, count: int, timeout: float = 60) -> float:
    """Wall time (time.time) the model's request number `count + 1` arrived."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = model.responses_requests
        if len(found) > count:
            return found[count].received_at
        time.sleep(0.005)
    raise TimeoutError(f"no model request {count + 1} within {timeout}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--actions", type=int, default=30)
    args = parser.parse_args()
    n = args.actions
    with bench_node("codex-action-bench-") as bn:
        custom = client.CustomObjectsApi(bn.api)
        warm = {"idle_seconds": "600", "max_idle_pods": "2"}
        persistent: dict[str, Any] = {"workspace": {"type": "persistent"}, "sandbox": "isolated"}
        model = bn.model
        with live_system(
            bn.cp,
            bn.refs["runner"],
            NS,
            model,
            operator_kubeconfig(bn.cp, bn.work),
            bn.redis.url,
            bn.work,
            bn.api,
            warm=warm,
        ):
            # Baseline: the same commands, nobody asked (approvals per-turn, auto-approved).
            model.reset()
            model.set_script(*script(n, "plain"))
            custom.create_namespaced_custom_object(
                GROUP, VERSION, NS, "codexsessions", session_body("plain", prompt="go", **persistent)
            )
            done = finished(bn.api, NS, "plain", timeout=300)
            assert done["status"]["phase"] == "Succeeded", done["status"]
            arrivals = [r.received_at for r in model.responses_requests]
            steps = [b - a for a, b in itertools.pairwise(arrivals)][:n]

            model.reset()
            model.set_script(*script(n, "asked"))
            custom.create_namespaced_custom_object(
                GROUP,
                VERSION,
                NS,
                "codexsessions",
                session_body("asked", prompt="go", approvals="per-action", **persistent),
            )
            resumed: list[float] = []
            seen: set[str] = set()
            for i in range(n):

                def waiting() -> list[dict[str, Any]]:
                    found: Any = custom.list_namespaced_custom_object(GROUP, VERSION, NS, "approvalrequests")
                    return [
                        a
                        for a in found["items"]
                        if a["spec"]["sessionRef"] == "asked"
                        and a["spec"].get("action")
                        and a["metadata"]["name"] not in seen
                    ]

                wait_for(lambda: bool(waiting()), timeout=60, what=f"action {i + 1}")
                (request,) = waiting()
                seen.add(request["metadata"]["name"])
                before = len(model.responses_requests)
                patch = {"spec": {"decision": "Approved", "decidedBy": "bench-approver"}}
                t0 = time.time()
                custom.patch_namespaced_custom_object(
                    GROUP, VERSION, NS, "approvalrequests", request["metadata"]["name"], patch
                )
                resumed.append(requests_after(model, before) - t0)
            done = finished(bn.api, NS, "asked", timeout=120)
            assert done["status"]["phase"] == "Succeeded", done["status"]
    s50, s99 = percentiles(steps)
    r50, r99 = percentiles(resumed)
    print(f"P8 per-action approvals: decision -> Codex goes on ({n} actions, one turn, on the node)")
    print(f"   Codex's own step (no one asked)            p50 {s50:6.0f} ms  p99 {s99:6.0f} ms")
    print(
        f"   decision (CR patch) -> next model request  p50 {r50:6.0f} ms  p99 {r99:6.0f} ms"
        f"  {r50 / s50:4.1f}x the step"
    )
    print(json.dumps({"step_p50_ms": s50, "resume_p50_ms": r50, "resume_p99_ms": r99}))


if __name__ == "__main__":
    main()
