"""Per-action approvals, the operator's decisions (codex_operator.action_gate,
approval_policy.approvals_mode): which turns are per-action, what an action's
ApprovalRequest holds, what answer a decision gives Codex, how long a turn
waited for people. The live path (agent, app-server, kubectl) is
tests/integration/test_e2e_action_approvals.py."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from codex_api import names
from codex_api.actions import Action, FileChange
from codex_api.config import ConfigError, parse_config
from codex_api.session import CodexSessionSpec
from codex_devenv.memory_kube import PODS, memory_context
from codex_operator import approval_reconciler, session_reconciler
from codex_operator.action_gate import _operation, answer_for, waited_seconds
from codex_operator.action_risk import assess_action
from codex_operator.approval_policy import approvals_mode, decide, per_action_unavailable
from codex_operator.conditions import now, rfc3339
from codex_operator.kube import APPROVALS

NS = "team"
WARM = (
    '[kubernetes.warm_runners]\nidle_seconds = 60\noperator_cidrs = ["10.0.0.1/32"]\n'
    'signing_key_file = "/k.pem"\n'
)
PERSISTENT = {"workspace": {"type": "persistent"}}


def command(script: str = "make test", **more: Any) -> Action:
    fields: dict[str, Any] = {
        "kind": "command",
        "thread_id": "t-1",
        "turn_id": "u-1",
        "item_id": "call_1",
        "command": f"/bin/bash -lc '{script}'",
        "cwd": "/workspace",
        "offered": ("accept", "decline", "cancel"),
        **more,
    }
    return Action(**fields)


def spec(**fields: Any) -> CodexSessionSpec:
    return CodexSessionSpec.model_validate({"prompt": "go", **fields})


# --------------------------------------------------------------------------- which turns
def test_a_session_chooses_and_the_config_names_levels() -> None:
    config = parse_config(WARM + '[security.action_approvals]\nlevels = ["full-access"]\n')
    assert approvals_mode(spec(sandbox="full-access", **PERSISTENT), config) == "per-action"
    assert approvals_mode(spec(sandbox="isolated", **PERSISTENT), config) == "per-turn"
    assert (
        approvals_mode(spec(sandbox="isolated", approvals="per-action", **PERSISTENT), config) == "per-action"
    )
    assert (
        approvals_mode(spec(sandbox="full-access", approvals="per-turn", **PERSISTENT), config) == "per-turn"
    )
    # A level default the turn cannot have (no live pod: a scratch workspace) stays per-turn.
    assert approvals_mode(spec(sandbox="full-access"), config) == "per-turn"


def test_per_action_needs_a_live_pod() -> None:
    warm = parse_config(WARM)
    assert per_action_unavailable(spec(**PERSISTENT), warm) is None
    assert "persistent workspace" in (per_action_unavailable(spec(), warm) or "")
    bounce = spec(wallBounce={"providers": ["openai"], "minProviders": 1}, **PERSISTENT)
    assert "wall-bounce" in (per_action_unavailable(bounce, warm) or "")
    assert "warm runners" in (per_action_unavailable(spec(**PERSISTENT), parse_config("")) or "")
    with pytest.raises(ConfigError, match=r"action_approvals\.levels needs kubernetes\.warm_runners"):
        parse_config('[security.action_approvals]\nlevels = ["isolated"]\n')


def test_a_per_action_turn_starts_without_the_blind_turn_approval_but_critical_still_waits() -> None:
    config = parse_config(WARM)
    full = spec(sandbox="full-access", **PERSISTENT)
    assert decide(full, "high", config).needs_human  # the seed's gate
    assert not decide(full, "high", config, "per-action").needs_human
    assert decide(full, "critical", config, "per-action").needs_human
    manual = parse_config(WARM + '[mcp]\napproval_policy = "always-manual"\n')
    assert decide(full, "medium", manual, "per-action").needs_human


# --------------------------------------------------------------------------- the request
def test_the_same_action_has_the_same_name_whoever_asks() -> None:
    """Named by what runs: the same command asked by another item, turn or thread
    (a resumed thread after a restart) finds the same request; anything that
    changes what runs is another request."""
    first = command()
    again = command(item_id="call_9", turn_id="u-2", thread_id="t-2", reason="retry", offered=("decline",))
    assert first.digest() == again.digest()
    assert command("make test ").digest() != first.digest()
    assert command(cwd="/tmp").digest() != first.digest()
    assert names.action_request("s", first.digest()) == f"s-action-{first.digest()[:12]}"


def test_the_operation_line_is_one_escaped_line() -> None:
    assert _operation(command()) == "run 'make test' in /workspace"
    sneaky = _operation(command("rm -rf x\x1b[2K\rls"))
    assert "\x1b" not in sneaky and "\r" not in sneaky and "\\x1b" in sneaky
    patch = Action(
        kind="file_change",
        thread_id="t",
        turn_id="u",
        item_id="i",
        changes=tuple(FileChange(path=f"/workspace/f{i}", change="add", diff="x") for i in range(5)),
        offered=("accept", "decline"),
    )
    assert _operation(patch) == "change /workspace/f0, /workspace/f1, /workspace/f2 and 2 more"
    assert len(_operation(command("x" * 5000))) <= 200


@pytest.mark.parametrize(
    ("spec_fields", "phase", "offered", "answer"),
    [
        ({}, None, ("accept", "decline"), None),
        ({}, "Pending", ("accept", "decline"), None),
        ({}, "Approved", ("accept", "decline"), "accept"),
        ({"scope": "session"}, "Approved", ("accept", "acceptForSession", "decline"), "acceptForSession"),
        ({"scope": "session"}, "Approved", ("accept", "decline"), "accept"),  # not offered: accept only
        ({"scope": "turn"}, "Approved", ("accept", "acceptForSession", "decline"), "accept"),
        ({}, "Denied", ("accept", "decline"), "decline"),
        ({}, "Expired", ("accept", "decline"), "decline"),
        ({"policyDecision": {"decision": "Approved", "rules": ["r"]}}, None, ("accept",), "accept"),
        ({"policyDecision": {"decision": "Denied", "rules": ["r"]}}, None, ("accept",), "decline"),
        # The status never overrides the policy's decision.
        ({"policyDecision": {"decision": "Denied", "rules": []}}, "Approved", ("accept",), "decline"),
    ],
)
def test_the_answer_codex_gets(
    spec_fields: dict[str, Any], phase: str | None, offered: tuple[str, ...], answer: str | None
) -> None:
    approval: dict[str, Any] = {"spec": spec_fields, "status": {"phase": phase} if phase else {}}
    assert answer_for(approval, command(offered=offered)) == answer


def test_the_time_a_turn_waited_for_people() -> None:
    """The union of the human-decided requests' waits (overlaps once); the
    policy's decisions and other sessions' requests do not count."""
    ctx, _api = memory_context(parse_config(WARM))
    at = now()

    def put(name: str, uid: str, start: int, end: int | None, **spec: Any) -> None:
        status: dict[str, Any] = {"phase": "Pending"}
        if end is not None:
            status = {"phase": "Approved", "decidedAt": rfc3339(at + timedelta(seconds=end))}
        ctx.store.approvals[(NS, name)] = {
            "metadata": {"name": name, "creationTimestamp": rfc3339(at + timedelta(seconds=start))},
            "spec": {"sessionUid": uid, "action": {"kind": "command"}, **spec},
            "status": status,
        }

    put("a", "u1", -100, -80)  # 20 s
    put("b", "u1", -90, -70)  # overlaps a: 10 s more
    put("c", "u1", -50, -40, policyDecision={"decision": "Approved"})  # the policy: not counted
    put("d", "u2", -60, -10)  # another session
    assert waited_seconds(ctx, NS, "u1") == pytest.approx(30, abs=1)
    put("e", "u1", -5, None)  # still waiting: until now
    assert waited_seconds(ctx, NS, "u1") == pytest.approx(35, abs=1.5)


# --------------------------------------------------------------------------- reconcilers
async def test_a_per_action_request_without_a_live_pod_fails_clearly_and_makes_nothing() -> None:
    ctx, api = memory_context(parse_config(""))
    api.session(NS, "s", {"requestedBy": "carol", "approvals": "per-action", **PERSISTENT})
    await session_reconciler.reconcile(ctx, NS, "s")
    status = ctx.store.sessions[(NS, "s")]["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "PerActionUnavailable")
    assert "warm runners" in status["message"]
    assert api.of_kind(PODS) == [] and api.of_kind(APPROVALS) == []


async def test_the_policy_s_decision_is_final_and_recorded() -> None:
    ctx, api = memory_context(parse_config(""))
    action = command("shred x")
    api.put(
        APPROVALS,
        NS,
        {
            "apiVersion": "codex.techsapo.io/v1alpha1",
            "kind": "ApprovalRequest",
            "metadata": {"name": "s-action-1"},
            "spec": {
                "sessionRef": "s",
                "sessionUid": "u",
                "requestedBy": "carol",
                "riskLevel": assess_action(action, ctx.config.security.action_approvals).risk,
                "action": {"kind": "command"},
                "policyDecision": {"decision": "Denied", "rules": ["no-shred"]},
                "expiresAt": "2020-01-01T00:00:00Z",  # long past: the policy decided at once
            },
        },
    )
    await approval_reconciler.reconcile(ctx, NS, "s-action-1")
    status = api.get(APPROVALS, NS, "s-action-1")["status"]
    assert status["phase"] == "Denied" and status["decidedBy"] == approval_reconciler.POLICY_DECIDER
    assert "no-shred" in status["message"]


def test_the_last_check_before_a_pod_knows_per_action_turns_and_ignores_status() -> None:
    """_authorize runs right before any pod: a per-action turn passes without a
    turn approval; a per-turn turn whose status claims per-action does not."""
    from codex_operator.ownership import Foreign

    ctx, api = memory_context(parse_config(WARM))
    api.session(
        NS, "pa", {"requestedBy": "carol", "sandbox": "isolated", "approvals": "per-action", **PERSISTENT}
    )
    api.session(NS, "pt", {"requestedBy": "carol", "sandbox": "isolated", **PERSISTENT})
    per_action = ctx.store.sessions[(NS, "pa")]
    session_reconciler._authorize(ctx, per_action, CodexSessionSpec.model_validate(per_action["spec"]))
    forged = ctx.store.sessions[(NS, "pt")]
    forged["status"] = {"phase": "Queued", "approvals": "per-action"}
    with pytest.raises(Foreign) as refused:
        session_reconciler._authorize(ctx, forged, CodexSessionSpec.model_validate(forged["spec"]))
    assert refused.value.reason == "NotApproved"
