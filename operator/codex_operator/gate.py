"""The concurrency gate: at most `limit` sessions run at once, first come
first served.

The gate lives in memory and is exact because every check-and-take happens
without an await in between (one event loop, one operator replica). After a
restart it is rebuilt from the cluster before any reconcile runs: a session
holds a slot while it is Running or while it has a runner pod that has not
finished (a crash between creating the pod and writing the status).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

Order = tuple[str, str]  # (creationTimestamp, name): FIFO, ties broken by name


class ConcurrencyGate:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.holders: set[Hashable] = set()
        self.waiting: dict[Hashable, Order] = {}

    def try_acquire(self, key: Hashable, order: Order) -> bool:
        if key in self.holders:
            return True
        self.waiting[key] = order
        free = self.limit - len(self.holders)
        if free <= 0:
            return False
        # Only the `free` oldest waiters may take a slot, so a newcomer
        # cannot overtake a session that has been queued longer.
        first = sorted(self.waiting.items(), key=lambda kv: kv[1])[:free]
        if key not in {k for k, _ in first}:
            return False
        del self.waiting[key]
        self.holders.add(key)
        return True

    def release(self, key: Hashable) -> list[Hashable]:
        """Free the key's slot (or forget it as a waiter); return who may go next."""
        was_waiting = self.waiting.pop(key, None) is not None
        if key not in self.holders:
            # A waiter that leaves may have been among those told to go next:
            # whoever moves up must be told too, or a free slot idles.
            return self.next_waiters() if was_waiting else []
        self.holders.discard(key)
        return self.next_waiters()

    def next_waiters(self) -> list[Hashable]:
        free = self.limit - len(self.holders)
        if free <= 0:
            return []
        return [k for k, _ in sorted(self.waiting.items(), key=lambda kv: kv[1])[:free]]

    def seed(self, holders: set[Hashable]) -> None:
        self.holders = set(holders)

    def snapshot(self) -> dict[str, Any]:
        return {"limit": self.limit, "running": len(self.holders), "queued": len(self.waiting)}
