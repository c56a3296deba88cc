"""The runner pod and the conversation's workspace claim, as plain manifests.

Pure functions: same inputs, same dict, so a handler that runs twice creates
the same object under the same name and the second create is a harmless 409.

The pod is the sandbox boundary (Codex's own bubblewrap sandbox is reported
not to work inside restricted pods), so every sandbox level gets the same
non-root, capability-free securityContext that passes the Pod Security
Standard ``restricted`` profile. Sandbox levels differ only in whether the
workspace is mounted read-only and, in netpol_builder, in egress.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from codex_api import names
from codex_api.config import CodexMCPConfig, ModelEndpointConfig, WallBounceProviderConfig
from codex_api.result import TERMINATION_MESSAGE_PATH
from codex_api.session import CodexSessionSpec
from codex_runner.contract import (
    ENV_POD_UID,
    ENV_PUBLIC_KEY,
    RUNNER_COMMAND,
    AgentOptions,
    RunnerArgsError,
    TurnSettings,
    agent_args,
    runner_args,
)

__all__ = [
    "COMPONENT_WORKSPACE",
    "CONTAINER_NAME",
    "CREDENTIAL_FILE",
    "DEADLINE_GRACE_SECONDS",
    "HOME_DIR",
    "HOME_SUBPATH",
    "TMP_DIR",
    "TMP_SIZE_LIMIT",
    "VOLUME_CODEX_HOME",
    "VOLUME_TMP",
    "VOLUME_WORKSPACE",
    "WORKSPACE_SUBPATH",
    "LivePod",
    "build_runner_pod",
    "build_workspace_claim",
    "pod_shape",
    "wall_bounce_endpoints",
    "workspace_size",
]

CONTAINER_NAME = "runner"
COMPONENT_WORKSPACE = "workspace"
VOLUME_TMP = "tmp"
VOLUME_CODEX_HOME = "codex-home"
VOLUME_WORKSPACE = "workspace"
# Subdirectories of the conversation's claim: Codex's home (config and
# rollout files that `codex exec resume` needs) and the working tree.
HOME_SUBPATH = "home"
WORKSPACE_SUBPATH = "workspace"

TMP_DIR = "/tmp"
TMP_SIZE_LIMIT = "256Mi"
# The root filesystem is read-only, so HOME must be on a writable volume;
# it is scratch (not Codex's home, which is CODEX_HOME and may persist).
HOME_DIR = "/tmp/home"

# Where a live pod's agent writes each turn's model credential (the
# provider's auth.command reads it): the pod's scratch /tmp, like the
# variable a one-shot pod gets it in.
CREDENTIAL_FILE = "/tmp/codex-credential"

# Grace before the kubelet kills the pod, on top of the turn's own timeout:
# the operator enforces the timeout itself and this is only a second guard
# for when the operator is down.
DEADLINE_GRACE_SECONDS = 30

_SECCOMP = {"type": "RuntimeDefault"}


@dataclass(frozen=True)
class LivePod:
    """A live runner pod (warm runners): its agent takes the conversation's turns
    from the operator until it has been idle for `idle_seconds`."""

    public_key_pem: str  # the operator's; the pod can verify turns, never sign one
    key_fingerprint: str
    port: int
    idle_seconds: int
    lifetime_seconds: int


def pod_shape(pod: dict[str, Any]) -> str:
    """What makes two runner pods interchangeable: the SHA-256 of the pod's spec."""
    text = json.dumps(pod["spec"], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def workspace_size(spec: CodexSessionSpec, config: CodexMCPConfig) -> str:
    """The size of the session's workspace: the spec's, else the configured default."""
    if spec.workspace is not None and spec.workspace.size:
        return spec.workspace.size
    return config.kubernetes.runner_resources.workspace_size


def wall_bounce_endpoints(settings: TurnSettings, config: CodexMCPConfig) -> list[WallBounceProviderConfig]:
    """The configured providers a wall-bounce turn consults (none for an ordinary turn)."""
    if settings.wall_bounce is None:
        return []
    configured = {p.provider_id: p for p in config.kubernetes.wall_bounce_providers}
    missing = [p.provider_id for p in settings.wall_bounce.providers if p.provider_id not in configured]
    if missing:
        raise RunnerArgsError(f"wall-bounce provider(s) not configured: {', '.join(missing)}")
    return [configured[p.provider_id] for p in settings.wall_bounce.providers]


def _key_env(endpoint: ModelEndpointConfig, credential: str | None) -> dict[str, Any]:
    if credential is not None:
        # Through the model proxy: the session's credential, worthless to
        # anyone but this session's runner pod while the session is live.
        return {"name": endpoint.api_key_env, "value": credential}
    return {
        "name": endpoint.api_key_env,
        "valueFrom": {
            "secretKeyRef": {"name": endpoint.api_key_secret_name, "key": endpoint.api_key_secret_key}
        },
    }


def _is_persistent(spec: CodexSessionSpec) -> bool:
    return spec.workspace is not None and spec.workspace.type == "persistent"


def _volumes_and_mounts(
    spec: CodexSessionSpec, settings: TurnSettings, claim: str, config: CodexMCPConfig
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    # The pod, not Codex, enforces read-only: Codex's inner sandbox may not
    # work here, so a read-only session gets a workspace it cannot write at all.
    # Written only when true: the API server drops a false readOnly, and the
    # stored pod should equal the built one.
    read_only = {"readOnly": True} if settings.sandbox == "read-only" else {}
    size = workspace_size(spec, config)
    volumes: list[dict[str, Any]] = [{"name": VOLUME_TMP, "emptyDir": {"sizeLimit": TMP_SIZE_LIMIT}}]
    mounts: list[dict[str, Any]] = [{"name": VOLUME_TMP, "mountPath": TMP_DIR}]
    if _is_persistent(spec):
        volumes.append(
            {
                "name": VOLUME_WORKSPACE,
                "persistentVolumeClaim": {"claimName": claim},
            }
        )
        mounts += [
            # Always writable: even a read-only turn appends to its rollout
            # file, and the next turn's `resume` needs it.
            {"name": VOLUME_WORKSPACE, "mountPath": settings.codex_home, "subPath": HOME_SUBPATH},
            {
                "name": VOLUME_WORKSPACE,
                "mountPath": settings.workspace,
                "subPath": WORKSPACE_SUBPATH,
                **read_only,
            },
        ]
    else:
        volumes += [
            {"name": VOLUME_CODEX_HOME, "emptyDir": {"sizeLimit": size}},
            {"name": VOLUME_WORKSPACE, "emptyDir": {"sizeLimit": size}},
        ]
        mounts += [
            {"name": VOLUME_CODEX_HOME, "mountPath": settings.codex_home},
            {"name": VOLUME_WORKSPACE, "mountPath": settings.workspace, **read_only},
        ]
    return volumes, mounts


def build_runner_pod(
    *,
    session_name: str,
    session_uid: str,
    namespace: str,
    spec: CodexSessionSpec,
    settings: TurnSettings,
    conversation: str,
    attempt: int,
    timeout_seconds: int,
    config: CodexMCPConfig,
    credential: str | None = None,
    live: LivePod | None = None,
    workspace_claim: str | None = None,
) -> dict[str, Any]:
    """The Pod manifest of one attempt at running one turn; `credential`: the
    session's model-proxy credential, given instead of the provider keys;
    `workspace_claim`: the conversation's claim when it is not the one named
    after it (a conversation that began in a warm pool pod).

    `live`: the pod's agent serves this turn and the conversation's next
    ones. Its command line then carries no prompt (each turn's order does),
    and the credential comes with each order, never in the spec: one live
    pod's spec is the same for every turn it can serve (pod_shape)."""
    kube = config.kubernetes
    endpoint = kube.model_endpoint
    res = kube.runner_resources
    volumes, mounts = _volumes_and_mounts(
        spec, settings, workspace_claim or names.workspace_claim(conversation), config
    )
    labels = {
        **names.common_labels(session_name, conversation),
        names.LABEL_COMPONENT: names.COMPONENT_RUNNER,
        names.LABEL_POLICY: session_name,
    }
    if live is None:
        args = runner_args(settings)
        keys = [
            # A key only ever exists in its Secret and the container's env; the
            # pod spec (readable by anyone who can get pods) names it.
            _key_env(endpoint, credential),
            # A wall-bounce turn also gets the key of every provider it consults.
            *(_key_env(provider, credential) for provider in wall_bounce_endpoints(settings, config)),
        ]
    else:
        options = AgentOptions(
            port=live.port,
            idle_seconds=live.idle_seconds,
            credential_file=CREDENTIAL_FILE if credential is not None else None,
        )
        args = agent_args(settings, options)
        keys = [
            {"name": ENV_PUBLIC_KEY, "value": live.public_key_pem},
            {
                "name": ENV_POD_UID,
                "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.uid"}},
            },
            *([] if credential is not None else [_key_env(endpoint, None)]),
        ]

    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": kube.runner_image,
        "imagePullPolicy": kube.runner_image_pull_policy,
        "command": list(RUNNER_COMMAND),
        "args": args,
        "workingDir": settings.workspace,
        "env": [
            {"name": "CODEX_HOME", "value": settings.codex_home},
            {"name": "HOME", "value": HOME_DIR},
            {"name": "TMPDIR", "value": TMP_DIR},
            *keys,
        ],
        "resources": {
            # The API server would default the ephemeral-storage request to
            # the limit anyway; spelling it out keeps the stored pod equal to
            # the built one.
            "requests": {
                "cpu": res.cpu_request,
                "memory": res.memory_request,
                "ephemeral-storage": res.ephemeral_storage_limit,
            },
            "limits": {
                "cpu": res.cpu_limit,
                "memory": res.memory_limit,
                "ephemeral-storage": res.ephemeral_storage_limit,
            },
        },
        "volumeMounts": mounts,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "seccompProfile": dict(_SECCOMP),
        },
        "terminationMessagePath": TERMINATION_MESSAGE_PATH,
        # The runner writes a bounded result frame there; if it dies before
        # that, the log tail is the next best explanation.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        # Codex reads an open stdin to EOF and appends it to the prompt; without
        # stdin the container's is /dev/null.
        "stdin": False,
        "tty": False,
    }
    if live is not None:
        container["ports"] = [{"name": "agent", "containerPort": live.port, "protocol": "TCP"}]
    deadline = live.lifetime_seconds if live is not None else timeout_seconds + DEADLINE_GRACE_SECONDS

    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": names.runner_pod(session_name, attempt),
            "namespace": namespace,
            "labels": labels,
            "annotations": {names.ANNOTATION_ATTEMPT: str(attempt)},
            "ownerReferences": [names.owner_reference("CodexSession", session_name, session_uid)],
        },
        "spec": {
            # A failed turn is reported, not retried in place: a retry is a new
            # attempt (a new pod) decided by the operator.
            "restartPolicy": "Never",
            "activeDeadlineSeconds": deadline,
            "serviceAccountName": kube.runner_service_account,
            **({"priorityClassName": kube.runner_priority_class} if kube.runner_priority_class else {}),
            **({"nodeSelector": dict(kube.runner_node_selector)} if kube.runner_node_selector else {}),
            **(
                {"tolerations": [t.model_dump(exclude_defaults=False) for t in kube.runner_tolerations]}
                if kube.runner_tolerations
                else {}
            ),
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": kube.runner_uid,
                "runAsGroup": kube.runner_uid,
                "fsGroup": kube.runner_uid,
                # Skips the recursive chown of a large persistent workspace on
                # every turn once its root already has the right group.
                "fsGroupChangePolicy": "OnRootMismatch",
                "seccompProfile": dict(_SECCOMP),
            },
            "containers": [container],
            "volumes": volumes,
        },
    }
    if live is not None:
        pod["metadata"]["annotations"].update(
            {names.ANNOTATION_POD_SHAPE: pod_shape(pod), names.ANNOTATION_AGENT_KEY: live.key_fingerprint}
        )
    return pod


