"""The gateway's watch-fed session cache against the real API server: it
follows creates, status changes and deletes, filters by requester, and
after a broken watch serves nothing stale (reads go to the API server)
until it has listed again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from kubernetes import client

from codex_api import names
from codex_api.common import GROUP, VERSION
from codex_devenv.testkit import create_session
from codex_gateway.kube import SessionApi, load_client
from codex_gateway.session_cache import SessionCache
from codex_gateway.sessions import requester_label


async def _until(check: Callable[[], bool], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def _labelled(kube_client: Any, namespace: str, name: str, user: str) -> None:
    create_session(kube_client, namespace, name, requestedBy=user)
    client.CustomObjectsApi(kube_client).patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "codexsessions",
        name,
        {"metadata": {"labels": {names.LABEL_REQUESTER: requester_label(user)}}},
    )


async def test_cache_follows_the_api_server(control_plane: Any, kube_client: Any, namespace: str) -> None:
    sessions = SessionApi(await load_client(str(control_plane.kubeconfig("admin"))), namespace)
    cache = SessionCache(sessions)
    task = asyncio.create_task(cache.run())
    try:
        _labelled(kube_client, namespace, "before", "alice")
        await _until(lambda: cache.ready and cache.get("before") is not None, "the initial list")
        _labelled(kube_client, namespace, "after", "alice")
        _labelled(kube_client, namespace, "bobs", "bob")
        await _until(lambda: cache.get("after") is not None and cache.get("bobs") is not None, "ADDED")
        assert {o["metadata"]["name"] for o in cache.owned_by("alice")} == {"before", "after"}
        assert [o["metadata"]["name"] for o in cache.owned_by("bob")] == ["bobs"]

        client.CustomObjectsApi(kube_client).patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, "codexsessions", "after", {"status": {"phase": "Running"}}
        )
        await _until(
            lambda: ((cache.get("after") or {}).get("status") or {}).get("phase") == "Running", "MODIFIED"
        )
        # A read is a copy: changing it changes nothing held.
        copy = cache.get("after")
        assert copy is not None
        copy["status"]["phase"] = "Succeeded"
        assert (cache.get("after") or {})["status"]["phase"] == "Running"
        client.CustomObjectsApi(kube_client).delete_namespaced_custom_object(
            GROUP, VERSION, namespace, "codexsessions", "before"
        )
        await _until(lambda: cache.get("before") is None, "DELETED")

        # A broken watch: not ready (callers read the API server), then a relist catches up.
        original = cache._watch
        broke = asyncio.Event()

        async def broken(version: str) -> None:
            broke.set()
            cache._watch = original  # type: ignore[method-assign]
            raise OSError("connection reset")

        cache._watch = broken  # type: ignore[method-assign]
        # any change ends the current watch call only when it times out: force a relist
        task.cancel()
        task = asyncio.create_task(cache.run())
        await asyncio.wait_for(broke.wait(), 10)
        assert not cache.ready and "connection reset" in (cache.last_error or "")
        _labelled(kube_client, namespace, "during", "alice")
        await _until(lambda: cache.ready and cache.get("during") is not None, "the relist", timeout=20)
        assert cache.last_error is None
    finally:
        task.cancel()
        await sessions.close()


async def test_the_list_comes_in_pages_and_keeps_no_conditions(
    control_plane: Any, kube_client: Any, namespace: str, monkeypatch: Any
) -> None:
    """The initial list is read in pages (a single list of thousands of
    sessions left its decoding peak as resident memory); every page lands."""
    from codex_gateway import session_cache

    monkeypatch.setattr(session_cache, "RELIST_PAGE", 3)
    for i in range(8):
        create_session(kube_client, namespace, f"paged-{i}")
    client.CustomObjectsApi(kube_client).patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        namespace,
        "codexsessions",
        "paged-0",
        {
            "status": {
                "phase": "Queued",
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "False",
                        "reason": "Queued",
                        "message": "waiting",
                        "lastTransitionTime": "2026-12-05T00:00:00Z",
                    }
                ],
            }
        },
    )
    sessions = SessionApi(await load_client(str(control_plane.kubeconfig("admin"))), namespace)
    pages: list[Any] = []
    original = sessions.custom.list_namespaced_custom_object

    async def counted(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("limit"):
            pages.append(kwargs.get("_continue"))
        return await original(*args, **kwargs)

    monkeypatch.setattr(sessions.custom, "list_namespaced_custom_object", counted)
    cache = SessionCache(sessions)
    task = asyncio.create_task(cache.run())
    try:
        await _until(lambda: cache.ready, "the initial list")
        assert all(cache.get(f"paged-{i}") is not None for i in range(8)) and len(cache) >= 8
        assert len(pages) >= 3 and pages[0] is None and all(pages[1:])
        kept = cache.get("paged-0")
        assert kept is not None and kept["status"] == {"phase": "Queued"}
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
