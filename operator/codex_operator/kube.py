"""Kubernetes API calls of the operator (kubernetes_asyncio), on raw dicts.

Creates are idempotent (a 409 returns the existing object), status writes
carry the resourceVersion they were computed from (a stale view gets a 409
and is retried with fresh data instead of overwriting newer state).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.client.exceptions import ApiException

from codex_api import names
from codex_api.aio_client import without_env_lookups
from codex_api.common import GROUP, VERSION

log = logging.getLogger("codex_operator.kube")

T = TypeVar("T")
RETRY_429_SECONDS = 30.0
MERGE_PATCH = "application/merge-patch+json"
SESSIONS = "codexsessions"
APPROVALS = "approvalrequests"


class Conflict(Exception):
    """The object changed since it was read; look again."""


async def load_client(kubeconfig: str | None = None) -> k8s.ApiClient:
    if kubeconfig:
        await k8s_config.load_kube_config(config_file=kubeconfig)
    else:
        try:
            k8s_config.load_incluster_config()
        except k8s_config.ConfigException:
            await k8s_config.load_kube_config()
    api_client = k8s.ApiClient()
    without_env_lookups(api_client)
    return api_client


async def _call(fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
    """Call the API, honouring 429 Retry-After the way client-go does (bounded)."""
    deadline = time.monotonic() + RETRY_429_SECONDS
    while True:
        try:
            return await fn(*args, **kwargs)
        except ApiException as err:
            if err.status != 429 or time.monotonic() >= deadline:
                raise
            headers: Any = err.headers or {}
            retry_after = str(headers.get("Retry-After", "1"))
            await asyncio.sleep(min(float(retry_after) if retry_after.isdigit() else 1.0, 5.0))


async def _json(resp: Any) -> dict[str, Any]:
    """The body of a raw (_preload_content=False) response; errors raise as the client would."""
    data = await resp.read()
    if resp.status >= 400:
        err = ApiException(status=resp.status, reason=resp.reason)
        err.body = data.decode(errors="replace")
        err.headers = resp.headers
        resp.release()
        raise err
    return dict(json.loads(data))


async def _add_owner(
    patch: Callable[..., Awaitable[Any]],
    kind: str,
    namespace: str,
    obj: dict[str, Any],
    owner: dict[str, Any],
) -> None:
    owners = obj["metadata"].get("ownerReferences") or []
    if any(o.get("uid") == owner["uid"] for o in owners):
        return
    body = {
        "metadata": {
            "ownerReferences": [*owners, owner],
            "resourceVersion": obj["metadata"]["resourceVersion"],
        }
    }
    try:
        await _call(patch, obj["metadata"]["name"], namespace, body, _content_type=MERGE_PATCH)
    except ApiException as err:
        if err.status in (404, 409):
            raise Conflict(f"{kind}/{obj['metadata']['name']}: {err.reason}") from err
        raise


async def _create_or_read(
    create: Callable[..., Awaitable[Any]],
    read: Callable[..., Awaitable[Any]],
    namespace: str,
    body: dict[str, Any],
) -> dict[str, Any]:
    """Create a namespaced core object, or return the one already under its name. A 409
    alone proves nothing about whose that is: the caller checks (ownership.py)."""
    try:
        return await _json(await _call(create, namespace, body, _preload_content=False))
    except ApiException as err:
        if err.status != 409:
            raise
    return await _json(await _call(read, body["metadata"]["name"], namespace, _preload_content=False))


class KubeApi:
    def __init__(self, api_client: k8s.ApiClient) -> None:
        self.client = api_client
        self.custom = k8s.CustomObjectsApi(api_client)
        self.core = k8s.CoreV1Api(api_client)
        self.net = k8s.NetworkingV1Api(api_client)

    async def close(self) -> None:
        await self.client.close()

    # -- custom resources ----------------------------------------------------------
    async def list_custom(self, plural: str, namespace: str) -> list[dict[str, Any]]:
        out = await _call(self.custom.list_namespaced_custom_object, GROUP, VERSION, namespace, plural)
        return list(out["items"])

    async def create_custom(self, plural: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            return dict(
                await _call(
                    self.custom.create_namespaced_custom_object, GROUP, VERSION, namespace, plural, body
                )
            )
        except ApiException as err:
            if err.status != 409:
                raise
            name = body["metadata"]["name"]
            return dict(
                await _call(self.custom.get_namespaced_custom_object, GROUP, VERSION, namespace, plural, name)
            )

    async def patch_status(
        self, plural: str, namespace: str, name: str, status: dict[str, Any], resource_version: str
    ) -> dict[str, Any]:
        body = {"metadata": {"resourceVersion": resource_version}, "status": status}
        try:
            return dict(
                await _call(
                    self.custom.patch_namespaced_custom_object_status,
                    GROUP,
                    VERSION,
                    namespace,
                    plural,
                    name,
                    body,
                    _content_type=MERGE_PATCH,
                )
            )
        except ApiException as err:
            if err.status in (404, 409):
                raise Conflict(f"{plural}/{name}: {err.reason}") from err
            raise

    async def delete_custom(self, plural: str, namespace: str, name: str) -> None:
        try:
            await _call(
                self.custom.delete_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                plural,
                name,
                propagation_policy="Background",
            )
        except ApiException as err:
            if err.status != 404:
                raise

    # -- core objects ----------------------------------------------------------------
    async def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        resp = await _call(
            self.core.list_namespaced_pod, namespace, label_selector=selector, _preload_content=False
        )
        return list((await _json(resp))["items"])

    async def create_pod(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return await _create_or_read(
            self.core.create_namespaced_pod, self.core.read_namespaced_pod, namespace, body
        )

    async def delete_pod(self, namespace: str, name: str, grace_seconds: int = 5) -> None:
        try:
            await _call(self.core.delete_namespaced_pod, name, namespace, grace_period_seconds=grace_seconds)
        except ApiException as err:
            if err.status != 404:
                raise

    async def pod_log_tail(self, namespace: str, name: str, container: str, lines: int = 20) -> str | None:
        """The end of a container's log, or None when the node cannot serve it."""
        try:
            return str(
                await _call(
                    self.core.read_namespaced_pod_log,
                    name,
                    namespace,
                    container=container,
                    tail_lines=lines,
                    _request_timeout=5,
                )
            )
        except (ApiException, OSError, TimeoutError) as err:
            log.debug("no log for pod %s/%s: %s", namespace, name, err)
            return None

    async def ensure_network_policy(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return await _create_or_read(
            self.net.create_namespaced_network_policy,
            self.net.read_namespaced_network_policy,
            namespace,
            body,
        )

    async def ensure_claim(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """The conversation's volume claim: created, or the one already under that name."""
        return await _create_or_read(
            self.core.create_namespaced_persistent_volume_claim,
            self.core.read_namespaced_persistent_volume_claim,
            namespace,
            body,
        )

    async def add_claim_owner(self, namespace: str, claim: dict[str, Any], owner: dict[str, Any]) -> None:
        """Add one more turn of the conversation as an owner of its claim."""
        await _add_owner(
            self.core.patch_namespaced_persistent_volume_claim,
            "persistentvolumeclaims",
            namespace,
            claim,
            owner,
        )

    async def read_network_policy(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await _json(
                await _call(self.net.read_namespaced_network_policy, name, namespace, _preload_content=False)
            )
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    async def add_policy_owner(self, namespace: str, policy: dict[str, Any], owner: dict[str, Any]) -> None:
        """Add a turn a live pod serves as an owner of the policy that confines the
        pod: the policy then lives as long as any of them (the garbage collector
        removes an object when its last owner is gone)."""
        await _add_owner(
            self.net.patch_namespaced_network_policy, "networkpolicies", namespace, policy, owner
        )

    async def hand_over_pod(
        self,
        namespace: str,
        pod: dict[str, Any],
        *,
        owner: dict[str, Any],
        labels: dict[str, str | None],
    ) -> dict[str, Any]:
        """Make a live pod the runner of another turn: its controller and labels (the
        session's; None removes one), in one write guarded by the resourceVersion
        the caller checked (Conflict: the pod changed since, and nobody got it by
        this call)."""
        patch = {
            "metadata": {
                "resourceVersion": pod["metadata"]["resourceVersion"],
                "ownerReferences": [owner],
                "labels": labels,
            }
        }
        return await self._guarded_patch(self.core.patch_namespaced_pod, "pods", namespace, pod, patch)

    async def bind_pool_claim(
        self,
        namespace: str,
        claim: dict[str, Any],
        *,
        requester: str,
        conversation: str,
        owner: dict[str, Any],
    ) -> dict[str, Any]:
        """Record a warm pool pod's claim as a conversation's (the requester and
        conversation a later turn is checked against, and the turn as an owner),
        in one write guarded by the resourceVersion of the unbound claim the
        caller read."""
        patch = {
            "metadata": {
                "resourceVersion": claim["metadata"]["resourceVersion"],
                "annotations": {
                    names.ANNOTATION_REQUESTER: requester,
                    names.ANNOTATION_CONVERSATION: conversation,
                },
                "labels": {names.LABEL_POOL: None, names.LABEL_CONVERSATION: conversation},
                "ownerReferences": [*(claim["metadata"].get("ownerReferences") or []), owner],
            }
        }
        return await self._guarded_patch(
            self.core.patch_namespaced_persistent_volume_claim,
            "persistentvolumeclaims",
            namespace,
            claim,
            patch,
        )

    async def _guarded_patch(
        self,
        patch_fn: Callable[..., Awaitable[Any]],
        kind: str,
        namespace: str,
        obj: dict[str, Any],
        patch: dict[str, Any],
    ) -> dict[str, Any]:
        try:
            return await _json(
                await _call(
                    patch_fn,
                    obj["metadata"]["name"],
                    namespace,
                    patch,
                    _content_type=MERGE_PATCH,
                    _preload_content=False,
                )
            )
        except ApiException as err:
            if err.status in (404, 409):
                raise Conflict(f"{kind}/{obj['metadata']['name']}: {err.reason}") from err
            raise

    async def create_event(self, namespace: str, body: dict[str, Any]) -> None:
        try:
            await _json(
                await _call(self.core.create_namespaced_event, namespace, body, _preload_content=False)
            )
        except ApiException as err:
            log.warning("could not record event in %s: %s", namespace, err.reason)
