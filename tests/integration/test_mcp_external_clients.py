"""The real `codex-gateway` as external MCP clients installed from npm see it:
the MCP Inspector CLI, and the official conformance suite's generic server
scenarios at both protocol eras (2025-11-25 and 2026-07-28).

Versions are pinned in hack/versions.env; `hack/install-mcp-clients.sh`
installs them (cached) and `codex_devenv.mcp_clients` runs them. The scenario
classification below is the table in docs/testing.md ("External MCP clients").
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from codex_api.result import RunnerResult
from codex_api.session import Usage
from codex_devenv.gateway_process import GatewayProcess, start_gateway
from codex_devenv.mcp_clients import ERAS, ConformanceResult, conformance, conformance_list, inspector_cli
from codex_devenv.testkit import play_next_session

ALICE = "alice-token-" + secrets.token_hex(8)
BOB = "bob-token-" + secrets.token_hex(8)
CORE_TOOLS = {"codex", "codex-reply", "codex-session-info"}
OPTIONAL_TOOLS = {"codex-cleanup"}
PROMPTS = {"code-review", "debug-helper", "refactor-code"}

LEGACY, MODERN = ERAS["legacy"], ERAS["modern"]

# Scenarios that apply to any server (no fixture tools, prompts or resources),
# per spec revision. Each must pass.
GENERIC: dict[str, list[str]] = {
    LEGACY: [
        "server-initialize",
        "server-session-lifecycle",
        "ping",
        "tools-list",
        "tools-call-error",
        "server-sse-multiple-streams",
        "resources-list",
        "prompts-list",
        "dns-rebinding-protection",
    ],
    MODERN: [
        "server-stateless",
        "tools-list",
        "tools-call-error",
        "server-sse-multiple-streams",
        "resources-list",
        "sep-2164-resource-not-found",
        "prompts-list",
        "dns-rebinding-protection",
        "caching",
        "http-header-validation",
        "input-required-result-unsupported-methods",
    ],
}

# Checks of a generic scenario that need one of the suite's fixture tools;
# they fail as "not testable" against any server without it.
FIXTURE_CHECKS: dict[tuple[str, str], dict[str, str]] = {
    (MODERN, "server-stateless"): {
        "sep-2575-server-rejects-undeclared-capability": "needs the diagnostic tool test_missing_capability",
        "sep-2575-missing-capability-http-400": "needs the diagnostic tool test_missing_capability",
    },
}

# Server-caused failures of a generic scenario: (spec version, scenario) -> reason.
# Each is marked xfail(strict=True), so a fix on the server side shows up as XPASS.
SERVER_FAILURES: dict[tuple[str, str], str] = {}

_FIXTURE = "needs the suite's fixture {} (the 'everything' test server's), which the gateway does not have"
NOT_APPLICABLE: dict[str, str] = {
    "logging-set-level": "the gateway does not declare the optional `logging` capability (answers -32601); removed in 2026-07-28",
    "completion-complete": "the gateway does not declare the optional `completions` capability (answers -32601)",
    "tools-call-simple-text": _FIXTURE.format("tool test_simple_text"),
    "tools-call-image": _FIXTURE.format("tool test_image_content"),
    "tools-call-audio": _FIXTURE.format("tool test_audio_content"),
    "tools-call-embedded-resource": _FIXTURE.format("tool test_embedded_resource"),
    "tools-call-mixed-content": _FIXTURE.format("tool test_multiple_content_types"),
    "tools-call-with-logging": _FIXTURE.format("tool test_tool_with_logging")
    + " and the `logging` capability",
    "tools-call-with-progress": _FIXTURE.format("tool test_tool_with_progress"),
    "tools-call-sampling": _FIXTURE.format("tool test_sampling"),
    "tools-call-elicitation": _FIXTURE.format("tool test_elicitation"),
    "json-schema-2020-12": _FIXTURE.format("tool json_schema_2020_12_tool") + " (pending in the suite)",
    "elicitation-sep1034-defaults": _FIXTURE.format("tool test_elicitation_sep1034_defaults"),
    "elicitation-sep1330-enums": _FIXTURE.format("tool test_elicitation_sep1330_enums"),
    "server-sse-polling": _FIXTURE.format("tool test_reconnection") + " (pending in the suite)",
    "resources-read-text": _FIXTURE.format("resource test://static-text"),
    "resources-read-binary": _FIXTURE.format("resource test://static-binary"),
    "resources-templates-read": _FIXTURE.format("resource template test://template/{id}/data"),
    "resources-subscribe": "the gateway does not declare `resources.subscribe` (answers -32601); removed in 2026-07-28",
    "resources-unsubscribe": "the gateway does not declare `resources.subscribe` (answers -32601); removed in 2026-07-28",
    "prompts-get-simple": _FIXTURE.format("prompt test_simple_prompt"),
    "prompts-get-with-args": _FIXTURE.format("prompt test_prompt_with_arguments"),
    "prompts-get-embedded-resource": _FIXTURE.format("prompt test_prompt_with_embedded_resource"),
    "prompts-get-with-image": _FIXTURE.format("prompt test_prompt_with_image"),
    "http-custom-header-server-validation": "needs a tool whose inputSchema has x-mcp-header annotations (the gateway has none)",
    **{
        f"sep-2640-skills-{part}": "extension (skills, SEP-2640), not implemented by the gateway"
        for part in ("directory", "enumeration", "manifest")
    },
    **{
        f"tasks-{part}": (
            "extension (tasks): the gateway serves it for codex/codex-reply (test_gateway_tasks.py), "
            "but every scenario calls the suite's own fixture tools (greet, slow_compute, ...)"
        )
        for part in (
            "lifecycle",
            "capability-negotiation",
            "wire-fields",
            "request-state-removal",
            "mrtr-input",
            "request-headers",
            "dispatch-and-envelope",
            "status-notifications",
            "required-task-error",
            "mrtr-composition",
        )
    },
    **{
        f"input-required-result-{part}": _FIXTURE.format(f"tool {tool}")
        for part, tool in (
            ("basic-elicitation", "test_input_required_result_elicitation"),
            ("basic-sampling", "test_input_required_result_sampling"),
            ("basic-list-roots", "test_input_required_result_list_roots"),
            ("request-state", "test_input_required_result_request_state"),
            ("multiple-input-requests", "test_input_required_result_multiple_inputs"),
            ("multi-round", "test_input_required_result_multi_round"),
            ("missing-input-response", "test_input_required_result_elicitation"),
            ("non-tool-request", "test_input_required_result_prompt (a prompt)"),
            ("result-type", "test_input_required_result_elicitation"),
            ("tampered-state", "test_input_required_result_tampered_state"),
            ("capability-check", "test_input_required_result_capabilities"),
            ("ignore-extra-params", "test_input_required_result_elicitation"),
            ("validate-input", "test_input_required_result_elicitation"),
        )
    },
}


# --------------------------------------------------------------------------- MCP Inspector CLI


@pytest.fixture
def gateway(
    control_plane: Any, namespace: str, run_operator: Any, tmp_path: Path
) -> Iterator[GatewayProcess]:
    run_operator()
    running = start_gateway(control_plane, namespace, tmp_path, {ALICE: "alice", BOB: "bob"}, wait_seconds=2)
    yield running
    running.stop()


def _text_json(content: list[dict[str, Any]]) -> Any:
    assert len(content) == 1 and content[0]["type"] == "text", content
    return json.loads(content[0]["text"])


@pytest.mark.parametrize("era", ["legacy", "modern"])
def test_inspector_cli(gateway: GatewayProcess, era: str, kube_client: Any, namespace: str) -> None:
    def call(*args: str, token: str = ALICE) -> Any:
        return inspector_cli(gateway.url, token, *args, era=era).result

    tools = {t["name"]: t for t in call("--method", "tools/list")["tools"]}
    assert CORE_TOOLS <= set(tools) <= CORE_TOOLS | OPTIONAL_TOOLS, sorted(tools)
    assert all(t["description"] and t["inputSchema"]["type"] == "object" for t in tools.values())
    assert tools["codex"]["inputSchema"]["required"] == ["prompt"]

    prompts = {p["name"] for p in call("--method", "prompts/list")["prompts"]}
    assert prompts == PROMPTS
    got = call(
        "--method",
        "prompts/get",
        "--prompt-name",
        "code-review",
        "--prompt-args",
        "code=x = 1",
        "language=python",
    )
    [message] = got["messages"]
    assert message["role"] == "user"
    assert message["content"]["text"].startswith("Please review the following python code.")
    assert message["content"]["text"].endswith("```python\nx = 1\n```")

    uris = {r["uri"] for r in call("--method", "resources/list")["resources"]}
    assert "codex://sessions/active" in uris

    if era == "modern":
        # The Inspector declares the Tasks extension on the 2026 protocol: the gateway
        # answers with a task (the session) and the Inspector polls it to its result.
        # The test plays the node so that there is one.
        result = RunnerResult(
            outcome="completed",
            thread_id="thread-i",
            final_message="hi from the task",
            usage=Usage(input_tokens=5, cached_input_tokens=0, output_tokens=2, reasoning_tokens=0),
        )
        player = threading.Thread(target=play_next_session, args=(kube_client, namespace, set(), result, 60))
        player.start()
        done = call(
            "--method",
            "tools/call",
            "--tool-name",
            "codex",
            "--tool-args-json",
            json.dumps({"prompt": "say hi"}),
        )
        player.join()
        assert done["isError"] is False
        assert done["structuredContent"]["status"] == "completed", done
        assert done["structuredContent"]["response"] == "hi from the task"
        assert done["structuredContent"]["requested_by"] == "alice"
        return

    # a turn: --wait-seconds 2 and no kubelet, so it answers "running"
    out = call(
        "--method", "tools/call", "--tool-name", "codex", "--tool-args-json", json.dumps({"prompt": "say hi"})
    )
    assert out["isError"] is False
    started = out["structuredContent"]
    assert started["status"] in ("running", "awaiting_approval") and started["requested_by"] == "alice"
    session_id = started["session_id"]

    [contents] = call("--method", "resources/read", "--uri", "codex://sessions/active")["contents"]
    assert contents["uri"] == "codex://sessions/active" and contents["mimeType"] == "application/json"
    active = json.loads(contents["text"])
    assert active["user"] == "alice" and [s["session_id"] for s in active["sessions"]] == [session_id]

    info = call(
        "--method", "tools/call", "--tool-name", "codex-session-info", "--tool-arg", "list_active=true"
    )
    assert info["isError"] is False
    assert [s["session_id"] for s in info["structuredContent"]["sessions"]] == [session_id]
    assert _text_json(info["content"]) == info["structuredContent"]

    # bob sees none of it
    theirs = call(
        "--method",
        "tools/call",
        "--tool-name",
        "codex-session-info",
        "--tool-arg",
        "list_active=true",
        token=BOB,
    )
    assert theirs["structuredContent"]["sessions"] == []


@pytest.mark.parametrize("era", ["legacy", "modern"])
def test_inspector_cli_without_token_gets_401(gateway: GatewayProcess, era: str) -> None:
    for token in (None, "not-a-valid-token-" + secrets.token_hex(8)):
        run = inspector_cli(gateway.url, token, "--method", "tools/list", era=era)
        assert run.returncode != 0, run.describe()
        error = run.json["error"]
        # legacy: the 401 body ("invalid_token"); modern: "the server requires authorization (HTTP 401)"
        assert error["code"] == "auth_required", run.describe()
        assert ("invalid_token" if era == "legacy" else "(HTTP 401)") in error["message"], run.describe()
    # the same request as the Inspector's first: 401 with a bearer challenge and that body
    resp = httpx2.post(
        gateway.url,
        json={"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}},
        headers={"Accept": "application/json, text/event-stream", "Content-Type": "application/json"},
        timeout=10,
    )
    assert resp.status_code == 401
    assert resp.headers["www-authenticate"].lower().startswith("bearer")
    assert resp.json()["error"] == "invalid_token"


# --------------------------------------------------------------------------- conformance suite


@pytest.fixture(scope="module")
def shared_gateway(
    control_plane: Any, kube_client: Any, operator_kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    """One gateway (and operator) for all conformance scenarios, in a namespace of its own."""
    from kubernetes import client

    from codex_devenv.operator_process import bind_operator, start_operator

    work = tmp_path_factory.mktemp("conformance-gateway")
    name = f"t-mcp-conformance-{secrets.token_hex(3)}"
    core = client.CoreV1Api(kube_client)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    operator = gateway = None
    try:
        bind_operator(control_plane, name)
        operator = start_operator(control_plane, operator_kubeconfig, name, work)
        gateway = start_gateway(control_plane, name, work, {ALICE: "alice", BOB: "bob"}, wait_seconds=2)
        yield gateway
    finally:
        if gateway:
            gateway.stop()
        if operator:
            operator.stop()
        core.delete_namespace(name, propagation_policy="Background")


@pytest.fixture(scope="module")
def suite_scenarios() -> dict[str, list[str]]:
    return conformance_list()


def test_every_conformance_scenario_is_classified(suite_scenarios: dict[str, list[str]]) -> None:
    """A new suite version with new scenarios fails here until they are classified (and documented)."""
    generic = {s for scenarios in GENERIC.values() for s in scenarios}
    assert not generic & set(NOT_APPLICABLE)
    assert set(suite_scenarios) == generic | set(NOT_APPLICABLE)
    for spec_version, scenarios in GENERIC.items():
        for scenario in scenarios:
            assert spec_version in suite_scenarios[scenario], (scenario, suite_scenarios[scenario])
    # and each era runs every generic scenario the suite has for it
    for spec_version, scenarios in GENERIC.items():
        missing = {s for s, tags in suite_scenarios.items() if spec_version in tags and s in generic} - set(
            scenarios
        )
        assert not missing, (spec_version, missing)


def _plan() -> list[Any]:
    params = []
    for spec_version, scenarios in GENERIC.items():
        for scenario in scenarios:
            reason = SERVER_FAILURES.get((spec_version, scenario))
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            params.append(pytest.param(spec_version, scenario, id=f"{spec_version}-{scenario}", marks=marks))
    return params


@pytest.mark.parametrize(("spec_version", "scenario"), _plan())
def test_conformance_scenario(
    shared_gateway: GatewayProcess, tmp_path: Path, spec_version: str, scenario: str
) -> None:
    result: ConformanceResult = conformance(
        shared_gateway.url, spec_version, scenario, token=ALICE, work=tmp_path
    )
    print(result.summary())
    assert not result.skipped, result.describe()
    assert result.checks, result.describe()
    allowed = FIXTURE_CHECKS.get((spec_version, scenario), {})
    failed = [c for c in result.failed if c["id"] not in allowed]
    assert not failed, result.summary()
    assert result.with_status("SUCCESS"), result.summary()
    if not allowed:
        assert result.returncode == 0, result.describe()


def test_conformance_without_token_gets_401(shared_gateway: GatewayProcess, tmp_path: Path) -> None:
    """The token the suite runs with is what lets it in: without it every request is refused."""
    result = conformance(shared_gateway.url, MODERN, "tools-list", work=tmp_path)
    assert result.returncode != 0 and result.failed, result.summary()
    assert "HTTP 401" in result.failed[0]["errorMessage"], result.summary()
