"""The arena for hostile-requester tests: a namespace with the shipped
admission policies (renamed copies bound to it), the real operator running
as its own ServiceAccount, and users who hold more RBAC than they should.

The extra RBAC is deliberate: a namespace administrator may well hand
requesters `edit`-like rights (status writes, pods, policies, claims, creating
approvals). Each attack is then stopped by the project's own rules —
admission policy or the operator's ownership checks — not by a Role that
happens to be missing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

import codex_devenv.generate.admission as admission_policies
from codex_api import binding, names
from codex_api.common import GROUP, VERSION
from codex_api.result import RunnerResult, Usage
from codex_devenv.admission_kit import ScopedAdmission, message, user_rbac, wait_until_denied
from codex_devenv.gateway_process import GATEWAY_USER
from codex_devenv.system import API_KEY_SECRET
from codex_devenv.testkit import finish_pod, session_body, wait_session

GENEROUS_USERS = ("carol", "mallory", "alice", "dave")


def generous_rbac(namespace: str) -> list[dict[str, Any]]:
    everything = ["get", "list", "create", "patch", "update", "delete"]
    rules = [
        {
            "apiGroups": [GROUP],
            "resources": [
                "approvalrequests",
                "approvalrequests/status",
                "codexsessions",
                "codexsessions/status",
            ],
            "verbs": everything,
        },
        {"apiGroups": [""], "resources": ["pods", "persistentvolumeclaims"], "verbs": everything},
        {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": everything},
    ]
    return user_rbac(namespace, GENEROUS_USERS, rules, name="too-generous")


@dataclass
class Arena:
    namespace: str
    admin: Any
    client_for: Callable[[str], Any]

    def custom(self, user: str) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.admin if user == "admin" else self.client_for(user))

    def core(self, user: str = "admin") -> client.CoreV1Api:
        return client.CoreV1Api(self.admin if user == "admin" else self.client_for(user))

    def net(self, user: str = "admin") -> client.NetworkingV1Api:
        return client.NetworkingV1Api(self.admin if user == "admin" else self.client_for(user))

    # -- sessions and approvals --------------------------------------------------------
    def create(self, user: str, name: str, **spec: Any) -> dict[str, Any]:
        spec.setdefault("requestedBy", user)
        body = session_body(name, **spec)
        return dict(
            self.custom(user).create_namespaced_custom_object(
                GROUP, VERSION, self.namespace, "codexsessions", body
            )
        )

    def session(self, name: str) -> dict[str, Any]:
        return dict(
            self.custom("admin").get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, "codexsessions", name
            )
        )

    def wait(self, name: str, *phases: str, timeout: float = 30) -> dict[str, Any]:
        return wait_session(
            self.admin,
            self.namespace,
            name,
            lambda s: (s.get("status") or {}).get("phase") in phases,
            timeout=timeout,
        )

    def approval(self, session: str) -> dict[str, Any]:
        return dict(
            self.custom("admin").get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, "approvalrequests", names.approval_request(session)
            )
        )

    def approve(self, session: str, user: str = "alice") -> None:
        self.custom(user).patch_namespaced_custom_object(
            GROUP,
            VERSION,
            self.namespace,
            "approvalrequests",
            names.approval_request(session),
            {"spec": {"decision": "Approved", "decidedBy": user}},
        )

    def gone(self, plural: str, name: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.custom("admin").get_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, plural, name
                )
            except ApiException as err:
                if err.status == 404:
                    return
                raise
            time.sleep(0.1)
        raise AssertionError(f"{plural}/{name} still exists after {timeout}s")

    def finish(self, name: str, answer: str = "done") -> dict[str, Any]:
        """Play the node: the running turn's pod completes with `answer`; the session Succeeds."""
        s = self.wait(name, "Running")
        result = RunnerResult(
            outcome="completed",
            thread_id=f"thread-{name}",
            final_message=answer,
            usage=Usage(input_tokens=10, cached_input_tokens=0, output_tokens=5, reasoning_tokens=0),
        )
        finish_pod(self.admin, self.namespace, s["status"]["podName"], result)
        return self.wait(name, "Succeeded")

    # -- what ran ------------------------------------------------------------------------
    def pods_of(self, uid: str) -> list[str]:
        """Runner pods controlled by the session with this uid."""
        pods = self.core().list_namespaced_pod(self.namespace).items
        return [
            p.metadata.name
            for p in pods
            if any(r.uid == uid and r.controller for r in (p.metadata.owner_references or []))
        ]

    def pod_names(self) -> set[str]:
        return {p.metadata.name for p in self.core().list_namespaced_pod(self.namespace).items}


