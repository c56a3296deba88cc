"""Per-action approvals on the real node (issue 15): each action Codex asks to
take becomes an ApprovalRequest, decided by the policy or by a human with
kubectl, and the decision reaches Codex in the live runner pod.

Everything is real but the model: the operator with warm runners and
`[security.action_approvals]`, the runner image's agent and Codex app-server
on the kubelet, the shipped admission policies (so users decide as
themselves), the model proxy, Redis. The requester is the adversary: she may
not decide her own action, and nothing runs before a decision."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from mcp.shared.exceptions import MCPError

from codex_api import names
from codex_api.common import GROUP, VERSION
from codex_devenv import fake_model as fm
from codex_devenv.admission_kit import ScopedAdmission
from codex_devenv.gateway_process import GATEWAY_USER, bind_gateway, gateway_kubeconfig, start_gateway
from codex_devenv.generate import admission as policies
from codex_devenv.live_system import finished
from codex_devenv.mcp_tasks import (
    CreateTaskResult,
    TasksClient,
    call_tool_raw,
    get_task,
    legacy_request,
    update_task,
)
from codex_devenv.process import wait_for

APPROVAL_TIMEOUT = 20
POLICY = r"""
[security.action_approvals]
[[security.action_approvals.rules]]
name = "mkdir-is-fine"
kinds = ["command"]
command = '^mkdir [a-z-]+$'
decide = "accept"
[[security.action_approvals.rules]]
name = "no-shred"
kinds = ["command"]
command = '^shred '
decide = "decline"
[[security.action_approvals.rules]]
name = "privilege-or-destruction"
kinds = ["command"]
command = '(^|[;&|(\s])(sudo|rm\s+-\S*[rf])(\s|$)'
risk = "high"
"""


@contextlib.contextmanager
def _system(live: Any, client_for: Any, requester_decides_up_to: str = "none") -> Iterator[dict[str, Any]]:
    warm = {"idle_seconds": "60", "max_idle_pods": "2"}
    tables = POLICY.replace(
        "[security.action_approvals]\n",
        f'[security.action_approvals]\nrequester_decides_up_to = "{requester_decides_up_to}"\n',
    )
    # The shipped approval flags: an isolated turn waits for a human unless it is per-action.
    with live(warm=warm, tables=tables, approval_timeout=APPROVAL_TIMEOUT, auto_approve=False) as parts:
        admission = ScopedAdmission(parts["cp"], parts["ns"]).install(
            client_for, trusted=[GATEWAY_USER], requester_decides_up_to=requester_decides_up_to
        )
        try:
            yield parts
        finally:
            admission.uninstall()


@pytest.fixture
def system(live: Any, client_for: Any) -> Iterator[dict[str, Any]]:
    with _system(live, client_for) as parts:
        yield parts


@pytest.fixture
def laptop(live: Any, client_for: Any) -> Iterator[dict[str, Any]]:
    """requester_decides_up_to = medium: what Codex on a laptop asks its own user."""
    with _system(live, client_for, "medium") as parts:
        yield parts


def _start(system: dict[str, Any], name: str, prompt: str, user: str = "alice", **spec: Any) -> None:
    doc = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "CodexSession",
        "metadata": {"name": name},
        "spec": {
            "prompt": prompt,
            "requestedBy": user,
            "sandbox": "isolated",
            "workspace": {"type": "persistent"},
            "approvals": "per-action",
            **spec,
        },
    }
    system["cp"].kubectl("create", "-n", system["ns"], "-f", "-", input=json.dumps(doc), user=user)


def _actions(kube_client: Any, ns: str, session: str) -> list[dict[str, Any]]:
    found: Any = client.CustomObjectsApi(kube_client).list_namespaced_custom_object(
        GROUP, VERSION, ns, "approvalrequests"
    )
    return sorted(
        (a for a in found["items"] if a["spec"]["sessionRef"] == session and a["spec"].get("action")),
        key=lambda a: a["metadata"]["creationTimestamp"],
    )


def _request(kube_client: Any, ns: str, name: str) -> dict[str, Any]:
    found: Any = client.CustomObjectsApi(kube_client).get_namespaced_custom_object(
        GROUP, VERSION, ns, "approvalrequests", name
    )
    return dict(found)


def _wait_action(kube_client: Any, ns: str, session: str, count: int = 1) -> dict[str, Any]:
    wait_for(
        lambda: len(_actions(kube_client, ns, session)) >= count,
        timeout=90,
        what=f"action request {count} of {session}",
    )
    return _actions(kube_client, ns, session)[count - 1]


def _decide(system: dict[str, Any], user: str, name: str, decision: str, **more: Any) -> Any:
    spec = {"decision": decision, "decidedBy": user, **more}
    return system["cp"].kubectl(
        "patch",
        "approvalrequests",
        name,
        "-n",
        system["ns"],
        "--type",
        "merge",
        "-p",
        json.dumps({"spec": spec}),
        user=user,
        check=False,
    )


def _workspace(volumes: Path, ns: str, conversation: str) -> Path:
    return volumes / ns / names.workspace_claim(conversation) / "workspace"


def test_a_command_waits_for_a_human_and_runs_once_approved(
    system: dict[str, Any], kube_client: Any, volumes: Path
) -> None:
    ns, model = system["ns"], system["model"]
    model.set_script(
        fm.exec_command("touch approved-file"),
        fm.computed(lambda req: f"ran: {req.last_tool_output()}"),
    )
    _start(system, "act1", "make a file")
    request = _wait_action(kube_client, ns, "act1")
    spec = request["spec"]
    assert spec["action"]["kind"] == "command"
    assert "touch approved-file" in spec["action"]["command"]
    assert spec["action"]["cwd"] == "/workspace"
    assert spec["requestedBy"] == "alice" and spec["riskLevel"] == "medium"
    assert "accept" in spec["action"]["offered"] and "policyDecision" not in spec
    assert request["metadata"]["name"] == names.action_request("act1", request["metadata"]["name"][-12:])

    def session_now() -> dict[str, Any]:
        found: Any = client.CustomObjectsApi(kube_client).get_namespaced_custom_object(
            GROUP, VERSION, ns, "codexsessions", "act1"
        )
        return dict(found)

    # The session says which request its turn waits on (written just after the request).
    wait_for(
        lambda: request["metadata"]["name"] in (session_now()["status"].get("message") or ""),
        timeout=15,
        what="the session to name the request it waits on",
    )
    session = session_now()
    assert session["status"]["phase"] == "Running" and session["status"]["approvals"] == "per-action"
    # The shipped flags would hold an isolated turn for a human; per-action, each action is held instead.
    every: Any = client.CustomObjectsApi(kube_client).list_namespaced_custom_object(
        GROUP, VERSION, ns, "approvalrequests"
    )
    assert names.approval_request("act1") not in {a["metadata"]["name"] for a in every["items"]}
    # Nothing ran before a decision.
    time.sleep(2)
    assert not (_workspace(volumes, ns, "act1") / "approved-file").exists()
    requests_before = len(model.responses_requests)

    # The requester cannot approve her own action (she is an approver, too).
    own = _decide(system, "alice", request["metadata"]["name"], "Approved")
    assert own.returncode != 0 and policies.MSG_OWN_REQUEST in own.stderr, own.stderr
    assert not (_workspace(volumes, ns, "act1") / "approved-file").exists()
    assert len(model.responses_requests) == requests_before

    decided = time.monotonic()
    assert _decide(system, "carol", request["metadata"]["name"], "Approved").returncode == 0
    wait_for(lambda: len(model.responses_requests) > requests_before, timeout=30, what="Codex to go on")
    print(f"\n[actions] decision -> Codex resumed: {(time.monotonic() - decided) * 1000:.0f} ms")
    done = finished(kube_client, ns, "act1")
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert (_workspace(volumes, ns, "act1") / "approved-file").exists()
    [after] = _actions(kube_client, ns, "act1")
    assert after["status"]["phase"] == "Approved" and after["status"]["decidedBy"] == "carol"


def test_a_denied_command_does_not_run_and_the_turn_goes_on(
    system: dict[str, Any], kube_client: Any, volumes: Path
) -> None:
    ns, model = system["ns"], system["model"]
    model.set_script(
        fm.exec_command("touch denied-file"),
        fm.computed(lambda req: f"tool said: {req.last_tool_output()}"),
    )
    _start(system, "act2", "make a file")
    request = _wait_action(kube_client, ns, "act2")
    assert _decide(system, "bob", request["metadata"]["name"], "Denied", reason="not today").returncode == 0
    done = finished(kube_client, ns, "act2")
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert "rejected" in done["status"]["response"], done["status"]["response"]
    assert not (_workspace(volumes, ns, "act2") / "denied-file").exists()


def test_an_action_nobody_decides_expires_and_does_not_run(
    system: dict[str, Any], kube_client: Any, volumes: Path
) -> None:
    """Expiry means no; and the time the action waited does not count against
    the turn's timeout (shorter than the wait here)."""
    ns, model = system["ns"], system["model"]
    model.set_script(
        fm.exec_command("touch expired-file"),
        fm.computed(lambda req: f"tool said: {req.last_tool_output()}"),
    )
    _start(system, "act3", "make a file", timeoutSeconds=12)
    request = _wait_action(kube_client, ns, "act3")
    done = finished(kube_client, ns, "act3", timeout=APPROVAL_TIMEOUT + 90)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert not (_workspace(volumes, ns, "act3") / "expired-file").exists()
    [after] = _actions(kube_client, ns, "act3")
    assert after["metadata"]["name"] == request["metadata"]["name"]
    assert after["status"]["phase"] == "Expired"


