"""The gateway's ServiceAccount may create, get, list and watch CodexSessions
and read ApprovalRequests and patch them (to relay a requester's own decision
on an action, which the approval-decision admission policy bounds), nothing more (manifests/base/rbac-gateway.yaml),
checked with `kubectl auth can-i --as` against the real API server."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from codex_devenv.assets import REPO_ROOT

SA = "system:serviceaccount:codex-system:codex-gateway"
MANIFEST = REPO_ROOT / "manifests" / "base" / "rbac-gateway.yaml"

ALLOWED = [
    ("create", "codexsessions"),
    ("get", "codexsessions"),
    ("list", "codexsessions"),
    ("watch", "codexsessions"),
    # codex-cleanup's annotation; the session-update admission policy allows nothing else
    ("patch", "codexsessions"),
    ("get", "approvalrequests"),
    ("list", "approvalrequests"),
    ("watch", "approvalrequests"),
    # tasks/update relays the requester's own decision; admission bounds it
    ("patch", "approvalrequests"),
]
DENIED = [
    ("update", "codexsessions"),
    ("delete", "codexsessions"),
    ("patch", "codexsessions", "status"),
    ("create", "approvalrequests"),
    ("update", "approvalrequests"),
    ("patch", "approvalrequests", "status"),
    ("delete", "approvalrequests"),
    ("get", "pods"),
    ("get", "pods", "log"),
    ("create", "pods"),
    ("get", "secrets"),
    ("list", "secrets"),
    ("create", "networkpolicies.networking.k8s.io"),
    ("get", "events"),
]


@pytest.fixture
def bound(control_plane: Any, namespace: str) -> str:
    docs = list(yaml.safe_load_all(MANIFEST.read_text()))
    for doc in docs:
        if doc["kind"] == "RoleBinding":
            doc["metadata"]["namespace"] = namespace
    control_plane.kubectl("create", "namespace", "codex-system", check=False)
    control_plane.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(docs))
    return namespace


def _can(control_plane: Any, verb: str, resource: str, *extra: str) -> str:
    return str(
        control_plane.kubectl("auth", "can-i", verb, resource, "--as", SA, *extra, check=False).stdout.strip()
    )


@pytest.mark.parametrize("rule", ALLOWED, ids=lambda r: "-".join(r))
def test_gateway_may(control_plane: Any, bound: str, rule: tuple[str, ...]) -> None:
    verb, resource, *sub = rule
    assert (
        _can(control_plane, verb, resource, "-n", bound, *(["--subresource", sub[0]] if sub else [])) == "yes"
    )


@pytest.mark.parametrize("rule", DENIED, ids=lambda r: "-".join(r))
def test_gateway_may_not(control_plane: Any, bound: str, rule: tuple[str, ...]) -> None:
    verb, resource, *sub = rule
    assert (
        _can(control_plane, verb, resource, "-n", bound, *(["--subresource", sub[0]] if sub else [])) == "no"
    )


def test_gateway_has_nothing_elsewhere(control_plane: Any, bound: str) -> None:
    assert _can(control_plane, "create", "codexsessions", "-n", "default") == "no"
    assert _can(control_plane, "list", "codexsessions", "--all-namespaces") == "no"
