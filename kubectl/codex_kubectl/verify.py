"""Does an ApprovalRequest still bind to the session it names?

A request records the uid of the CodexSession it was made for and the
digest of that session's spec (codex_api.binding); the operator honours a
decision only when both match the session it is about to run. The plugin
checks the same thing before it tells an approver "this is exactly what will
run", and before it sends an approval: otherwise an approver could read one
spec and approve another (the session deleted and recreated under the same
name, a request planted for a different spec).

Pure functions over API-shaped dicts, no I/O."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from codex_api.binding import DIGEST_PREFIX, expected_binding, unbound_fields

# What the pending table shows of a digest: enough to tell requests apart at
# a glance, never enough to approve with (--digest wants at least MIN_DIGEST_HEX).
SHORT_DIGEST_HEX = 12
# 64 bits: finding another spec whose digest starts the same costs ~2^64 hashes.
MIN_DIGEST_HEX = 16
_DIGEST_ARG = re.compile(rf"^(?:{DIGEST_PREFIX})?([0-9a-f]{{{MIN_DIGEST_HEX},64}})$")


def short_digest(digest: Any) -> str:
    """'sha256:0123456789ab' (or '<none>' for a request that records no digest)."""
    if not isinstance(digest, str) or not digest.startswith(DIGEST_PREFIX):
        return "<none>"
    return digest[: len(DIGEST_PREFIX) + SHORT_DIGEST_HEX]


def digest_argument(text: str) -> str | None:
    """A --digest value normalised to 'sha256:<hex>' (a prefix of at least
    MIN_DIGEST_HEX hex digits), or None when it is not one."""
    match = _DIGEST_ARG.match(text.strip().lower())
    return DIGEST_PREFIX + match.group(1) if match else None


@dataclass(frozen=True)
class Binding:
    """The outcome of comparing a request with the session it names."""

    approval: str
    namespace: str
    session_ref: str
    recorded_uid: str | None
    recorded_digest: str | None
    session_uid: str | None  # None: no such session (any more)
    session_digest: str | None
    session_found: bool
    # (field, sentence) for each thing that differs or is missing; empty when it binds
    findings: tuple[tuple[str, str], ...]

    @property
    def problems(self) -> list[str]:
        return [sentence for _, sentence in self.findings]

    @property
    def ok(self) -> bool:
        return not self.findings

    def verdict(self) -> str:
        """One line: what an approver needs to know before deciding."""
        if self.ok:
            return "spec digest matches: this is exactly what will run"
        if not self.session_found:
            return f'MISMATCH: session "{self.session_ref}" is gone: there is nothing this request would run'
        fields = self.differs()
        verb = "differs" if len(fields) == 1 else "differ"
        return f"MISMATCH: {', '.join(fields)} {verb}: this request was not made for the session shown"

    def differs(self) -> list[str]:
        """The names of what differs, e.g. ['sessionUid', 'specDigest']."""
        return [field for field, _ in self.findings]

    def short_status(self) -> str:
        """For a table cell: '' when it binds."""
        if self.ok:
            return ""
        return "(session gone)" if not self.session_found else "(MISMATCH)"


def check(approval: Mapping[str, Any], session: Mapping[str, Any] | None) -> Binding:
    """Compare what `approval` recorded with `session` as the API server has it now
    (None: the session named by spec.sessionRef does not exist)."""
    meta = approval.get("metadata") or {}
    aspec = approval.get("spec") or {}
    ref = str(aspec.get("sessionRef") or "")
    recorded_uid = aspec.get("sessionUid") or None
    recorded_digest = aspec.get("specDigest") or None
    findings: list[tuple[str, str]] = []
    if session is None:
        where = meta.get("namespace")
        findings.append(("session", f'session "{ref}" does not exist (any more) in namespace "{where}"'))
    # A request from before the binding existed binds to nothing: the operator ignores its decision.
    if recorded_uid is None:
        findings.append(("sessionUid", "sessionUid is not recorded on the request: it binds to no session"))
    if recorded_digest is None:
        findings.append(("specDigest", "specDigest is not recorded on the request: it binds to no spec"))
    session_uid = session_digest = None
    if session is not None:
        smeta = session.get("metadata") or {}
        # The operator's own rule and digest (codex_api.binding), over the session as
        # the API server stores it (defaults applied): what the operator compares.
        expected = expected_binding(session)
        wrong = set(unbound_fields(approval, session))
        session_uid, session_digest = smeta.get("uid"), expected["specDigest"]
        if "sessionRef" in wrong:  # found by another way (its status.approvalRef, the default name)
            findings.append(
                (
                    "sessionRef",
                    f'sessionRef differs: the request is for session "{ref}", not "{smeta.get("name")}"',
                )
            )
        if recorded_uid is not None and "sessionUid" in wrong:
            findings.append(
                (
                    "sessionUid",
                    f'sessionUid differs: the request was made for uid {recorded_uid}, session "{ref}" '
                    f"is uid {session_uid} (deleted and created again under the same name)",
                )
            )
        if recorded_digest is not None and "specDigest" in wrong:
            findings.append(
                (
                    "specDigest",
                    f"specDigest differs: the request was made for {recorded_digest}, "
                    f"the session's spec is {session_digest}",
                )
            )
        # The admission policies judge "nobody decides their own request" by the
        # request's requestedBy, so it must be the session's (the operator checks it too).
        if "requestedBy" in wrong:
            findings.append(
                (
                    "requestedBy",
                    f"requestedBy differs: the request names {aspec.get('requestedBy')!r}, "
                    f"the session {expected['requestedBy']!r}",
                )
            )
    return Binding(
        approval=str(meta.get("name") or ""),
        namespace=str(meta.get("namespace") or ""),
        session_ref=ref,
        recorded_uid=recorded_uid,
        recorded_digest=recorded_digest,
        session_uid=session_uid,
        session_digest=session_digest,
        session_found=session is not None,
        findings=tuple(findings),
    )
