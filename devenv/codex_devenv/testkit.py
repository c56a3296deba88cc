"""Test helpers that play the node for runner pods and create, read and wait
for CodexSessions through the real API server."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, cast

from kubernetes import client

from codex_api.common import GROUP, VERSION
from codex_api.result import RunnerResult
from codex_runner.contract import TurnSettings, WallBounceProvider, WallBounceSettings

from .process import wait_for


def set_pod_running(kube_client: Any, namespace: str, pod: str) -> None:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    client.CoreV1Api(kube_client).patch_namespaced_pod_status(
        pod,
        namespace,
        {
            "status": {
                "phase": "Running",
                "startTime": now,
                "containerStatuses": [
                    {
                        "name": "runner",
                        "image": "runner",
                        "imageID": "",
                        "ready": True,
                        "restartCount": 0,
                        "state": {"running": {"startedAt": now}},
                    }
                ],
            }
        },
    )


def finish_pod(
    kube_client: Any,
    namespace: str,
    pod: str,
    result: RunnerResult | None,
    *,
    exit_code: int = 0,
    phase: str | None = None,
    reason: str | None = None,
    termination_message: str | None = None,
) -> None:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    message = (
        termination_message if termination_message is not None else (result.bounded_frame() if result else "")
    )
    status: dict[str, Any] = {
        "phase": phase or ("Succeeded" if exit_code == 0 else "Failed"),
        "containerStatuses": [
            {
                "name": "runner",
                "image": "runner",
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "state": {
                    "terminated": {
                        "exitCode": exit_code,
                        "reason": "Completed" if exit_code == 0 else "Error",
                        "message": message,
                        "startedAt": now,
                        "finishedAt": now,
                    }
                },
            }
        ],
    }
    if reason:
        status["reason"] = reason
    client.CoreV1Api(kube_client).patch_namespaced_pod_status(pod, namespace, {"status": status})


# --------------------------------------------------------------------------- sessions
def session_body(name: str, **spec: Any) -> dict[str, Any]:
    spec.setdefault("prompt", "Write a factorial function")
    spec.setdefault("requestedBy", "carol")
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "CodexSession",
        "metadata": {"name": name},
        "spec": spec,
    }


def apply_session(control_plane: Any, namespace: str, name: str, **spec: Any) -> None:
    """`kubectl apply` a CodexSession as the admin (prompt "hello" unless given)."""
    doc = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "CodexSession",
        "metadata": {"name": name},
        "spec": {"prompt": "hello", **spec},
    }
    control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(doc))


def create_session(kube_client: Any, namespace: str, name: str, **spec: Any) -> dict[str, Any]:
    return cast(
        dict[str, Any],
        client.CustomObjectsApi(kube_client).create_namespaced_custom_object(
            GROUP, VERSION, namespace, "codexsessions", session_body(name, **spec)
        ),
    )


def get_session(kube_client: Any, namespace: str, name: str) -> dict[str, Any]:
    return cast(
        dict[str, Any],
        client.CustomObjectsApi(kube_client).get_namespaced_custom_object(
            GROUP, VERSION, namespace, "codexsessions", name
        ),
    )


def wait_session(
    kube_client: Any,
    namespace: str,
    name: str,
    predicate: Callable[[dict[str, Any]], bool],
    timeout: float = 30,
    what: str = "",
) -> dict[str, Any]:
    box: dict[str, Any] = {}

    def check() -> bool:
        box["s"] = get_session(kube_client, namespace, name)
        return predicate(box["s"])

    try:
        wait_for(check, timeout=timeout, what=what or f"session {name}", interval=0.05)
    except TimeoutError as err:
        raise AssertionError(
            f"{err}; last status: {json.dumps(box.get('s', {}).get('status'), indent=1)}"
        ) from err
    return box["s"]


def phase_is(*phases: str) -> Callable[[dict[str, Any]], bool]:
    return lambda s: (s.get("status") or {}).get("phase") in phases


def turn_settings(**overrides: Any) -> TurnSettings:
    """A runner TurnSettings with plain defaults; tests override what they exercise."""
    base: dict[str, Any] = {
        "prompt": "Explain this repository",
        "model": "gpt-5-codex",
        "sandbox": "read-only",
        "mode": "interactive",
        "full_auto": False,
        "reasoning_effort": None,
        "verbosity": None,
        "base_instructions": None,
        "response_language": None,
        "resume_thread_id": None,
        "provider_id": "openai-api",
        "base_url": "https://api.openai.com/v1",
        "api_key_env": "CODEX_MODEL_API_KEY",
    }
    return TurnSettings(**{**base, **overrides})


def wall_bounce_provider(n: int, **overrides: Any) -> WallBounceProvider:
    """Wall-bounce provider number ``n`` with plain defaults (id pN, key env PN_API_KEY)."""
    base: dict[str, Any] = {
        "provider_id": f"p{n}",
        "base_url": f"http://127.0.0.1:{18080 + n}/v1",
        "api_key_env": f"P{n}_API_KEY",
        "model": "gpt-5-codex",
    }
    return WallBounceProvider(**{**base, **overrides})


def wall_bounce_settings(
    *providers: WallBounceProvider, min_providers: int = 2, quality_threshold: float = 0.7
) -> WallBounceSettings:
    """WallBounceSettings; without providers, two plain ones (p1, p2)."""
    return WallBounceSettings(
        providers=providers or (wall_bounce_provider(1), wall_bounce_provider(2)),
        min_providers=min_providers,
        quality_threshold=quality_threshold,
    )


def list_sessions(kube_client: Any, namespace: str) -> list[dict[str, Any]]:
    listed: Any = client.CustomObjectsApi(kube_client).list_namespaced_custom_object(
        GROUP, VERSION, namespace, "codexsessions"
    )
    return list(listed["items"])


def play_next_session(
    kube_client: Any, namespace: str, known: set[str], result: RunnerResult, timeout: float = 30
) -> str:
    """Wait for a session not in `known` to get a runner pod, then finish that
    pod the way a kubelet would; returns the session's name."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for s in list_sessions(kube_client, namespace):
            name = s["metadata"]["name"]
            status = s.get("status") or {}
            if name not in known and status.get("phase") == "Running" and status.get("podName"):
                set_pod_running(kube_client, namespace, status["podName"])
                finish_pod(kube_client, namespace, status["podName"], result)
                return name
        time.sleep(0.05)
    raise AssertionError(f"no new running session; sessions: {list_sessions(kube_client, namespace)}")