def test_a_high_risk_action_needs_an_approver_and_the_policy_decides_what_it_names(
    system: dict[str, Any], kube_client: Any, volumes: Path
) -> None:
    """The policy accepts `mkdir ...` and declines `shred ...` without a human (each
    still recorded as an ApprovalRequest); `rm -rf` is high risk, which carol, no
    approver, cannot decide; bob can."""
    ns, model = system["ns"], system["model"]
    model.set_script(
        fm.exec_command("mkdir made-by-policy"),
        fm.exec_command("shred secrets.txt"),
        fm.exec_command("rm -rf build"),
        fm.computed(lambda req: f"last: {req.last_tool_output()}"),
    )
    workspace = _workspace(volumes, ns, "act4")
    _start(system, "act4", "clean up")
    _wait_action(kube_client, ns, "act4", 3)
    by_command = {a["spec"]["action"]["command"]: a for a in _actions(kube_client, ns, "act4")}
    [risky] = [a for c, a in by_command.items() if "rm -rf build" in c]
    [accepted] = [a for c, a in by_command.items() if "mkdir made-by-policy" in c]
    [shred] = [a for c, a in by_command.items() if "shred secrets.txt" in c]
    assert risky["spec"]["riskLevel"] == "high" and "policyDecision" not in risky["spec"]
    assert accepted["spec"]["policyDecision"] == {"decision": "Approved", "rules": ["mkdir-is-fine"]}
    assert shred["spec"]["policyDecision"] == {"decision": "Denied", "rules": ["no-shred"]}
    by_policy = "policy:security.action_approvals"

    def decided() -> set[tuple[str, str]]:
        found = {a["metadata"]["name"]: a.get("status") or {} for a in _actions(kube_client, ns, "act4")}
        return {
            (found[a["metadata"]["name"]].get("phase", ""), found[a["metadata"]["name"]].get("decidedBy", ""))
            for a in (accepted, shred)
        }

    wait_for(
        lambda: decided() == {("Approved", by_policy), ("Denied", by_policy)},
        timeout=30,
        what="the policy's decisions in status",
    )
    # What ran: the mkdir; not the shred (Codex told the model it was rejected).
    assert (workspace / "made-by-policy").is_dir()
    assert any("rejected" in str(r.last_tool_output()) for r in model.responses_requests)
    (workspace / "build").mkdir(parents=True, exist_ok=True)

    name = risky["metadata"]["name"]
    carol = _decide(system, "carol", name, "Approved")
    assert carol.returncode != 0 and policies.MSG_APPROVER_GROUP in carol.stderr, carol.stderr
    # The policy's decisions are final: nobody overrides them.
    late = _decide(system, "bob", shred["metadata"]["name"], "Approved")
    assert late.returncode != 0, late.stdout
    assert _decide(system, "bob", name, "Approved").returncode == 0
    done = finished(kube_client, ns, "act4")
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert not (workspace / "build").exists()


