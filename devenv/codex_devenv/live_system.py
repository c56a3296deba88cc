"""The warm-runners system on the real node, as the live-pod tests run it: the
operator (a host process) with `[kubernetes.warm_runners]` on and its signing
key in a file, the model proxy on the pod bridge holding the only key, the
sessions namespace prepared."""

from __future__ import annotations

import random
import re
import secrets
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kubernetes import client

from codex_api.turn_request import generate_private_key, private_key_pem

from . import fake_model as fm
from .model_proxy_process import start_model_proxy
from .operator_process import start_operator
from .system import fake_endpoint, operator_config, prepare_sessions_namespace
from .testkit import get_session, phase_is, wait_session

AGENT_PORT = 8470


@contextmanager
def live_system(
    cp: Any,
    runner_image: str,
    ns: str,
    model: fm.FakeModelServer,
    operator_kubeconfig: Path,
    redis_url: str,
    tmp_path: Path,
    kube_client: Any,
    *,
    warm: dict[str, str],
    tables: str = "",
    approval_timeout: int = 3600,
    auto_approve: bool = True,
) -> Iterator[dict[str, Any]]:
    """`warm`: keys of `[kubernetes.warm_runners]` as TOML values (the operator's
    address, port and key are added); `tables`: more TOML tables; `auto_approve`
    false keeps the shipped approval flags (isolated and full-access turns wait
    for a human). Yields the parts a test drives, with
    `start()` to start one more operator (after killing the last)."""
    api_key = "sk-provider-" + secrets.token_hex(16)
    model.reset()
    prepare_sessions_namespace(cp, kube_client, ns, None)
    proxy = start_model_proxy(
        cp,
        tmp_path,
        f'[codex]\nmodel = "fake-model"\n[kubernetes.model_endpoint]\nprovider_id = "fake"\n'
        f'base_url = "http://{model.host}:{model.port}/v1"\n[redis]\nkey_prefix = "live"\n',
        provider_keys={"CODEX_MODEL_API_KEY": api_key},
        redis_url=redis_url,
        host=model.host,
    )
    kubernetes_extra, extra = operator_config(
        fake_endpoint(model.host, model.port),
        runner_image,
        tolerate_test_node=True,
        auto_approve=auto_approve,
        model_proxy=(proxy.base, f"{model.host}/32"),
    )
    # The operator is a host process: it calls the pods' agents from the bridge
    # address. Its key in a file, as an install has it: a restarted operator
    # still reaches the pods the last one started.
    key_file = tmp_path / "agent-signing-key.pem"
    key_file.write_bytes(private_key_pem(generate_private_key()))
    settings = {
        "agent_port": str(AGENT_PORT),
        "operator_cidrs": f'["{model.host}/32"]',
        "signing_key_file": f'"{key_file}"',
        **warm,
    }
    extra += "\n[kubernetes.warm_runners]\n" + "".join(f"{k} = {v}\n" for k, v in settings.items()) + tables

    def start() -> Any:
        return start_operator(
            cp,
            operator_kubeconfig,
            ns,
            tmp_path,
            limit=4,
            kubernetes_extra=kubernetes_extra,
            extra_config=extra,
            approval_timeout=approval_timeout,
            env=proxy.operator_env,
        )

    ops = [start()]
    try:
        yield {
            "cp": cp,
            "ns": ns,
            "model": model,
            "proxy": proxy,
            "ops": ops,
            "start": start,
            "tmp": tmp_path,
            "api_key": api_key,
        }
    finally:
        ops[-1].stop()
        proxy.stop()
    assert api_key not in (tmp_path / "model-proxy.log").read_text()
    assert model.errors == []


def finished(kube_client: Any, ns: str, name: str, timeout: float = 120) -> dict[str, Any]:
    return wait_session(
        kube_client, ns, name, phase_is("Succeeded", "Failed", "TimedOut", "Cancelled"), timeout=timeout
    )


def pods(kube_client: Any, ns: str) -> dict[str, Any]:
    found: Any = client.CoreV1Api(kube_client).list_namespaced_pod(ns)
    return {p.metadata.name: p for p in found.items}


def kill_until_done(
    system: dict[str, Any], kube_client: Any, every: list[str], *, kills: int, seed: int
) -> tuple[dict[str, dict[str, Any]], int]:
    """SIGKILL and restart the operator at random moments until every session in
    `every` has ended (at most `kills` times); the sessions as they ended and
    the number of kills. Asserts they all Succeeded."""
    ns = system["ns"]
    rng = random.Random(seed)
    terminal = {"Succeeded", "Failed", "TimedOut", "Cancelled", "Denied"}
    done = 0
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        phases = {n: (get_session(kube_client, ns, n).get("status") or {}).get("phase") for n in every}
        if all(p in terminal for p in phases.values()):
            break
        if done < kills:
            time.sleep(rng.uniform(0.2, 1.5))
            system["ops"][-1].kill()  # SIGKILL: mid-reconcile, mid-claim, mid-turn
            system["ops"].append(system["start"]())
            done += 1
        else:
            time.sleep(0.5)
    sessions = {n: get_session(kube_client, ns, n) for n in every}
    assert {n: s["status"].get("phase") for n, s in sessions.items()} == dict.fromkeys(every, "Succeeded"), {
        n: (s["status"].get("phase"), s["status"].get("reason"), s["status"].get("message"))
        for n, s in sessions.items()
    }
    return sessions, done


def turns_seen(model: fm.FakeModelServer, mark: str) -> Counter[str]:
    """How many model requests each turn made as its newest prompt, by the marker
    `<name>` its prompt carries (`mark`: a regex for the names)."""
    ran: Counter[str] = Counter()
    for request in model.responses_requests:
        marks = [m for text in request.user_texts() for m in re.findall(f"<({mark})>", text)]
        if marks:
            ran[max(marks)] += 1
    return ran
