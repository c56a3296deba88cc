"""`kubectl-codex`, run as installed (.venv/bin/kubectl-codex, and once through
kubectl's own plugin lookup), against the real API server with the real
operator and the project's admission policies, as distinct static-token
users: carol asks, alice and bob decide, mallory is an outsider."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from codex_api import admission, names
from codex_api.common import GROUP, VERSION
from codex_api.result import RunnerResult
from codex_api.session import Usage
from codex_devenv.admission_kit import ScopedAdmission
from codex_devenv.testkit import finish_pod, phase_is, session_body, wait_session

REPO = Path(__file__).resolve().parents[2]
PLUGIN = REPO / ".venv" / "bin" / "kubectl-codex"


@pytest.fixture
def policies(control_plane: Any, client_for: Any, namespace: str) -> Any:
    installed = ScopedAdmission(control_plane, namespace).install(client_for)
    # Approvers may read what runs: pods, their logs and the events.
    reader = [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "codex-readers", "namespace": namespace},
            "rules": [
                {"apiGroups": [""], "resources": ["pods", "pods/log", "events"], "verbs": ["get", "list"]}
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "codex-readers", "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "codex-readers"},
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": u} for u in ("alice", "bob")
            ],
        },
    ]
    control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(reader))
    yield installed
    installed.uninstall()


def plugin(control_plane: Any, user: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(PLUGIN), "--kubeconfig", str(control_plane.kubeconfig(user)), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _approval(kube_client: Any, namespace: str, name: str) -> dict[str, Any]:
    return dict(
        client.CustomObjectsApi(kube_client).get_namespaced_custom_object(
            GROUP, VERSION, namespace, "approvalrequests", name
        )
    )


def _create_as_carol(client_for: Any, namespace: str, name: str, **spec: Any) -> None:
    client.CustomObjectsApi(client_for("carol")).create_namespaced_custom_object(
        GROUP, VERSION, namespace, "codexsessions", session_body(name, requestedBy="carol", **spec)
    )


def _rows(stdout: str) -> dict[str, list[str]]:
    """A table's rows by their first column; cells are three or more spaces apart."""
    lines = stdout.splitlines()
    return {line.split()[0]: [c.strip() for c in line.split("   ") if c.strip()] for line in lines[1:]}


