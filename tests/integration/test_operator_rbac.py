"""The operator's ServiceAccount has exactly what it needs, checked with
`kubectl auth can-i --as` against the real API server. (Missing verbs also
show up as 403s in the lifecycle tests, which run the operator with a token
of this account.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from codex_devenv.operator_process import bind_operator

SA = "system:serviceaccount:codex-system:codex-operator"

ALLOWED = [
    ("get", "codexsessions"),
    ("list", "codexsessions"),
    ("watch", "codexsessions"),
    ("delete", "codexsessions"),
    ("patch", "codexsessions", "status"),
    ("update", "codexsessions", "finalizers"),
    ("create", "approvalrequests"),
    ("watch", "approvalrequests"),
    ("patch", "approvalrequests", "status"),
    ("create", "pods"),
    ("delete", "pods"),
    ("watch", "pods"),
    ("patch", "pods"),  # a live pod's controller and session label move to the next turn
    ("get", "pods", "log"),
    ("create", "networkpolicies.networking.k8s.io"),
    ("get", "networkpolicies.networking.k8s.io"),  # to prove an existing one is this session's
    ("patch", "networkpolicies.networking.k8s.io"),  # each turn of a live pod owns its policy too
    ("create", "persistentvolumeclaims"),
    ("patch", "persistentvolumeclaims"),
    ("create", "events"),
]
DENIED = [
    ("create", "codexsessions"),  # sessions come from people and the gateway
    ("patch", "codexsessions"),  # the spec is not the operator's to change
    ("patch", "approvalrequests"),  # decisions are human
    ("delete", "approvalrequests"),
    ("get", "secrets"),  # the model key reaches pods by reference only
    ("create", "pods", "exec"),
    ("update", "pods"),
    ("delete", "networkpolicies.networking.k8s.io"),
    ("delete", "persistentvolumeclaims"),
    ("create", "serviceaccounts", "token"),
    ("create", "rolebindings.rbac.authorization.k8s.io"),
]
CLUSTER_DENIED = [
    ("list", "pods", "--all-namespaces"),
    ("create", "mutatingwebhookconfigurations.admissionregistration.k8s.io", ""),
    ("patch", "validatingadmissionpolicies.admissionregistration.k8s.io", ""),
    ("list", "namespaces", ""),
    ("get", "nodes", ""),
]


def _can(control_plane: Any, verb: str, resource: str, *extra: str) -> str:
    out = control_plane.kubectl("auth", "can-i", verb, resource, "--as", SA, *extra, check=False)
    return out.stdout.strip()


@pytest.fixture
def bound(control_plane: Any, operator_kubeconfig: Path, namespace: str) -> str:
    bind_operator(control_plane, namespace)
    return namespace


@pytest.mark.parametrize("rule", ALLOWED, ids=lambda r: "-".join(r))
def test_operator_may(control_plane: Any, bound: str, rule: tuple[str, ...]) -> None:
    verb, resource, *sub = rule
    extra = ["--subresource", sub[0]] if sub else []
    assert _can(control_plane, verb, resource, "-n", bound, *extra) == "yes"


@pytest.mark.parametrize("rule", DENIED, ids=lambda r: "-".join(r))
def test_operator_may_not(control_plane: Any, bound: str, rule: tuple[str, ...]) -> None:
    verb, resource, *sub = rule
    extra = ["--subresource", sub[0]] if sub else []
    assert _can(control_plane, verb, resource, "-n", bound, *extra) == "no"


@pytest.mark.parametrize("rule", CLUSTER_DENIED, ids=lambda r: "-".join(r[:2]))
def test_operator_has_no_cluster_wide_reach(
    control_plane: Any, bound: str, rule: tuple[str, str, str]
) -> None:
    verb, resource, scope = rule
    assert _can(control_plane, verb, resource, *([scope] if scope else [])) == "no"


def test_operator_has_nothing_in_unbound_namespaces(control_plane: Any, operator_kubeconfig: Path) -> None:
    assert _can(control_plane, "create", "pods", "-n", "default") == "no"
    assert _can(control_plane, "list", "codexsessions", "-n", "default") == "no"
