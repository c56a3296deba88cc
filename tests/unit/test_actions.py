"""codex_api.actions: Codex's approval requests as Actions, from requests shaped
as the pinned CLI sends them (captured from 0.171.0; the live run is
tests/integration/test_app_server_actions.py), and hostile ones."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from codex_api.actions import (
    COMMAND_METHOD,
    FILE_CHANGE_METHOD,
    MAX_COMMAND,
    MAX_DIFF_TOTAL,
    MAX_FILES,
    PERMISSIONS_METHOD,
    Action,
    PermissionAsk,
    UnreviewableAction,
    action_from_request,
    answer_payload,
    unwrap_shell,
)

IDS = {"threadId": "t-1", "turnId": "u-1"}
COMMAND: dict[str, Any] = {
    "kind": "command",
    **IDS,
    "itemId": "call_1",
    "startedAtMs": 1796529084372,
    "environmentId": "local",
    "command": "/bin/bash -lc 'touch made-it'",
    "cwd": "/workspace",
    "commandActions": [{"type": "unknown", "command": "touch made-it"}],
    "proposedExecpolicyAmendment": ["touch", "made-it"],
    "availableDecisions": [
        "accept",
        {"acceptWithExecpolicyAmendment": {"execpolicy_amendment": ["touch", "made-it"]}},
        "cancel",
    ],
}
FILE_CHANGE: dict[str, Any] = {**IDS, "itemId": "call_2", "startedAtMs": 1, "reason": None, "grantRoot": None}
FILE_ITEM: dict[str, Any] = {
    "type": "fileChange",
    "id": "call_2",
    "changes": [{"path": "/workspace/notes.txt", "kind": {"type": "add"}, "diff": "hi\n"}],
    "status": "inProgress",
}
PERMISSIONS: dict[str, Any] = {
    **IDS,
    "itemId": "call_3",
    "environmentId": "local",
    "startedAtMs": 1,
    "cwd": "/workspace",
    "reason": "fetch deps",
    "permissions": {
        "network": {"enabled": True},
        "fileSystem": {
            "read": None,
            "write": ["/workspace/../cache"],
            "entries": [{"path": {"type": "path", "path": "/workspace/../cache"}, "access": "write"}],
        },
    },
}


def command(**changes: Any) -> Action:
    return action_from_request(COMMAND_METHOD, {**COMMAND, **changes}, {})


def test_a_command_request_is_what_will_run() -> None:
    action = command(reason="need it")
    assert (action.kind, action.item_id, action.thread_id, action.turn_id) == (
        "command",
        "call_1",
        "t-1",
        "u-1",
    )
    assert action.command == "/bin/bash -lc 'touch made-it'" and action.script == "touch made-it"
    assert action.cwd == "/workspace" and action.paths == ("/workspace",)
    assert action.reason == "need it" and not action.hidden_characters
    # What Codex offers, amendments left out (they outlive the decision); decline is always possible.
    assert action.offered == ("accept", "decline", "cancel")


def test_a_command_without_available_decisions_offers_the_schemas_set() -> None:
    params = {k: v for k, v in COMMAND.items() if k != "availableDecisions"}
    assert action_from_request(COMMAND_METHOD, params, {}).offered == (
        "accept",
        "acceptForSession",
        "decline",
        "cancel",
    )


def test_a_network_approval_names_its_host() -> None:
    action = command(networkApprovalContext={"host": "pypi.org", "protocol": "https"})
    assert action.network_host == "pypi.org"


def test_a_file_change_carries_its_diff_from_the_announced_item() -> None:
    action = action_from_request(FILE_CHANGE_METHOD, FILE_CHANGE, {"call_2": FILE_ITEM})
    assert action.kind == "file_change" and action.command is None
    [change] = action.changes
    assert (change.path, change.change, change.diff, change.move_to) == (
        "/workspace/notes.txt",
        "add",
        "hi\n",
        None,
    )
    assert action.paths == ("/workspace/notes.txt",)
    assert "acceptForSession" in action.offered


def test_a_moved_file_counts_both_paths() -> None:
    item = copy.deepcopy(FILE_ITEM)
    item["changes"][0]["kind"] = {"type": "update", "move_path": "/etc/cron.d/x"}
    action = action_from_request(FILE_CHANGE_METHOD, FILE_CHANGE, {"call_2": item})
    assert action.paths == ("/workspace/notes.txt", "/etc/cron.d/x")


def test_a_permissions_request_lists_what_it_widens() -> None:
    action = action_from_request(PERMISSIONS_METHOD, PERMISSIONS, {})
    assert action.permissions == PermissionAsk(network=True, read=(), write=("/workspace/../cache",))
    assert action.reason == "fetch deps" and action.cwd == "/workspace"
    assert action.offered == ("accept", "acceptForSession", "decline")


def test_answers_are_codexs_shapes() -> None:
    assert answer_payload(command(), "accept") == {"decision": "accept"}
    assert answer_payload(command(), "decline") == {"decision": "decline"}
    asked = action_from_request(PERMISSIONS_METHOD, PERMISSIONS, {})
    assert answer_payload(asked, "accept") == {
        "permissions": {
            "network": {"enabled": True},
            "fileSystem": {"read": None, "write": ["/workspace/../cache"]},
        },
        "scope": "turn",
    }
    assert answer_payload(asked, "acceptForSession")["scope"] == "session"
    # Refusing grants nothing.
    assert answer_payload(asked, "decline") == {"permissions": {}, "scope": "turn"}
    with pytest.raises(ValueError, match="unknown answer"):
        answer_payload(asked, "yes")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("command", "script"),
    [
        ("/bin/bash -lc 'make test'", "make test"),
        ("bash -c 'a && b'", "a && b"),
        ("/usr/bin/zsh -lc \"echo 'x'\"", "echo 'x'"),
        ("make test", "make test"),
        ("/bin/bash -lc 'a' extra", "/bin/bash -lc 'a' extra"),  # not the wrapper: as is
        ("/bin/bash -lc 'unterminated", "/bin/bash -lc 'unterminated"),
        ("python -c 'print(1)'", "python -c 'print(1)'"),
    ],
)
def test_the_shell_wrapper_is_removed_only_when_it_is_one(command: str, script: str) -> None:
    assert unwrap_shell(command) == script


@pytest.mark.parametrize(
    "text",
    [
        "ls\x1b[2K\rrm -rf ~",  # an escape that clears the line, then a carriage return
        "echo safe\r",
        "echo \u202egnp.exe",  # right-to-left override
        "echo a\u200bb",  # zero width space
        "echo \x9b31m",  # C1 CSI
        "echo \x00",
    ],
)
def test_characters_a_terminal_hides_are_flagged(text: str) -> None:
    assert command(command=text).hidden_characters


def test_hidden_characters_in_a_diff_or_reason_are_flagged_too() -> None:
    item = copy.deepcopy(FILE_ITEM)
    item["changes"][0]["diff"] = "harmless\x1b[1A\x1b[2Kevil\n"
    assert action_from_request(FILE_CHANGE_METHOD, FILE_CHANGE, {"call_2": item}).hidden_characters
    assert command(reason="fine\x1b]8;;http://x\x07").hidden_characters
    assert not command(command="printf 'a\\tb\\n'\n\tmake").hidden_characters  # tab and newline show


def _item_with(**change: Any) -> dict[str, Any]:
    item = copy.deepcopy(FILE_ITEM)
    item["changes"][0] |= change
    return item


@pytest.mark.parametrize(
    ("method", "params", "items", "why"),
    [
        ("item/tool/requestUserInput", COMMAND, {}, "not an approval request"),
        ("execCommandApproval", COMMAND, {}, "not an approval request"),
        (COMMAND_METHOD, [], {}, "params are not an object"),
        (COMMAND_METHOD, {**COMMAND, "itemId": None}, {}, "itemId is not a string"),
        (COMMAND_METHOD, {**COMMAND, "threadId": ""}, {}, "threadId is not a string"),
        (COMMAND_METHOD, {**COMMAND, "turnId": 7}, {}, "turnId is not a string"),
        (COMMAND_METHOD, {**COMMAND, "itemId": "x" * 300}, {}, "longer than"),
        (COMMAND_METHOD, {**COMMAND, "command": None}, {}, "command is not a string"),
        (COMMAND_METHOD, {**COMMAND, "command": ["rm", "-rf"]}, {}, "command is not a string"),
        (COMMAND_METHOD, {**COMMAND, "command": "x" * (MAX_COMMAND + 1)}, {}, "longer than"),
        (COMMAND_METHOD, {**COMMAND, "cwd": "relative/dir"}, {}, "cwd is not an absolute path"),
        (COMMAND_METHOD, {**COMMAND, "cwd": "/work\x00space"}, {}, "NUL"),
        (COMMAND_METHOD, {**COMMAND, "kind": "writeStdin"}, {}, "not reviewed"),
        (COMMAND_METHOD, {**COMMAND, "kind": "humanCommand"}, {}, "not reviewed"),
        (FILE_CHANGE_METHOD, FILE_CHANGE, {}, "not announced"),
        (
            FILE_CHANGE_METHOD,
            FILE_CHANGE,
            {"call_2": {**FILE_ITEM, "type": "commandExecution"}},
            "not announced",
        ),
        (FILE_CHANGE_METHOD, FILE_CHANGE, {"call_2": {**FILE_ITEM, "changes": []}}, "no changes"),
        (
            FILE_CHANGE_METHOD,
            FILE_CHANGE,
            {"call_2": {**FILE_ITEM, "changes": FILE_ITEM["changes"] * (MAX_FILES + 1)}},
            "touches",
        ),
        (FILE_CHANGE_METHOD, FILE_CHANGE, {"call_2": _item_with(diff="x" * (MAX_DIFF_TOTAL + 1))}, "larger"),
        (FILE_CHANGE_METHOD, FILE_CHANGE, {"call_2": _item_with(diff=None)}, "no diff"),
        (
            FILE_CHANGE_METHOD,
            FILE_CHANGE,
            {"call_2": _item_with(kind={"type": "chmod"})},
            "unknown file change",
        ),
        (FILE_CHANGE_METHOD, FILE_CHANGE, {"call_2": _item_with(kind="add")}, "malformed"),
        (FILE_CHANGE_METHOD, FILE_CHANGE, {"call_2": _item_with(path="notes.txt")}, "absolute"),
        (FILE_CHANGE_METHOD, {**FILE_CHANGE, "grantRoot": "/"}, {"call_2": FILE_ITEM}, "write root"),
        (PERMISSIONS_METHOD, {**PERMISSIONS, "permissions": None}, {}, "not an object"),
        (PERMISSIONS_METHOD, {**PERMISSIONS, "permissions": {}}, {}, "asks for no permission"),
        (PERMISSIONS_METHOD, {**PERMISSIONS, "permissions": {"network": True}}, {}, "network permissions"),
        (
            PERMISSIONS_METHOD,
            {**PERMISSIONS, "permissions": {"fileSystem": {"write": "/etc"}}},
            {},
            "not a list of paths",
        ),
        (
            PERMISSIONS_METHOD,
            {
                **PERMISSIONS,
                "permissions": {
                    "fileSystem": {
                        "entries": [{"path": {"type": "glob_pattern", "pattern": "/**"}, "access": "write"}]
                    }
                },
            },
            {},
            "pattern or special root",
        ),
        (
            PERMISSIONS_METHOD,
            {
                **PERMISSIONS,
                "permissions": {
                    "fileSystem": {
                        "write": ["/workspace/a"],
                        "entries": [{"path": {"type": "path", "path": "/etc"}, "access": "write"}],
                    }
                },
            },
            {},
            "differ from the paths listed",
        ),
        (
            PERMISSIONS_METHOD,
            {**PERMISSIONS, "permissions": {"fileSystem": {"read": [f"/p{i}" for i in range(65)]}}},
            {},
            "more than",
        ),
    ],
)
def test_what_cannot_be_shown_as_it_is_is_unreviewable(
    method: str, params: Any, items: dict[str, Any], why: str
) -> None:
    with pytest.raises(UnreviewableAction, match=why):
        action_from_request(method, params, items)


def test_a_long_reason_is_shortened_not_refused() -> None:
    action = command(reason="r" * 10_000)
    assert action.reason is not None and len(action.reason) == 2048 and action.reason.endswith("…")


def test_a_denied_path_narrows_and_is_accepted() -> None:
    params = copy.deepcopy(PERMISSIONS)
    params["permissions"]["fileSystem"]["entries"].append(
        {"path": {"type": "glob_pattern", "pattern": "/**/.ssh"}, "access": "deny"}
    )
    assert action_from_request(PERMISSIONS_METHOD, params, {}).permissions is not None


def test_an_approval_request_records_the_action_as_read() -> None:
    from codex_api.approval import ApprovalAction

    item = copy.deepcopy(FILE_ITEM)
    item["changes"][0]["kind"] = {"type": "update", "move_path": "/workspace/new.txt"}
    for action in (
        command(reason="why", networkApprovalContext={"host": "pypi.org", "protocol": "https"}),
        action_from_request(FILE_CHANGE_METHOD, FILE_CHANGE, {"call_2": item}),
        action_from_request(PERMISSIONS_METHOD, PERMISSIONS, {}),
        command(command="ls\x1b[2K"),
    ):
        recorded = ApprovalAction.of(action).to_k8s()
        assert recorded["kind"] == action.kind and recorded["itemId"] == action.item_id
        assert recorded["offered"] == list(action.offered)
        assert recorded.get("command") == action.command
        assert recorded.get("hiddenCharacters", False) == action.hidden_characters
        assert [c["diff"] for c in recorded.get("changes", [])] == [c.diff for c in action.changes]
        assert [c.get("moveTo") for c in recorded.get("changes", [])] == [c.move_to for c in action.changes]
        if action.permissions is not None:
            assert recorded["permissions"]["write"] == list(action.permissions.write)
        assert ApprovalAction.model_validate(recorded) == ApprovalAction.of(action)  # round trip
