"""kubectl-codex without a cluster: rendering (tables, describe, Codex's
JSONL), the decision patch, argument parsing and bad input, and the command
logic against a fake API."""

from __future__ import annotations

import argparse
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml

from codex_api.result import RunnerResult
from codex_api.session import Usage
from codex_kubectl import cli, commands, views
from codex_kubectl.client import KubeError
from codex_kubectl.decision import closed_message, decision_patch, reason_problem
from codex_kubectl.logview import LogRenderer, render_log

NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)


def ts(seconds_ago: float) -> str:
    return (NOW - timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def session(name: str = "s1", namespace: str = "codex-sessions", **status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "codex.techsapo.io/v1alpha1",
        "kind": "CodexSession",
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": ts(300)},
        "spec": {"prompt": "Write a factorial function", "sandbox": "full-access", "requestedBy": "carol"},
        "status": status,
    }


def approval(name: str = "s1-approval", **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "codex-sessions",
            "creationTimestamp": ts(60),
            "resourceVersion": "7",
        },
        "spec": {
            "sessionRef": "s1",
            "riskLevel": "high",
            "requestedBy": "carol",
            "operation": "codex exec --sandbox full-access (mode=interactive, fullAuto=false)",
            "arguments": {"sandbox": "full-access", "mode": "interactive", "fullAuto": "false"},
            "expiresAt": (NOW + timedelta(minutes=59, seconds=30)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            **spec,
        },
    }


# --------------------------------------------------------------------------- time
@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-5, "<invalid>"),
        (0, "0s"),
        (119, "119s"),
        (125, "2m5s"),
        (600, "10m"),
        (3 * 3600 + 5 * 60, "3h5m"),
        (30 * 3600, "30h"),
        (3 * 86400 + 4 * 3600, "3d4h"),
        (40 * 86400, "40d"),
        (3 * 365 * 86400 + 86400, "3y1d"),
    ],
)
def test_human_duration_matches_kubectl(seconds: float, text: str) -> None:
    assert views.human_duration(seconds) == text


def test_relative_times() -> None:
    assert views.relative(ts(-600), NOW) == "in 10m"
    assert views.relative(ts(90), NOW) == "90s ago"
    assert views.relative(None, NOW) == "<none>" and views.age("garbage", NOW) == "<none>"


# --------------------------------------------------------------------------- tables
def test_sessions_table_columns_and_costs() -> None:
    sessions = [
        session(
            "b-running", phase="Running", riskLevel="high", model="gpt-5-codex", cost={"estimatedUsd": 0.02}
        ),
        session(
            "a-done", phase="Succeeded", riskLevel="low", cost={"estimatedUsd": 0.02, "actualUsd": 0.0043}
        ),
        session("c-new"),
    ]
    lines = views.sessions_table(sessions, NOW).splitlines()
    assert lines[0].split() == views.SESSION_COLUMNS
    assert [line.split()[0] for line in lines[1:]] == ["a-done", "b-running", "c-new"]  # sorted by name
    assert lines[1].split() == [
        "a-done",
        "Succeeded",
        "full-access",
        "low",
        "carol",
        "<none>",
        "$0.0043",
        "5m",
    ]
    assert lines[2].split()[6] == "~$0.0200"  # only an estimate so far
    assert lines[3].split() == ["c-new", "<none>", "full-access", "<none>", "carol", "<none>", "<none>", "5m"]
    # columns line up: every row starts each column at the header's offset
    offset = lines[0].index("COST")
    assert all(line[offset - 3 : offset] == "   " for line in lines)


def test_sessions_table_wide_and_all_namespaces() -> None:
    s = session(
        "s1",
        namespace="team-a",
        phase="Running",
        reason="Started",
        approvalRef="s1-approval",
        podName="s1-runner-1",
        usage={"inputTokens": 1200, "outputTokens": 300},
    )
    lines = views.sessions_table([s], NOW, wide=True, all_namespaces=True).splitlines()
    assert lines[0].split() == ["NAMESPACE", *views.SESSION_COLUMNS, *views.SESSION_WIDE_COLUMNS]
    assert lines[1].split()[:2] == ["team-a", "s1"]
    assert lines[1].split()[-4:] == ["Started", "s1-approval", "s1-runner-1", "1200/300"]


