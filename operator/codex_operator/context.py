"""What the reconcilers share: the API, the store, the gate, the queue."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from codex_api.config import CodexMCPConfig

from .events import EventRecorder
from .gate import ConcurrencyGate
from .kube import KubeApi
from .metrics import OperatorMetrics
from .store import Store
from .workqueue import WorkQueue

if TYPE_CHECKING:
    from .live_turns import LiveTurns

SESSION = "session"
APPROVAL = "approval"


def session_key(namespace: str, name: str) -> Hashable:
    return (SESSION, namespace, name)


def approval_key(namespace: str, name: str) -> Hashable:
    return (APPROVAL, namespace, name)


class Pool(Protocol):
    """The warm pool, as the reconcilers see it (codex_operator.warm_pool)."""

    def wake(self) -> None: ...


@dataclass
class Context:
    api: KubeApi
    store: Store
    config: CodexMCPConfig
    gate: ConcurrencyGate
    queue: WorkQueue
    events: EventRecorder
    metrics: OperatorMetrics
    # Signs runners' model-proxy credentials; None when runners hold the key.
    credential_key: bytes | None = None
    # Hands turns to live runner pods; None when warm runners are off.
    turns: LiveTurns | None = None
    # Keeps started runner pods for first turns; None without a pool.
    pool: Pool | None = None

    def release_slot(self, namespace: str, name: str) -> None:
        """Free a session's slot and wake whoever may take it."""
        for waiter in self.gate.release(session_key(namespace, name)):
            self.queue.add(waiter)
