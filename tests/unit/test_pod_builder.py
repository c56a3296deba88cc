"""The runner pod and workspace claim manifests (codex_operator.pod_builder)."""

from __future__ import annotations

import copy
import dataclasses
import json
from typing import Any

import pytest

from codex_api import names
from codex_api.config import CodexMCPConfig
from codex_api.result import TERMINATION_MESSAGE_PATH
from codex_api.session import CodexSessionSpec
from codex_operator.pod_builder import build_runner_pod, build_workspace_claim, workspace_size
from codex_runner.contract import (
    RUNNER_COMMAND,
    TurnSettings,
    parse_runner_args,
    runner_args,
    turn_settings_for,
)

UID = "6f1c1f57-0c38-4b7e-9d43-3c2f0c3f0a11"
API_KEY_VALUE = "sk-this-must-never-appear-in-a-manifest"


def make_config(**kubernetes: Any) -> CodexMCPConfig:
    return CodexMCPConfig.model_validate({"kubernetes": kubernetes})


def make_spec(**fields: Any) -> CodexSessionSpec:
    return CodexSessionSpec.model_validate({"prompt": "Summarize README.md", **fields})


def build(
    spec: CodexSessionSpec | None = None,
    config: CodexMCPConfig | None = None,
    *,
    attempt: int = 1,
    resume: str | None = None,
    timeout: int = 300,
    settings: TurnSettings | None = None,
) -> dict[str, Any]:
    spec = spec or make_spec()
    config = config or make_config()
    settings = settings or turn_settings_for(
        spec, model="gpt-5-codex", resume_thread_id=resume, endpoint=config.kubernetes.model_endpoint
    )
    return build_runner_pod(
        session_name="fix-bug",
        session_uid=UID,
        namespace="codex-sessions",
        spec=spec,
        settings=settings,
        conversation="conv-1",
        attempt=attempt,
        timeout_seconds=timeout,
        config=config,
    )


def container(pod: dict[str, Any]) -> dict[str, Any]:
    (only,) = pod["spec"]["containers"]
    return only


def mounts(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["mountPath"]: m for m in container(pod)["volumeMounts"]}


def volumes(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in pod["spec"]["volumes"]}