def test_pending_table_names_the_reasons() -> None:
    owner = session(
        conditions=[{"type": "Approved", "status": "Unknown", "message": "auto_approve_full_access is false"}]
    )
    ci = approval(
        "ci-approval", sessionRef="ci", arguments={"sandbox": "isolated", "mode": "ci", "fullAuto": "true"}
    )
    table = views.pending_table([approval(), ci], {("codex-sessions", "s1"): owner}, NOW)
    header, first, second = table.splitlines()
    assert header.split() == views.PENDING_COLUMNS
    assert first.split()[:4] == ["ci-approval", "ci", "high", "carol"]
    assert "sandbox isolated, fullAuto, ci mode" in first
    assert "sandbox full-access, auto_approve_full_access is false" in second
    assert second.endswith("in 59m")


def test_only_undecided_requests_are_pending() -> None:
    assert views.is_pending(approval())
    assert views.is_pending({**approval(), "status": {"phase": "Pending"}})
    assert not views.is_pending(approval(decision="Approved", decidedBy="alice"))
    assert not views.is_pending({**approval(), "status": {"phase": "Expired"}})


def test_json_yaml_and_name_output() -> None:
    items = [session("b"), session("a")]
    doc = json.loads(views.dump(views.as_list(items), "json"))
    assert doc["kind"] == "List" and [i["metadata"]["name"] for i in doc["items"]] == ["a", "b"]
    assert yaml.safe_load(views.dump(views.as_list(items), "yaml")) == doc
    assert views.names_only(items, "codexsession.codex.techsapo.io") == (
        "codexsession.codex.techsapo.io/a\ncodexsession.codex.techsapo.io/b"
    )
    with pytest.raises(ValueError):
        views.dump({}, "xml")


# --------------------------------------------------------------------------- describe
def test_describe_a_finished_session() -> None:
    s = session(
        phase="Succeeded",
        reason="Completed",
        riskLevel="high",
        model="gpt-5-codex",
        approvalRef="s1-approval",
        podName="s1-runner-1",
        response="def f(n):\n    return n",
        usage={"inputTokens": 1200, "cachedInputTokens": 200, "outputTokens": 300, "reasoningTokens": 50},
        cost={
            "estimatedUsd": 0.02,
            "actualUsd": 0.0043,
            "providers": [{"provider": "openai", "actualUsd": 0.0043}],
        },
        timings={"startedAt": ts(20), "completedAt": ts(8), "durationSeconds": 12.04},
        conditions=[
            {"type": "Approved", "status": "True", "reason": "Approved", "message": "approved by alice"}
        ],
    )
    s["spec"]["prompt"] = "Explain " + "this code " * 100
    decided = {
        **approval(decision="Approved", decidedBy="alice", reason="ok"),
        "status": {"phase": "Approved", "decidedAt": ts(25)},
    }
    events = [
        {
            "type": "Normal",
            "reason": "Succeeded",
            "message": "the turn completed",
            "lastTimestamp": ts(8),
            "involvedObject": {"kind": "CodexSession", "name": "s1"},
            "reportingComponent": "codex-operator",
        },
        {
            "type": "Normal",
            "reason": "ApprovalRequested",
            "message": "high risk",
            "lastTimestamp": ts(60),
            "involvedObject": {"kind": "CodexSession", "name": "s1"},
            "source": {"component": "codex-operator"},
        },
    ]
    text = views.describe_session(s, decided, events, NOW)
    lines = text.splitlines()
    prompt = next(line for line in lines if line.startswith("  Prompt:"))
    assert prompt.endswith("...") and len(prompt) < 240
    for fragment in [
        "Name:       s1",
        "  Phase:   Succeeded",
        "Result:\n  def f(n):\n      return n",
        "  Input tokens:   1200 (200 cached)",
        "  Actual:     $0.0043",
        "  Duration:   12.0s",
        "  Decision:    Approved by alice: ok",
        "  Decided at:  ",
    ]:
        assert fragment in text, f"{fragment!r} not in:\n{text}"
    events_part = text.split("Events:\n", 1)[1].splitlines()
    assert events_part[0].split() == ["TYPE", "REASON", "AGE", "OBJECT", "FROM", "MESSAGE"]
    assert events_part[1].split()[:4] == ["Normal", "ApprovalRequested", "60s", "cxs/s1"]  # oldest first
    assert events_part[2].split()[:5] == ["Normal", "Succeeded", "8s", "cxs/s1", "codex-operator"]


def test_describe_without_permission_for_events_or_approval() -> None:
    text = views.describe_session(
        session(phase="AwaitingApproval", approvalRef="s1-approval"),
        None,
        None,
        NOW,
        events_error="Forbidden: events is forbidden",
        approval_error="Forbidden",
    )
    assert "Conditions:\n  <none>" in text
    assert "Approval:\n  s1-approval: <unavailable: Forbidden>" in text
    assert text.endswith("Events:  <unavailable: Forbidden: events is forbidden>")
    assert views.describe_session(session(phase="Running"), None, [], NOW).endswith(
        "Approval:\n  not needed\nEvents:  <none>"
    )


