"""One function per command: read through CodexApi, render with views and
logview, print, and return the exit code. The parsing is cli.py's."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

from codex_api import names
from codex_api.result import parse_frame
from codex_api.session import TERMINAL_PHASES
from codex_api.status import session_status

from . import verify, views
from .client import APPROVALS, SESSIONS, CodexApi, KubeError
from .decision import Decision, closed_message, decision_patch, for_session_problem
from .logview import LogRenderer, render_result

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
DECIDE_ATTEMPTS = 3


class NotFound(Exception):
    pass


class Io:
    def __init__(self, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.out = out or sys.stdout
        self.err = err or sys.stderr

    def print(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def error(self, text: str) -> None:
        print(text, file=self.err, flush=True)


def _now() -> datetime:
    return datetime.now(UTC)


def _scope(args: argparse.Namespace) -> str | None:
    return None if getattr(args, "all_namespaces", False) else args.namespace


def _no_resources(io: Io, args: argparse.Namespace, what: str) -> None:
    where = "any namespace" if _scope(args) is None else f"{args.namespace} namespace"
    io.error(f"No {what} found in {where}.")


# --------------------------------------------------------------------------- list
def cmd_list(api: CodexApi, args: argparse.Namespace, io: Io) -> int:
    sessions = api.list_objects(SESSIONS, _scope(args))

    def text(items: list[dict[str, Any]]) -> str:
        return views.sessions_table(
            items, _now(), wide=args.output == "wide", all_namespaces=_scope(args) is None
        )

    return _print_objects(io, args, sessions, "codexsession.codex.techsapo.io", "sessions", text)


def _print_objects(
    io: Io,
    args: argparse.Namespace,
    items: list[dict[str, Any]],
    resource: str,
    what: str,
    text: Callable[[list[dict[str, Any]]], str],
) -> int:
    if args.output in ("json", "yaml"):
        io.print(views.dump(views.as_list(items), args.output))
    elif not items:
        _no_resources(io, args, what)
    elif args.output == "name":
        io.print(views.names_only(items, resource))
    else:
        io.print(text(items))
    return EXIT_OK


# --------------------------------------------------------------------------- pending
def cmd_pending(api: CodexApi, args: argparse.Namespace, io: Io) -> int:
    scope = _scope(args)
    approvals = [a for a in api.list_objects(APPROVALS, scope) if views.is_pending(a)]
    # For the policy reason in REASONS and the binding check in DIGEST; approvers
    # may not be allowed to list sessions (None: unknown, which is not "gone").
    sessions: dict[tuple[str, str], dict[str, Any]] | None = None
    table = approvals and args.output not in ("json", "yaml", "name")
    if table:
        try:
            sessions = {
                (s["metadata"].get("namespace", ""), s["metadata"]["name"]): s
                for s in api.list_objects(SESSIONS, scope)
            }
        except KubeError:
            sessions = None

    def text(items: list[dict[str, Any]]) -> str:
        return views.pending_table(
            items, sessions, _now(), wide=args.output == "wide", all_namespaces=scope is None
        )

    code = _print_objects(io, args, approvals, "approvalrequest.codex.techsapo.io", "pending approvals", text)
    if table:
        # The table shortens; say where the whole of it is (stderr: stdout stays a table).
        io.error(views.PENDING_HINT)
    return code


# --------------------------------------------------------------------------- lookups
def find_session(api: CodexApi, namespace: str, name: str) -> dict[str, Any]:
    """A CodexSession by its name, or by the name of its ApprovalRequest."""
    session = api.get(SESSIONS, namespace, name)
    if session is not None:
        return session
    approval = api.get(APPROVALS, namespace, name)
    if approval is not None:
        ref = (approval.get("spec") or {}).get("sessionRef", "")
        session = api.get(SESSIONS, namespace, ref) if ref else None
        if session is not None:
            return session
        raise NotFound(
            f'ApprovalRequest "{name}" names session "{ref}", which does not exist in namespace "{namespace}"'
        )
    raise NotFound(f'no CodexSession (or ApprovalRequest) named "{name}" in namespace "{namespace}"')


def find_approval(api: CodexApi, namespace: str, name: str) -> dict[str, Any]:
    """An ApprovalRequest by its name, or by the name of its session."""
    approval = api.get(APPROVALS, namespace, name)
    if approval is not None:
        return approval
    session = api.get(SESSIONS, namespace, name)
    if session is None:
        raise NotFound(f'no ApprovalRequest or CodexSession named "{name}" in namespace "{namespace}"')
    status = session_status(session)
    ref = status.approval_ref or names.approval_request(name)
    approval = api.get(APPROVALS, namespace, ref)
    if approval is None:
        phase = status.phase or "Pending"
        raise NotFound(
            f'CodexSession "{name}" has no ApprovalRequest (phase {phase}): there is nothing to decide'
        )
    other = (approval.get("spec") or {}).get("sessionRef")
    if other != name:  # never decide one session's request by naming another session
        raise NotFound(
            f'ApprovalRequest "{ref}" is for session "{other}", not "{name}": name the request itself'
        )
    return approval


# --------------------------------------------------------------------------- describe
def _events(api: CodexApi, ns: str, objects: list[str]) -> tuple[list[dict[str, Any]] | None, str | None]:
    try:
        return api.events_for(ns, objects), None
    except KubeError as err:
        return None, f"{err.reason or err.status}: {err.message}" if err.status else err.message


def cmd_describe(api: CodexApi, args: argparse.Namespace, io: Io) -> int:
    """NAME is looked up as an ApprovalRequest first, as `approve NAME` does: the
    description an approver reads is of the request that NAME approves."""
    ns = args.namespace
    approval: dict[str, Any] | None = None
    approval_error = None
    forbidden: KubeError | None = None
    try:
        approval = api.get(APPROVALS, ns, args.name)
    except KubeError as err:
        if err.status != 403:  # may not read requests: describe the session without one
            raise
        forbidden, approval_error = err, err.reason or err.message
    if approval is not None:
        ref = (approval.get("spec") or {}).get("sessionRef", "")
        session = api.get(SESSIONS, ns, ref) if ref else None
        if ref != args.name and _exists(api, SESSIONS, ns, args.name):
            io.error(
                f'note: "{args.name}" names both an ApprovalRequest and a CodexSession; shown is the '
                f'ApprovalRequest (what `kubectl codex approve {args.name}` decides) and its session "{ref}"'
            )
        if session is None:
            events, events_error = _events(api, ns, [approval["metadata"]["name"], *([ref] if ref else [])])
            io.print(views.describe_approval(approval, events, _now(), events_error=events_error))
            return EXIT_OK
    else:
        session = api.get(SESSIONS, ns, args.name)
        if session is None and forbidden is not None:
            raise forbidden  # it may be a request this user cannot read: say so, not "not found"
        if session is None:
            raise NotFound(f'no CodexSession (or ApprovalRequest) named "{args.name}" in namespace "{ns}"')
    name = session["metadata"]["name"]
    status = session_status(session)
    ref = status.approval_ref
    if approval is None and approval_error is None:
        try:
            approval = api.get(APPROVALS, ns, ref or names.approval_request(name))
        except KubeError as err:
            approval_error = err.reason or err.message
    objects = [name] + [n for n in (ref, status.pod_name) if n]
    if approval is not None and approval["metadata"]["name"] not in objects:
        objects.append(approval["metadata"]["name"])
    events, events_error = _events(api, ns, objects)
    io.print(
        views.describe_session(
            session, approval, events, _now(), events_error=events_error, approval_error=approval_error
        )
    )
    return EXIT_OK


def _exists(api: CodexApi, plural: str, ns: str, name: str) -> bool:
    try:
        return api.get(plural, ns, name) is not None
    except KubeError:
        return False


# --------------------------------------------------------------------------- logs
def _termination_message(pod: Mapping[str, Any]) -> str | None:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        terminated = (status.get("state") or {}).get("terminated") or {}
        if status.get("name") == "runner" and terminated.get("message"):
            return str(terminated["message"])
    return None


def cmd_logs(api: CodexApi, args: argparse.Namespace, io: Io) -> int:
    ns = args.namespace
    session = find_session(api, ns, args.name)
    name = session["metadata"]["name"]
    status = session_status(session)
    phase = status.phase or "Pending"
    pod = api.runner_pod(ns, session)
    if pod is None:
        why = f"phase {phase}" + (f": {status.message}" if status.message else "")
        if phase in TERMINAL_PHASES and (status.pod_name or status.attempts):
            io.error(
                f'error: the runner pod of session "{name}" is gone ({why}); '
                f"its result is in `kubectl codex describe {name}`"
            )
        elif phase in TERMINAL_PHASES:
            io.error(f'error: session "{name}" never ran a runner pod ({why})')
        else:
            io.error(f'error: no runner pod yet for session "{name}" ({why})')
        return EXIT_ERROR
    pod_name = pod["metadata"]["name"]
    renderer = LogRenderer()
    seen = False
    try:
        lines = api.follow_log(ns, pod_name) if args.follow else iter(api.pod_log(ns, pod_name).splitlines())
        for line in lines:
            seen = True
            if args.raw:
                io.print(line)
            else:
                for shown in renderer.feed(line):
                    io.print(shown)
    except KubeError as err:
        if err.status in (401, 403):
            raise
        return _no_log(io, args, api.runner_pod(ns, session) or pod, err.message)
    # Nothing at all: a pod not scheduled yet has an empty log, so has one whose node is gone.
    return EXIT_OK if seen else _no_log(io, args, api.runner_pod(ns, session) or pod, None)


def _pod_state(pod: Mapping[str, Any]) -> str:
    """'pod phase Pending: Unschedulable: 0/1 nodes are available ...'."""
    status = pod.get("status") or {}
    text = f"pod phase {status.get('phase') or 'Pending'}"
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            text += f": {cond.get('reason', 'NotScheduled')}" + (
                f": {cond['message']}" if cond.get("message") else ""
            )
    return text


def _no_log(io: Io, args: argparse.Namespace, pod: Mapping[str, Any], problem: str | None) -> int:
    """The log is empty or unreadable (not scheduled yet, node gone, log rotated).
    Once the container has ended, the runner's result is still in its
    termination message: show that."""
    pod_name = pod["metadata"]["name"]
    why = f"{problem}; " if problem else ""
    message = _termination_message(pod)
    frame = parse_frame(message) if message else None
    if message is None or (frame is None and not args.raw):
        started = any(
            (s.get("state") or {}).get("running") or (s.get("state") or {}).get("terminated")
            for s in (pod.get("status") or {}).get("containerStatuses") or []
        )
        if not started:
            io.error(f"error: runner pod {pod_name} has not started yet ({why}{_pod_state(pod)})")
        else:
            io.error(f"error: no log from runner pod {pod_name} ({why}{_pod_state(pod)})")
        return EXIT_ERROR
    io.error(
        f"note: no log from runner pod {pod_name} ({why}{_pod_state(pod)}); "
        "showing the result the runner left in its termination message"
    )
    if args.raw or frame is None:
        io.print(message)
    else:
        for line in render_result(frame):
            io.print(line)
    return EXIT_OK


# --------------------------------------------------------------------------- approve / deny
def approval_refusal(api: CodexApi, ns: str, approval: dict[str, Any], digest: str | None) -> str | None:
    """Why approving `approval` would approve something other than what the
    approver was shown (`kubectl codex describe`), or None. Checked against the
    session as it is now, just before the patch: the operator checks the same
    binding before it runs anything, this makes the approver see it first."""
    name = approval["metadata"]["name"]
    spec = approval.get("spec") or {}
    ref = spec.get("sessionRef") or ""
    head = f'error: refusing to approve ApprovalRequest "{name}"'
    try:
        session = api.get(SESSIONS, ns, ref) if ref else None
    except KubeError as err:
        return (
            f'{head}: cannot read session "{ref}" to check what would run ({err.describe()}); '
            "an approver has to be able to see what they approve. Nothing was sent."
        )
    binding = verify.check(approval, session)
    if not binding.ok:
        return "\n".join(
            [
                f"{head}: {binding.verdict()}",
                *(f"  - {problem}" for problem in binding.problems),
                f"  Nothing was sent. See `kubectl codex describe {name}`; deny it "
                f'(kubectl codex deny {name} --reason "...") or ask the requester for a new request.',
            ]
        )
    recorded = str(spec.get("specDigest") or "")
    if digest is not None and not recorded.startswith(digest):
        return (
            f"{head}: its spec digest is {recorded}, not the {digest} given with --digest: "
            f"what would run is not what you looked at. Nothing was sent; look again with "
            f"`kubectl codex describe {name}`."
        )
    return None


def _deny_note(api: CodexApi, ns: str, approval: dict[str, Any]) -> str | None:
    """A denial runs nothing, so it is never refused; but say when the request was stale anyway."""
    ref = (approval.get("spec") or {}).get("sessionRef") or ""
    try:
        session = api.get(SESSIONS, ns, ref) if ref else None
    except KubeError:
        return None
    binding = verify.check(approval, session)
    return None if binding.ok else f"note: {binding.verdict()}; denying it all the same"


def cmd_decide(api: CodexApi, args: argparse.Namespace, io: Io, decision: Decision) -> int:
    ns = args.namespace
    approval = find_approval(api, ns, args.name)
    name = approval["metadata"]["name"]
    digest: str | None = getattr(args, "digest", None)
    try:
        user: str | None = api.whoami()
    except KubeError as err:
        user = None
        io.error(
            f"warning: cannot tell who you are ({err.message}); sending the decision without "
            "spec.decidedBy, for the operator's webhook to stamp"
        )
    if decision == "Denied":
        note = _deny_note(api, ns, approval)
        if note:
            io.error(note)
    for _ in range(DECIDE_ATTEMPTS):
        closed = closed_message(approval)
        if closed:
            io.error(f"error: {closed}")
            return EXIT_ERROR
        scope = None
        if decision == "Approved":
            # Again on every attempt: the session may have been replaced in between.
            refusal = approval_refusal(api, ns, approval, digest)
            if refusal:
                io.error(refusal)
                return EXIT_ERROR
            if getattr(args, "for_session", False):
                problem = for_session_problem(approval)
                if problem:
                    io.error(f"error: {problem}. Nothing was sent.")
                    return EXIT_ERROR
                scope = "session"
        patch = decision_patch(
            decision, user, args.reason, approval["metadata"].get("resourceVersion"), scope=scope
        )
        try:
            updated = api.patch_approval(ns, name, patch)
        except KubeError as err:
            if err.status != 409:
                io.error(err.describe())
                return EXIT_ERROR
            # Someone wrote the request since we read it (the operator's status, or
            # another approver's decision): look again.
            fresh = api.get(APPROVALS, ns, name)
            if fresh is None:
                raise NotFound(f'ApprovalRequest "{name}" was deleted in the meantime') from err
            approval = fresh
            continue
        spec = updated.get("spec") or {}
        verb = "approved" if decision == "Approved" else "denied"
        who = spec.get("decidedBy") or user or "you"
        why = f": {spec['reason']}" if spec.get("reason") else ""
        # An approval names the exact spec it approved, for the approver's own record.
        what = f", spec {spec.get('specDigest')}" if decision == "Approved" else ""
        what += ", for the rest of the session" if spec.get("scope") == "session" else ""
        io.print(f"approvalrequest/{name} {verb} by {who} (session {spec.get('sessionRef')}{what}){why}")
        return EXIT_OK
    io.error(f'error: ApprovalRequest "{name}" kept changing while deciding; try again')
    return EXIT_ERROR