RESTRICTED_CONTAINER_CONTEXT = {
    "allowPrivilegeEscalation": False,
    "privileged": False,
    "capabilities": {"drop": ["ALL"]},
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def test_metadata_is_deterministic_and_owned() -> None:
    pod = build(attempt=2)
    assert pod["apiVersion"] == "v1"
    assert pod["kind"] == "Pod"
    assert pod["metadata"] == {
        "name": "fix-bug-runner-2",
        "namespace": "codex-sessions",
        "labels": {
            names.LABEL_SESSION: "fix-bug",
            names.LABEL_CONVERSATION: "conv-1",
            names.LABEL_MANAGED_BY: names.MANAGED_BY,
            names.LABEL_PART_OF: names.PART_OF,
            names.LABEL_COMPONENT: names.COMPONENT_RUNNER,
            names.LABEL_POLICY: "fix-bug",
        },
        "annotations": {names.ANNOTATION_ATTEMPT: "2"},
        "ownerReferences": [
            {
                "apiVersion": "codex.techsapo.io/v1alpha1",
                "kind": "CodexSession",
                "name": "fix-bug",
                "uid": UID,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }
    assert pod["metadata"]["name"] == names.runner_pod("fix-bug", 2)


def test_same_inputs_give_the_same_manifest() -> None:
    assert build() == build()
    assert build(attempt=1)["metadata"]["name"] != build(attempt=2)["metadata"]["name"]


def test_manifest_is_plain_json() -> None:
    pod = build(make_spec(workspace={"type": "persistent"}))
    assert json.loads(json.dumps(pod)) == pod


def test_pod_spec_fields() -> None:
    spec = build(timeout=600)["spec"]
    assert spec["restartPolicy"] == "Never"
    assert spec["activeDeadlineSeconds"] == 630
    assert spec["automountServiceAccountToken"] is False
    assert spec["serviceAccountName"] == "codex-runner"
    assert spec["enableServiceLinks"] is False
    assert spec["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "fsGroup": 10001,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    for forbidden in ("hostNetwork", "hostPID", "hostIPC", "nodeName", "initContainers"):
        assert forbidden not in spec


def test_container_fields() -> None:
    pod = build(resume="thread-1")
    c = container(pod)
    assert c["name"] == "runner"
    assert c["image"] == "localhost/codex-runner:0.1.0"
    assert c["imagePullPolicy"] == "IfNotPresent"
    assert c["command"] == RUNNER_COMMAND == ["codex-runner"]
    assert c["workingDir"] == "/workspace"
    assert c["securityContext"] == RESTRICTED_CONTAINER_CONTEXT
    assert c["terminationMessagePath"] == TERMINATION_MESSAGE_PATH
    assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert c["stdin"] is False
    assert c["tty"] is False
    assert "ports" not in c
    assert c["resources"] == {
        "requests": {"cpu": "250m", "memory": "256Mi", "ephemeral-storage": "1Gi"},
        "limits": {"cpu": "2", "memory": "2Gi", "ephemeral-storage": "1Gi"},
    }


def test_args_are_the_contract() -> None:
    spec = make_spec(sandbox="isolated", mode="ci", fullAuto=True, reasoningEffort="high")
    config = make_config()
    settings = turn_settings_for(
        spec, model="o4", resume_thread_id="thread-7", endpoint=config.kubernetes.model_endpoint
    )
    c = container(build(spec, config, settings=settings))
    assert c["args"] == runner_args(settings)
    assert parse_runner_args(c["args"]) == settings


def test_env_names_the_secret_and_never_holds_the_key() -> None:
    c = container(build())
    assert c["env"] == [
        {"name": "CODEX_HOME", "value": "/codex/home"},
        {"name": "HOME", "value": "/tmp/home"},
        {"name": "TMPDIR", "value": "/tmp"},
        {
            "name": "CODEX_MODEL_API_KEY",
            "valueFrom": {"secretKeyRef": {"name": "codex-model-api-key", "key": "api-key"}},
        },
    ]
    key_entry = next(e for e in c["env"] if e["name"] == "CODEX_MODEL_API_KEY")
    assert "value" not in key_entry
    assert "envFrom" not in c


def test_env_follows_the_configured_endpoint_secret() -> None:
    config = make_config(
        model_endpoint={
            "api_key_env": "FAKE_KEY",
            "api_key_secret_name": "model-creds",
            "api_key_secret_key": "token",
        }
    )
    c = container(build(config=config))
    literal = {e["name"] for e in c["env"] if "value" in e}
    assert literal == {"CODEX_HOME", "HOME", "TMPDIR"}
    assert {
        "name": "FAKE_KEY",
        "valueFrom": {"secretKeyRef": {"name": "model-creds", "key": "token"}},
    } in c["env"]
    assert "--api-key-env" in c["args"]
    assert c["args"][c["args"].index("--api-key-env") + 1] == "FAKE_KEY"
    assert API_KEY_VALUE not in json.dumps(build(config=config))


def test_configured_runner_settings_flow_through() -> None:
    config = make_config(
        runner_image="registry.example/codex-runner@sha256:" + "a" * 64,
        runner_image_pull_policy="Always",
        runner_uid=4242,
        runner_service_account="runners",
        runner_resources={
            "cpu_request": "1",
            "memory_request": "1Gi",
            "cpu_limit": "4",
            "memory_limit": "8Gi",
            "ephemeral_storage_limit": "5Gi",
            "workspace_size": "3Gi",
        },
    )
    pod = build(config=config)
    c = container(pod)
    assert c["image"] == "registry.example/codex-runner@sha256:" + "a" * 64
    assert c["imagePullPolicy"] == "Always"
    assert c["resources"] == {
        "requests": {"cpu": "1", "memory": "1Gi", "ephemeral-storage": "5Gi"},
        "limits": {"cpu": "4", "memory": "8Gi", "ephemeral-storage": "5Gi"},
    }
    ctx = pod["spec"]["securityContext"]
    assert (ctx["runAsUser"], ctx["runAsGroup"], ctx["fsGroup"]) == (4242, 4242, 4242)
    assert pod["spec"]["serviceAccountName"] == "runners"
    assert volumes(pod)["workspace"]["emptyDir"] == {"sizeLimit": "3Gi"}


def test_scratch_workspace_uses_emptydirs() -> None:
    pod = build()
    assert volumes(pod) == {
        "tmp": {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
        "codex-home": {"name": "codex-home", "emptyDir": {"sizeLimit": "1Gi"}},
        "workspace": {"name": "workspace", "emptyDir": {"sizeLimit": "1Gi"}},
    }
    assert mounts(pod) == {
        "/tmp": {"name": "tmp", "mountPath": "/tmp"},
        "/codex/home": {"name": "codex-home", "mountPath": "/codex/home"},
        "/workspace": {"name": "workspace", "mountPath": "/workspace", "readOnly": True},
    }
    assert all("persistentVolumeClaim" not in v for v in pod["spec"]["volumes"])


def test_scratch_size_comes_from_the_spec_when_set() -> None:
    spec = make_spec(workspace={"type": "scratch", "size": "512Mi"})
    assert workspace_size(spec, make_config()) == "512Mi"
    assert workspace_size(make_spec(), make_config()) == "1Gi"
    v = volumes(build(spec))
    assert v["workspace"]["emptyDir"] == {"sizeLimit": "512Mi"}
    assert v["codex-home"]["emptyDir"] == {"sizeLimit": "512Mi"}


@pytest.mark.parametrize("sandbox", ["read-only", "isolated", "full-access"])
def test_persistent_workspace_mounts_one_claim_twice(sandbox: str) -> None:
    pod = build(make_spec(sandbox=sandbox, workspace={"type": "persistent", "size": "5Gi"}))
    assert volumes(pod) == {
        "tmp": {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
        "workspace": {
            "name": "workspace",
            "persistentVolumeClaim": {"claimName": names.workspace_claim("conv-1")},
        },
    }
    assert volumes(pod)["workspace"]["persistentVolumeClaim"]["claimName"] == "conv-1-workspace"
    assert mounts(pod) == {
        "/tmp": {"name": "tmp", "mountPath": "/tmp"},
        "/codex/home": {"name": "workspace", "mountPath": "/codex/home", "subPath": "home"},
        "/workspace": {
            "name": "workspace",
            "mountPath": "/workspace",
            "subPath": "workspace",
            **({"readOnly": True} if sandbox == "read-only" else {}),
        },
    }


@pytest.mark.parametrize("workspace", [None, {"type": "scratch"}, {"type": "persistent"}])
@pytest.mark.parametrize(
    ("sandbox", "read_only"), [("read-only", True), ("isolated", False), ("full-access", False)]
)
def test_workspace_is_read_only_only_for_read_only(
    sandbox: str, read_only: bool, workspace: dict[str, str] | None
) -> None:
    pod = build(make_spec(sandbox=sandbox, workspace=workspace))
    m = mounts(pod)
    assert m["/workspace"].get("readOnly", False) is read_only
    # Only true is written: the API server drops a false readOnly.
    assert m["/workspace"].get("readOnly", True) is True
    # Codex's home (rollout files for resume) and /tmp are always writable.
    assert m["/codex/home"].get("readOnly", False) is False
    assert m["/tmp"].get("readOnly", False) is False


def test_custom_paths_move_the_mounts_and_env() -> None:
    spec = make_spec(workspace={"type": "persistent"})
    base = turn_settings_for(
        spec, model="m", resume_thread_id=None, endpoint=make_config().kubernetes.model_endpoint
    )
    settings = dataclasses.replace(base, codex_home="/state/codex", workspace="/src")
    pod = build(spec, settings=settings)
    c = container(pod)
    assert set(mounts(pod)) == {"/tmp", "/state/codex", "/src"}
    assert c["workingDir"] == "/src"
    assert {"name": "CODEX_HOME", "value": "/state/codex"} in c["env"]
    assert parse_runner_args(c["args"]).workspace == "/src"


@pytest.mark.parametrize("workspace", [None, {"type": "persistent"}])
def test_full_access_gets_no_extra_privileges(workspace: dict[str, str] | None) -> None:
    read_only = build(make_spec(sandbox="read-only", workspace=workspace, mode="ci", fullAuto=True))
    full = build(make_spec(sandbox="full-access", workspace=workspace, mode="ci", fullAuto=True))
    assert full["spec"]["securityContext"] == read_only["spec"]["securityContext"]
    assert container(full)["securityContext"] == RESTRICTED_CONTAINER_CONTEXT
    assert full["spec"]["automountServiceAccountToken"] is False
    # Everything but the args and the read-only flag of the workspace is identical.
    a, b = copy.deepcopy(read_only), copy.deepcopy(full)
    for pod in (a, b):
        container(pod).pop("args")
        for m in container(pod)["volumeMounts"]:
            m.pop("readOnly", None)
    assert a == b


def test_every_volume_is_mounted_and_every_mount_has_a_volume() -> None:
    for spec in (make_spec(), make_spec(workspace={"type": "persistent"})):
        pod = build(spec)
        assert {m["name"] for m in container(pod)["volumeMounts"]} == set(volumes(pod))


def test_workspace_claim() -> None:
    owner = names.owner_reference("CodexSession", "first-turn", UID)
    pvc = build_workspace_claim(
        conversation="conv-1",
        namespace="codex-sessions",
        owner_refs=[owner],
        size="2Gi",
        storage_class="fast",
        requester="carol",
    )
    assert pvc == {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": "conv-1-workspace",
            "namespace": "codex-sessions",
            "labels": {
                names.LABEL_CONVERSATION: "conv-1",
                names.LABEL_MANAGED_BY: names.MANAGED_BY,
                names.LABEL_PART_OF: names.PART_OF,
                names.LABEL_COMPONENT: "workspace",
            },
            "annotations": {names.ANNOTATION_REQUESTER: "carol", names.ANNOTATION_CONVERSATION: "conv-1"},
            "ownerReferences": [owner],
        },
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "volumeMode": "Filesystem",
            "resources": {"requests": {"storage": "2Gi"}},
            "storageClassName": "fast",
        },
    }
    assert pvc["metadata"]["name"] == names.workspace_claim("conv-1")
    # The caller's list is copied, not shared.
    assert pvc["metadata"]["ownerReferences"][0] is not owner


@pytest.mark.parametrize("storage_class", [None, ""])
def test_workspace_claim_without_class_uses_the_cluster_default(storage_class: str | None) -> None:
    pvc = build_workspace_claim(
        conversation="c",
        namespace="ns",
        owner_refs=[],
        size="1Gi",
        storage_class=storage_class,
        requester="u",
    )
    # An explicit "" would mean "no class at all", not the default one.
    assert "storageClassName" not in pvc["spec"]
    assert pvc["metadata"]["ownerReferences"] == []


def test_node_selector_and_tolerations_come_from_config() -> None:
    from codex_api.config import parse_config
    from codex_runner.contract import turn_settings_for

    config = parse_config(
        '[kubernetes]\nrunner_node_selector = {pool = "sandbox"}\n'
        '[[kubernetes.runner_tolerations]]\nkey = "codex.dev/test-node"\noperator = "Exists"\neffect = "NoSchedule"\n'
    )
    spec = CodexSessionSpec(prompt="hi")
    settings = turn_settings_for(
        spec, model="m", resume_thread_id=None, endpoint=config.kubernetes.model_endpoint
    )
    pod = build_runner_pod(
        session_name="s",
        session_uid="u",
        namespace="n",
        spec=spec,
        settings=settings,
        conversation="s",
        attempt=1,
        timeout_seconds=60,
        config=config,
    )
    assert pod["spec"]["nodeSelector"] == {"pool": "sandbox"}
    assert pod["spec"]["tolerations"] == [
        {"key": "codex.dev/test-node", "operator": "Exists", "value": "", "effect": "NoSchedule"}
    ]
    assert (
        "tolerations"
        not in build_runner_pod(
            session_name="s",
            session_uid="u",
            namespace="n",
            spec=spec,
            settings=settings,
            conversation="s",
            attempt=1,
            timeout_seconds=60,
            config=parse_config(""),
        )["spec"]
    )