# --------------------------------------------------------------------------- Codex's JSONL
def jsonl(*events: dict[str, Any]) -> str:
    return "\n".join(json.dumps(e) for e in events)


def test_log_renders_codex_events_readably() -> None:
    result = RunnerResult(
        outcome="completed",
        thread_id="t-1",
        final_message="Done.",
        usage=Usage(input_tokens=100, output_tokens=7),
        commands=1,
        file_changes=2,
        duration_seconds=2.25,
    )
    text = "\n".join(
        [
            "codex-runner: starting turn",
            jsonl(
                {"type": "thread.started", "thread_id": "t-1"},
                {"type": "turn.started"},
                {"type": "item.started", "item": {"type": "command_execution", "command": "ls"}},
                {"type": "item.completed", "item": {"type": "reasoning", "text": "Looking  at\nfiles"}},
                {
                    "type": "item.completed",
                    "item": {
                        "type": "command_execution",
                        "command": "ls -la",
                        "exit_code": 0,
                        "aggregated_output": "\n".join(f"line {i}" for i in range(8)),
                    },
                },
                {
                    "type": "item.completed",
                    "item": {
                        "type": "file_change",
                        "changes": [{"kind": "add", "path": "a.py"}, {"path": "b.py"}],
                    },
                },
                {"type": "item.completed", "item": {"type": "agent_message", "text": "Done."}},
                {
                    "type": "turn.completed",
                    "usage": {"input_tokens": 100, "cached_input_tokens": 40, "output_tokens": 7},
                },
                {"type": "some.new_event"},
            ),
            result.frame(),
        ]
    )
    assert render_log(text) == [
        "codex-runner: starting turn",
        "== thread t-1 started",
        "== turn started",
        "thinking: Looking at files",
        "$ ls -la   (exit 0)",
        "    line 0",
        "    line 1",
        "    line 2",
        "    line 3",
        "    line 4",
        "    ... 3 more lines",
        "files changed: add a.py, update b.py",
        "codex:",
        "    Done.",
        "== turn completed: 100 input tokens (40 cached), 7 output (0 reasoning)",
        "[some.new_event]",
        # the final message was already shown as Codex's message: not repeated
        "== result: completed, exit 0, 1 command, 2 file changes, 2.2s",
        "   thread: t-1",
        "   usage: 100 input tokens (0 cached), 7 output (0 reasoning)",
    ]


def test_log_failures_and_a_frame_with_its_own_message() -> None:
    renderer = LogRenderer()
    assert renderer.feed(json.dumps({"type": "error", "message": "stream disconnected"})) == [
        "error: stream disconnected"
    ]
    assert renderer.feed(json.dumps({"type": "turn.failed", "error": {"message": "quota"}})) == [
        "== turn failed: quota"
    ]
    assert renderer.feed("") == [] and renderer.feed("[1, 2]") == ["[1, 2]"]
    frame = RunnerResult(
        outcome="turn_failed", exit_code=1, errors=["quota"], final_message="partial"
    ).frame()
    lines = renderer.feed(frame)
    assert lines[0] == "== result: turn_failed, exit 1, 0 commands, 0 file changes"
    assert "   error: quota" in lines and lines[-2:] == ["final message:", "    partial"]
    assert renderer.feed("::codex-result::{not json") == ["::codex-result::{not json"]


# --------------------------------------------------------------------------- the decision
def test_decision_patch_is_the_documented_kubectl_patch_with_my_name() -> None:
    assert decision_patch("Approved", "alice", None, "7") == {
        "spec": {"decision": "Approved", "decidedBy": "alice"},
        "metadata": {"resourceVersion": "7"},
    }
    assert decision_patch("Denied", None, "  not on prod data ", None) == {
        "spec": {"decision": "Denied", "reason": "not on prod data"}
    }


def test_reasons() -> None:
    assert reason_problem("Approved", None) is None
    assert reason_problem("Denied", "because") is None
    assert "deny needs a reason" in str(reason_problem("Denied", None))
    assert "deny needs a reason" in str(reason_problem("Denied", "   "))
    assert "must not be empty" in str(reason_problem("Approved", " "))
    assert "at most 1024" in str(reason_problem("Approved", "x" * 1025))