def test_a_runner_pod_lost_while_an_action_waits_keeps_the_request_and_its_decision(
    system: dict[str, Any], kube_client: Any, volumes: Path
) -> None:
    """The CR is the source of truth: the reply's pod is deleted while its action
    waits, the decision is made while no pod runs the turn, and the next attempt
    (a new pod, the conversation's thread resumed from the workspace) asks
    again, finds the decision under the same request, and runs the action once."""
    cp, ns, model = system["cp"], system["ns"], system["model"]
    model.set_script(fm.say("ready"))
    _start(system, "act5a", "get ready", sandbox="read-only", approvals="per-turn")  # low risk: runs at once
    first = finished(kube_client, ns, "act5a")
    assert first["status"]["phase"] == "Succeeded", first["status"]
    model.set_script(
        fm.exec_command("touch survived-restart"),
        fm.exec_command("touch survived-restart"),  # asked again by the next attempt
        fm.computed(lambda req: f"ran: {req.last_tool_output()}"),
    )
    _start(system, "act5", "make a file", resumeFrom="act5a")
    request = _wait_action(kube_client, ns, "act5")
    pod = client.CustomObjectsApi(kube_client).get_namespaced_custom_object(
        GROUP, VERSION, ns, "codexsessions", "act5"
    )["status"]["podName"]
    # Forced, as when its node is lost: its Codex may still run a moment and hold the thread.
    cp.kubectl("delete", "pod", pod, "-n", ns, "--grace-period=0", "--force")
    assert _decide(system, "bob", request["metadata"]["name"], "Approved").returncode == 0
    done = finished(kube_client, ns, "act5", timeout=180)
    status = done["status"]
    assert status["phase"] == "Succeeded", status.get("message")
    assert status["attempts"] == 2 and status["podName"] != pod, status
    assert status["threadId"] == first["status"]["threadId"]  # the conversation's thread, resumed
    assert [a["metadata"]["name"] for a in _actions(kube_client, ns, "act5")] == [request["metadata"]["name"]]
    assert (_workspace(volumes, ns, "act5a") / "survived-restart").exists()
    assert "ran:" in status["response"]


