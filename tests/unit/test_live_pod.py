"""Warm runners' pure pieces: the agent's command line (codex_runner.contract),
the live pod (pod_builder), its ingress rule (netpol_builder), the
configuration, and how an agent's report becomes status (pod_outcome)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any

import pytest
from pydantic import ValidationError

from codex_api import names
from codex_api.config import CodexMCPConfig, CostConfig, WarmRunnersConfig
from codex_api.session import CodexSessionSpec, Usage
from codex_api.turn_request import TurnReport
from codex_devenv.testkit import turn_settings, wall_bounce_settings
from codex_operator.netpol_builder import agent_ingress_rule, build_network_policy
from codex_operator.pod_builder import CREDENTIAL_FILE, LivePod, build_runner_pod, pod_shape
from codex_operator.pod_outcome import report_result
from codex_runner.contract import (
    AGENT_PROMPT,
    AgentOptions,
    RunnerArgsError,
    agent_args,
    parse_agent_args,
    turn_settings_for,
)

UID = "6f1c1f57-0c38-4b7e-9d43-3c2f0c3f0a11"
LIVE = LivePod(
    public_key_pem="-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----\n",
    key_fingerprint="ab" * 16,
    port=8470,
    idle_seconds=300,
    lifetime_seconds=3600,
)


# --------------------------------------------------------------------------- the command line
@pytest.mark.parametrize("credential_file", [None, "/tmp/codex-credential"])
def test_agent_args_round_trip_without_prompt_or_thread(credential_file: str | None) -> None:
    settings = turn_settings(
        prompt="--prompt is data", resume_thread_id="thread-1", base_instructions="--port 1"
    )
    options = AgentOptions(port=8470, idle_seconds=60, credential_file=credential_file)
    args = agent_args(settings, options)
    assert "--prompt is data" not in args and "thread-1" not in args
    parsed, parsed_options = parse_agent_args(args)
    assert parsed_options == options
    assert parsed == dataclasses.replace(settings, prompt=AGENT_PROMPT, resume_thread_id=None)


def test_agent_args_refuse_a_wall_bounce_turn() -> None:
    settings = turn_settings(sandbox="read-only", wall_bounce=wall_bounce_settings())
    with pytest.raises(RunnerArgsError, match="wall-bounce"):
        agent_args(settings, AgentOptions(port=8470, idle_seconds=60))


BASE = agent_args(turn_settings(), AgentOptions(port=8470, idle_seconds=60))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "expected the subcommand 'agent'"),
        (["run", *BASE[1:]], "expected the subcommand 'agent'"),
        ([*BASE, "--port", "9"], "--port given more than once"),
        ([*BASE, "--prompt", "x"], "--prompt is not an agent option"),
        ([*BASE, "--resume-thread-id", "t"], "--resume-thread-id is not an agent option"),
        ([BASE[0], *BASE[3:]], "required: --port"),
        ([BASE[0], "--port", "x", *BASE[3:]], "not a number"),
        ([BASE[0], "--port", "0", *BASE[3:]], "port must be 1..65535"),
        ([BASE[0], "--port", "99999", *BASE[3:]], "port must be 1..65535"),
        ([*BASE[:3], "--idle-seconds", "0", *BASE[5:]], "idle_seconds must be"),
        ([*BASE, "--credential-file", "relative/path"], "normalized absolute path"),
        ([*BASE, "--credential-file", "/tmp/../etc/x"], "normalized absolute path"),
        ([BASE[0], *BASE[3:], "--port"], "expected one value"),
        ([*BASE, "--bogus", "1"], "unrecognized option"),
    ],
)
def test_bad_agent_command_lines_are_refused_clearly(argv: list[str], message: str) -> None:
    with pytest.raises(RunnerArgsError, match=message.replace("(", r"\(")):
        parse_agent_args(argv)


def test_parse_agent_args_refuses_a_plain_string() -> None:
    with pytest.raises(RunnerArgsError, match="list of words"):
        parse_agent_args(" ".join(BASE))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the pod
def _pod(
    spec: CodexSessionSpec,
    *,
    credential: str | None = "cxs1.credential",
    session: str = "turn-1",
    uid: str = UID,
) -> dict[str, Any]:
    config = CodexMCPConfig()
    settings = turn_settings_for(
        spec,
        model=spec.model or "gpt-5-codex",
        resume_thread_id=None,
        endpoint=config.kubernetes.model_endpoint,
    )
    return build_runner_pod(
        session_name=session,
        session_uid=uid,
        namespace="codex-sessions",
        spec=spec,
        settings=settings,
        conversation="conv",
        attempt=1,
        timeout_seconds=300,
        config=config,
        credential=credential,
        live=LIVE,
    )


def _spec(**fields: Any) -> CodexSessionSpec:
    return CodexSessionSpec.model_validate(
        {"prompt": "first prompt", "sandbox": "isolated", "workspace": {"type": "persistent"}, **fields}
    )


def test_a_live_pod_runs_the_agent_with_no_prompt_and_no_credential() -> None:
    pod = _pod(_spec(prompt="a secret plan"))
    (container,) = pod["spec"]["containers"]
    text = json.dumps(pod)
    assert "a secret plan" not in text and "cxs1.credential" not in text
    assert container["args"][0] == "agent"
    _settings, options = parse_agent_args(container["args"])
    assert options == AgentOptions(port=8470, idle_seconds=300, credential_file=CREDENTIAL_FILE)
    env = {e["name"]: e for e in container["env"]}
    assert env["CODEX_AGENT_PUBLIC_KEY"]["value"] == LIVE.public_key_pem
    assert env["CODEX_POD_UID"]["valueFrom"] == {
        "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.uid"}
    }
    assert "CODEX_MODEL_API_KEY" not in env  # the credential comes with each order
    assert container["ports"] == [{"name": "agent", "containerPort": 8470, "protocol": "TCP"}]
    assert pod["spec"]["activeDeadlineSeconds"] == 3600
    annotations = pod["metadata"]["annotations"]
    assert annotations[names.ANNOTATION_AGENT_KEY] == LIVE.key_fingerprint
    assert annotations[names.ANNOTATION_POD_SHAPE] == pod_shape(pod)
    assert pod["metadata"]["labels"][names.LABEL_POLICY] == "turn-1"


def test_without_the_proxy_a_live_pod_names_the_key_s_secret() -> None:
    pod = _pod(_spec(), credential=None)
    (container,) = pod["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["CODEX_MODEL_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "codex-model-api-key"
    assert parse_agent_args(container["args"])[1].credential_file is None


def test_the_shape_is_the_same_for_every_turn_and_differs_by_what_the_pod_is() -> None:
    first = _pod(_spec(prompt="one"), credential="cxs1.a")
    reply = _pod(_spec(prompt="two"), credential="cxs1.b", session="turn-2", uid="other-uid")
    assert pod_shape(first) == pod_shape(reply)
    for change in (
        {"sandbox": "read-only"},
        {"model": "o1"},
        {"reasoningEffort": "high"},
        {"baseInstructions": "x"},
    ):
        assert pod_shape(_pod(_spec(**change))) != pod_shape(first), change


def test_the_ingress_rule_opens_only_the_agent_port_to_the_operator() -> None:
    warm = WarmRunnersConfig(
        idle_seconds=60,
        operator_cidrs=["10.244.0.1/32"],
        operator_namespace_labels={"team": "platform"},
        operator_pod_labels={"app": "codex-operator"},
    )
    rule = agent_ingress_rule(warm)
    assert rule == {
        "from": [
            {"ipBlock": {"cidr": "10.244.0.1/32"}},
            {
                "namespaceSelector": {"matchLabels": {"team": "platform"}},
                "podSelector": {"matchLabels": {"app": "codex-operator"}},
            },
        ],
        "ports": [{"protocol": "TCP", "port": 8470}],
    }
    policy = build_network_policy(
        session_name="s",
        namespace="ns",
        session_uid=UID,
        conversation="c",
        sandbox="isolated",
        endpoint=CodexMCPConfig().kubernetes.model_endpoint,
        ingress=[rule],
    )
    assert policy["spec"]["ingress"] == [rule]
    assert policy["spec"]["podSelector"] == {"matchLabels": {names.LABEL_POLICY: "s"}}


# --------------------------------------------------------------------------- configuration
def test_warm_runners_are_off_by_default() -> None:
    assert CodexMCPConfig().kubernetes.warm_runners.enabled is False


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"idle_seconds": 60}, "ingress rule would have no peer"),
        ({"idle_seconds": -1}, "greater than or equal to 0"),
        ({"idle_seconds": 10**9}, "less than or equal to 86400"),
        ({"agent_port": 80}, "greater than or equal to 1024"),
        ({"max_pod_lifetime_seconds": 1}, "greater than or equal to 60"),
        ({"operator_cidrs": ["not-a-cidr"]}, "CIDR"),
        ({"operator_pod_labels": {"bad key!": "x"}}, "label"),
    ],
)
def test_bad_warm_runner_settings_are_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        WarmRunnersConfig.model_validate(fields)


# --------------------------------------------------------------------------- the report
def _report(**fields: Any) -> TurnReport:
    return TurnReport.model_validate(
        {"session_uid": UID, "thread_id": "th", "turn_id": "tu", "status": "completed", **fields}
    )


def test_a_completed_report_is_a_succeeded_turn_with_its_usage_and_cost() -> None:
    usage = Usage(input_tokens=1000, output_tokens=100)
    phase, result = report_result(
        _report(final_message="done", usage=usage.model_dump()), "gpt-5", CostConfig(), None
    )
    assert phase == "Succeeded" and result.reason == "Completed"
    assert result.status["response"] == "done" and result.status["threadId"] == "th"
    assert result.status["usage"]["inputTokens"] == 1000 and result.status["cost"]["actualUsd"] > 0


def test_an_interrupted_report_is_a_timed_out_turn() -> None:
    phase, result = report_result(
        _report(status="interrupted", error="the turn exceeded 10s and was interrupted"),
        "gpt-5",
        CostConfig(),
        None,
    )
    assert phase == "TimedOut" and result.reason == "Timeout" and "exceeded 10s" in result.message


def test_a_budget_refusal_is_budget_exceeded() -> None:
    phase, result = report_result(
        _report(
            status="failed",
            error="unexpected status 402 Payment Required: budget exceeded: session cost cap of $1 spent",
        ),
        "gpt-5",
        CostConfig(),
        None,
    )
    assert phase == "Failed" and result.reason == "BudgetExceeded"
    phase, result = report_result(_report(status="failed", error="boom"), "gpt-5", CostConfig(), None)
    assert phase == "Failed" and result.reason == "TurnFailed" and result.message == "boom"


def test_a_report_kept_in_a_termination_message_fits_and_reads_back() -> None:
    from codex_api.result import TERMINATION_MESSAGE_LIMIT
    from codex_operator.pod_outcome import PodOutcome, kept_report

    long = _report(final_message="é" * 10_000, error="x" * 2_000)
    text = long.bounded(TERMINATION_MESSAGE_LIMIT)
    assert len(text.encode()) <= TERMINATION_MESSAGE_LIMIT
    back = kept_report(PodOutcome("succeeded", 0, message=text), UID)
    assert back is not None and back.truncated and back.final_message and back.final_message.startswith("é")
    assert back.usage == long.usage and back.thread_id == "th"
    short = _report(final_message="done")
    assert short.bounded(TERMINATION_MESSAGE_LIMIT) == short.model_dump_json()
    # Another session's report, or none at all, is not this session's result.
    assert kept_report(PodOutcome("succeeded", 0, message=text), "another-uid") is None
    for message in ("", "not json", '{"session_uid": 1}', "[]"):
        assert kept_report(PodOutcome("succeeded", 0, message=message), UID) is None
    _phase, result = report_result(back, "gpt-5", CostConfig(), None)
    assert result.status["responseTruncated"] is True


async def test_a_turn_s_next_attempt_is_delivered_to_its_new_pod_at_once() -> None:
    """A turn whose pod was lost goes to the next pod without waiting for the old
    delivery to give up (it would wait the turn's whole timeout)."""
    from codex_api.turn_request import TurnOrder
    from codex_devenv.process import free_port
    from codex_operator.live_turns import LiveTurns

    config = WarmRunnersConfig(idle_seconds=60, agent_port=free_port(), operator_cidrs=["127.0.0.1/32"])
    turns = LiveTurns.from_config(config, wake=lambda key: None)
    order = TurnOrder(
        namespace="ns",
        session="s",
        session_uid="uid-1",
        prompt="go",
        sandbox="isolated",
        timeout_seconds=300,
        approvals="per-action",
    )
    try:
        turns.deliver("key", order, pod_ip="127.0.0.1", pod_uid="pod-a")
        first, watcher = turns._tasks["uid-1"], turns._watchers["uid-1"]
        turns.deliver("key", order, pod_ip="127.0.0.1", pod_uid="pod-a")  # the same pod: nothing new
        assert turns._tasks["uid-1"] is first
        turns.deliver("key", order, pod_ip="127.0.0.1", pod_uid="pod-b")
        assert turns._tasks["uid-1"] is not first and turns._pods["uid-1"] == ("127.0.0.1", "pod-b")
        await asyncio.sleep(0.05)
        assert first.cancelled() and watcher.cancelled()
        assert not turns._tasks["uid-1"].done()  # the new pod's delivery goes on
    finally:
        await turns.close()
