"""The gateway's pure mapping: tool arguments -> CodexSession body, status -> tool result."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from codex_api import names
from codex_api.config import parse_config
from codex_api.session import MAX_PROMPT
from codex_gateway.auth import TokenFileError, TokenStore
from codex_gateway.sessions import (
    CodexArgs,
    InvalidArguments,
    ReplyArgs,
    build_session,
    latest_turn,
    requester_label,
    session_result,
    settled,
)

CONFIG = parse_config('[codex]\nmodel = "gpt-test"\nsandbox = "isolated"\n')


def test_defaults_come_from_config_and_caller_is_requester() -> None:
    body = build_session(CodexArgs(prompt="hi"), user="alice", config=CONFIG, name="cx-1")
    assert body["metadata"]["name"] == "cx-1"
    assert body["spec"]["requestedBy"] == "alice"
    assert body["spec"]["model"] == "gpt-test"
    assert body["spec"]["sandbox"] == "isolated"
    assert body["spec"]["workspace"] == {"type": "persistent"}
    assert "resumeFrom" not in body["spec"]
    labels = body["metadata"]["labels"]
    assert labels[names.LABEL_REQUESTER] == "alice"
    assert labels[names.LABEL_CONVERSATION] == "cx-1"
    assert body["metadata"]["annotations"][f"{names.PREFIX}tool"] == "codex"


def test_explicit_arguments_win() -> None:
    args = CodexArgs(
        prompt="p",
        model="m-1",
        sandbox="full-access",
        mode="ci",
        full_auto=True,
        reasoning_effort="high",
        verbosity="low",
        max_cost_usd=0.5,
        approvals="per-action",
    )
    spec = build_session(args, user="bob", config=CONFIG)["spec"]
    assert spec["maxCostUsd"] == 0.5 and spec["approvals"] == "per-action"
    assert spec["model"] == "m-1" and spec["sandbox"] == "full-access"
    assert spec["mode"] == "ci" and spec["fullAuto"] is True
    assert spec["reasoningEffort"] == "high" and spec["verbosity"] == "low"


def test_reply_resumes_from_parent_and_inherits_its_settings() -> None:
    parent = {
        "metadata": {"name": "cx-2", "labels": {names.LABEL_CONVERSATION: "cx-1"}},
        "spec": {
            "prompt": "a",
            "model": "m-x",
            "sandbox": "read-only",
            "mode": "non-interactive",
            "approvals": "per-action",
        },
        "status": {"conversationId": "cx-1", "phase": "Succeeded"},
    }
    body = build_session(
        CodexArgs(prompt="more"), user="alice", config=CONFIG, name="cx-3", parent=parent, tool="codex-reply"
    )
    assert body["spec"]["resumeFrom"] == "cx-2"
    assert body["spec"]["model"] == "m-x" and body["spec"]["sandbox"] == "read-only"
    assert body["spec"]["mode"] == "non-interactive"
    assert body["spec"]["approvals"] == "per-action"  # the conversation's way of approving goes on
    assert body["metadata"]["labels"][names.LABEL_CONVERSATION] == "cx-1"


def test_requester_label_hashes_names_that_are_not_label_values() -> None:
    assert requester_label("alice") == "alice"
    hashed = requester_label("alice@example.com")
    assert hashed.startswith("h-") and len(hashed) <= 63
    assert hashed == requester_label("alice@example.com") != requester_label("bob@example.com")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"prompt": ""},
        {"prompt": "x" * (MAX_PROMPT + 1)},
        {"prompt": 5},
        {"prompt": "p", "sandbox": "root"},
        {"prompt": "p", "mode": "batch"},
        {"prompt": "p", "full_auto": "true"},
        {"prompt": "p", "reasoning_effort": "extreme"},
        {"prompt": "p", "verbosity": 3},
        {"prompt": "p", "model": "bad model!"},
        {"prompt": "p", "unknown": 1},
        {"prompt": "p", "max_cost_usd": 0},
        {"prompt": "p", "max_cost_usd": -1.5},
        {"prompt": "p", "max_cost_usd": 1e9},
        {"prompt": "p", "max_cost_usd": "1"},
        {"prompt": "p", "approvals": "per-command"},
        {"prompt": "p", "approvals": True},
        {},
    ],
)
def test_bad_codex_arguments_are_rejected(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        CodexArgs(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"prompt": "p"},
        {"prompt": "p", "session_id": "cx-1", "conversation_id": "cx-1"},
    ],
)
def test_reply_needs_exactly_one_target(kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidArguments):
        ReplyArgs(**kwargs).target()


@pytest.mark.parametrize("bad", ["UPPER", "has space", "x" * 51, "-lead"])
def test_reply_rejects_malformed_ids(bad: str) -> None:
    with pytest.raises(ValidationError):
        ReplyArgs(prompt="p", session_id=bad)


def test_finished_status_becomes_result() -> None:
    obj = {
        "metadata": {"name": "cx-1", "namespace": "ns"},
        "spec": {"prompt": "p", "sandbox": "read-only", "requestedBy": "alice"},
        "status": {
            "phase": "Succeeded",
            "conversationId": "cx-1",
            "threadId": "t-1",
            "response": "done",
            "model": "gpt-test",
            "riskLevel": "low",
            "usage": {"inputTokens": 10, "cachedInputTokens": 2, "outputTokens": 3, "reasoningTokens": 1},
            "cost": {"estimatedUsd": 0.1, "actualUsd": 0.05},
            "timings": {"startedAt": "2026-01-01T00:00:00Z", "durationSeconds": 1.5},
        },
    }
    r = session_result(obj)
    assert (r.session_id, r.conversation_id, r.thread_id) == ("cx-1", "cx-1", "t-1")
    assert r.done and r.status == "completed" and r.response == "done"
    assert r.usage is not None and r.usage.input_tokens == 10 and r.usage.reasoning_tokens == 1
    assert r.cost is not None and r.cost.actual_usd == 0.05
    assert r.timings is not None and r.timings.duration_seconds == 1.5
    assert r.approval is None and r.next_step is None
    assert settled(obj)


def test_awaiting_approval_carries_the_request_and_command() -> None:
    obj = {
        "metadata": {"name": "cx-9", "namespace": "team"},
        "spec": {"prompt": "p", "sandbox": "full-access", "requestedBy": "alice"},
        "status": {"phase": "AwaitingApproval", "approvalRef": "cx-9-approval", "conversationId": "cx-9"},
    }
    r = session_result(obj)
    assert r.status == "awaiting_approval" and not r.done and settled(obj)
    assert r.approval is not None and r.approval.approval_request == "cx-9-approval"
    assert r.approval.command == (
        'kubectl patch cxar cx-9-approval -n team --type merge -p \'{"spec":{"decision":"Approved"}}\''
    )


def test_new_session_is_running_with_ids() -> None:
    obj = {"metadata": {"name": "cx-5", "labels": {names.LABEL_CONVERSATION: "cx-4"}}, "spec": {}}
    r = session_result(obj)
    assert r.phase == "Pending" and r.status == "running" and not settled(obj)
    assert r.conversation_id == "cx-4" and r.next_step and "codex-session-info" in r.next_step


def test_failed_is_done_but_not_completed() -> None:
    r = session_result({"metadata": {"name": "x"}, "status": {"phase": "TimedOut"}})
    assert r.done and r.status == "failed"


def test_latest_turn_by_creation_time() -> None:
    turns = [
        {"metadata": {"name": "b", "creationTimestamp": "2026-01-01T00:00:02Z"}},
        {"metadata": {"name": "a", "creationTimestamp": "2026-01-01T00:00:03Z"}},
        {"metadata": {"name": "c", "creationTimestamp": "2026-01-01T00:00:01Z"}},
    ]
    assert latest_turn(turns)["metadata"]["name"] == "a"  # type: ignore[index]
    assert latest_turn([]) is None


def test_latest_turn_is_the_end_of_the_resume_chain_within_one_second() -> None:
    ts = "2026-01-01T00:00:01Z"
    turns = [
        {"metadata": {"name": "z-first", "creationTimestamp": ts}, "spec": {}},
        {"metadata": {"name": "a-third", "creationTimestamp": ts}, "spec": {"resumeFrom": "m-second"}},
        {"metadata": {"name": "m-second", "creationTimestamp": ts}, "spec": {"resumeFrom": "z-first"}},
    ]
    assert latest_turn(turns)["metadata"]["name"] == "a-third"  # type: ignore[index]


async def test_token_store() -> None:
    store = TokenStore({"a" * 20: "alice"})
    token = await store.verify_token("a" * 20)
    assert token is not None and token.client_id == "alice"
    assert await store.verify_token("b" * 20) is None
    with pytest.raises(TokenFileError):
        TokenStore({"short": "alice"})
    with pytest.raises(TokenFileError):
        TokenStore({"c" * 20: ""})


# --------------------------------------------------------------------------- wall bounce
WB_CONFIG = parse_config(
    "[mcp]\nmin_providers = 3\nquality_threshold = 0.8\n"
    + "".join(
        f'[[kubernetes.wall_bounce_providers]]\nprovider_id = "{p}"\nmodel = "m-{p}"\n'
        for p in ("gpt", "anthropic", "gemini")
    )
)


def test_wall_bounce_uses_every_configured_provider_and_the_configured_thresholds() -> None:
    body = build_session(CodexArgs(prompt="p", wall_bounce=True), user="alice", config=WB_CONFIG)
    spec = body["spec"]
    assert spec["sandbox"] == "read-only"
    # providers left out (= all configured): the CRD compares minProviders with a list's size.
    assert spec["wallBounce"] == {"minProviders": 3, "qualityThreshold": 0.8, "consensusThreshold": 0.6}
    assert "wallBounce" not in build_session(CodexArgs(prompt="p"), user="a", config=WB_CONFIG)["spec"]
    off = build_session(CodexArgs(prompt="p", wall_bounce=False), user="a", config=WB_CONFIG)["spec"]
    assert "wallBounce" not in off


@pytest.mark.parametrize(
    ("args", "config", "fragment"),
    [
        (
            {"sandbox": "isolated"},
            WB_CONFIG,
            "wall_bounce needs sandbox read-only, not isolated",
        ),
        # The configured default sandbox counts, not only an explicit one.
        ({}, CONFIG, "wall_bounce needs sandbox read-only, not isolated"),
        (
            {"sandbox": "read-only"},
            parse_config("[mcp]\nenable_wall_bounce = false\n"),
            "wall-bounce sessions are disabled",
        ),
        ({"sandbox": "read-only"}, parse_config(""), "at least 2 configured providers; this server has 0"),
        (
            {"sandbox": "read-only"},
            parse_config(
                "[mcp]\nmin_providers = 3\n"
                '[[kubernetes.wall_bounce_providers]]\nprovider_id = "a"\nmodel = "m"\n'
                '[[kubernetes.wall_bounce_providers]]\nprovider_id = "b"\nmodel = "m"\n'
            ),
            "requires 3 providers to answer but has only 2 configured",
        ),
    ],
    ids=["isolated", "config-default-isolated", "disabled", "no-providers", "min-above-configured"],
)
def test_wall_bounce_refusals(args: dict[str, Any], config: Any, fragment: str) -> None:
    with pytest.raises(InvalidArguments, match=fragment):
        build_session(CodexArgs(prompt="p", wall_bounce=True, **args), user="alice", config=config)


def test_wall_bounce_must_be_a_real_boolean() -> None:
    with pytest.raises(ValidationError):
        CodexArgs(prompt="p", wall_bounce="true")  # type: ignore[arg-type]


def test_wall_bounce_status_becomes_result() -> None:
    obj = {
        "metadata": {"name": "cx-wb", "namespace": "ns"},
        "spec": {"requestedBy": "alice", "sandbox": "read-only", "wallBounce": {"minProviders": 2}},
        "status": {
            "phase": "Succeeded",
            "response": "A",
            "wallBounce": {"providersUsed": ["openai", "anthropic"], "consensusScore": 0.9},
            "cost": {"actualUsd": 0.1, "providers": [{"provider": "openai", "actualUsd": 0.04}]},
        },
    }
    result = session_result(obj)
    assert result.wall_bounce is not None
    assert result.wall_bounce.providers_used == ["openai", "anthropic"]
    assert (result.wall_bounce.consensus_score, result.wall_bounce.confidence_score) == (0.9, None)
    assert result.cost is not None and result.cost.actual_usd == 0.1
    assert session_result({**obj, "status": {"phase": "Running"}}).wall_bounce is None


class _RecordingSessions:
    """Just enough of SessionApi for a codex call: create, and a wait that sees it finish."""

    def __init__(self) -> None:
        self.created: list[dict[str, Any]] = []

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        obj = {**body, "metadata": {**body["metadata"], "namespace": "ns"}}
        self.created.append(obj)
        return obj

    async def wait(self, name: str, done: Any, timeout: float, on_change: Any = None) -> dict[str, Any]:
        obj = self.created[-1]
        return {
            **obj,
            "status": {"phase": "Succeeded", "response": "A", "wallBounce": {"providersUsed": ["openai"]}},
        }


async def test_codex_tool_accepts_wall_bounce_and_refuses_it_without_creating() -> None:
    from mcp import Client

    from codex_gateway.server import build_server
    from codex_gateway.service import Gateway, GatewaySettings

    sessions = _RecordingSessions()
    gateway = Gateway(sessions, WB_CONFIG, GatewaySettings(namespace="ns", default_user="alice"))  # type: ignore[arg-type]
    async with Client(build_server(gateway)) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        prop = tools["codex"].input_schema["properties"]["wall_bounce"]
        assert "Ask every configured provider" in str(prop)

        ok = await client.call_tool("codex", {"prompt": "p", "wall_bounce": True})
        assert not ok.is_error
        assert ok.structured_content["wall_bounce"]["providers_used"] == ["openai"]
        assert sessions.created[-1]["spec"]["wallBounce"]["minProviders"] == 3

        refused = await client.call_tool("codex", {"prompt": "p", "wall_bounce": True, "sandbox": "isolated"})
        assert refused.is_error
        assert "invalid arguments: wall_bounce needs sandbox read-only" in refused.content[0].text  # type: ignore[union-attr]
        not_bool = await client.call_tool("codex", {"prompt": "p", "wall_bounce": "yes"})
        assert not_bool.is_error
        assert len(sessions.created) == 1

        # A session's own cost cap, checked as the CRD checks it.
        assert "turn may spend" in str(tools["codex"].input_schema["properties"]["max_cost_usd"])
        capped = await client.call_tool("codex", {"prompt": "p", "max_cost_usd": 0.25})
        assert not capped.is_error and sessions.created[-1]["spec"]["maxCostUsd"] == 0.25
        zero = await client.call_tool("codex", {"prompt": "p", "max_cost_usd": 0})
        assert zero.is_error and len(sessions.created) == 2