def test_closed_requests() -> None:
    assert closed_message(approval()) is None
    decided = closed_message(approval(decision="Denied", decidedBy="bob", reason="no"))
    assert (
        decided == 'ApprovalRequest "s1-approval" is already decided (Denied by bob: no); a decision is final'
    )
    assert "expired at" in str(closed_message({**approval(), "status": {"phase": "Expired"}}))


# --------------------------------------------------------------------------- arguments
def test_options_before_or_after_the_command() -> None:
    args = cli.parse(["-n", "team-a", "--kubeconfig", "k", "pending", "-A", "-o", "wide"])
    assert (args.namespace, args.kubeconfig, args.all_namespaces, args.output) == (
        "team-a",
        "k",
        True,
        "wide",
    )
    args = cli.parse(["approve", "s1", "--context", "prod", "-n", "team-b", "--reason", "ok"])
    assert (args.command, args.name, args.context, args.namespace, args.reason) == (
        "approve",
        "s1",
        "prod",
        "team-b",
        "ok",
    )
    # given before the command, not overwritten by the command's own (absent) option
    assert cli.parse(["--namespace", "x", "list"]).namespace == "x"
    assert cli.parse(["list"]).namespace is None
    assert cli.parse(["logs", "s1", "-f", "--raw"]).follow is True


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["deny", "s1"], "the following arguments are required: --reason"),
        (["deny", "s1", "--reason", ""], "deny needs a reason"),
        (["approve", "s1", "--reason", "x" * 2000], "at most 1024"),
        (["approve"], "the following arguments are required: NAME"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["list", "-o", "xml"], "argument -o/--output: invalid choice: 'xml'"),
        (["logs", "s1", "--tail"], "unrecognized arguments: --tail"),
        ([], "the following arguments are required: COMMAND"),
    ],
)
def test_bad_input_is_a_usage_error(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "usage: kubectl-codex" in err


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("kubectl-codex ")
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("list", "describe", "logs", "pending", "approve", "deny"):
        assert command in out


def test_a_missing_kubeconfig_is_reported(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--kubeconfig", str(tmp_path / "none.yaml"), "list"]) == 1
    assert f"error: cannot load {tmp_path / 'none.yaml'}" in capsys.readouterr().err


# --------------------------------------------------------------------------- commands on a fake API
class FakeApi:
    """The CodexApi methods the commands use, over in-memory objects."""

    def __init__(self, *objects: dict[str, Any], user: str = "alice") -> None:
        self.objects = {(self._plural(o), o["metadata"]["name"]): o for o in objects}
        self.user = user
        self.patches: list[dict[str, Any]] = []
        self.conflicts: list[dict[str, Any]] = []  # what the next patches find instead (a 409)
        self.refusal: KubeError | None = None

    @staticmethod
    def _plural(obj: dict[str, Any]) -> str:
        return "codexsessions" if "prompt" in obj.get("spec", {}) else "approvalrequests"

    def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects.get((plural, name))

    def whoami(self) -> str:
        if not self.user:
            raise KubeError("selfsubjectreviews is forbidden", 403, "Forbidden")
        return self.user

    def patch_approval(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        self.patches.append(patch)
        if self.refusal:
            raise self.refusal
        if self.conflicts:
            self.objects[("approvalrequests", name)] = self.conflicts.pop(0)
            raise KubeError("the object has been modified", 409, "Conflict")
        current = self.objects[("approvalrequests", name)]
        return {**current, "spec": {**current["spec"], **patch["spec"]}}

    def runner_pod(self, namespace: str, s: dict[str, Any]) -> dict[str, Any] | None:
        return None


def run(api: FakeApi, handler: Any, **kwargs: Any) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    args = argparse.Namespace(namespace="codex-sessions", reason=None, follow=False, raw=False, **kwargs)
    code = handler(api, args, commands.Io(out, err))
    return code, out.getvalue(), err.getvalue()


def test_approve_by_session_name_sends_my_name() -> None:
    api = FakeApi(session(approvalRef="s1-approval"), approval())
    code, out, _ = run(api, lambda a, args, o: commands.cmd_decide(a, args, o, "Approved"), name="s1")
    assert code == 0 and out == "approvalrequest/s1-approval approved by alice (session s1)\n"
    assert api.patches == [
        {"spec": {"decision": "Approved", "decidedBy": "alice"}, "metadata": {"resourceVersion": "7"}}
    ]


def test_a_concurrent_decision_wins_and_is_reported() -> None:
    api = FakeApi(approval())
    api.conflicts = [approval(decision="Approved", decidedBy="bob")]
    code, _, err = run(api, lambda a, args, o: commands.cmd_decide(a, args, o, "Denied"), name="s1-approval")
    assert code == 1 and "already decided (Approved by bob)" in err and len(api.patches) == 1


def test_a_status_write_in_between_is_retried() -> None:
    api = FakeApi(approval())
    api.conflicts = [{**approval(), "status": {"phase": "Pending"}}]
    code, out, _ = run(
        api, lambda a, args, o: commands.cmd_decide(a, args, o, "Approved"), name="s1-approval"
    )
    assert code == 0 and "approved by alice" in out and len(api.patches) == 2


def test_the_api_servers_refusal_is_shown() -> None:
    api = FakeApi(approval(), user="carol")
    api.refusal = KubeError(
        "... denied request: carol requested this session and cannot decide", 403, "Forbidden"
    )
    code, out, err = run(
        api, lambda a, args, o: commands.cmd_decide(a, args, o, "Approved"), name="s1-approval"
    )
    assert code == 1 and out == ""
    assert (
        err
        == "Error from server (Forbidden): ... denied request: carol requested this session and cannot decide\n"
    )


def test_without_a_username_the_webhook_is_left_to_stamp_it() -> None:
    api = FakeApi(approval(), user="")
    code, _, err = run(
        api, lambda a, args, o: commands.cmd_decide(a, args, o, "Approved"), name="s1-approval"
    )
    assert code == 0 and "warning: cannot tell who you are" in err
    assert api.patches[0]["spec"] == {"decision": "Approved"}


def test_unknown_names_are_named() -> None:
    api = FakeApi(session("auto", phase="Running"))
    with pytest.raises(
        commands.NotFound, match='no ApprovalRequest or CodexSession named "nope" in namespace'
    ):
        commands.find_approval(api, "codex-sessions", "nope")
    with pytest.raises(commands.NotFound, match=r'"auto" has no ApprovalRequest \(phase Running\)'):
        commands.find_approval(api, "codex-sessions", "auto")
    with pytest.raises(commands.NotFound, match='no CodexSession \\(or ApprovalRequest\\) named "nope"'):
        commands.find_session(api, "codex-sessions", "nope")


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (
            {"phase": "Queued", "message": "waiting for a slot"},
            'no runner pod yet for session "s1" (phase Queued: waiting for a slot)',
        ),
        (
            {"phase": "Denied", "message": "denied by bob: no"},
            'session "s1" never ran a runner pod (phase Denied: denied by bob: no)',
        ),
        (
            {"phase": "Succeeded", "podName": "s1-runner-1"},
            'the runner pod of session "s1" is gone (phase Succeeded)',
        ),
    ],
)
def test_logs_without_a_pod(status: dict[str, Any], message: str) -> None:
    code, _, err = run(FakeApi(session(**status)), commands.cmd_logs, name="s1")
    assert code == 1 and message in err


class PodApi(FakeApi):
    def __init__(self, lines: list[str], pod: dict[str, Any]) -> None:
        super().__init__(session(phase="Running", podName="s1-runner-1"))
        self.lines, self.pod = lines, pod

    def runner_pod(self, namespace: str, s: dict[str, Any]) -> dict[str, Any] | None:
        return self.pod

    def follow_log(self, namespace: str, pod: str) -> Any:
        yield from self.lines

    def pod_log(self, namespace: str, pod: str) -> str:
        return "\n".join(self.lines)


POD = {"metadata": {"name": "s1-runner-1"}, "status": {"phase": "Running"}}


@pytest.mark.parametrize("follow", [False, True])
def test_logs_render_line_by_line(follow: bool) -> None:
    lines = [json.dumps({"type": "thread.started", "thread_id": "t-9"}), "plain text from the runner"]
    api = PodApi(lines, POD)
    code, out, _ = run(
        api,
        lambda a, args, o: commands.cmd_logs(a, argparse.Namespace(**{**vars(args), "follow": follow}), o),
        name="s1",
    )
    assert code == 0 and out == "== thread t-9 started\nplain text from the runner\n"
    code, out, _ = run(
        api,
        lambda a, args, o: commands.cmd_logs(a, argparse.Namespace(**{**vars(args), "raw": True}), o),
        name="s1",
    )
    assert out.splitlines() == lines


def test_an_empty_log_says_why() -> None:
    pending = {
        "metadata": {"name": "s1-runner-1"},
        "status": {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/1 nodes are available",
                }
            ],
        },
    }
    code, out, err = run(PodApi([], pending), commands.cmd_logs, name="s1")
    assert code == 1 and out == ""
    assert err == (
        "error: runner pod s1-runner-1 has not started yet "
        "(pod phase Pending: Unschedulable: 0/1 nodes are available)\n"
    )
