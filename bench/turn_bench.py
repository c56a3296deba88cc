"""P3 without the gateway: one trivial turn end to end, divided by a bare
`codex exec` against the same fake model, in one run.

End to end = create a CodexSession through the API -> the operator -> a
runner pod (image from the project's Dockerfile) on a real kubelet -> the
real Codex CLI in the container -> the fake model on the pod bridge ->
status Succeeded, as seen by a watch. Bare = the same Codex binary run
directly on the host with a CODEX_HOME for the same fake model.

Usage: .venv/bin/python bench/turn_bench.py [--turns 10]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from kubernetes import client, config, watch

from codex_devenv import fake_model as fm
from codex_devenv.assets import REPO_ROOT, ensure_binaries
from codex_devenv.codex_cli import run_exec, write_codex_home
from codex_devenv.controlplane import ControlPlane
from codex_devenv.images import load_into
from codex_devenv.node import TestNode, ensure_kubelet, node_env
from codex_devenv.operator_process import operator_kubeconfig, start_operator
from codex_devenv.process import free_port
from codex_devenv.system import fake_endpoint, operator_config, prepare_sessions_namespace
from codex_devenv.testkit import session_body

GROUP, VERSION, NS = "codex.techsapo.io", "v1alpha1", "bench"


def end_to_end(custom: client.CustomObjectsApi, name: str, timeout: float = 120) -> float:
    t0 = time.perf_counter()
    created = custom.create_namespaced_custom_object(
        GROUP, VERSION, NS, "codexsessions", session_body(name, prompt="hi")
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
            return time.perf_counter() - t0
    status = custom.get_namespaced_custom_object(GROUP, VERSION, NS, "codexsessions", name).get("status")
    raise TimeoutError(f"{name}: {status}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=10)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="codex-turn-bench-"))
    cp = ControlPlane(work / "cp", ensure_binaries()).start()
    node: TestNode | None = None
    model = None
    op = None
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
        op = start_operator(
            cp, operator_kubeconfig(cp, work), NS, work, kubernetes_extra=kubernetes_extra, extra_config=extra
        )
        custom = client.CustomObjectsApi(api)

        end_to_end(custom, "warmup", timeout=60)  # first pod on the node pays for image unpacking
        e2e = [end_to_end(custom, f"turn-{i:02d}") for i in range(args.turns)]

        home = write_codex_home(work / "bare" / "codex-home", model.url)
        (work / "bare" / "ws").mkdir()
        bare = []
        for _ in range(args.turns + 1):
            t0 = time.perf_counter()
            result = run_exec("hi", codex_home=home, cwd=work / "bare" / "ws", sandbox="read-only")
            assert result.returncode == 0, result.describe()
            bare.append(time.perf_counter() - t0)
        bare = bare[1:]

        m_e2e, m_bare = statistics.median(e2e), statistics.median(bare)
        print(
            f"P3 end to end (API create -> Succeeded)  median {m_e2e * 1000:7.0f} ms  "
            f"min {min(e2e) * 1000:6.0f} ms  max {max(e2e) * 1000:6.0f} ms  (n={len(e2e)})"
        )
        print(
            f"   bare codex exec (same fake model)     median {m_bare * 1000:7.0f} ms  "
            f"min {min(bare) * 1000:6.0f} ms  max {max(bare) * 1000:6.0f} ms  (n={len(bare)})"
        )
        print(f"   ratio {m_e2e / m_bare:.1f}x  (goal with the gateway on top: <= 2.0)")
    finally:
        if op:
            op.stop()
        if model:
            model.stop()
        if node:
            node.stop()
        cp.stop()


if __name__ == "__main__":
    main()
