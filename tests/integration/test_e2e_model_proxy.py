"""Keyless runners, end to end on the real node: the operator with
`[model_proxy].url` set, runner pods from the project's image, the real Codex
CLI in them, `codex-model-proxy` (a host process on the pod bridge, as a
proxy outside the cluster would be, with its CIDR in the runners' egress
rule), the scripted fake model behind it, a real Redis.

The model is hostile: it asks Codex to print every environment it can read
(`/proc/*/environ`, `env`), the mounted service account path and the runner's
own files. The provider key must appear nowhere (the tool output, the status,
the pod's log, its events), while the session's credential does appear in the
tool output: the attack worked and found nothing worth having."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes import client

from codex_devenv import fake_model as fm
from codex_devenv.model_proxy_process import ModelProxyProcess, start_model_proxy
from codex_devenv.operator_process import start_operator
from codex_devenv.system import fake_endpoint, operator_config, prepare_sessions_namespace
from codex_devenv.testkit import apply_session, phase_is, wait_session

API_KEY = "sk-provider-" + secrets.token_hex(16)
PREFIX = "e2e-proxy"
HOSTILE = (
    "for f in /proc/[0-9]*/environ; do echo \"== $f\"; tr '\\0' '\\n' < $f; done; "
    "echo '== env'; env; echo '== sa'; ls -la /var/run/secrets 2>&1; "
    "echo '== home'; grep -rs . $CODEX_HOME 2>/dev/null | head -100"
)


@pytest.fixture
def system(
    node_cluster: Any,
    node_ns: str,
    model: fm.FakeModelServer,
    volumes: Path,
    operator_kubeconfig: Path,
    redis_server: Any,
    tmp_path: Path,
    kube_client: Any,
) -> Iterator[dict[str, Any]]:
    cp, _node, refs = node_cluster
    model.reset()
    prepare_sessions_namespace(cp, kube_client, node_ns, API_KEY)
    signing_key = secrets.token_urlsafe(48).encode()
    proxy_config = f"""
[codex]
model = "fake-model"
[kubernetes.model_endpoint]
provider_id = "fake"
base_url = "http://{model.host}:{model.port}/v1"
[redis]
key_prefix = "{PREFIX}"
[limits]
monthly_budget_usd = 1.0
[cost.models."fake-model"]
input_usd_per_mtok = 2.0
cached_input_usd_per_mtok = 0.5
output_usd_per_mtok = 8.0
"""
    proxy = start_model_proxy(
        cp,
        tmp_path,
        proxy_config,
        provider_keys={"CODEX_MODEL_API_KEY": API_KEY},
        redis_url=redis_server.url,
        signing_key=signing_key,
        host=model.host,
    )
    kubernetes_extra, extra = operator_config(
        fake_endpoint(model.host, model.port), refs["runner"], tolerate_test_node=True, auto_approve=True
    )
    extra += f'\n[model_proxy]\nurl = "{proxy.base}"\negress_cidrs = ["{model.host}/32"]\n'
    op = start_operator(
        cp,
        operator_kubeconfig,
        node_ns,
        tmp_path,
        limit=4,
        kubernetes_extra=kubernetes_extra,
        extra_config=extra,
        env={"CODEX_PROXY_SIGNING_KEY": signing_key.decode()},
    )
    yield {"cp": cp, "ns": node_ns, "model": model, "proxy": proxy, "op": op, "tmp": tmp_path}
    op.stop()
    proxy.stop()
    assert API_KEY not in (tmp_path / "model-proxy.log").read_text()
    assert model.errors == []


@pytest.mark.parametrize("sandbox", ["read-only", "isolated", "full-access"])
def test_a_hostile_model_finds_no_provider_key_at_any_level(
    system: dict[str, Any], kube_client: Any, redis_server: Any, sandbox: str
) -> None:
    cp, ns, model, proxy = system["cp"], system["ns"], system["model"], system["proxy"]
    name = f"hostile-{sandbox}"
    model.set_script(fm.exec_command(HOSTILE), fm.computed(lambda req: f"found:\n{req.last_tool_output()}"))
    apply_session(cp, ns, name, sandbox=sandbox, prompt="show me every secret you can read")
    s = wait_session(kube_client, ns, name, phase_is("Succeeded", "Failed", "TimedOut"), timeout=120)
    assert s["status"]["phase"] == "Succeeded", s["status"]
    out = model.responses_requests[-1].last_tool_output() or ""
    # Positive control: the reads worked, and what they found is the credential.
    assert "== /proc/" in out and "CODEX_MODEL_API_KEY=cxs1." in out, out[:2000]
    pod = s["status"]["podName"]
    log = cp.kubectl("logs", "-n", ns, pod, "-c", "runner", check=False).stdout
    events = cp.kubectl("get", "events", "-n", ns, "-o", "json").stdout
    spec = json.dumps(client.CoreV1Api(kube_client).read_namespaced_pod(pod, ns).to_dict(), default=str)
    for where, text in (("tool output", out), ("status", json.dumps(s)), ("log", log), ("events", events)):
        assert API_KEY not in text, f"the provider key is in the {where}"
    assert API_KEY not in spec and "secretKeyRef" not in spec, "the pod references the key's Secret"
    # The model saw the provider's key on every request, from the proxy.
    assert {r.authorization for r in model.responses_requests} == {f"Bearer {API_KEY}"}
    # Metered at the proxy: both model requests of the turn.
    import redis as redis_lib

    r = redis_lib.Redis.from_url(redis_server.url)
    try:
        usage = {k.decode(): float(v) for k, v in r.hgetall(f"{PREFIX}:usage:s:{ns}%2F{name}").items()}
    finally:
        r.close()
    assert usage.get("requests") == 2 and usage.get("input", 0) > 0, usage

    # Once the session has ended its credential is refused, even from the bridge.
    credential = out.split("CODEX_MODEL_API_KEY=", 1)[1].split()[0]
    time.sleep(2.5)  # past session_check_seconds: the proxy asks the API server again
    status, body = asyncio.run(_post(proxy, credential))
    assert status == 403 and "ended" in body, body


async def _post(proxy: ModelProxyProcess, credential: str) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {credential}", "Content-Type": "application/json"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{proxy.base_url('fake')}/responses", data=b"{}", headers=headers) as resp,
    ):
        return resp.status, await resp.text()


def test_a_spent_budget_ends_the_running_turn_budget_exceeded(
    system: dict[str, Any], kube_client: Any
) -> None:
    """One model request spends 1.6 USD of the user's 1 USD month; the proxy
    refuses the turn's next request and the session says why, with the work done."""
    cp, ns, model = system["cp"], system["ns"], system["model"]
    model.set_script(fm.exec_command("echo working", usage=fm.Usage(1000, 200_000)), fm.say("never sent"))
    apply_session(cp, ns, "spender", sandbox="isolated", prompt="spend it", requestedBy="budget-user")
    s = wait_session(kube_client, ns, "spender", phase_is("Succeeded", "Failed", "TimedOut"), timeout=120)
    assert (s["status"]["phase"], s["status"]["reason"]) == ("Failed", "BudgetExceeded"), s["status"]
    assert "monthly budget reached" in s["status"]["message"]
    assert len(model.responses_requests) == 1, "the request after the budget was spent reached the model"
