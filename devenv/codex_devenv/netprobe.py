"""Traffic probes for NetworkPolicy tests: busybox pods with the runner's
security context (restricted), and checks run inside them with `kubectl exec`
(nc for TCP, nslookup for DNS: busybox's static wget crashes in its NSS code).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from .node import BUSYBOX_IMAGE, hardened_test_pod

PROBE_UID = 1000


def probe_pod(name: str, script: str, labels: dict[str, str]) -> dict[str, Any]:
    """A long-running busybox pod running `script` (e.g. `serve(port)`)."""
    pod = hardened_test_pod(name, BUSYBOX_IMAGE, script, uid=PROBE_UID, memory_limit="64Mi")
    pod["metadata"]["labels"] = labels
    pod["spec"]["restartPolicy"] = "Always"
    return pod


def serve(port: int) -> str:
    """Shell for an HTTP server on `port` (busybox httpd)."""
    return f"mkdir -p /tmp/www && echo up > /tmp/www/index.html && exec httpd -f -p {port} -h /tmp/www"


def pod_ip(cp: Any, ns: str, name: str, timeout: float = 90) -> str:
    """The pod's IP once it is Ready."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pod = json.loads(cp.kubectl("get", "pod", name, "-n", ns, "-o", "json").stdout)
        ready = any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in pod.get("status", {}).get("conditions", [])
        )
        if ready and pod["status"].get("podIP"):
            return str(pod["status"]["podIP"])
        time.sleep(0.2)
    raise AssertionError(f"pod {ns}/{name} not ready")


def sh(cp: Any, ns: str, pod: str, script: str, attempts: int = 3) -> str:
    """`script`'s output in `pod`. Raises if `kubectl exec` itself keeps failing
    (the API server or kubelet busy): a probe that never ran must not read as
    "unreachable", or a negative check would pass on a broken exec."""
    for attempt in range(attempts):
        done = cp.kubectl("exec", "-n", ns, pod, "--", "sh", "-c", script, check=False)
        if done.returncode == 0:
            return str(done.stdout)
        time.sleep(1 + attempt)
    raise AssertionError(
        f"kubectl exec into {ns}/{pod} failed {attempts} times: {done.stderr.strip()[-500:]}"
    )


def connects(cp: Any, ns: str, pod: str, ip: str, port: int) -> bool:
    """Whether a TCP connection from `pod` to ip:port opens within 2 s."""
    out = sh(cp, ns, pod, f"nc -w 2 {ip} {port} </dev/null >/dev/null 2>&1 && echo OPEN || echo CLOSED")
    if "OPEN" not in out and "CLOSED" not in out:
        raise AssertionError(f"probe in {ns}/{pod} printed neither OPEN nor CLOSED: {out[-300:]!r}")
    return "OPEN" in out


def reaches(cp: Any, ns: str, pod: str, ip: str, port: int, timeout: float = 30) -> bool:
    """A positive control: ip:port opens from `pod` within `timeout` (one 2 s
    attempt can miss on a loaded node; reachability is what is checked)."""
    return eventually(lambda: connects(cp, ns, pod, ip, port), True, timeout=timeout)


def resolves(
    cp: Any, ns: str, pod: str, name: str = "kubernetes.default.svc.cluster.local", ip: str = "10.96.0.1"
) -> bool:
    out = sh(cp, ns, pod, f"timeout 5 nslookup {name} 2>&1")
    return any(line.split()[-1:] == [ip] for line in out.splitlines() if line.startswith("Address"))


def eventually(check: Callable[[], bool], expected: bool, timeout: float = 20) -> bool:
    """Whether `check()` returns `expected` within `timeout` (a new pod's policy
    is programmed by the engine's next sync, not at once)."""
    deadline = time.monotonic() + timeout
    while True:
        if check() == expected:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.3)
