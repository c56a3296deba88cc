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
HOSTILE = fm.HOSTILE_READS


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
        env=proxy.operator_env,
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
        key = f"{PREFIX}:usage:s:{ns}%2F{name}%2F{s['metadata']['uid']}"
        usage = {k.decode(): float(v) for k, v in r.hgetall(key).items() if not k.endswith(b":model")}
    finally:
        r.close()
    assert usage.get("requests") == 2 and usage.get("input", 0) > 0, usage
    # ... and that is what the session's status says.
    assert s["status"]["usage"]["inputTokens"] == usage["input"], s["status"]
    assert _condition(s, "UsageMetered")["status"] == "True", s["status"]

    # Once the session has ended its credential is refused, even from the bridge.
    credential = out.split("CODEX_MODEL_API_KEY=", 1)[1].split()[0]
    time.sleep(2.5)  # past session_check_seconds: the proxy asks the API server again
    status, body = asyncio.run(_post(proxy, credential))
    assert status == 403 and "ended" in body, body


def _condition(s: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in s["status"].get("conditions") or [] if c["type"] == type_), {})


def _reported(*usages: fm.Usage) -> dict[str, int]:
    """status.usage for what the fake model reported over a turn's requests."""
    return {
        "inputTokens": sum(u.input_tokens for u in usages),
        "cachedInputTokens": sum(u.cached_tokens for u in usages),
        "outputTokens": sum(u.output_tokens for u in usages),
        "reasoningTokens": sum(u.reasoning_tokens for u in usages),
    }


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


# Rewrites the runner's own record of the thread's usage (in the Codex home, on
# the conversation's volume) so that the runner's report of this turn is zero.
# Codex does not pass CODEX_HOME on to its commands: the runner's default path then.
REWRITE_USAGE = (
    'for f in "${CODEX_HOME:-/codex/home}"/codex-runner/usage-*.json; do '
    'echo \'{"input_tokens":999999999,"cached_input_tokens":0,"output_tokens":999999999,'
    '"reasoning_tokens":0}\' > "$f"; done; cat "${CODEX_HOME:-/codex/home}"/codex-runner/usage-*.json'
)


def test_status_usage_is_the_metered_figure_even_when_the_model_rewrites_the_usage_files(
    system: dict[str, Any], kube_client: Any
) -> None:
    """Turn two of a conversation: the model has Codex overwrite the runner's
    usage record, so the runner (subtracting the thread's earlier total) reports
    nothing. The status still says what the model reported, from the proxy."""
    cp, ns, model = system["cp"], system["ns"], system["model"]
    first = (fm.Usage(1200, 80, cached_tokens=200), fm.Usage(1500, 60))
    model.set_script(fm.exec_command("echo one", usage=first[0]), fm.say("first turn", usage=first[1]))
    workspace = {"type": "persistent"}
    apply_session(cp, ns, "metered-1", sandbox="full-access", workspace=workspace, requestedBy="meter-user")
    s1 = wait_session(kube_client, ns, "metered-1", phase_is("Succeeded", "Failed", "TimedOut"), timeout=120)
    assert s1["status"]["phase"] == "Succeeded", s1["status"]
    assert s1["status"]["usage"] == _reported(*first), s1["status"]

    second = (fm.Usage(3000, 150, cached_tokens=2500, reasoning_tokens=30), fm.Usage(3400, 40))
    model.set_script(
        fm.exec_command(REWRITE_USAGE, usage=second[0]),
        fm.computed(lambda req: fm.say(f"rewrote: {req.last_tool_output()}", usage=second[1])),
    )
    apply_session(
        cp,
        ns,
        "metered-2",
        sandbox="full-access",
        workspace=workspace,
        resumeFrom="metered-1",
        requestedBy="meter-user",
        prompt="and again",
    )
    s2 = wait_session(kube_client, ns, "metered-2", phase_is("Succeeded", "Failed", "TimedOut"), timeout=120)
    assert s2["status"]["phase"] == "Succeeded", s2["status"]
    assert "999999999" in s2["status"]["response"], "the rewrite did not happen: " + s2["status"]["response"]
    assert s2["status"]["usage"] == _reported(*second), s2["status"]
    assert s2["status"]["cost"]["actualUsd"] > 0, s2["status"]
    assert _condition(s2, "UsageMetered")["reason"] == "MeteredByProxy", s2["status"]


def test_a_sessions_cost_cap_ends_the_turn_budget_exceeded(system: dict[str, Any], kube_client: Any) -> None:
    """One request spends 0.042 USD of a 0.01 USD cap (and little of the user's
    month): the proxy refuses the next request, the turn ends BudgetExceeded with
    the work done, and its usage is the metered request's."""
    cp, ns, model = system["cp"], system["ns"], system["model"]
    spent = fm.Usage(1000, 5000)
    model.set_script(fm.exec_command("echo working", usage=spent), fm.say("never sent"))
    apply_session(
        cp, ns, "capped", sandbox="read-only", prompt="spend", requestedBy="cap-user", maxCostUsd=0.01
    )
    s = wait_session(kube_client, ns, "capped", phase_is("Succeeded", "Failed", "TimedOut"), timeout=120)
    assert (s["status"]["phase"], s["status"]["reason"]) == ("Failed", "BudgetExceeded"), s["status"]
    assert "session cost cap of $0.01 spent" in s["status"]["message"], s["status"]
    assert len(model.responses_requests) == 1, "the request over the cap reached the model"
    assert s["status"]["progress"]["commands"] == 1, s["status"]  # what was done so far
    assert s["status"]["usage"] == _reported(spent), s["status"]
