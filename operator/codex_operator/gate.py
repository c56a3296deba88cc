"""The concurrency gate: at most `limit` sessions run at once, at most
`per_user` of them one requester's, first come first served among those
that may go.

The gate lives in memory and is exact because every check-and-take happens
without an await in between (one event loop, one operator replica). After a
restart it is rebuilt from the cluster before any reconcile runs: a session
holds a slot while it is Running or while it has a runner pod that has not
finished (a crash between creating the pod and writing the status).

The per-user share keeps one requester from taking every slot: their
waiting sessions are passed over (not blocking the queue) while they hold
their share, so another user's later session may go first.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Mapping
from typing import Any

Order = tuple[str, str]  # (creationTimestamp, name): FIFO, ties broken by name


class ConcurrencyGate:
    def __init__(self, limit: int, per_user: int | None = None) -> None:
        self.limit = limit
        self.per_user = min(per_user or limit, limit)
        self.holders: set[Hashable] = set()
        self.waiting: dict[Hashable, Order] = {}
        self.users: dict[Hashable, str] = {}  # requester of each holder and waiter

    def try_acquire(self, key: Hashable, order: Order, user: str = "") -> bool:
        if key in self.holders:
            return True
        self.waiting[key] = order
        self.users[key] = user
        if key not in self._next():
            return False
        del self.waiting[key]
        self.holders.add(key)
        return True

    def release(self, key: Hashable) -> list[Hashable]:
        """Free the key's slot (or forget it as a waiter); return who may go next."""
        was_waiting = self.waiting.pop(key, None) is not None
        if key not in self.holders:
            self.users.pop(key, None)
            # A waiter that leaves may have been among those told to go next:
            # whoever moves up must be told too, or a free slot idles.
            return self.next_waiters() if was_waiting else []
        self.holders.discard(key)
        self.users.pop(key, None)
        return self.next_waiters()

    def next_waiters(self) -> list[Hashable]:
        return self._next()

    def _next(self) -> list[Hashable]:
        """The oldest waiters that fit in the free slots without exceeding their user's share.
        Only these may take a slot, so a newcomer cannot overtake an eligible older waiter."""
        free = self.limit - len(self.holders)
        if free <= 0:
            return []
        held = Counter(self.users.get(k, "") for k in self.holders)
        chosen: list[Hashable] = []
        for key, _ in sorted(self.waiting.items(), key=lambda kv: kv[1]):
            user = self.users.get(key, "")
            if held[user] >= self.per_user:
                continue
            held[user] += 1
            chosen.append(key)
            if len(chosen) == free:
                break
        return chosen

    def held_by(self, user: str) -> int:
        return sum(1 for k in self.holders if self.users.get(k, "") == user)

    def seed(self, holders: Mapping[Hashable, str] | set[Hashable]) -> None:
        """Holders after a restart, with their requesters where known."""
        users = holders if isinstance(holders, Mapping) else dict.fromkeys(holders, "")
        self.holders = set(users)
        self.users = dict(users)

    def snapshot(self) -> dict[str, Any]:
        return {"limit": self.limit, "running": len(self.holders), "queued": len(self.waiting)}
