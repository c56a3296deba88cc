"""The gateway's Kubernetes access (kubernetes_asyncio): it creates
CodexSessions and reads them back, reads the ApprovalRequests of a session's
actions and relays their requester's own decision on them (the MCP Tasks
extension's tasks/update; the `approval-decision` admission policy bounds
what a relay may say). Status is the operator's."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio import watch as k8s_watch
from kubernetes_asyncio.client.exceptions import ApiException

from codex_api import names
from codex_api.aio_client import without_env_lookups
from codex_api.common import GROUP, VERSION

from .sessions import requester_label

log = logging.getLogger("codex_gateway.kube")

SESSIONS = "codexsessions"
APPROVALS = "approvalrequests"


class KubeError(Exception):
    """An API call failed in a way the caller should see (validation, permission)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _message(err: ApiException) -> str:
    import json

    try:
        body = json.loads(err.body or "{}")
        return str(body.get("message") or err.reason)
    except (ValueError, TypeError):
        return str(err.reason)


async def load_client(kubeconfig: str | None = None) -> k8s.ApiClient:
    """An ApiClient with its own Configuration (no process-wide default touched)."""
    configuration = k8s.Configuration()
    if kubeconfig:
        await k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    else:
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)
        except k8s_config.ConfigException:
            await k8s_config.load_kube_config(client_configuration=configuration)
    api_client = k8s.ApiClient(configuration)
    without_env_lookups(api_client)
    return api_client


class SessionApi:
    """CodexSessions of one namespace."""

    def __init__(self, api_client: k8s.ApiClient, namespace: str) -> None:
        self.api_client = api_client
        self.namespace = namespace
        self.custom = k8s.CustomObjectsApi(api_client)

    async def close(self) -> None:
        await self.api_client.close()

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            created = await self.custom.create_namespaced_custom_object(
                GROUP, VERSION, self.namespace, SESSIONS, body
            )
        except ApiException as err:
            raise KubeError(err.status or 500, _message(err)) from err
        return cast(dict[str, Any], created)

    async def get(self, name: str) -> dict[str, Any] | None:
        try:
            obj = await self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, SESSIONS, name
            )
        except ApiException as err:
            if err.status == 404:
                return None
            raise KubeError(err.status or 500, _message(err)) from err
        return cast(dict[str, Any], obj)

    async def list_by_label(self, label_selector: str) -> list[dict[str, Any]]:
        selector: dict[str, Any] = {"label_selector": label_selector} if label_selector else {}
        try:
            listed = await self.custom.list_namespaced_custom_object(
                GROUP,
                VERSION,
                self.namespace,
                SESSIONS,
                **selector,
            )
        except ApiException as err:
            raise KubeError(err.status or 500, _message(err)) from err
        return list(cast(dict[str, Any], listed).get("items") or [])

    async def approvals_of(self, session: str) -> list[dict[str, Any]]:
        """The ApprovalRequests labelled as this session's (callers check spec.sessionUid)."""
        try:
            listed = await self.custom.list_namespaced_custom_object(
                GROUP, VERSION, self.namespace, APPROVALS, label_selector=f"{names.LABEL_SESSION}={session}"
            )
        except ApiException as err:
            raise KubeError(err.status or 500, _message(err)) from err
        return list(cast(dict[str, Any], listed).get("items") or [])

    async def decide(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        """Set an ApprovalRequest's decision. No resourceVersion: everything but the
        decision is immutable, and the CRD and admission refuse a second one."""
        try:
            patched = await self.custom.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                self.namespace,
                APPROVALS,
                name,
                {"spec": spec},
                _content_type="application/merge-patch+json",  # type: ignore[call-arg]
            )
        except ApiException as err:
            raise KubeError(err.status or 500, _message(err)) from err
        return cast(dict[str, Any], patched)

    async def list_all(self) -> list[dict[str, Any]]:
        return await self.list_by_label("")

    async def annotate(self, name: str, annotations: dict[str, str]) -> dict[str, Any] | None:
        """Add annotations (a merge patch of metadata only: the one change the
        gateway's admission policy lets it make). None when the session is gone."""
        try:
            patched = await self.custom.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                self.namespace,
                SESSIONS,
                name,
                {"metadata": {"annotations": annotations}},
                _content_type="application/merge-patch+json",  # type: ignore[call-arg]
            )
        except ApiException as err:
            if err.status == 404:
                return None
            raise KubeError(err.status or 500, _message(err)) from err
        return cast(dict[str, Any], patched)

    async def ping(self, timeout: float = 2.0) -> str | None:
        """None when the API server answers a cheap list in time, else why not."""
        try:
            async with asyncio.timeout(timeout):
                await self.custom.list_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, SESSIONS, limit=1
                )
        except TimeoutError:
            return f"no answer within {timeout:g}s"
        except ApiException as err:
            return f"HTTP {err.status}: {_message(err)}"
        except OSError as err:
            return f"{type(err).__name__}: {err}"
        return None

    async def list_for(self, user: str, conversation: str | None = None) -> list[dict[str, Any]]:
        """The user's sessions (label index, then the exact requestedBy check)."""
        selector = f"{names.LABEL_REQUESTER}={requester_label(user)}"
        if conversation:
            selector += f",{names.LABEL_CONVERSATION}={conversation}"
        items = await self.list_by_label(selector)
        return [o for o in items if (o.get("spec") or {}).get("requestedBy") == user]

    async def wait(
        self,
        name: str,
        done: Callable[[dict[str, Any]], bool],
        timeout: float,
        on_change: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
    ) -> dict[str, Any] | None:
        """Watch one session until `done(obj)` or `timeout` seconds; returns the
        last version seen. Falls back to polling when the watch breaks."""
        deadline = time.monotonic() + timeout
        last = await self.get(name)
        if last is None or done(last):
            return last
        last_rv = last["metadata"].get("resourceVersion")
        if on_change is not None:
            await on_change(last)
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                async with asyncio.timeout(remaining):
                    watcher = k8s_watch.Watch()
                    try:
                        async for event in watcher.stream(
                            self.custom.list_namespaced_custom_object,
                            GROUP,
                            VERSION,
                            self.namespace,
                            SESSIONS,
                            field_selector=f"metadata.name={name}",
                            resource_version=last_rv,
                            timeout_seconds=max(1, int(remaining) + 1),
                        ):
                            obj = event.get("object")
                            if event.get("type") == "DELETED":
                                return last
                            if not isinstance(obj, dict) or event.get("type") not in ("ADDED", "MODIFIED"):
                                continue
                            last, last_rv = obj, obj["metadata"].get("resourceVersion")
                            if done(obj):
                                return obj
                            if on_change is not None:
                                await on_change(obj)
                    finally:
                        with contextlib.suppress(Exception):
                            await watcher.close()
            except TimeoutError:
                break
            except (ApiException, OSError, ValueError) as err:
                # 410 Gone or a broken stream: re-read and go on (poll briefly).
                log.debug("watch of %s broke: %r", name, err)
                await asyncio.sleep(min(0.25, max(0.0, deadline - time.monotonic())))
                fresh = await self.get(name)
                if fresh is None:
                    return last
                last, last_rv = fresh, fresh["metadata"].get("resourceVersion")
                if done(fresh):
                    return fresh
        return last