def test_an_operator_restarted_while_an_action_waits_answers_it_once_decided(
    system: dict[str, Any], kube_client: Any, volumes: Path
) -> None:
    """Nothing of a waiting action lives in the operator: a new operator finds
    the turn running in its pod, the action still waiting there and its
    request in the cluster, and answers it when it is decided."""
    ns, model = system["ns"], system["model"]
    model.set_script(fm.exec_command("touch after-restart"), fm.computed(lambda req: "done"))
    _start(system, "act6", "make a file")
    request = _wait_action(kube_client, ns, "act6")
    system["ops"][-1].kill()  # SIGKILL
    system["ops"].append(system["start"]())
    assert _decide(system, "carol", request["metadata"]["name"], "Approved").returncode == 0
    done = finished(kube_client, ns, "act6")
    assert done["status"]["phase"] == "Succeeded", done["status"].get("message")
    assert done["status"].get("attempts", 1) == 1  # the same turn, not a rerun
    assert [a["metadata"]["name"] for a in _actions(kube_client, ns, "act6")] == [request["metadata"]["name"]]
    assert (_workspace(volumes, ns, "act6") / "after-restart").exists()


@contextlib.contextmanager
def _gateway(system: dict[str, Any], user: str) -> Iterator[tuple[Any, str]]:
    """The gateway as an install runs it (its ServiceAccount, the operator's config file)."""
    cp, ns, tmp = system["cp"], system["ns"], system["tmp"]
    token = f"{user}-token-" + secrets.token_hex(8)
    bind_gateway(cp, ns)
    gateway = start_gateway(
        cp,
        ns,
        tmp,
        {token: user},
        kubeconfig=gateway_kubeconfig(cp, tmp),
        config_file=next(tmp.glob("operator-*.toml")),
        wait_seconds=2,
        name=f"gateway-{user}",
    )
    try:
        yield gateway, token
    finally:
        gateway.stop()


