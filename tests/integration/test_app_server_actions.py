"""Codex's approval requests, from the real pinned CLI (app-server) and the
scripted fake model on 127.0.0.1, read as Actions (codex_api.actions) and
answered with answer_payload: what per-action approvals (issue 15) build on.
Each answer is checked by what Codex then did (the file, the tool output the
model got), and the fields relied on are pinned against the binary's schema.
Where the running binary sends more than its schema says (`availableDecisions`
on command approvals), the live tests pin that too."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from codex_api.actions import (
    ANSWERS,
    COMMAND_METHOD,
    FILE_CHANGE_METHOD,
    PERMISSIONS_METHOD,
    Action,
    Answer,
    UnreviewableAction,
    action_from_request,
    answer_payload,
)
from codex_api.config import ActionApprovalsConfig
from codex_devenv import fake_model as fm
from codex_devenv.codex_cli import codex_binary, exec_env, write_codex_home
from codex_operator.action_risk import assess_action
from codex_runner.app_server import AppServer

pytestmark = pytest.mark.timeout(180)

# Off in 0.171's defaults ("under development"): the model's request_permissions tool.
PERMISSION_FEATURES = ("request_permissions_tool", "exec_permission_approvals")


@pytest.fixture(scope="module")
def model() -> Iterator[fm.FakeModelServer]:
    with fm.FakeModelServer() as server:
        yield server


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    path = tmp_path / "ws"
    path.mkdir()
    return path


async def run_turn(
    model: fm.FakeModelServer,
    tmp_path: Path,
    workspace: Path,
    script: list[Any],
    answer: Answer,
    *,
    sandbox: str = "read-only",
    policy: str = "untrusted",
    features: tuple[str, ...] = (),
) -> list[Action]:
    """One turn on `script`; every approval request is read as an Action and
    given `answer`. Returns the Actions in order."""
    model.reset()
    model.set_script(*script, fm.say("done"))
    home = write_codex_home(tmp_path / "home", model.url)
    if features:
        config = home / "config.toml"
        flags = "".join(f"\n{f} = true" for f in features)
        config.write_text(config.read_text().replace("[features]", "[features]" + flags, 1))
    seen: list[Action] = []
    holder: dict[str, AppServer] = {}

    async def on_request(method: str, params: dict[str, Any]) -> dict[str, Any]:
        action = action_from_request(method, params, holder["server"].announced_items)
        seen.append(action)
        return answer_payload(action, answer)

    server = await AppServer.start(codex_binary(), env=exec_env(home), cwd=workspace, on_request=on_request)
    holder["server"] = server
    try:
        thread = await server.start_thread(cwd=workspace, sandbox=sandbox, approval_policy=policy)
        outcome = await server.run_turn(thread, "go", timeout=90)
    finally:
        await server.close()
    assert outcome.status == "completed", outcome
    return seen


def tool_output(model: fm.FakeModelServer) -> str:
    """What the model got back for its tool call (the last request's last input item)."""
    return str(model.responses_requests[-1].input[-1].get("output"))


def test_the_fields_relied_on_are_in_the_pinned_binarys_schema(tmp_path: Path) -> None:
    subprocess.run(
        [str(codex_binary()), "app-server", "generate-json-schema", "--out", str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=60,
    )

    def load(name: str) -> dict[str, Any]:
        return dict(json.loads((tmp_path / f"{name}.json").read_text()))

    requests = load("ServerRequest")
    methods = {v["properties"]["method"]["enum"][0] for v in requests["oneOf"]}
    assert {COMMAND_METHOD, FILE_CHANGE_METHOD, PERMISSIONS_METHOD} <= methods
    command = load("CommandExecutionRequestApprovalParams")
    assert {"threadId", "turnId", "itemId"} <= set(command["required"])
    assert {"command", "cwd", "reason", "approvalId", "kind", "networkApprovalContext"} <= set(
        command["properties"]
    )
    kinds = {e for v in command["definitions"]["CommandExecutionApprovalKind"]["oneOf"] for e in v["enum"]}
    assert kinds == {"command", "writeStdin", "humanCommand"}
    assert command["definitions"]["NetworkApprovalContext"]["required"] == ["host", "protocol"]
    file_change = load("FileChangeRequestApprovalParams")
    assert {"threadId", "turnId", "itemId"} <= set(file_change["required"])
    assert "grantRoot" in file_change["properties"] and "changes" not in file_change["properties"]
    notifications = load("ServerNotification")["definitions"]
    assert set(notifications["FileUpdateChange"]["required"]) == {"diff", "kind", "path"}
    change_kinds = {v["properties"]["type"]["enum"][0] for v in notifications["PatchChangeKind"]["oneOf"]}
    assert change_kinds == {"add", "delete", "update"}
    permissions = load("PermissionsRequestApprovalParams")
    assert {"threadId", "turnId", "itemId", "permissions", "cwd"} <= set(permissions["required"])
    profile = permissions["definitions"]["RequestPermissionProfile"]["properties"]
    assert set(profile) == {"fileSystem", "network"}
    # The answers: the plain decisions, and a permission grant with its scope.
    for name, defs in (
        ("CommandExecutionRequestApprovalResponse", "CommandExecutionApprovalDecision"),
        ("FileChangeRequestApprovalResponse", "FileChangeApprovalDecision"),
    ):
        decisions = {e for v in load(name)["definitions"][defs]["oneOf"] for e in v.get("enum", [])}
        assert set(ANSWERS) <= decisions, name
    grant = load("PermissionsRequestApprovalResponse")
    assert grant["required"] == ["permissions"]
    assert set(grant["definitions"]["PermissionGrantScope"]["enum"]) == {"turn", "session"}


@pytest.mark.parametrize("answer", ["accept", "decline"])
async def test_a_command_is_read_and_the_answer_decides_whether_it_runs(
    model: fm.FakeModelServer, tmp_path: Path, workspace: Path, answer: Answer
) -> None:
    seen = await run_turn(model, tmp_path, workspace, [fm.exec_command("touch made-it")], answer)
    [action] = seen
    assert action.kind == "command" and action.script == "touch made-it"
    assert action.cwd == str(workspace)
    # What 0.171 offers for an untrusted command: accept or cancel (decline is always taken).
    assert action.offered == ("accept", "decline", "cancel")
    assert (workspace / "made-it").exists() == (answer == "accept")
    if answer == "decline":
        assert "rejected by user" in tool_output(model)


@pytest.mark.parametrize("answer", ["accept", "decline"])
async def test_a_patch_is_read_with_its_diff_and_applied_only_when_accepted(
    model: fm.FakeModelServer, tmp_path: Path, workspace: Path, answer: Answer
) -> None:
    patch = "*** Begin Patch\n*** Add File: notes.txt\n+remember 42\n*** End Patch\n"
    [action] = await run_turn(model, tmp_path, workspace, [fm.apply_patch(patch)], answer)
    assert action.kind == "file_change"
    [change] = action.changes
    assert (change.path, change.change, change.diff) == (str(workspace / "notes.txt"), "add", "remember 42\n")
    assert (workspace / "notes.txt").exists() == (answer == "accept")


async def test_accept_for_session_is_per_file_for_patches(
    model: fm.FakeModelServer, tmp_path: Path, workspace: Path
) -> None:
    """Codex's acceptForSession on a patch covers later changes to the same files
    only: a second file is asked for again (what a recorded decision may cover)."""
    patches = [
        fm.apply_patch(f"*** Begin Patch\n*** Add File: {name}\n+x\n*** End Patch\n")
        for name in ("a.txt", "b.txt")
    ]
    seen = await run_turn(model, tmp_path, workspace, patches, "acceptForSession")
    assert [a.changes[0].path for a in seen] == [str(workspace / "a.txt"), str(workspace / "b.txt")]
    assert (workspace / "a.txt").exists() and (workspace / "b.txt").exists()


@pytest.mark.parametrize("answer", ["accept", "decline"])
async def test_a_permissions_request_is_read_and_grants_only_what_is_answered(
    model: fm.FakeModelServer, tmp_path: Path, workspace: Path, answer: Answer
) -> None:
    other = str(tmp_path / "cache")
    ask = {
        "type": "function_call",
        "name": "request_permissions",
        "arguments": json.dumps(
            {
                "permissions": {"network": {"enabled": True}, "file_system": {"write": [other]}},
                "reason": "deps",
            }
        ),
        "call_id": "call_permissions",
    }
    [action] = await run_turn(
        model,
        tmp_path,
        workspace,
        [fm.respond(ask)],
        answer,
        sandbox="workspace-write",
        policy="on-request",
        features=PERMISSION_FEATURES,
    )
    assert action.kind == "permissions" and action.reason == "deps"
    assert action.permissions is not None
    assert (action.permissions.network, action.permissions.write) == (True, (other,))
    assessed = assess_action(action, ActionApprovalsConfig())
    assert assessed.risk == "high" and "network" in assessed.rules
    granted = json.loads(tool_output(model))
    if answer == "accept":
        assert granted["permissions"]["network"] == {"enabled": True}
        assert granted["permissions"]["file_system"]["write"] == [other]
        assert granted["scope"] == "turn"
    else:
        assert granted["permissions"] == {"network": None, "file_system": None}


async def test_a_command_hiding_characters_reaches_the_reviewer_flagged(
    model: fm.FakeModelServer, tmp_path: Path, workspace: Path
) -> None:
    """The model's command with a terminal escape that would blank what precedes it:
    Codex passes it on, the Action flags it, the policy makes it critical."""
    sneaky = "echo harmless\x1b[2K\rtouch pwned"
    [action] = await run_turn(model, tmp_path, workspace, [fm.exec_command(sneaky)], "decline")
    assert action.hidden_characters and "\x1b[2K" in (action.command or "")
    assert assess_action(action, ActionApprovalsConfig()).risk == "critical"
    assert not (workspace / "pwned").exists()


async def test_an_unreviewable_request_is_refused_and_nothing_runs(
    model: fm.FakeModelServer, tmp_path: Path, workspace: Path
) -> None:
    """A command longer than a reviewer is shown: the handler refuses it (the
    client answers an error) and Codex does not run it."""
    long = "touch made-it; " + "true; " * 3000
    with pytest.raises(UnreviewableAction):
        action_from_request(
            COMMAND_METHOD, {"threadId": "t", "turnId": "u", "itemId": "i", "command": long}, {}
        )
    seen = await run_turn(model, tmp_path, workspace, [fm.exec_command(long)], "accept")
    assert seen == []  # the handler raised before an Action existed
    assert not (workspace / "made-it").exists()
