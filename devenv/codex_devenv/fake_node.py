"""A stand-in kubelet for operator tests: it watches runner pods and moves
them to Running and then to Succeeded with a runner result frame, after
random delays, through the real API server."""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kubernetes import client, watch

from codex_api import names
from codex_api.result import RunnerResult
from codex_api.session import Usage

from .testkit import finish_pod, set_pod_running


class FakeNode:
    def __init__(self, kube_client: Any, namespace: str, *, max_delay: float = 0.5, seed: int = 7) -> None:
        self.kube_client = kube_client
        self.namespace = namespace
        self.max_delay = max_delay
        self.random = random.Random(seed)
        self.seen: set[str] = set()
        self.finished: set[str] = set()
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=16)
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def start(self) -> FakeNode:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _watch(self) -> None:
        core = client.CoreV1Api(self.kube_client)
        selector = f"{names.LABEL_COMPONENT}={names.COMPONENT_RUNNER}"
        while not self._stop.is_set():
            stream = watch.Watch()
            try:
                for event in stream.stream(
                    core.list_namespaced_pod, self.namespace, label_selector=selector, timeout_seconds=5
                ):
                    pod = event["object"]
                    if event["type"] == "ADDED" and pod.metadata.name not in self.seen:
                        self.seen.add(pod.metadata.name)
                        self._pool.submit(
                            self._run, pod.metadata.name, pod.metadata.labels[names.LABEL_SESSION]
                        )
                    if self._stop.is_set():
                        break
            except Exception:  # a restarted API watch is fine; keep playing the node
                time.sleep(0.1)
            finally:
                stream.stop()

    def _run(self, pod: str, session: str) -> None:
        try:
            time.sleep(self.random.uniform(0, self.max_delay))
            set_pod_running(self.kube_client, self.namespace, pod)
            time.sleep(self.random.uniform(0, self.max_delay))
            result = RunnerResult(
                outcome="completed",
                thread_id=f"thread-{session}",
                final_message=f"done: {session}",
                usage=Usage(input_tokens=100, output_tokens=10),
            )
            finish_pod(self.kube_client, self.namespace, pod, result)
            self.finished.add(pod)
        except Exception:  # the pod may be gone (timeout, TTL): nothing to play
            pass


class PhaseRecorder:
    """Watches sessions and records the largest number ever Running at once."""

    def __init__(self, kube_client: Any, namespace: str) -> None:
        self.kube_client = kube_client
        self.namespace = namespace
        self.phases: dict[str, str] = {}
        self.max_running = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def start(self) -> PhaseRecorder:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _watch(self) -> None:
        api = client.CustomObjectsApi(self.kube_client)
        version = ""
        while not self._stop.is_set():
            stream = watch.Watch()
            try:
                for event in stream.stream(
                    api.list_namespaced_custom_object,
                    "codex.techsapo.io",
                    "v1alpha1",
                    self.namespace,
                    "codexsessions",
                    timeout_seconds=2,
                    resource_version=version,
                ):
                    obj = event["object"]
                    version = obj["metadata"]["resourceVersion"]
                    self.phases[obj["metadata"]["name"]] = (obj.get("status") or {}).get("phase") or "Pending"
                    running = sum(p == "Running" for p in self.phases.values())
                    self.max_running = max(self.max_running, running)
                    if self._stop.is_set():
                        break
            except Exception:
                time.sleep(0.1)
            finally:
                stream.stop()
