"""A deduplicating, delaying work queue, as controller-runtime has.

Reconcilers are level-triggered: a key in the queue means "look at this
object again". A key is never processed by two workers at once; a key added
while it is being processed runs once more afterwards; a key added many times
before it runs runs once. Failures are retried with exponential backoff.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable

log = logging.getLogger("codex_operator.workqueue")

Handler = Callable[[Hashable], Awaitable[float | None]]  # returns "look again in N seconds" or None


class WorkQueue:
    def __init__(self, handler: Handler, *, workers: int = 16, max_backoff: float = 30.0) -> None:
        self._handler = handler
        self._workers = workers
        self._max_backoff = max_backoff
        self._ready: asyncio.Queue[Hashable] = asyncio.Queue()
        self._queued: set[Hashable] = set()
        self._processing: set[Hashable] = set()
        self._dirty: set[Hashable] = set()
        self._timers: dict[Hashable, tuple[float, asyncio.TimerHandle]] = {}
        self._failures: dict[Hashable, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.on_processed: Callable[[Hashable, float, bool], None] | None = None

    def add(self, key: Hashable, delay: float = 0.0) -> None:
        if delay > 0:
            due = time.monotonic() + delay
            current = self._timers.get(key)
            if current and current[0] <= due:
                return  # an earlier look is already planned
            if current:
                current[1].cancel()
            handle = asyncio.get_running_loop().call_later(delay, self._fire, key)
            self._timers[key] = (due, handle)
            return
        if key in self._processing:
            self._dirty.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._ready.put_nowait(key)

    def _fire(self, key: Hashable) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def __len__(self) -> int:
        return len(self._queued)

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._work(), name=f"reconcile-worker-{i}") for i in range(self._workers)
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for _, handle in self._timers.values():
            handle.cancel()
        self._timers.clear()

    async def _work(self) -> None:
        while True:
            key = await self._ready.get()
            self._queued.discard(key)
            self._processing.add(key)
            started = time.monotonic()
            ok = True
            try:
                again = await self._handler(key)
            except asyncio.CancelledError:
                raise
            except Exception:
                ok = False
                failures = self._failures.get(key, 0) + 1
                self._failures[key] = failures
                backoff = min(0.05 * 2**failures, self._max_backoff)
                log.exception(
                    "reconcile of %s failed (attempt %d); retrying in %.2fs", key, failures, backoff
                )
                again = backoff
            else:
                self._failures.pop(key, None)
            finally:
                self._processing.discard(key)
            if self.on_processed:
                try:
                    self.on_processed(key, time.monotonic() - started, ok)
                except Exception:  # a metrics hook must never cost us a worker
                    log.exception("on_processed hook failed for %s", key)
            if key in self._dirty:
                self._dirty.discard(key)
                self.add(key)
            elif again is not None:
                self.add(key, again)
