"""What a platform engineer sees with kubectl: printer columns, short names,
the codex category, and field descriptions in kubectl explain."""

from __future__ import annotations

from typing import Any

from kubernetes import client

from codex_api import binding
from codex_api.common import GROUP, VERSION


def _create_session(kube_client: Any, namespace: str, name: str, **spec: Any) -> None:
    client.CustomObjectsApi(kube_client).create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "codexsessions",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "CodexSession",
            "metadata": {"name": name},
            "spec": {"prompt": "hello", **spec},
        },
    )


def test_get_cxs_prints_the_columns(control_plane: Any, kube_client: Any, namespace: str) -> None:
    _create_session(kube_client, namespace, "demo", sandbox="isolated")
    client.CustomObjectsApi(kube_client).patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        namespace,
        "codexsessions",
        "demo",
        {"status": {"phase": "Running", "riskLevel": "medium", "model": "gpt-5-codex"}},
    )
    lines = control_plane.kubectl("get", "cxs", "-n", namespace).stdout.splitlines()
    assert lines[0].split() == ["NAME", "PHASE", "SANDBOX", "RISK", "MODEL", "AGE"]
    assert lines[1].split()[:5] == ["demo", "Running", "isolated", "medium", "gpt-5-codex"]
    wide = control_plane.kubectl("get", "codexsessions", "-n", namespace, "-o", "wide").stdout
    assert "REQUESTER" in wide.splitlines()[0]


def test_codex_category_lists_both_kinds(control_plane: Any, kube_client: Any, namespace: str) -> None:
    _create_session(kube_client, namespace, "demo")
    out = control_plane.kubectl("get", "codex", "-n", namespace, "-o", "name").stdout
    assert "codexsession.codex.techsapo.io/demo" in out
    header = control_plane.kubectl("get", "cxar", "-n", namespace, check=False)
    assert header.returncode == 0  # the short name resolves even with no objects


def test_explain_shows_field_descriptions(control_plane: Any) -> None:
    prompt = control_plane.kubectl("explain", "cxs.spec.prompt").stdout
    assert "The coding task or question for Codex" in prompt
    decision = control_plane.kubectl("explain", "cxar.spec.decision").stdout
    assert "Approved" in decision and "set once with kubectl patch" in decision
    status = control_plane.kubectl("explain", "cxs.status.usage").stdout
    assert "Token usage of this turn" in status


def test_explain_says_where_the_binding_is_checked(control_plane: Any) -> None:
    digest = control_plane.kubectl("explain", "cxar.spec.specDigest").stdout
    assert "sha256 of the session's spec" in digest and "kubectl codex describe" in digest
    uid = control_plane.kubectl("explain", "cxar.spec.sessionUid").stdout
    assert "never for a later session of the same name" in uid


def test_get_cxar_wide_prints_when_a_request_expires(
    control_plane: Any, kube_client: Any, namespace: str
) -> None:
    """A future expiry as a timestamp: a `date` column would print `<invalid>`."""
    expires = "2099-01-01T00:00:00Z"
    client.CustomObjectsApi(kube_client).create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "approvalrequests",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ApprovalRequest",
            "metadata": {"name": "demo-approval"},
            "spec": {
                "sessionRef": "demo",
                "sessionUid": "00000000-0000-0000-0000-000000000001",
                "specDigest": binding.spec_digest({"prompt": "hello"}),
                "toolName": "codex",
                "operation": "codex exec in an isolated runner pod",
                "riskLevel": "medium",
                "requestedBy": "carol",
                "expiresAt": expires,
            },
        },
    )
    wide = control_plane.kubectl("get", "cxar", "demo-approval", "-n", namespace, "-o", "wide").stdout
    header, row = wide.splitlines()[:2]
    assert "EXPIRES" in header.split()
    assert expires in row.split() and "<invalid>" not in row
