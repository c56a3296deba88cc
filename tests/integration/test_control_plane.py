"""The harness gives tests a real control plane: these tests pin down what
later tests rely on (version, RBAC, PodSecurity, garbage collection, CRDs)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from codex_devenv.assets import pinned_versions


def test_apiserver_version_is_the_pinned_release(kube_client: Any) -> None:
    info = client.VersionApi(kube_client).get_code()
    assert info.git_version == pinned_versions()["KUBERNETES_VERSION"]


def test_every_component_runs(control_plane: Any) -> None:
    pids = control_plane.pids()
    assert set(pids) == {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"}
    control_plane.check_alive()


def test_rbac_is_enforced_for_ordinary_users(control_plane: Any, namespace: str) -> None:
    out = control_plane.kubectl(
        "auth", "can-i", "list", "codexsessions", "-n", namespace, user="mallory", check=False
    )
    assert out.stdout.strip() == "no"
    out = control_plane.kubectl("auth", "can-i", "list", "codexsessions", "-n", namespace, user="admin")
    assert out.stdout.strip() == "yes"
    whoami = json.loads(control_plane.kubectl("auth", "whoami", "-o", "json", user="alice").stdout)
    assert whoami["status"]["userInfo"]["username"] == "alice"
    assert "codex-approvers" in whoami["status"]["userInfo"]["groups"]


def test_podsecurity_admission_enforces_restricted(kube_client: Any, namespace: str) -> None:
    core = client.CoreV1Api(kube_client)
    core.patch_namespace(
        namespace, {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}
    )
    privileged = client.V1Pod(
        metadata=client.V1ObjectMeta(name="privileged"),
        spec=client.V1PodSpec(
            containers=[
                client.V1Container(
                    name="c", image="busybox", security_context=client.V1SecurityContext(privileged=True)
                )
            ]
        ),
    )
    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod(namespace, privileged, dry_run="All")
    assert err.value.status == 403
    message = json.loads(err.value.body)["message"]
    assert 'violates PodSecurity "restricted:latest"' in message
    assert "privileged" in message


def test_controller_manager_collects_garbage(kube_client: Any, namespace: str) -> None:
    core = client.CoreV1Api(kube_client)
    owner = core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner"))
    )
    ref = client.V1OwnerReference(api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid)
    core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="child", owner_references=[ref]))
    )
    core.delete_namespaced_config_map("owner", namespace)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        names = {cm.metadata.name for cm in core.list_namespaced_config_map(namespace).items}
        if "child" not in names:
            return
        time.sleep(0.2)
    pytest.fail("the owned ConfigMap was not garbage-collected")


def test_crds_are_installed_and_established(kube_client: Any) -> None:
    ext = client.ApiextensionsV1Api(kube_client)
    for name in ("codexsessions.codex.techsapo.io", "approvalrequests.codex.techsapo.io"):
        crd = ext.read_custom_resource_definition(name)
        established = [c for c in crd.status.conditions if c.type == "Established"]
        assert established and established[0].status == "True"