async def _task_until(mcp: Any, task_id: str, until: Any, tries: int = 120) -> dict[str, Any]:
    for _ in range(tries):
        task = await get_task(mcp, task_id)
        if until(task):
            return task
        await asyncio.sleep(0.5)
    return task


async def _per_action_task(mcp: Any, prompt: str) -> str:
    handle = await call_tool_raw(
        mcp, "codex", {"prompt": prompt, "sandbox": "isolated", "approvals": "per-action"}
    )
    assert isinstance(handle, CreateTaskResult), handle
    return handle.task_id


async def test_through_the_gateway_a_per_action_turn_is_a_task_an_approver_unblocks(
    system: dict[str, Any], kube_client: Any, volumes: Path
) -> None:
    """An MCP client asks for a per-action turn and declares the Tasks
    extension: it gets a task, `input_required` with the action Codex asks
    to take. Under the shipped requester_decides_up_to (none) its requester
    may not approve it from the client (refused, nothing written, nothing
    ran); an approver decides it with kubectl; the task completes with the
    command's outcome."""
    ns, model = system["ns"], system["model"]
    model.set_script(
        fm.exec_command("touch via-mcp"), fm.computed(lambda req: f"ran: {req.last_tool_output()}")
    )
    with _gateway(system, "dave") as (gateway, token):
        async with gateway.client(token, "2026-07-28", [TasksClient()]) as mcp:
            task_id = await _per_action_task(mcp, "make a file")
            request = await asyncio.to_thread(_wait_action, kube_client, ns, task_id)
            assert request["spec"]["requestedBy"] == "dave"
            name = request["metadata"]["name"]
            task = await _task_until(mcp, task_id, lambda t: t["status"] == "input_required")
            assert task["status"] == "input_required" and list(task["inputRequests"]) == [name], task
            form = task["inputRequests"][name]
            assert form["method"] == "elicitation/create"
            assert "touch via-mcp" in form["params"]["message"]
            assert form["params"]["requestedSchema"]["properties"]["decision"]["enum"] == ["deny"]
            assert f"kubectl codex approve {name}" in form["params"]["message"]

            approve = {name: {"action": "accept", "content": {"decision": "approve"}}}
            with pytest.raises(MCPError) as refused:
                await update_task(mcp, task_id, approve)
            assert refused.value.error.code == -32602 and "needs an approver" in refused.value.error.message
            unknown = {"cx-nobody-action-000000000000": {"action": "decline"}}
            with pytest.raises(MCPError) as not_waiting:
                await update_task(mcp, task_id, unknown)
            assert "does not wait on" in not_waiting.value.error.message
            assert "decision" not in _request(kube_client, ns, name)["spec"]
            assert not (_workspace(volumes, ns, task_id) / "via-mcp").exists()

            assert _decide(system, "bob", name, "Approved").returncode == 0
            task = await _task_until(mcp, task_id, lambda t: t["status"] not in ("working", "input_required"))
            assert task["status"] == "completed", task
            assert task["result"]["structuredContent"]["status"] == "completed"
            assert "ran:" in task["result"]["structuredContent"]["response"]
    assert (_workspace(volumes, ns, task_id) / "via-mcp").exists()


async def test_the_requester_denies_her_own_action_from_the_mcp_client(
    system: dict[str, Any], kube_client: Any, volumes: Path
) -> None:
    """Denying can only make a turn do less: its requester may always deny
    her own action with tasks/update. The decision lands on the same
    ApprovalRequest as kubectl's, decided by her (not the gateway); the
    command does not run and the turn goes on."""
    ns, model = system["ns"], system["model"]
    model.set_script(
        fm.exec_command("touch never"), fm.computed(lambda req: f"after: {req.last_tool_output()}")
    )
    with _gateway(system, "erin") as (gateway, token):
        async with gateway.client(token, "2026-07-28", [TasksClient()]) as mcp:
            task_id = await _per_action_task(mcp, "make a file")
            task = await _task_until(mcp, task_id, lambda t: t["status"] == "input_required")
            (name,) = task["inputRequests"]
            reply = {name: {"action": "accept", "content": {"decision": "deny", "reason": "not today"}}}
            assert (await update_task(mcp, task_id, reply))["resultType"] == "complete"
            spec = _request(kube_client, ns, name)["spec"]
            assert (spec["decision"], spec["decidedBy"], spec["reason"]) == ("Denied", "erin", "not today")
            audited = [e for e in gateway.audit_events() if e.get("tool") == "tasks/update"]
            assert audited and audited[-1]["user"] == "erin" and audited[-1]["session"] == task_id, audited
            assert audited[-1]["decisions"] == [{"request": name, "decision": "Denied", "scope": "turn"}]
            task = await _task_until(mcp, task_id, lambda t: t["status"] not in ("working", "input_required"))
            assert task["status"] == "completed", task
            assert "rejected" in task["result"]["structuredContent"]["response"], task
    wait_for(
        lambda: (_request(kube_client, ns, name).get("status") or {}).get("decidedBy") == "erin",
        timeout=30,
        what="the operator honours her deny",
    )
    assert not (_workspace(volumes, ns, task_id) / "never").exists()


