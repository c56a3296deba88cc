"""Wait until the pod's NetworkPolicy is in force before Codex starts.

A network plugin programs a new pod's firewall asynchronously: kube-router
on its next sync (measured on the test node: 40 to 600 ms after the pod has
its address), other plugins on their own schedule. Until then the pod can
reach whatever the node can. Every sandbox level's policy denies the API
server, and every pod can reach the API server before its policy is in force
(the kubelet hands it the `kubernetes` Service's address), so the moment the
Service stops answering is the moment the policy holds. The runner waits for
that moment, and fails the turn closed when it does not come.

The probe opens a TCP connection and sends nothing. A refused, unreachable
or unanswered connection counts as fenced: plugins that reject (kube-router)
answer at once, plugins that drop cost one probe timeout.
"""

from __future__ import annotations

import errno
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

# An allowed connection to the API server's Service inside a cluster opens in
# milliseconds; one that has not opened after this long is taken as dropped.
PROBE_TIMEOUT = 0.5
PROBE_INTERVAL = 0.05


@dataclass(frozen=True)
class Fence:
    fenced: bool
    target: str
    probes: int
    waited_seconds: float
    detail: str


def api_server_target(env: Mapping[str, str]) -> tuple[str, int] | None:
    """The API server's Service address the kubelet gives every pod, or None outside a pod."""
    host = env.get("KUBERNETES_SERVICE_HOST", "").strip()
    port = env.get("KUBERNETES_SERVICE_PORT", "").strip()
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host, int(port)


def _opens(host: str, port: int, timeout: float) -> tuple[bool, str]:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True, "connected"
    except TimeoutError:
        return False, "no answer"
    except OSError as err:
        return False, errno.errorcode.get(err.errno or 0, str(err))


def wait_until_fenced(
    seconds: float,
    env: Mapping[str, str] | None = None,
    *,
    opens: Callable[[str, int, float], tuple[bool, str]] = _opens,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Fence:
    """Probe the API server until it cannot be reached, for at most `seconds`."""
    target = api_server_target(os.environ if env is None else env)
    if target is None:
        return Fence(
            False, "", 0, 0.0, "KUBERNETES_SERVICE_HOST/PORT are not set: not in a pod, cannot check"
        )
    host, port = target
    where = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
    start = clock()
    probes = 0
    while True:
        left = seconds - (clock() - start)
        opened, detail = opens(host, port, max(0.05, min(PROBE_TIMEOUT, left)))
        probes += 1
        waited = round(clock() - start, 3)
        if not opened:
            return Fence(True, where, probes, waited, detail)
        if clock() - start + PROBE_INTERVAL >= seconds:
            return Fence(
                False,
                where,
                probes,
                waited,
                f"the API server ({where}) was still reachable after {seconds:g} s: "
                "this pod's NetworkPolicy is not in force (the network plugin does not enforce "
                "NetworkPolicy, or another policy allows this traffic)",
            )
        sleep(PROBE_INTERVAL)