def test_two_approvers_decide_for_real(
    control_plane: Any, kube_client: Any, client_for: Any, namespace: str, run_operator: Any, policies: Any
) -> None:
    ns = namespace
    run_operator()
    _create_as_carol(client_for, ns, "risky", sandbox="full-access", businessJustification="hotfix for prod")
    _create_as_carol(client_for, ns, "other", sandbox="full-access", prompt="Refactor the billing module")
    for name in ("risky", "other"):
        wait_session(kube_client, ns, name, phase_is("AwaitingApproval"))

    # pending, as an approver: both requests, with what makes them need a human.
    pending = plugin(control_plane, "alice", "pending", "-n", ns)
    assert pending.returncode == 0, pending.stderr
    header = pending.stdout.splitlines()[0].split()
    assert header == ["NAME", "SESSION", "RISK", "REQUESTER", "REASONS", "EXPIRES"]
    rows = _rows(pending.stdout)
    assert set(rows) == {"risky-approval", "other-approval"}
    name, session, risk, requester, reasons, expires = rows["risky-approval"]
    assert (session, risk, requester) == ("risky", "high", "carol")
    assert "sandbox full-access" in reasons and "auto_approve_full_access is false" in reasons
    assert expires.startswith("in ")
    as_json = json.loads(plugin(control_plane, "alice", "pending", "-n", ns, "-o", "json").stdout)
    assert sorted(i["metadata"]["name"] for i in as_json["items"]) == ["other-approval", "risky-approval"]

    waiting = plugin(control_plane, "alice", "logs", "risky", "-n", ns)
    assert waiting.returncode == 1
    assert 'no runner pod yet for session "risky" (phase AwaitingApproval: high risk:' in waiting.stderr

    # The requester cannot approve her own request: the API server's policy says so.
    own = plugin(control_plane, "carol", "approve", "risky", "-n", ns)
    assert own.returncode == 1, own.stdout
    assert "Error from server (Forbidden)" in own.stderr
    assert f"carol requested this session and {admission.MSG_OWN_REQUEST}" in own.stderr
    # An outsider is not in the approver group for a high risk.
    outsider = plugin(control_plane, "mallory", "approve", "risky-approval", "-n", ns)
    assert outsider.returncode == 1
    assert admission.MSG_APPROVER_GROUP in outsider.stderr and "mallory is in none of them" in outsider.stderr
    assert "decision" not in _approval(kube_client, ns, "risky-approval")["spec"]

    # alice approves, by the request's name: recorded as hers, and the session moves on.
    ok = plugin(control_plane, "alice", "approve", "risky-approval", "-n", ns, "--reason", "hotfix is fine")
    assert ok.returncode == 0, ok.stderr
    assert (
        ok.stdout.strip()
        == "approvalrequest/risky-approval approved by alice (session risky): hotfix is fine"
    )
    ar = _approval(kube_client, ns, "risky-approval")
    assert ar["spec"]["decision"] == "Approved" and ar["spec"]["decidedBy"] == "alice"
    assert ar["spec"]["reason"] == "hotfix is fine"
    s = wait_session(kube_client, ns, "risky", phase_is("Queued", "Running"))
    assert _approval(kube_client, ns, "risky-approval")["status"]["decidedBy"] == "alice"
    assert {c["type"]: c["message"] for c in s["status"]["conditions"]}["Approved"] == "approved by alice"

    # A decision is final.
    again = plugin(control_plane, "bob", "deny", "risky", "-n", ns, "--reason", "changed my mind")
    assert again.returncode == 1
    assert "already decided (Approved by alice: hotfix is fine)" in again.stderr

    # bob denies the other one, by the session's name, with a reason.
    denied = plugin(control_plane, "bob", "deny", "other", "-n", ns, "--reason", "not on prod data")
    assert denied.returncode == 0, denied.stderr
    assert (
        denied.stdout.strip()
        == "approvalrequest/other-approval denied by bob (session other): not on prod data"
    )
    s = wait_session(kube_client, ns, "other", phase_is("Denied"))
    assert s["status"]["message"] == "denied by bob: not on prod data"
    ar = _approval(kube_client, ns, "other-approval")
    assert ar["spec"]["decidedBy"] == "bob" and ar["spec"]["decision"] == "Denied"

    # Nothing is pending any more.
    empty = plugin(control_plane, "alice", "pending", "-n", ns)
    assert empty.returncode == 0 and empty.stdout == ""
    assert f"No pending approvals found in {ns} namespace." in empty.stderr

    # Bad input: a usage error (2) before any request; an unknown name (1).
    no_reason = plugin(control_plane, "bob", "deny", "other", "-n", ns)
    assert no_reason.returncode == 2 and "--reason" in no_reason.stderr
    unknown = plugin(control_plane, "alice", "approve", "nope", "-n", ns)
    assert unknown.returncode == 1
    assert f'no ApprovalRequest or CodexSession named "nope" in namespace "{ns}"' in unknown.stderr

    # list, describe and logs on the same sessions.
    _list_describe_logs(control_plane, kube_client, ns)


