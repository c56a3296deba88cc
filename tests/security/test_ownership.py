"""A requester who wants another user's workspace or a wider network.

Objects are named after sessions and conversations, so a name can be taken
before or after its rightful session. The operator adopts a pod, policy or
approval only when this very session controls it, and mounts a workspace
claim only for the requester and conversation recorded on it; the
managed-objects policy keeps requesters from forging those marks.
"""

from __future__ import annotations

import time
from typing import Any

from kubernetes import client

from codex_api import names
from codex_api.common import GROUP, VERSION
from codex_devenv.generate import admission
from codex_devenv.process import wait_for
from codex_devenv.system import API_KEY_SECRET

from .conftest import Arena, refused

PERSISTENT = {"workspace": {"type": "persistent"}}


def _claim(arena: Arena, conversation: str) -> Any:
    return arena.core().read_namespaced_persistent_volume_claim(
        names.workspace_claim(conversation), arena.namespace
    )


def test_another_users_workspace_is_never_mounted(arena: Arena, run_operator: Any) -> None:
    run_operator()
    arena.create("alice", "notes", prompt="remember the launch codes", **PERSISTENT)
    arena.finish("notes")
    claim = _claim(arena, "notes")
    assert claim.metadata.annotations[names.ANNOTATION_REQUESTER] == "alice"
    assert claim.metadata.annotations[names.ANNOTATION_CONVERSATION] == "notes"
    # alice keeps her workspace and removes the turn: the claim is orphaned, not deleted
    arena.custom("alice").delete_namespaced_custom_object(
        GROUP, VERSION, arena.namespace, "codexsessions", "notes", propagation_policy="Orphan"
    )
    arena.gone("codexsessions", "notes")
    # mallory names her first turn after alice's conversation
    stolen = arena.create("mallory", "notes", prompt="cat ~/.codex/sessions/*", **PERSISTENT)
    s = arena.wait("notes", "Failed", "Running")
    assert s["status"]["reason"] == "WorkspaceForbidden", s["status"]
    assert "belongs to another requester" in s["status"]["message"]
    assert arena.pods_of(stolen["metadata"]["uid"]) == []
    # the claim is unchanged: mallory's session was not added as an owner
    assert [r.uid for r in _claim(arena, "notes").metadata.owner_references or []] == []
    # the rule is about whose it is, not a blanket refusal: alice may pick it up again
    arena.custom("admin").delete_namespaced_custom_object(
        GROUP, VERSION, arena.namespace, "codexsessions", "notes"
    )
    arena.gone("codexsessions", "notes")
    # (the orphan delete also left the first turn's policy and pod; an administrator clears them)
    arena.net().delete_namespaced_network_policy("notes-egress", arena.namespace)
    arena.core().delete_namespaced_pod("notes-runner-1", arena.namespace, grace_period_seconds=0)
    wait_for(lambda: "notes-runner-1" not in arena.pod_names(), timeout=30, what="old pod gone")
    mine = arena.create("alice", "notes", prompt="continue", **PERSISTENT)
    arena.wait("notes", "Running")
    assert arena.pods_of(mine["metadata"]["uid"]) == ["notes-runner-1"]


