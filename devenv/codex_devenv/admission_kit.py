"""Install the project's ValidatingAdmissionPolicies for one test namespace.

The policies are cluster-scoped; tests share one control plane. So each
install is a renamed copy whose binding matches only the given namespace,
with its params ConfigMap in that namespace, plus a Role letting the static
users act on sessions and approval requests there. `uninstall()` removes the
cluster-scoped copies.
"""

from __future__ import annotations

import copy
import json
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from codex_api.common import GROUP, VERSION

from .controlplane import ADMINS_GROUP
from .generate import admission as policies
from .operator_process import OPERATOR_USER

USERS = ("alice", "bob", "carol", "dave", "mallory")
APPROVER_GROUP = "codex-approvers"

# A per-action request's record of what runs (codex_api.approval.ApprovalAction).
COMMAND_ACTION: dict[str, Any] = {
    "kind": "command",
    "turnId": "u-1",
    "itemId": "call_1",
    "command": "/bin/bash -lc 'make test'",
    "cwd": "/workspace",
    "offered": ["accept", "decline", "cancel"],
}


def approval_request(
    name: str,
    *,
    risk: str = "high",
    requested_by: str = "carol",
    action: dict[str, Any] | None = None,
    session_ref: str = "s1",
) -> dict[str, Any]:
    """An ApprovalRequest as the operator makes one (bound to a made-up session),
    undecided, expiring in an hour; with `action`, a per-action one."""
    expires = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    body: dict[str, Any] = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ApprovalRequest",
        "metadata": {"name": name},
        "spec": {
            "sessionRef": session_ref,
            "sessionUid": "00000000-0000-0000-0000-000000000001",
            "specDigest": "sha256:" + "0" * 64,
            "toolName": "codex",
            "operation": "codex exec (sandbox=full-access)",
            "riskLevel": risk,
            "requestedBy": requested_by,
            "expiresAt": expires,
        },
    }
    if action is not None:
        body["spec"]["action"] = action
    return body


POLICY_TIMEOUT = 60.0


# kube-apiserver stops its informer for a ConfigMap paramKind once no binding
# uses it, and never restarts it in that process (kubernetes/kubernetes#130887,
# #133827): after one test uninstalls its policies, every later install would
# find "no params". One binding that never goes away keeps the informer alive.
# (Production bindings are permanent, so clusters are not affected.)
PARAM_KEEPER: list[dict[str, Any]] = [
    {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": "param-keeper.test.codex.techsapo.io"},
        "spec": {
            "failurePolicy": "Ignore",
            "paramKind": {"apiVersion": "v1", "kind": "ConfigMap"},
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": ["keeper.test"],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE"],
                        "resources": ["nothings"],
                    }
                ]
            },
            "validations": [{"expression": "true"}],
        },
    },
    {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": "param-keeper.test.codex.techsapo.io"},
        "spec": {
            "policyName": "param-keeper.test.codex.techsapo.io",
            "validationActions": ["Deny"],
            "paramRef": {"name": "none", "namespace": "default", "parameterNotFoundAction": "Allow"},
        },
    },
]


def ensure_param_keeper(control_plane: Any) -> None:
    control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(PARAM_KEEPER))


def scoped(
    policy: dict[str, Any], binding: dict[str, Any], suffix: str, namespace: str
) -> list[dict[str, Any]]:
    """The policy and binding renamed for this run, matching only `namespace`."""
    policy, binding = copy.deepcopy(policy), copy.deepcopy(binding)
    name = f"t{suffix}.{policy['metadata']['name']}"
    policy["metadata"]["name"] = binding["metadata"]["name"] = binding["spec"]["policyName"] = name
    binding["spec"]["matchResources"] = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
    }
    return [policy, binding]


# What requesters and approvers need in a sessions namespace.
USER_RULES: list[dict[str, Any]] = [
    {"apiGroups": [GROUP], "resources": ["approvalrequests"], "verbs": ["get", "list", "patch", "update"]},
    {"apiGroups": [GROUP], "resources": ["codexsessions"], "verbs": ["get", "list", "create", "patch"]},
]


def user_rbac(
    namespace: str,
    users: Sequence[str] = USERS,
    rules: Sequence[dict[str, Any]] = USER_RULES,
    name: str = "codex-users",
) -> list[dict[str, Any]]:
    """A Role with `rules` and its RoleBinding for the static `users`."""
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": name, "namespace": namespace},
        "rules": list(rules),
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": u} for u in users],
    }
    return [role, binding]


def message(err: ApiException) -> str:
    return str(json.loads(err.body or "{}").get("message", err.body))


def wait_until_denied(
    probe: Callable[[], object], fragment: str, what: str, timeout: float = POLICY_TIMEOUT
) -> None:
    """Policies, params and RBAC reach the API server's caches a moment after
    they are created: retry a dry-run probe until the policy answers."""
    deadline = time.monotonic() + timeout
    last: str | None = "the probe was allowed"
    while time.monotonic() < deadline:
        try:
            probe()
        except ApiException as err:
            last = err.body
            if err.status == 403 and fragment in message(err):
                return
        time.sleep(0.2)
    raise TimeoutError(f"the {what} policy did not take effect within {timeout}s; last answer: {last}")


@dataclass
class ScopedAdmission:
    control_plane: Any
    namespace: str
    suffix: str = field(default_factory=lambda: secrets.token_hex(3))
    docs: list[dict[str, Any]] = field(default_factory=list)

    def install(
        self,
        client_for: Callable[[str], Any],
        trusted: Sequence[str] = (),
        runner_secrets: Sequence[str] | None = None,
        requester_decides_up_to: str = "none",
    ) -> ScopedAdmission:
        ns = self.namespace
        ensure_param_keeper(self.control_plane)
        self.docs = []
        for make in policies.POLICIES:
            policy = make()
            self.docs += scoped(policy, policies.binding_for(policy, ns), self.suffix, ns)
        params = policies.params_configmap(
            ns,
            [APPROVER_GROUP],
            list(trusted),
            operators=[OPERATOR_USER],
            admin_groups=[ADMINS_GROUP],
            runner_secrets=runner_secrets,
            requester_decides_up_to=requester_decides_up_to,
        )
        self._apply([*user_rbac(ns), params])
        self._apply(self.docs)
        probe_api = client.CustomObjectsApi(client_for("carol"))
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "CodexSession",
            "metadata": {"name": "admission-probe"},
            "spec": {"prompt": "probe", "requestedBy": "alice"},
        }
        wait_until_denied(
            lambda: probe_api.create_namespaced_custom_object(
                GROUP, VERSION, ns, "codexsessions", body, dry_run="All"
            ),
            policies.MSG_REQUESTER,
            "session requester",
        )
        return self

    def uninstall(self) -> None:
        if self.docs:
            self.control_plane.kubectl(
                "delete", "--ignore-not-found", "--wait=false", "-f", "-", input=yaml.safe_dump_all(self.docs)
            )

    def _apply(self, docs: list[dict[str, Any]]) -> None:
        self.control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
