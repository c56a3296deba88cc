"""What Codex asks to do: its app-server's approval requests as Actions, and
the answers it takes.

Codex's `app-server` asks its client before it runs a command
(`item/commandExecution/requestApproval`), applies a patch
(`item/fileChange/requestApproval`) or widens its sandbox
(`item/permissions/requestApproval`). An Action is one such request in the
form a human reviews: exactly what will run (the command as Codex runs it and
its directory, every file change with its diff, the permissions asked), why
Codex says it needs it, and the answers Codex offers. A file change request
names only its item: the diff comes from the item's `item/started`
notification, which Codex sends first (pinned in
tests/integration/test_app_server_actions.py against the real binary).

The model writes these requests, so they are hostile input: anything too
large to show a reviewer, malformed, or that hides characters from a
terminal is refused (`UnreviewableAction`) or flagged (`hidden_characters`),
never passed on as something that looks harmless.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .visible import hidden_count

ActionKind = Literal["command", "file_change", "permissions"]
Answer = Literal["accept", "acceptForSession", "decline", "cancel"]
ANSWERS: tuple[Answer, ...] = ("accept", "acceptForSession", "decline", "cancel")

COMMAND_METHOD = "item/commandExecution/requestApproval"
FILE_CHANGE_METHOD = "item/fileChange/requestApproval"
PERMISSIONS_METHOD = "item/permissions/requestApproval"
METHODS: dict[str, ActionKind] = {
    COMMAND_METHOD: "command",
    FILE_CHANGE_METHOD: "file_change",
    PERMISSIONS_METHOD: "permissions",
}

# What a reviewer can be shown in full (an ApprovalRequest is one etcd object).
MAX_COMMAND = 16 * 1024
MAX_FILES = 100
MAX_DIFF_TOTAL = 128 * 1024
MAX_PATH = 4096
MAX_PATHS = 64
MAX_REASON = 2048
MAX_ID = 256

_SHELLS = ("sh", "bash", "zsh", "dash")
WHAT_RUNS = ("kind", "command", "cwd", "network_host", "changes", "permissions")


class UnreviewableAction(ValueError):
    """The request cannot be shown to a reviewer as it is: it is declined."""


class FileChange(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str = Field(max_length=MAX_PATH)
    change: Literal["add", "delete", "update"]
    move_to: str | None = Field(default=None, max_length=MAX_PATH)
    diff: str


class PermissionAsk(BaseModel):
    """Sandbox permissions asked for (Codex's RequestPermissionProfile)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    network: bool = False
    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()


class Action(BaseModel):
    """One approval request of Codex, as a reviewer sees it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: ActionKind
    thread_id: str = Field(max_length=MAX_ID)
    turn_id: str = Field(max_length=MAX_ID)
    item_id: str = Field(max_length=MAX_ID)
    # Several callbacks may share one item (a zsh-exec-bridge subcommand, stdin).
    approval_id: str | None = Field(default=None, max_length=MAX_ID)
    command: str | None = Field(default=None, max_length=MAX_COMMAND)
    cwd: str | None = Field(default=None, max_length=MAX_PATH)
    network_host: str | None = Field(default=None, max_length=MAX_PATH)
    changes: tuple[FileChange, ...] = ()
    permissions: PermissionAsk | None = None
    reason: str | None = Field(default=None, max_length=MAX_REASON)
    offered: tuple[Answer, ...]
    hidden_characters: bool = False

    @property
    def script(self) -> str | None:
        """The command without Codex's shell wrapper: `/bin/bash -lc 'make test'` -> `make test`."""
        return unwrap_shell(self.command) if self.command is not None else None

    def digest(self) -> str:
        """sha256 of what runs (kind, command, directory, host, changes, permissions):
        the same action asked again, even by another item or after a restart,
        has the same digest; Codex's ids, reason and offered answers do not count."""
        what = self.model_dump(mode="json", include=set(WHAT_RUNS))
        return hashlib.sha256(json.dumps(what, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    @property
    def paths(self) -> tuple[str, ...]:
        """Every path the action touches or asks for (the command's directory included)."""
        found: list[str] = [self.cwd] if self.cwd else []
        for change in self.changes:
            found += [change.path] + ([change.move_to] if change.move_to else [])
        if self.permissions is not None:
            found += [*self.permissions.read, *self.permissions.write]
        return tuple(found)


def unwrap_shell(command: str) -> str:
    """The script of `<shell> -c|-lc <script>`, else `command` itself."""
    try:
        argv = shlex.split(command)
    except ValueError:
        return command
    if len(argv) == 3 and argv[0].rsplit("/", 1)[-1] in _SHELLS and argv[1] in ("-c", "-lc"):
        return argv[2]
    return command


def action_from_request(
    method: str, params: Mapping[str, Any], items: Mapping[str, Mapping[str, Any]]
) -> Action:
    """The Action of app-server request `method`. `items`: the turn's items by
    id, from `item/started` (where a file change's diff is). Raises
    UnreviewableAction for anything that cannot be shown as it is."""
    kind = METHODS.get(method)
    if kind is None:
        raise UnreviewableAction(f"not an approval request this client reviews: {method[:100]!r}")
    if not isinstance(params, Mapping):
        raise UnreviewableAction("the request's params are not an object")
    ids = {key: _text(params, key, MAX_ID, required=True) for key in ("threadId", "turnId", "itemId")}
    fields: dict[str, Any] = {
        "kind": kind,
        "thread_id": ids["threadId"],
        "turn_id": ids["turnId"],
        "item_id": ids["itemId"],
        "reason": _reason(params),
    }
    if kind == "command":
        fields |= _command(params)
    elif kind == "file_change":
        fields |= _file_change(params, items.get(str(ids["itemId"])))
    else:
        fields |= _permissions(params)
    action = Action(**fields)
    shown = [action.command, action.reason, action.network_host, *action.paths]
    shown += [change.diff for change in action.changes]
    # A command can look harmless in a terminal and run something else.
    hidden = any(hidden_count(text) for text in shown if text)
    return action.model_copy(update={"hidden_characters": hidden}) if hidden else action


def answer_payload(action: Action, answer: Answer) -> dict[str, Any]:
    """The JSON-RPC result that gives Codex `answer` to `action`."""
    if answer not in ANSWERS:
        raise ValueError(f"unknown answer {answer!r}")
    if action.kind != "permissions":
        return {"decision": answer}
    if answer in ("decline", "cancel") or action.permissions is None:
        return refusal_payload(PERMISSIONS_METHOD)
    asked = action.permissions
    granted: dict[str, Any] = {}
    if asked.network:
        granted["network"] = {"enabled": True}
    if asked.read or asked.write:
        granted["fileSystem"] = {"read": list(asked.read) or None, "write": list(asked.write) or None}
    return {"permissions": granted, "scope": "session" if answer == "acceptForSession" else "turn"}


def refusal_payload(method: str) -> dict[str, Any]:
    """The answer that refuses request `method` when it could not be read as an Action."""
    if method == PERMISSIONS_METHOD:
        return {"permissions": {}, "scope": "turn"}
    return {"decision": "decline"}


def _text(params: Mapping[str, Any], key: str, limit: int, *, required: bool = False) -> str | None:
    value = params.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value):
        raise UnreviewableAction(f"{key} is not a string")
    if len(value) > limit:
        raise UnreviewableAction(f"{key} is longer than {limit} characters ({len(value)})")
    return value


def _reason(params: Mapping[str, Any]) -> str | None:
    reason = params.get("reason")
    if not isinstance(reason, str):
        return None
    # Codex's explanation is not what runs: shortened, not refused.
    return reason if len(reason) <= MAX_REASON else reason[: MAX_REASON - 1] + "…"


def _command(params: Mapping[str, Any]) -> dict[str, Any]:
    if params.get("kind", "command") != "command":
        # writeStdin (input to a running terminal) and humanCommand checkpoints
        # are not commands a reviewer can read in full here.
        raise UnreviewableAction(
            f"command approvals of kind {str(params.get('kind'))[:40]!r} are not reviewed"
        )
    command = _text(params, "command", MAX_COMMAND, required=True)
    context = params.get("networkApprovalContext")
    host = None
    if isinstance(context, Mapping):
        host = _text(context, "host", MAX_PATH)
    return {
        "command": command,
        "cwd": _path(params.get("cwd"), "cwd", required=False),
        "network_host": host,
        "approval_id": _text(params, "approvalId", MAX_ID),
        "offered": _offered(params.get("availableDecisions")),
    }


def _offered(available: Any) -> tuple[Answer, ...]:
    """The plain answers Codex offers (its schema's full set when it names none).
    Amendments (execpolicy, network rules) are not offered here: they would
    outlive the decision a reviewer makes. Decline is always possible."""
    if not isinstance(available, list):
        return ANSWERS
    named = {a for a in available if isinstance(a, str)}
    return tuple(a for a in ANSWERS if a in named or a == "decline")


def _file_change(params: Mapping[str, Any], item: Mapping[str, Any] | None) -> dict[str, Any]:
    if not isinstance(item, Mapping) or item.get("type") != "fileChange":
        raise UnreviewableAction("the file change's item was not announced: its diff is unknown")
    raw = item.get("changes")
    if not isinstance(raw, list) or not raw:
        raise UnreviewableAction("the file change lists no changes")
    if len(raw) > MAX_FILES:
        raise UnreviewableAction(
            f"the file change touches {len(raw)} files (at most {MAX_FILES} are reviewed)"
        )
    changes: list[FileChange] = []
    total = 0
    for entry in raw:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("kind"), Mapping):
            raise UnreviewableAction("a file change entry is malformed")
        diff = entry.get("diff")
        if not isinstance(diff, str):
            raise UnreviewableAction("a file change entry has no diff")
        total += len(diff)
        if total > MAX_DIFF_TOTAL:
            raise UnreviewableAction(f"the file change's diff is larger than {MAX_DIFF_TOTAL} characters")
        change = entry["kind"].get("type")
        if change not in ("add", "delete", "update"):
            raise UnreviewableAction(f"unknown file change kind {str(change)[:40]!r}")
        move = entry["kind"].get("move_path")
        changes.append(
            FileChange(
                path=_path(entry.get("path"), "path"),
                change=change,
                move_to=_path(move, "move_path", required=False),
                diff=diff,
            )
        )
    grant_root = _path(params.get("grantRoot"), "grantRoot", required=False)
    if grant_root is not None:
        # Writes under a root "for the rest of the session": a permission of its own.
        raise UnreviewableAction("a file change asking for a write root is not reviewed as a file change")
    return {"changes": tuple(changes), "offered": ANSWERS}


def _permissions(params: Mapping[str, Any]) -> dict[str, Any]:
    asked = params.get("permissions")
    if not isinstance(asked, Mapping):
        raise UnreviewableAction("the permissions asked for are not an object")
    network = asked.get("network")
    file_system = asked.get("fileSystem")
    if network is not None and not isinstance(network, Mapping):
        raise UnreviewableAction("network permissions are malformed")
    if file_system is not None and not isinstance(file_system, Mapping):
        raise UnreviewableAction("file system permissions are malformed")
    file_system = file_system or {}
    read, write = (_path_list(file_system.get(key), key) for key in ("read", "write"))
    for entry in file_system.get("entries") or []:
        # The same paths again in the newer form; any other form (globs, special
        # roots) is wider than a reviewer can check path by path.
        if not isinstance(entry, Mapping):
            raise UnreviewableAction("a permission entry is malformed")
        if entry.get("access") == "deny":
            continue  # narrows what is asked
        path = entry.get("path")
        if not isinstance(path, Mapping) or path.get("type") != "path":
            raise UnreviewableAction("permissions asked by pattern or special root are not reviewed")
        target = _path(path.get("path"), "path")
        if target not in (write if entry.get("access") == "write" else read + write):
            raise UnreviewableAction("permission entries differ from the paths listed")
    if len(read) + len(write) > MAX_PATHS:
        raise UnreviewableAction(f"more than {MAX_PATHS} paths asked for")
    ask = PermissionAsk(network=bool((network or {}).get("enabled")), read=read, write=write)
    if not (ask.network or ask.read or ask.write):
        raise UnreviewableAction("the request asks for no permission")
    return {
        "cwd": _path(params.get("cwd"), "cwd", required=False),
        "permissions": ask,
        "offered": ("accept", "acceptForSession", "decline"),
    }


def _path(value: Any, what: str, *, required: bool = True) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.startswith("/"):
        raise UnreviewableAction(f"{what} is not an absolute path")
    if len(value) > MAX_PATH or "\x00" in value:
        raise UnreviewableAction(f"{what} is too long or holds a NUL")
    return value


def _path_list(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise UnreviewableAction(f"{what} is not a list of paths")
    return tuple(str(_path(v, what)) for v in value)