def _list_describe_logs(control_plane: Any, kube_client: Any, ns: str) -> None:
    listed = plugin(control_plane, "alice", "list", "-n", ns)
    assert listed.returncode == 0, listed.stderr
    header = listed.stdout.splitlines()[0].split()
    assert header == ["NAME", "PHASE", "SANDBOX", "RISK", "REQUESTER", "MODEL", "COST", "AGE"]
    rows = _rows(listed.stdout)
    assert rows["other"][:6] == ["other", "Denied", "full-access", "high", "carol", "gpt-5-codex"]
    assert rows["risky"][1] in ("Queued", "Running") and rows["risky"][6].startswith("~$")

    # No runner pod for a denied session; a pod that was never scheduled has no log.
    never = plugin(control_plane, "alice", "logs", "other", "-n", ns)
    assert never.returncode == 1
    assert (
        'session "other" never ran a runner pod (phase Denied: denied by bob: not on prod data)'
        in never.stderr
    )
    pod = wait_session(kube_client, ns, "risky", phase_is("Running"))["status"]["podName"]
    assert pod == names.runner_pod("risky", 1)
    unscheduled = plugin(control_plane, "alice", "logs", "risky", "-n", ns)
    assert unscheduled.returncode == 1
    assert f"runner pod {pod} has not started yet (pod phase Pending" in unscheduled.stderr

    # The turn ends (the test plays the node); without a node there is still no
    # log, so logs shows the result the runner left in its termination message.
    result = RunnerResult(
        outcome="completed",
        thread_id="thread-42",
        final_message="def factorial(n):\n    return 1 if n < 2 else n * factorial(n - 1)",
        usage=Usage(input_tokens=1200, cached_input_tokens=200, output_tokens=300, reasoning_tokens=50),
        commands=2,
        file_changes=1,
        duration_seconds=3.5,
    )
    finish_pod(kube_client, ns, pod, result)
    wait_session(kube_client, ns, "risky", phase_is("Succeeded"))
    logs = plugin(control_plane, "bob", "logs", "risky", "-n", ns)
    assert logs.returncode == 0, logs.stderr
    assert "termination message" in logs.stderr
    assert logs.stdout.splitlines()[:2] == [
        "== result: completed, exit 0, 2 commands, 1 file change, 3.5s",
        "   thread: thread-42",
    ]
    assert "        return 1 if n < 2 else n * factorial(n - 1)" in logs.stdout.splitlines()
    raw = plugin(control_plane, "bob", "logs", "risky", "-n", ns, "--raw")
    assert raw.stdout.startswith("::codex-result::{")
    denied_logs = plugin(control_plane, "carol", "logs", "risky", "-n", ns)  # carol may not read pods
    assert denied_logs.returncode == 1 and "Error from server (Forbidden)" in denied_logs.stderr

    described = plugin(control_plane, "alice", "describe", "risky", "-n", ns)
    assert described.returncode == 0, described.stderr
    text = described.stdout
    for fragment in [
        "Name:       risky",
        "Requester:  carol",
        "  Sandbox:        full-access",
        "  Justification:  hotfix for prod",
        "  Phase:         Succeeded",
        "  Risk:          high",
        "  Thread:        thread-42",
        "Result:\n  def factorial(n):\n      return 1 if n < 2",
        "  Input tokens:   1200 (200 cached)",
        "  Output tokens:  300 (50 reasoning)",
        "  Decision:    Approved by alice: hotfix is fine",
    ]:
        assert fragment in text, f"{fragment!r} not in:\n{text}"
    events = text.split("Events:", 1)[1]
    assert "ApprovalRequested" in events and "cxs/risky" in events and "cxar/risky-approval" in events
    # carol may read her session but not the events: the description says so and still works.
    as_carol = plugin(control_plane, "carol", "describe", "risky-approval", "-n", ns)
    assert as_carol.returncode == 0, as_carol.stderr
    assert "Events:  <unavailable: Forbidden" in as_carol.stdout and "Name:       risky" in as_carol.stdout

    wide = plugin(control_plane, "alice", "list", "-n", ns, "-o", "wide")
    assert wide.stdout.splitlines()[0].split()[-4:] == ["REASON", "APPROVAL", "POD", "TOKENS"]
    assert _rows(wide.stdout)["risky"][-3:] == ["risky-approval", pod, "1200/300"]
    as_yaml = yaml.safe_load(plugin(control_plane, "alice", "list", "-n", ns, "-o", "yaml").stdout)
    assert [i["metadata"]["name"] for i in as_yaml["items"]] == ["other", "risky"]
    everywhere = plugin(control_plane, "admin", "list", "-A")
    assert everywhere.stdout.splitlines()[0].split()[:2] == ["NAMESPACE", "NAME"]
    assert any(line.split()[:2] == [ns, "risky"] for line in everywhere.stdout.splitlines())


def test_namespace_and_context_come_from_the_kubeconfig(
    control_plane: Any, client_for: Any, namespace: str, policies: Any, tmp_path: Path
) -> None:
    _create_as_carol(client_for, namespace, "mine")
    config = yaml.safe_load(control_plane.kubeconfig("carol").read_text())
    config["contexts"][0]["context"]["namespace"] = namespace
    kubeconfig = tmp_path / "carol.yaml"
    kubeconfig.write_text(yaml.safe_dump(config))
    run = [str(PLUGIN), "--kubeconfig", str(kubeconfig)]
    listed = subprocess.run([*run, "list", "-o", "name"], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.strip() == "codexsession.codex.techsapo.io/mine"
    # Options after the command work as well as before it; an explicit -n wins.
    elsewhere = subprocess.run(
        [*run, "list", "-n", "codex-sessions-nowhere"], capture_output=True, text=True, timeout=60
    )
    assert elsewhere.returncode == 1 and "Forbidden" in elsewhere.stderr  # carol's Role is per namespace
    bad_context = subprocess.run(
        [*run, "--context", "nope", "list"], capture_output=True, text=True, timeout=60
    )
    assert bad_context.returncode == 1
    assert 'context "nope" not found in the kubeconfig (contexts: carol)' in bad_context.stderr
    # kubectl finds the plugin on PATH and runs it as `kubectl codex`.
    env = {**os.environ, "PATH": f"{PLUGIN.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    via_kubectl = subprocess.run(
        [str(control_plane.bin_dir / "kubectl"), "codex", "list", "--kubeconfig", str(kubeconfig)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert via_kubectl.returncode == 0, via_kubectl.stderr
    assert _rows(via_kubectl.stdout)["mine"][:5] == ["mine", "<none>", "read-only", "<none>", "carol"]
