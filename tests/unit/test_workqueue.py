"""The deduplicating, delaying work queue (codex_operator.workqueue)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Callable, Hashable

import pytest

from codex_operator.workqueue import WorkQueue

pytestmark = pytest.mark.timeout(10)


async def wait_until(predicate: Callable[[], bool], timeout: float = 1.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.002)


class Recorder:
    """A handler that records calls; its behaviour per call is scripted."""

    def __init__(self) -> None:
        self.calls: list[tuple[Hashable, float]] = []
        self.script: dict[Hashable, list[object]] = {}

    def count(self, key: Hashable) -> int:
        return sum(1 for k, _ in self.calls if k == key)

    def times(self, key: Hashable) -> list[float]:
        return [t for k, t in self.calls if k == key]

    async def __call__(self, key: Hashable) -> float | None:
        self.calls.append((key, time.monotonic()))
        steps = self.script.get(key)
        step = steps.pop(0) if steps else None
        if isinstance(step, BaseException):
            raise step
        if isinstance(step, asyncio.Event):
            await step.wait()
            return None
        assert step is None or isinstance(step, float)
        return step


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


async def test_many_adds_before_processing_run_once(rec: Recorder) -> None:
    q = WorkQueue(rec, workers=4)
    for _ in range(100):
        q.add("a")
    q.add("b")
    assert len(q) == 2
    q.start()
    try:
        await wait_until(lambda: rec.count("a") == 1 and rec.count("b") == 1)
        await asyncio.sleep(0.05)
        assert Counter(k for k, _ in rec.calls) == {"a": 1, "b": 1}
        assert len(q) == 0
    finally:
        await q.stop()


async def test_key_added_while_processing_runs_exactly_once_more(rec: Recorder) -> None:
    gate = asyncio.Event()
    rec.script["a"] = [gate]
    q = WorkQueue(rec, workers=4)
    q.start()
    try:
        q.add("a")
        await wait_until(lambda: rec.count("a") == 1)
        for _ in range(10):
            q.add("a")
        await asyncio.sleep(0.02)
        assert rec.count("a") == 1  # not started again while the first run is active
        assert len(q) == 0  # dirty, not queued
        gate.set()
        await wait_until(lambda: rec.count("a") == 2)
        await asyncio.sleep(0.05)
        assert rec.count("a") == 2
    finally:
        await q.stop()


async def test_never_two_concurrent_runs_of_one_key() -> None:
    active: Counter[Hashable] = Counter()
    max_active: Counter[Hashable] = Counter()
    total = {"now": 0, "max": 0}
    runs: Counter[Hashable] = Counter()

    async def handler(key: Hashable) -> float | None:
        active[key] += 1
        total["now"] += 1
        max_active[key] = max(max_active[key], active[key])
        total["max"] = max(total["max"], total["now"])
        runs[key] += 1
        try:
            await asyncio.sleep(0.005)
        finally:
            active[key] -= 1
            total["now"] -= 1
        return None

    q = WorkQueue(handler, workers=8)
    q.start()
    try:
        keys = ["a", "b", "c"]
        for i in range(60):
            for key in keys:
                q.add(key)
            await asyncio.sleep(0.001 * (i % 3))
        await wait_until(lambda: len(q) == 0 and total["now"] == 0 and not q._dirty)
        await asyncio.sleep(0.02)
    finally:
        await q.stop()
    assert all(max_active[k] == 1 for k in keys), max_active
    assert total["max"] > 1  # different keys do run in parallel
    assert all(runs[k] >= 2 for k in keys)
    assert all(active[k] == 0 for k in keys)


async def test_delayed_add_fires(rec: Recorder) -> None:
    q = WorkQueue(rec, workers=2)
    q.start()
    try:
        t0 = time.monotonic()
        q.add("a", 0.08)
        await asyncio.sleep(0.03)
        assert rec.count("a") == 0
        assert len(q) == 0
        await wait_until(lambda: rec.count("a") == 1)
        assert rec.times("a")[0] - t0 >= 0.075
    finally:
        await q.stop()


async def test_earlier_delayed_add_wins(rec: Recorder) -> None:
    q = WorkQueue(rec, workers=2)
    q.start()
    try:
        t0 = time.monotonic()
        q.add("late-first", 0.4)
        q.add("late-first", 0.05)  # earlier: replaces the later timer
        q.add("early-first", 0.05)
        q.add("early-first", 0.4)  # later: ignored
        await wait_until(lambda: rec.count("late-first") == 1 and rec.count("early-first") == 1)
        for key in ("late-first", "early-first"):
            assert 0.045 <= rec.times(key)[0] - t0 < 0.3
        await asyncio.sleep(0.5)  # past the 0.4 s mark: no second run for either
        assert rec.count("late-first") == 1
        assert rec.count("early-first") == 1
    finally:
        await q.stop()


async def test_exception_retries_with_backoff_then_succeeds(rec: Recorder) -> None:
    rec.script["a"] = [RuntimeError("boom 1"), RuntimeError("boom 2"), None]
    outcomes: list[tuple[Hashable, bool]] = []
    q = WorkQueue(rec, workers=2)
    q.on_processed = lambda key, seconds, ok: outcomes.append((key, ok))
    q.start()
    try:
        q.add("a")
        await wait_until(lambda: rec.count("a") == 3)
        await asyncio.sleep(0.3)  # a success plans no further run
        assert rec.count("a") == 3
        t = rec.times("a")
        assert t[1] - t[0] >= 0.095  # 0.05 * 2**1
        assert t[2] - t[1] >= 0.195  # 0.05 * 2**2
        assert outcomes == [("a", False), ("a", False), ("a", True)]
        assert "a" not in q._failures
        # the failure count was reset by the success: the next failure backs off 0.1 s again
        rec.script["a"] = [RuntimeError("boom 3"), None]
        q.add("a")
        await wait_until(lambda: rec.count("a") == 5)
        t = rec.times("a")
        assert 0.095 <= t[4] - t[3] < 0.19
    finally:
        await q.stop()


async def test_backoff_is_capped(rec: Recorder) -> None:
    rec.script["a"] = [RuntimeError("x")] * 4 + [None]
    q = WorkQueue(rec, workers=1, max_backoff=0.02)
    q.start()
    try:
        q.add("a")
        await wait_until(lambda: rec.count("a") == 5)
        t = rec.times("a")
        gaps = [b - a for a, b in itertools.pairwise(t)]
        assert all(0.015 <= g < 0.09 for g in gaps), gaps
    finally:
        await q.stop()


async def test_returned_float_requeues(rec: Recorder) -> None:
    rec.script["a"] = [0.06, None]
    rec.script["b"] = [0.0, 0.0, None]  # 0 means "look again now"
    q = WorkQueue(rec, workers=2)
    q.start()
    try:
        q.add("a")
        q.add("b")
        await wait_until(lambda: rec.count("a") == 2 and rec.count("b") == 3)
        t = rec.times("a")
        assert t[1] - t[0] >= 0.055
        await asyncio.sleep(0.1)
        assert rec.count("a") == 2
        assert rec.count("b") == 3
    finally:
        await q.stop()


async def test_add_while_processing_wins_over_returned_delay(rec: Recorder) -> None:
    gate = asyncio.Event()
    rec.script["a"] = [gate, None]
    q = WorkQueue(rec, workers=1)
    q.start()
    try:
        q.add("a")
        await wait_until(lambda: rec.count("a") == 1)
        q.add("a")
        gate.set()
        await wait_until(lambda: rec.count("a") == 2)
        t = rec.times("a")
        assert t[1] - t[0] < 0.05
    finally:
        await q.stop()


async def test_stop_cancels_cleanly() -> None:
    started = asyncio.Event()
    cancelled: list[Hashable] = []
    runs: list[Hashable] = []

    async def handler(key: Hashable) -> float | None:
        runs.append(key)
        if key == "blocker":
            started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.append(key)
                raise
        return None

    q = WorkQueue(handler, workers=3)
    q.start()
    q.add("blocker")
    await asyncio.wait_for(started.wait(), 1.0)
    q.add("later", 0.05)
    t0 = time.monotonic()
    await asyncio.wait_for(q.stop(), 1.0)
    assert time.monotonic() - t0 < 0.5
    assert cancelled == ["blocker"]
    assert all(task.done() for task in q._tasks)
    assert q._timers == {}
    assert q._processing == set()
    await asyncio.sleep(0.1)
    assert runs == ["blocker"]  # the delayed add never fired


async def test_stop_without_start_and_twice() -> None:
    async def handler(key: Hashable) -> float | None:
        return None

    q = WorkQueue(handler)
    q.add("x", 0.05)
    await q.stop()
    assert q._timers == {}
    q.start()
    await q.stop()
    await q.stop()