def test_requesters_cannot_forge_the_marks_of_operator_objects(arena: Arena, run_operator: Any) -> None:
    """Planting a claim, policy or pod that looks like the operator's is refused at admission."""
    run_operator()
    victim = arena.create("alice", "victim", prompt="hello", **PERSISTENT)
    owner = names.owner_reference("CodexSession", "victim", victim["metadata"]["uid"])
    plant_claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": "planted-workspace",
            "annotations": {names.ANNOTATION_REQUESTER: "alice", names.ANNOTATION_CONVERSATION: "planted"},
            "labels": {names.LABEL_MANAGED_BY: names.MANAGED_BY},
        },
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    refused(
        lambda: arena.core("mallory").create_namespaced_persistent_volume_claim(arena.namespace, plant_claim),
        admission.MSG_MANAGED_CREATE,
    )
    open_policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "wide-open", "ownerReferences": [owner]},
        "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]},
    }
    refused(
        lambda: arena.net("mallory").create_namespaced_network_policy(arena.namespace, open_policy),
        admission.MSG_MANAGED_CREATE,
    )
    arena.wait("victim", "Running")
    # Nor can the operator's objects be re-marked, widened or handed to someone else.
    refused(
        lambda: arena.core("mallory").patch_namespaced_persistent_volume_claim(
            "victim-workspace",
            arena.namespace,
            {"metadata": {"annotations": {names.ANNOTATION_REQUESTER: "mallory"}}},
        ),
        admission.MSG_MANAGED_UPDATE,
    )
    refused(
        lambda: arena.net("mallory").patch_namespaced_network_policy(
            "victim-egress", arena.namespace, {"spec": {"egress": [{}]}}
        ),
        admission.MSG_MANAGED_UPDATE,
    )
    refused(
        lambda: arena.core("mallory").patch_namespaced_pod(
            "victim-runner-1", arena.namespace, {"metadata": {"labels": {names.LABEL_SESSION: "other"}}}
        ),
        admission.MSG_MANAGED_UPDATE,
    )
    claim = _claim(arena, "victim")
    assert claim.metadata.annotations[names.ANNOTATION_REQUESTER] == "alice"
    policy = arena.net().read_namespaced_network_policy("victim-egress", arena.namespace)
    assert {} not in [e.to_dict() for e in (policy.spec.egress or [])]


def test_objects_planted_under_a_sessions_names_are_never_adopted(arena: Arena, run_operator: Any) -> None:
    """Unmarked objects pass admission (they claim nothing); the operator still
    refuses to run a session whose names they hold."""
    run_operator()
    # A wide-open egress policy under the name the operator will use.
    arena.net("mallory").create_namespaced_network_policy(
        arena.namespace,
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": names.network_policy("target")},
            "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]},
        },
    )
    target = arena.create("alice", "target", prompt="hello")
    s = arena.wait("target", "Failed", "Running")
    assert s["status"]["reason"] == "ForeignObject", s["status"]
    assert "never adopted" in s["status"]["message"] and "target-egress" in s["status"]["message"]
    assert arena.pods_of(target["metadata"]["uid"]) == []
    # A claim under a conversation's name, with no record of whose it is.
    arena.core("mallory").create_namespaced_persistent_volume_claim(
        arena.namespace,
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": names.workspace_claim("journal")},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
        },
    )
    journal = arena.create("alice", "journal", prompt="hello", **PERSISTENT)
    s = arena.wait("journal", "Failed", "Running")
    assert s["status"]["reason"] == "WorkspaceForbidden" and "records no requester" in s["status"]["message"]
    assert arena.pods_of(journal["metadata"]["uid"]) == []


def test_a_stale_egress_policy_of_an_earlier_session_is_not_reused(arena: Arena, run_operator: Any) -> None:
    """A full-access session's wide policy, orphaned, must not serve a later session of the same name."""
    run_operator()
    arena.create("carol", "wide", sandbox="full-access")
    arena.wait("wide", "AwaitingApproval")
    arena.approve("wide")
    arena.finish("wide")
    arena.custom("carol").delete_namespaced_custom_object(
        GROUP, VERSION, arena.namespace, "codexsessions", "wide", propagation_policy="Orphan"
    )
    arena.gone("codexsessions", "wide")
    # the orphaned approval would stop a full-access session first; read-only gets to the policy
    again = arena.create("carol", "wide", sandbox="read-only")
    s = arena.wait("wide", "Failed", "Running", timeout=90)
    if s["status"]["phase"] == "Failed":
        assert s["status"]["reason"] == "ForeignObject", s["status"]
        assert "wide-egress" in s["status"]["message"] or "wide-runner-1" in s["status"]["message"]
        assert arena.pods_of(again["metadata"]["uid"]) == []
    else:
        # The garbage collector removed the leftovers first (see test_approvals):
        # the session runs under a policy of its own.
        policy = arena.net().read_namespaced_network_policy("wide-egress", arena.namespace)
        assert [r.uid for r in policy.metadata.owner_references] == [again["metadata"]["uid"]]