def refused(call: Callable[[], object], fragment: str) -> str:
    """Run `call`; assert the API server refused it (403) naming `fragment`; return the message."""
    with pytest.raises(ApiException) as err:
        call()
    assert err.value.status == 403, err.value.body
    text = message(err.value)
    assert fragment in text, text
    return text


def approval_for(session: dict[str, Any], name: str, **spec: Any) -> dict[str, Any]:
    """An ApprovalRequest as the operator would make it for `session` (bound to its uid
    and spec), to be created by someone who is not the operator; `spec` adds or overrides."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ApprovalRequest",
        "metadata": {"name": name},
        "spec": {
            **binding.expected_binding(session),
            "toolName": "codex",
            "operation": "codex exec",
            "riskLevel": "low",
            "expiresAt": "2099-01-01T00:00:00Z",
            **spec,
        },
    }


def _wait_for_policies(arena: Arena) -> None:
    """Every policy answers before any attack runs (an attack that lands before its
    policy would pass for the wrong reason, or change what later steps see)."""
    ns = arena.namespace
    probe = arena.create("alice", "policy-probe")
    labelled = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "probe", "labels": {names.LABEL_MANAGED_BY: names.MANAGED_BY}},
        "spec": {"podSelector": {}},
    }
    approval = approval_for(probe, "probe")
    probes: list[tuple[Callable[[], object], str]] = [
        (
            lambda: arena.custom("carol").create_namespaced_custom_object(
                GROUP, VERSION, ns, "approvalrequests", approval, dry_run="All"
            ),
            admission_policies.MSG_APPROVAL_CREATE,
        ),
        (
            lambda: arena.custom("carol").patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                ns,
                "codexsessions",
                "policy-probe",
                {"status": {"phase": "Queued"}},
                dry_run="All",
            ),
            admission_policies.MSG_STATUS,
        ),
        (
            lambda: arena.custom("mallory").patch_namespaced_custom_object(
                GROUP,
                VERSION,
                ns,
                "codexsessions",
                "policy-probe",
                {"metadata": {"annotations": {names.ANNOTATION_CANCEL: "x"}}},
                dry_run="All",
            ),
            admission_policies.MSG_NOT_YOURS,
        ),
        (
            lambda: arena.net("mallory").create_namespaced_network_policy(ns, labelled, dry_run="All"),
            admission_policies.MSG_MANAGED_CREATE,
        ),
    ]
    for call, fragment in probes:
        wait_until_denied(call, fragment, fragment)
    arena.custom("admin").delete_namespaced_custom_object(GROUP, VERSION, ns, "codexsessions", "policy-probe")


@pytest.fixture
def arena(control_plane: Any, kube_client: Any, client_for: Any, namespace: str) -> Iterator[Arena]:
    admission = ScopedAdmission(control_plane, namespace).install(
        client_for, trusted=[GATEWAY_USER], runner_secrets=[API_KEY_SECRET]
    )
    control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(generous_rbac(namespace)))
    try:
        arena = Arena(namespace, kube_client, client_for)
        _wait_for_policies(arena)
        yield arena
    finally:
        admission.uninstall()