async def test_with_requester_decides_up_to_medium_she_approves_her_own_command_from_the_client(
    laptop: dict[str, Any], kube_client: Any, volumes: Path
) -> None:
    """With `requester_decides_up_to = "medium"` the requester approves her
    own medium action from the MCP client (for the session, as Codex offers
    it): the command runs once. Her high-risk action stays with an
    approver: the form offers her only deny, and an approve is refused by
    the gateway and, relayed anyway, by admission."""
    ns, model = laptop["ns"], laptop["model"]
    model.set_script(
        fm.exec_command("touch mine"),
        fm.exec_command("sudo touch /etc/owned"),
        fm.computed(lambda req: f"last: {req.last_tool_output()}"),
    )
    with _gateway(laptop, "dave") as (gateway, token):
        async with gateway.client(token, "2026-07-28", [TasksClient()]) as mcp:
            task_id = await _per_action_task(mcp, "two commands")
            task = await _task_until(mcp, task_id, lambda t: t["status"] == "input_required")
            (first,) = task["inputRequests"]
            offered = task["inputRequests"][first]["params"]["requestedSchema"]["properties"]["decision"][
                "enum"
            ]
            assert offered[0] == "approve" and offered[-1] == "deny", offered
            choice = "approve-for-session" if "approve-for-session" in offered else "approve"
            reply = {first: {"action": "accept", "content": {"decision": choice}}}
            assert (await update_task(mcp, task_id, reply))["resultType"] == "complete"
            spec = _request(kube_client, ns, first)["spec"]
            assert (spec["decision"], spec["decidedBy"]) == ("Approved", "dave")

            task = await _task_until(
                mcp, task_id, lambda t: t["status"] == "input_required" and first not in t["inputRequests"]
            )
            (second,) = task["inputRequests"]
            assert _request(kube_client, ns, second)["spec"]["riskLevel"] == "high"
            form = task["inputRequests"][second]["params"]
            assert form["requestedSchema"]["properties"]["decision"]["enum"] == ["deny"]
            with pytest.raises(MCPError) as refused:
                await update_task(
                    mcp, task_id, {second: {"action": "accept", "content": {"decision": "approve"}}}
                )
            assert "needs an approver" in refused.value.error.message
            # The same relay written straight to the API server as the gateway: admission refuses it.
            relay = subprocess.run(
                [
                    str(laptop["cp"].bin_dir / "kubectl"),
                    "--kubeconfig",
                    str(laptop["tmp"] / "gateway.kubeconfig"),
                    "patch",
                    "approvalrequests",
                    second,
                    "-n",
                    ns,
                    "--type",
                    "merge",
                    "-p",
                    json.dumps({"spec": {"decision": "Approved", "decidedBy": "dave"}}),
                ],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert relay.returncode != 0 and "ValidatingAdmissionPolicy" in relay.stderr, relay.stderr
            assert "decision" not in _request(kube_client, ns, second)["spec"]
            assert (_workspace(volumes, ns, task_id) / "mine").exists()
            assert _decide(laptop, "bob", second, "Denied", reason="no sudo").returncode == 0
            task = await _task_until(mcp, task_id, lambda t: t["status"] not in ("working", "input_required"))
            assert task["status"] == "completed", task
            assert "rejected" in task["result"]["structuredContent"]["response"], task


async def test_a_patch_approved_for_the_session_from_the_client_covers_later_changes_to_its_file(
    laptop: dict[str, Any], kube_client: Any, volumes: Path
) -> None:
    """A patch Codex asks to apply shows its diff in the client's form; its
    requester approves it for the session (as Codex offers for patches), the
    request records scope session, and Codex's next change to the same file
    is not asked again (Codex's acceptForSession covers that file only)."""
    ns, model = laptop["ns"], laptop["model"]
    add = "*** Begin Patch\n*** Add File: notes.txt\n+remember 42\n*** End Patch\n"
    update = "*** Begin Patch\n*** Update File: notes.txt\n@@\n-remember 42\n+remember 43\n*** End Patch\n"
    model.set_script(fm.apply_patch(add), fm.apply_patch(update), fm.say("noted"))
    with _gateway(laptop, "dave") as (gateway, token):
        async with gateway.client(token, "2026-07-28", [TasksClient()]) as mcp:
            task_id = await _per_action_task(mcp, "take notes")
            task = await _task_until(mcp, task_id, lambda t: t["status"] == "input_required")
            (name,) = task["inputRequests"]
            form = task["inputRequests"][name]["params"]
            assert "notes.txt" in form["message"] and "remember 42" in form["message"], form
            assert "approve-for-session" in form["requestedSchema"]["properties"]["decision"]["enum"]
            reply = {name: {"action": "accept", "content": {"decision": "approve-for-session"}}}
            assert (await update_task(mcp, task_id, reply))["resultType"] == "complete"
            spec = _request(kube_client, ns, name)["spec"]
            assert (spec["action"]["kind"], spec["decision"], spec["scope"]) == (
                "file_change",
                "Approved",
                "session",
            )
            task = await _task_until(mcp, task_id, lambda t: t["status"] not in ("working", "input_required"))
            assert (
                task["status"] == "completed" and task["result"]["structuredContent"]["response"] == "noted"
            )
    assert [a["metadata"]["name"] for a in _actions(kube_client, ns, task_id)] == [name]
    assert (_workspace(volumes, ns, task_id) / "notes.txt").read_text() == "remember 43\n"


async def test_a_2025_client_is_asked_by_elicitation_during_tasks_result(
    system: dict[str, Any], kube_client: Any, volumes: Path
) -> None:
    """On the 2025-11-25 protocol the same per-action task asks its caller by
    elicitation while `tasks/result` waits (that era's way): the form shows
    what runs and offers what she may decide; her deny lands on the request
    as hers, the command does not run, and tasks/result returns the turn's
    result."""
    from mcp_types import ElicitResult

    ns, model = system["ns"], system["model"]
    model.set_script(
        fm.exec_command("touch legacy-never"), fm.computed(lambda req: f"after: {req.last_tool_output()}")
    )
    asked: list[Any] = []

    async def deny(context: Any, params: Any) -> ElicitResult:
        asked.append(params)
        return ElicitResult(action="accept", content={"decision": "deny", "reason": "not in 2025"})

    with _gateway(system, "frank") as (gateway, token):
        async with gateway.client(token, "legacy", elicitation=deny) as mcp:
            call = {
                "name": "codex",
                "arguments": {"prompt": "make a file", "sandbox": "isolated", "approvals": "per-action"},
                "task": {"ttl": 600_000},
            }
            task_id = (await legacy_request(mcp, "tools/call", call))["task"]["taskId"]
            request = await asyncio.to_thread(_wait_action, kube_client, ns, task_id)
            result = await asyncio.wait_for(legacy_request(mcp, "tasks/result", {"taskId": task_id}), 120)
    assert len(asked) == 1 and "touch legacy-never" in asked[0].message
    assert asked[0].requested_schema["properties"]["decision"]["enum"] == ["deny"]
    spec = _request(kube_client, ns, request["metadata"]["name"])["spec"]
    assert (spec["decision"], spec["decidedBy"], spec["reason"]) == ("Denied", "frank", "not in 2025")
    assert "rejected" in result["structuredContent"]["response"], result
    assert not (_workspace(volumes, ns, task_id) / "legacy-never").exists()