def test_the_sessions_namespace_denies_by_default(arena: Arena) -> None:
    """The shipped default-deny policy (kustomize base and chart) selects every pod there."""
    import yaml

    from tests.conftest import REPO_ROOT

    doc = yaml.safe_load((REPO_ROOT / "manifests/base/networkpolicy-runner-default-deny.yaml").read_text())
    doc["metadata"]["namespace"] = arena.namespace
    created = arena.net().create_namespaced_network_policy(arena.namespace, doc)
    assert created.spec.pod_selector.to_dict() in ({}, {"match_expressions": None, "match_labels": None})
    assert created.spec.policy_types == ["Ingress", "Egress"] and not created.spec.egress


def test_a_workspace_above_the_maximum_is_refused_before_anything_exists(
    arena: Arena, run_operator: Any
) -> None:
    run_operator()
    big = arena.create("carol", "big", sandbox="full-access", workspace={"type": "persistent", "size": "5Ti"})
    s = arena.wait("big", "Failed", "AwaitingApproval")
    assert s["status"]["reason"] == "WorkspaceTooLarge" and "20Gi" in s["status"]["message"], s["status"]
    time.sleep(1)
    assert arena.pods_of(big["metadata"]["uid"]) == []
    claims = arena.core().list_namespaced_persistent_volume_claim(arena.namespace).items
    approvals = arena.custom("admin").list_namespaced_custom_object(
        GROUP, VERSION, arena.namespace, "approvalrequests"
    )
    assert claims == [] and approvals["items"] == []


def test_the_operator_cannot_read_other_secrets_through_pods_of_its_making(
    arena: Arena, control_plane: Any, operator_kubeconfig: Any
) -> None:
    """The operator may create pods and read their logs; admission keeps those pods to
    the runner's shape, so that right does not extend to every Secret of the namespace."""
    import copy

    from kubernetes import config as kube_config

    from codex_api.config import CodexMCPConfig
    from codex_api.session import CodexSessionSpec
    from codex_devenv.operator_process import bind_operator
    from codex_operator.pod_builder import build_runner_pod
    from codex_runner.contract import turn_settings_for

    bind_operator(control_plane, arena.namespace)
    operator = client.CoreV1Api(kube_config.new_client_from_config(config_file=str(operator_kubeconfig)))
    config = CodexMCPConfig()
    spec = CodexSessionSpec(prompt="hi", requestedBy="carol")
    pod = build_runner_pod(
        session_name="shape",
        session_uid="00000000-0000-0000-0000-000000000009",
        namespace=arena.namespace,
        spec=spec,
        settings=turn_settings_for(
            spec, model="m", resume_thread_id=None, endpoint=config.kubernetes.model_endpoint
        ),
        conversation="shape",
        attempt=1,
        timeout_seconds=60,
        config=config,
    )
    pod["metadata"]["ownerReferences"] = []  # no owner needed for a dry run
    operator.create_namespaced_pod(arena.namespace, pod, dry_run="All")  # the runner's own shape passes

    def variant(change: Any) -> dict[str, Any]:
        body = copy.deepcopy(pod)
        change(body)
        return body

    container = lambda b: b["spec"]["containers"][0]  # noqa: E731
    attempts = {
        "a Secret volume": lambda b: b["spec"]["volumes"].append(
            {"name": "s", "secret": {"secretName": "db"}}
        ),
        "another Secret by env": lambda b: container(b)["env"].append(
            {"name": "X", "valueFrom": {"secretKeyRef": {"name": "db-password", "key": "p"}}}
        ),
        "envFrom a Secret": lambda b: container(b).update(envFrom=[{"secretRef": {"name": "db"}}]),
        "another ServiceAccount": lambda b: b["spec"].update(serviceAccountName="default"),
        "a mounted token": lambda b: b["spec"].update(automountServiceAccountToken=True),
        "a projected volume": lambda b: b["spec"]["volumes"].append(
            {"name": "p", "projected": {"sources": [{"serviceAccountToken": {"path": "t"}}]}}
        ),
    }
    for what, change in attempts.items():
        text = refused(
            lambda c=change: operator.create_namespaced_pod(arena.namespace, variant(c), dry_run="All"),
            admission.MSG_RUNNER_SHAPE,
        )
        assert API_KEY_SECRET in text, what
