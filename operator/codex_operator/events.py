"""Kubernetes Events for phase transitions (and only for them)."""

from __future__ import annotations

import os
import socket
from typing import Any

from .conditions import now, rfc3339
from .kube import KubeApi

COMPONENT = "codex-operator"


def event_body(obj: dict[str, Any], reason: str, message: str, warning: bool = False) -> dict[str, Any]:
    meta = obj["metadata"]
    stamp = rfc3339(now())
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": obj["apiVersion"],
            "kind": obj["kind"],
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
        },
        "reason": reason,
        "message": message[:1024],
        "type": "Warning" if warning else "Normal",
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": os.environ.get("POD_NAME", socket.gethostname()),
    }


class EventRecorder:
    def __init__(self, api: KubeApi) -> None:
        self.api = api

    async def record(self, obj: dict[str, Any], reason: str, message: str, warning: bool = False) -> None:
        await self.api.create_event(obj["metadata"]["namespace"], event_body(obj, reason, message, warning))
