"""The sessions of the gateway's namespace in memory, kept current by a
watch (list, then watch from the list's resourceVersion; relist when the
watch expires or breaks) — an informer, for the read paths.

`codex-session-info` and `codex://sessions/active` answer from here instead
of one GET or LIST per call (P4: a LIST of a user's sessions was 43% of a
resource read). Writes and the reply path still ask the API server: a reply
must resume from the conversation's true latest turn. Until the first list
has arrived, and while a broken watch is being re-established, `ready` is
false and callers read from the API server instead. Objects are held slim and
packed (codex_api.kept: compressed JSON, ~110 bytes a session), beside an
index of the few fields that select them (requester, creator, phase); a read
unpacks only the objects it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, NamedTuple

from kubernetes_asyncio import watch as k8s_watch
from kubernetes_asyncio.client.exceptions import ApiException

from codex_api import names
from codex_api.common import GROUP, VERSION
from codex_api.kept import Packer, slim

from .kube import SESSIONS, KubeError, SessionApi
from .sessions import requester_label

log = logging.getLogger("codex_gateway.session_cache")

WATCH_SECONDS = 240
RETRY_SECONDS = (0.5, 1, 2, 5, 10)
RELIST_PAGE = 500
# Status the gateway never reads from the cache (its answers are built from
# phase, reason, message, response, usage, cost, timings and the ids).
UNREAD_STATUS = ("conditions",)
CREATED_BY = "app.kubernetes.io/created-by"


class Entry(NamedTuple):
    """One held session: what selects it, and the packed object."""

    requester_label: str | None
    requested_by: str | None
    created_by: str | None
    phase: str | None
    packed: bytes


class SessionCache:
    def __init__(self, sessions: SessionApi) -> None:
        self.sessions = sessions
        self._packer = Packer()
        self._entries: dict[str, Entry] = {}
        self.ready = False
        self.last_error: str | None = None

    def _entry(self, obj: dict[str, Any]) -> Entry:
        labels = obj["metadata"].get("labels") or {}
        status = obj.get("status") or {}
        return Entry(
            labels.get(names.LABEL_REQUESTER),
            (obj.get("spec") or {}).get("requestedBy"),
            labels.get(CREATED_BY),
            status.get("phase") if isinstance(status, dict) else None,
            self._packer.pack(slim(obj, unread_status=UNREAD_STATUS)),
        )

    # -- reads ---------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._entries)

    def get(self, name: str) -> dict[str, Any] | None:
        entry = self._entries.get(name)
        return None if entry is None else self._packer.unpack(entry.packed)

    def phases(self, created_by: str) -> dict[str, str | None]:
        """name -> phase of the sessions with this creator label, nothing unpacked."""
        return {name: e.phase for name, e in self._entries.items() if e.created_by == created_by}

    def owned_by(self, user: str) -> list[dict[str, Any]]:
        label = requester_label(user)
        return [
            self._packer.unpack(e.packed)
            for e in list(self._entries.values())
            if e.requester_label == label and e.requested_by == user
        ]

    # -- the informer loop ------------------------------------------------------------
    async def run(self) -> None:
        failures = 0
        while True:
            try:
                version = await self._relist()
                failures = 0
                await self._watch(version)
            except asyncio.CancelledError:
                raise
            except (ApiException, KubeError, OSError, ValueError, TimeoutError) as err:
                self.ready = False
                self.last_error = f"{type(err).__name__}: {err}"
                delay = RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)]
                failures += 1
                if failures == 1:
                    log.warning("session watch broke (%s); reading from the API server meanwhile", err)
                await asyncio.sleep(delay)

    async def _relist(self) -> str:
        # In pages: one list of thousands of sessions decodes to a transient
        # peak many times what is kept, and the process keeps that peak as RSS.
        entries: dict[str, Entry] = {}
        token: str | None = None
        while True:
            more: dict[str, Any] = {"_continue": token} if token else {}
            page = await self.sessions.custom.list_namespaced_custom_object(
                GROUP, VERSION, self.sessions.namespace, SESSIONS, limit=RELIST_PAGE, **more
            )
            for o in page.get("items") or []:
                entries[o["metadata"]["name"]] = self._entry(o)
            token = (page.get("metadata") or {}).get("continue") or None
            if token is None:
                break
        self._entries = entries
        self.ready, self.last_error = True, None
        return str(page["metadata"]["resourceVersion"])

    async def _watch(self, version: str) -> None:
        """Follow changes from `version` until the server ends the watch or
        the version is too old (410: relist, by returning)."""
        while True:
            watcher = k8s_watch.Watch()
            try:
                async for event in watcher.stream(
                    self.sessions.custom.list_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    self.sessions.namespace,
                    SESSIONS,
                    resource_version=version,
                    allow_watch_bookmarks=True,
                    timeout_seconds=WATCH_SECONDS,
                ):
                    kind, obj = event.get("type"), event.get("object")
                    if kind == "ERROR":
                        code = obj.get("code") if isinstance(obj, dict) else None
                        if code == 410:
                            return
                        raise ValueError(f"watch error: {obj}")
                    if not isinstance(obj, dict):
                        continue
                    version = obj["metadata"].get("resourceVersion") or version
                    if kind == "BOOKMARK":
                        continue
                    name = obj["metadata"]["name"]
                    if kind == "DELETED":
                        self._entries.pop(name, None)
                    elif kind in ("ADDED", "MODIFIED"):
                        self._entries[name] = self._entry(obj)
            except ApiException as err:
                if err.status == 410:
                    return
                raise
            finally:
                with contextlib.suppress(Exception):
                    await watcher.close()