def build_workspace_claim(
    *,
    conversation: str,
    namespace: str,
    owner_refs: list[dict[str, Any]],
    size: str,
    storage_class: str | None,
    requester: str,
    name: str | None = None,
) -> dict[str, Any]:
    """The PersistentVolumeClaim shared by every turn of a conversation
    (`name`: when it is not the one named after the conversation).

    It outlives single turns, so it records whose conversation it holds: a
    later turn mounts it only for the same requester and conversation.
    """
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "volumeMode": "Filesystem",
        "resources": {"requests": {"storage": size}},
    }
    # storageClassName "" means "no class, bind a pre-provisioned volume
    # only"; leaving it out means "the cluster's default class", which is what
    # an empty config value promises.
    if storage_class:
        spec["storageClassName"] = storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": name or names.workspace_claim(conversation),
            "namespace": namespace,
            "labels": {
                names.LABEL_CONVERSATION: conversation,
                names.LABEL_MANAGED_BY: names.MANAGED_BY,
                names.LABEL_PART_OF: names.PART_OF,
                names.LABEL_COMPONENT: COMPONENT_WORKSPACE,
            },
            "annotations": {
                names.ANNOTATION_REQUESTER: requester,
                names.ANNOTATION_CONVERSATION: conversation,
            },
            "ownerReferences": [dict(ref) for ref in owner_refs],
        },
        "spec": spec,
    }
