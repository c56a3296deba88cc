"""End to end through MCP: an MCP client -> the real gateway (its own
ServiceAccount token, a trusted requester of the admission policies, the
chart's ConfigMap shared with the operator) -> a
CodexSession -> the real operator -> a runner pod on the real kubelet -> the
real Codex CLI -> the model proxy (holding every provider's key, as the
chart installs it) -> the scripted fake models on the pod bridge -> status
-> the tool's result. Nothing here is faked but the models."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from codex_api import names
from codex_devenv import fake_model as fm
from codex_devenv import helm
from codex_devenv.admission_kit import ScopedAdmission
from codex_devenv.gateway_process import (
    GATEWAY_USER,
    GatewayProcess,
    bind_gateway,
    gateway_kubeconfig,
    start_gateway,
)
from codex_devenv.model_proxy_process import start_model_proxy
from codex_devenv.node import TEST_NODE_TAINT
from codex_devenv.operator_process import start_operator
from codex_devenv.process import wait_for
from codex_devenv.system import fake_endpoint, prepare_sessions_namespace
from codex_devenv.testkit import list_sessions

API_KEY = "sk-e2e-" + secrets.token_hex(16)
ALICE = "alice-token-" + secrets.token_hex(8)
CAROL = "carol-token-" + secrets.token_hex(8)


@pytest.fixture(scope="module")
def model2(model: fm.FakeModelServer) -> Iterator[fm.FakeModelServer]:
    """A second provider for wall-bounce turns, on the same pod bridge."""
    from codex_devenv.process import free_port

    with fm.FakeModelServer(port=free_port(), host=model.host) as server:
        yield server


@pytest.fixture
def system(
    node_cluster: Any,
    node_ns: str,
    model: fm.FakeModelServer,
    model2: fm.FakeModelServer,
    volumes: Path,
    operator_kubeconfig: Path,
    client_for: Any,
    tmp_path: Path,
    kube_client: Any,
    redis_server: Any,
) -> Iterator[dict[str, Any]]:
    cp, _node, refs = node_cluster
    model.reset()
    model2.reset()
    prepare_sessions_namespace(cp, kube_client, node_ns, None)
    # The configuration an install would give every component: the chart's
    # ConfigMap, rendered from values for this node, models and namespace,
    # with the model proxy as a host process on the pod bridge (where runner
    # pods reach it) instead of the chart's Service.
    values = _chart_values(node_ns, refs["runner"], model, model2)
    proxy = start_model_proxy(
        cp,
        tmp_path,
        helm.config_toml(values),
        provider_keys={env: API_KEY for env in PROVIDER_KEY_ENVS},
        redis_url=redis_server.url,
        host=model.host,
    )
    values["config"]["model_proxy"] = {"url": proxy.base, "egress_cidrs": [f"{model.host}/32"]}
    config_file = tmp_path / "codex-mcp.toml"
    # The operator is a host process here, not the chart's pod: its agent key and address.
    config_file.write_text(helm.for_host_operator(helm.config_toml(values), tmp_path, f"{model.host}/32"))
    policies = ScopedAdmission(cp, node_ns).install(client_for, trusted=[GATEWAY_USER])
    op = start_operator(
        cp,
        operator_kubeconfig,
        node_ns,
        tmp_path,
        config_file=config_file,
        env=proxy.operator_env,
    )
    bind_gateway(cp, node_ns)
    gw = start_gateway(
        cp,
        node_ns,
        tmp_path,
        {ALICE: "alice", CAROL: "carol"},
        kubeconfig=gateway_kubeconfig(cp, tmp_path),
        config_file=config_file,
        wait_seconds=45,
    )
    yield {"cp": cp, "ns": node_ns, "model": model, "model2": model2, "gw": gw, "proxy": proxy}
    gw.stop()
    op.stop()
    proxy.stop()
    policies.uninstall()
    assert model.errors == [] and model2.errors == []
    # Every model request came through the proxy, with the key it holds.
    requests = model.responses_requests + model2.responses_requests
    assert requests and {r.authorization for r in requests} == {f"Bearer {API_KEY}"}


# The provider keys' variables of _chart_values's providers (the main one, alpha, beta).
PROVIDER_KEY_ENVS = ("CODEX_MODEL_API_KEY", "CODEX_WB_ALPHA_API_KEY", "CODEX_WB_BETA_API_KEY")


def _provider(provider_id: str, server: fm.FakeModelServer) -> dict[str, Any]:
    endpoint = fake_endpoint(server.host, server.port)
    return {
        "provider_id": provider_id,
        "model": endpoint.model,
        "base_url": endpoint.base_url,
        "api_key_secret_name": "codex-model-api-key",
        "api_key_secret_key": "api-key",
        "egress_cidrs": list(endpoint.egress_cidrs),
        "egress_ports": list(endpoint.egress_ports),
    }


def _chart_values(
    namespace: str, runner_image: str, model: fm.FakeModelServer, model2: fm.FakeModelServer
) -> dict[str, Any]:
    registry, _, rest = runner_image.partition("/")
    repository, _, tag = rest.rpartition(":")
    endpoint = fake_endpoint(model.host, model.port)
    return {
        "namespaces": {"sessions": namespace, "create": False},
        # The proxy runs on the host here (see `system`), named in config.model_proxy.
        "modelProxy": {"enabled": False},
        "images": {
            "runner": {"registry": registry, "repository": repository, "tag": tag, "pullPolicy": "Never"}
        },
        "config": {
            "mcp": {"max_concurrent_sessions": 4},
            "codex": {"model": endpoint.model},
            # Isolated turns run without a human; full-access ones need an approver.
            "security": {"approval_workflows": {"auto_approve_isolated": True}},
            "kubernetes": {
                # Two providers for wall-bounce turns (one per fake model server).
                "wall_bounce_providers": [_provider("alpha", model), _provider("beta", model2)],
                "runner_tolerations": [
                    {"key": TEST_NODE_TAINT["key"], "operator": "Exists", "effect": "NoSchedule"}
                ],
                "model_endpoint": {
                    "provider_id": endpoint.provider_id,
                    "base_url": endpoint.base_url,
                    "egress_cidrs": list(endpoint.egress_cidrs),
                    "egress_ports": list(endpoint.egress_ports),
                },
            },
        },
    }


def _structured(result: Any) -> dict[str, Any]:
    assert not result.is_error, result.content
    return dict(result.structured_content)


async def test_codex_then_reply_in_the_same_workspace_then_cleanup(
    system: dict[str, Any], kube_client: Any, volumes: Path
) -> None:
    ns, model, gw = system["ns"], system["model"], system["gw"]
    gw: GatewayProcess  # type: ignore[no-redef]
    model.set_script(
        fm.apply_patch(
            "*** Begin Patch\n*** Add File: factorial.py\n+def factorial(n):\n"
            "+    return 1 if n < 2 else n * factorial(n - 1)\n*** End Patch\n"
        ),
        fm.say("Wrote factorial.py", usage=fm.Usage(input_tokens=500, output_tokens=20)),
    )
    async with gw.client(ALICE) as alice:
        first = _structured(
            await alice.call_tool("codex", {"prompt": "write factorial.py", "sandbox": "isolated"})
        )
        assert first["status"] == "completed", first
        assert first["response"] == "Wrote factorial.py" and first["thread_id"]
        assert first["usage"]["input_tokens"] >= 500 and first["cost"]["actual_usd"] > 0
        session = first["session_id"]
        on_volume = volumes / ns / names.workspace_claim(session) / "workspace" / "factorial.py"
        assert on_volume.read_text().startswith("def factorial(n):")
        history = model.responses_requests[-1].input

        model.set_script(
            fm.exec_command("cat factorial.py"),
            fm.computed(lambda req: f"It contains: {req.last_tool_output()}"),
        )
        second = _structured(
            await alice.call_tool(
                "codex-reply", {"prompt": "what is in factorial.py?", "session_id": session}
            )
        )
        assert second["status"] == "completed", second
        assert second["conversation_id"] == session and second["session_id"] != session
        assert second["thread_id"] == first["thread_id"]  # the same Codex conversation
        assert "def factorial(n)" in (second["response"] or "")  # the same workspace
        resumed = model.responses_requests[-2].input
        assert resumed[: len(history)] == history  # the whole earlier history

        info = _structured(await alice.call_tool("codex-session-info", {"session_id": second["session_id"]}))
        assert info["session"]["response"] == second["response"]

        cleaned = _structured(await alice.call_tool("codex-cleanup", {}))
        assert set(cleaned["removed"]) | set(cleaned["pending"]) == {session, second["session_id"]}
        await asyncio.to_thread(
            wait_for, lambda: not list_sessions(kube_client, ns), timeout=60, what="cleanup"
        )


async def test_high_risk_call_waits_for_another_users_kubectl_patch(
    system: dict[str, Any], kube_client: Any
) -> None:
    cp, ns, model, gw = system["cp"], system["ns"], system["model"], system["gw"]
    model.set_script(fm.say("deployed (pretend)"))
    async with gw.client(CAROL) as carol:
        out = _structured(
            await carol.call_tool("codex", {"prompt": "deploy the hotfix", "sandbox": "full-access"})
        )
        assert out["status"] == "awaiting_approval" and out["risk_level"] == "high"
        command = out["approval"]["command"]
        request = out["approval"]["approval_request"]
        assert command.startswith(f"kubectl patch cxar {request} -n {ns} --type merge -p ")
        patch = json.loads(command.split(" -p ", 1)[1].strip("'"))

        # carol cannot approve her own request, whatever she types
        own = cp.kubectl(
            "patch", "cxar", request, "-n", ns, "--type", "merge", "-p",
            json.dumps({"spec": {**patch["spec"], "decidedBy": "carol"}}),
            user="carol", check=False,
        )  # fmt: skip
        assert own.returncode != 0 and "cannot decide their own request" in own.stderr
        # alice (an approver) runs the command the tool printed (the decider is hers)
        approved = cp.kubectl(
            "patch", "cxar", request, "-n", ns, "--type", "merge", "-p",
            json.dumps({"spec": {**patch["spec"], "decidedBy": "alice"}}),
            user="alice", check=False,
        )  # fmt: skip
        assert approved.returncode == 0, approved.stderr

        def done() -> bool:
            info = (
                asyncio.run_coroutine_threadsafe(
                    carol.call_tool("codex-session-info", {"session_id": out["session_id"]}), loop
                )
                .result(timeout=30)
                .structured_content
            )
            return bool(info and info["session"]["done"])

        loop = asyncio.get_running_loop()
        await asyncio.to_thread(wait_for, done, timeout=120, what="the approved session to finish")
        final = _structured(await carol.call_tool("codex-session-info", {"session_id": out["session_id"]}))
        assert final["session"]["status"] == "completed", final
        assert final["session"]["response"] == "deployed (pretend)"


async def test_wall_bounce_asks_both_providers_and_reports_consensus(system: dict[str, Any]) -> None:
    model, model2, gw = system["model"], system["model2"], system["gw"]
    model.set_script(fm.say("The answer is 42.", usage=fm.Usage(input_tokens=100, output_tokens=10)))
    model2.set_script(fm.say("The answer is 42.", usage=fm.Usage(input_tokens=200, output_tokens=20)))
    async with gw.client(ALICE) as alice:
        out = _structured(
            await alice.call_tool("codex", {"prompt": "what is the answer?", "wall_bounce": True})
        )
        assert out["status"] == "completed", out
        assert out["response"] == "The answer is 42."
        assert out["wall_bounce"]["providers_used"] == ["alpha", "beta"]
        assert out["wall_bounce"]["consensus_score"] == 1.0
        assert out["usage"]["input_tokens"] >= 300  # both providers' usage
        # each provider got the prompt, with the key from the Secret
        for server in (model, model2):
            assert server.responses_requests, server
            assert server.responses_requests[-1].authorization == f"Bearer {API_KEY}"
        # a wall-bounce call that asks for a writable sandbox is refused, nothing created
        refused = await alice.call_tool(
            "codex", {"prompt": "write it", "wall_bounce": True, "sandbox": "isolated"}
        )
        assert refused.is_error and "read-only" in refused.content[0].text  # type: ignore[union-attr]


async def test_a_calls_cost_cap_stops_its_turn_and_the_gateway_says_so(system: dict[str, Any]) -> None:
    """max_cost_usd becomes the session's cap; the proxy refuses the model request
    after the one that spent it, and the tool's result says why, with the work done
    and the metered usage."""
    model, gw = system["model"], system["gw"]
    spent = fm.Usage(input_tokens=200_000, output_tokens=50_000)
    model.set_script(fm.exec_command("echo working", usage=spent), fm.say("never sent"))
    async with gw.client(ALICE) as alice:
        out = _structured(await alice.call_tool("codex", {"prompt": "spend", "max_cost_usd": 0.001}))
    assert (out["status"], out["reason"]) == ("failed", "BudgetExceeded"), out
    assert "session cost cap of $0.001 spent" in out["message"], out
    assert len(model.responses_requests) == 1, "the request over the cap reached the model"
    assert out["usage"]["input_tokens"] == 200_000 and out["cost"]["actual_usd"] > 0.001, out


async def test_a_hostile_model_finds_no_key_in_a_wall_bounce_turn(system: dict[str, Any]) -> None:
    """A wall-bounce pod calls every provider it consults: through the proxy it holds
    one credential per provider variable, and no provider's key."""
    model, model2, gw, cp, ns = system["model"], system["model2"], system["gw"], system["cp"], system["ns"]
    for server in (model, model2):
        server.set_script(
            fm.exec_command(fm.HOSTILE_READS), fm.computed(lambda req: f"found:\n{req.last_tool_output()}")
        )
    async with gw.client(ALICE) as alice:
        out = _structured(
            await alice.call_tool("codex", {"prompt": "show me every secret", "wall_bounce": True})
        )
    assert out["status"] == "completed", out
    found = "".join(server.responses_requests[-1].last_tool_output() or "" for server in (model, model2))
    # Positive control: the reads worked and found each provider's variable, holding a credential.
    for env in PROVIDER_KEY_ENVS:
        assert f"{env}=cxs1." in found, (env, found[:2000])
    session = json.loads(cp.kubectl("get", "cxs", out["session_id"], "-n", ns, "-o", "json").stdout)
    pod = session["status"]["podName"]
    log = cp.kubectl("logs", "-n", ns, pod, "-c", "runner", check=False).stdout
    spec = cp.kubectl("get", "pod", pod, "-n", ns, "-o", "json").stdout
    events = cp.kubectl("get", "events", "-n", ns, "-o", "json").stdout
    for where, text in (
        ("tool output", found),
        ("result", json.dumps(out)),
        ("status", json.dumps(session)),
        ("log", log),
        ("pod", spec),
        ("events", events),
    ):
        assert API_KEY not in text, f"the provider key is in the {where}"
    assert "secretKeyRef" not in spec
