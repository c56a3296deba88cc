"""The concurrency gate (codex_operator.gate): limit, FIFO, wake-ups, seed."""

from __future__ import annotations

import random
from collections.abc import Hashable

import pytest

from codex_operator.gate import ConcurrencyGate


def order(i: int, name: str = "") -> tuple[str, str]:
    return (f"2025-01-01T00:{i // 60:02d}:{i % 60:02d}Z", name or f"s{i:03d}")


def test_limit_holds() -> None:
    gate = ConcurrencyGate(2)
    assert gate.try_acquire("a", order(1)) is True
    assert gate.try_acquire("b", order(2)) is True
    assert gate.try_acquire("c", order(3)) is False
    assert gate.try_acquire("d", order(4)) is False
    assert gate.holders == {"a", "b"}
    assert gate.waiting == {"c": order(3), "d": order(4)}
    assert gate.snapshot() == {"limit": 2, "running": 2, "queued": 2}


def test_release_returns_next_waiters_in_order() -> None:
    gate = ConcurrencyGate(2)
    gate.try_acquire("a", order(1))
    gate.try_acquire("b", order(2))
    for i, key in ((5, "e"), (3, "c"), (4, "d")):
        assert gate.try_acquire(key, order(i)) is False
    assert gate.next_waiters() == []
    assert gate.release("a") == ["c"]
    assert gate.release("b") == ["c", "d"]
    assert gate.holders == set()
    assert gate.try_acquire("d", order(4)) is True
    assert gate.try_acquire("c", order(3)) is True
    assert gate.try_acquire("e", order(5)) is False
    assert gate.release("c") == ["e"]


def test_fifo_older_waiter_served_before_newer_one_asking_first() -> None:
    gate = ConcurrencyGate(1)
    assert gate.try_acquire("running", order(0)) is True
    assert gate.try_acquire("old", order(1)) is False
    assert gate.try_acquire("new", order(2)) is False
    assert gate.release("running") == ["old"]
    # the newer session reconciles first after the release: it must not overtake
    assert gate.try_acquire("new", order(2)) is False
    assert gate.try_acquire("old", order(1)) is True
    assert gate.holders == {"old"}
    assert gate.waiting == {"new": order(2)}


def test_newcomer_cannot_overtake_queued_session() -> None:
    gate = ConcurrencyGate(1)
    gate.try_acquire("running", order(0))
    gate.try_acquire("queued", order(1))
    gate.release("running")
    # a brand-new session arriving while the slot is free still queues behind
    assert gate.try_acquire("newcomer", order(9)) is False
    assert gate.try_acquire("queued", order(1)) is True


def test_ties_broken_by_name() -> None:
    gate = ConcurrencyGate(1)
    gate.try_acquire("x", order(0))
    gate.try_acquire("zeta", ("2025-01-01T00:00:05Z", "zeta"))
    gate.try_acquire("alpha", ("2025-01-01T00:00:05Z", "alpha"))
    assert gate.release("x") == ["alpha"]


def test_acquire_is_idempotent() -> None:
    gate = ConcurrencyGate(1)
    assert gate.try_acquire("a", order(1)) is True
    assert gate.try_acquire("a", order(1)) is True
    assert gate.try_acquire("a", order(1)) is True
    assert gate.holders == {"a"}
    assert gate.waiting == {}
    assert gate.try_acquire("b", order(2)) is False
    assert gate.try_acquire("b", order(2)) is False
    assert gate.waiting == {"b": order(2)}
    assert gate.snapshot() == {"limit": 1, "running": 1, "queued": 1}


def test_release_is_idempotent() -> None:
    gate = ConcurrencyGate(1)
    gate.try_acquire("a", order(1))
    gate.try_acquire("b", order(2))
    assert gate.release("a") == ["b"]
    assert gate.release("a") == []
    assert gate.release("never-seen") == []
    assert gate.holders == set()
    assert gate.waiting == {"b": order(2)}


def test_waiter_leaving_wakes_whoever_moves_up() -> None:
    gate = ConcurrencyGate(2)
    gate.try_acquire("a", order(1))
    gate.try_acquire("b", order(2))
    gate.try_acquire("c", order(3))
    gate.try_acquire("d", order(4))
    assert gate.release("a") == ["c"]
    # c is deleted before it took the slot: d moves up and must be told
    assert gate.release("c") == ["d"]
    assert gate.release("c") == []
    assert gate.try_acquire("d", order(4)) is True
    # a waiter leaving while no slot is free wakes nobody
    gate.try_acquire("e", order(5))
    assert gate.release("e") == []
    assert gate.waiting == {}


def test_seed() -> None:
    gate = ConcurrencyGate(3)
    gate.seed({"r1", "r2"})
    assert gate.snapshot() == {"limit": 3, "running": 2, "queued": 0}
    assert gate.try_acquire("r1", order(0)) is True  # already a holder
    assert gate.try_acquire("n1", order(5)) is True
    assert gate.try_acquire("n2", order(6)) is False
    assert gate.release("r2") == ["n2"]


def test_seed_over_limit_blocks_until_below() -> None:
    # after a restart more pods may be running than a lowered limit allows
    gate = ConcurrencyGate(2)
    gate.seed({"r1", "r2", "r3"})
    assert gate.try_acquire("w", order(1)) is False
    assert gate.release("r1") == []  # 2 running, limit 2: still full
    assert gate.try_acquire("w", order(1)) is False
    assert gate.release("r2") == ["w"]
    assert gate.try_acquire("w", order(1)) is True


def test_seed_replaces_holders_and_copies() -> None:
    gate = ConcurrencyGate(5)
    gate.try_acquire("old", order(1))
    holders: set[Hashable] = {"x"}
    gate.seed(holders)
    holders.add("y")
    assert gate.holders == {"x"}


# --------------------------------------------------------------------------- property


@pytest.mark.parametrize("seed", range(20))
def test_random_sequences_respect_limit_and_fifo(seed: int) -> None:
    """Random arrivals, retries, finishes and abandonments over 50 keys, limit 10.

    A simulated work queue holds the wake-ups that release() hands out. After
    every step: at most `limit` holders; every waiter that may go next has a
    wake-up pending (so a free slot never idles while someone waits); and an
    acquire only succeeds if fewer older waiters exist than free slots (no
    overtaking). At the end, draining wake-ups serves every waiter oldest first.
    """
    rng = random.Random(seed)
    limit = 10
    keys = [f"k{i:02d}" for i in range(50)]
    orders: dict[Hashable, tuple[str, str]] = {k: order(i, k) for i, k in enumerate(keys)}
    rng.shuffle(keys)  # arrival order differs from creation order
    gate = ConcurrencyGate(limit)
    woken: set[Hashable] = set()
    served: list[Hashable] = []

    def acquire(key: Hashable) -> None:
        woken.discard(key)
        free = limit - len(gate.holders)
        older = sum(1 for k, o in gate.waiting.items() if o < orders[key] and k != key)
        was_holder = key in gate.holders
        got = gate.try_acquire(key, orders[key])
        if was_holder:
            assert got is True
            return
        assert got is (older < free), (key, older, free)
        if got:
            served.append(key)

    def release(key: Hashable) -> None:
        woken.update(gate.release(key))

    for _ in range(600):
        op = rng.random()
        idle = [k for k in keys if k not in gate.holders and k not in gate.waiting]
        if op < 0.35 and idle:
            acquire(rng.choice(idle))
        elif op < 0.55 and woken:
            acquire(rng.choice(sorted(woken, key=str)))
        elif op < 0.65 and gate.waiting:
            acquire(rng.choice(sorted(gate.waiting, key=str)))  # a safety requeue
        elif op < 0.9 and gate.holders:
            release(rng.choice(sorted(gate.holders, key=str)))  # a turn finished
        elif gate.waiting:
            release(rng.choice(sorted(gate.waiting, key=str)))  # a queued session deleted
        elif gate.holders:
            acquire(rng.choice(sorted(gate.holders, key=str)))  # re-reconcile of a runner

        assert len(gate.holders) <= limit
        assert not (gate.holders & gate.waiting.keys())
        nxt = gate.next_waiters()
        assert set(nxt) <= woken, "a waiter allowed to go was never woken"
        if gate.waiting and len(gate.holders) < limit:
            oldest = min(gate.waiting, key=lambda k: orders[k])
            assert nxt[0] == oldest

    # Finish everything: holders end, woken waiters retry; all waiters get served oldest first.
    pending = sorted(gate.waiting, key=lambda k: orders[k])
    served.clear()
    for holder in sorted(gate.holders, key=str):
        release(holder)
    while woken:
        key = min(woken, key=lambda k: orders[k])
        if key not in gate.waiting:  # a stale wake-up of a session that left meanwhile
            woken.discard(key)
            continue
        acquire(key)
        if key in gate.holders:
            release(key)
    assert served == pending
    assert gate.waiting == {}
    assert gate.holders == set()


# --------------------------------------------------------------------------- per-user share


def test_one_user_cannot_take_every_slot() -> None:
    gate = ConcurrencyGate(4, per_user=2)
    assert [gate.try_acquire(f"m{i}", order(i), "mallory") for i in range(4)] == [True, True, False, False]
    # alice arrives later and is served at once: mallory's waiters do not block her
    assert gate.try_acquire("a1", order(10), "alice") is True
    assert gate.try_acquire("a2", order(11), "alice") is True
    assert gate.try_acquire("a3", order(12), "alice") is False  # her share, and the gate is full
    assert gate.held_by("mallory") == 2 and gate.held_by("alice") == 2
    # a mallory slot frees: her own oldest waiter goes (FIFO among the eligible)
    assert gate.release("m0") == ["m2"]
    assert gate.try_acquire("m2", order(2), "mallory") is True


def test_share_passes_over_a_blocked_user_without_overtaking_eligible_ones() -> None:
    gate = ConcurrencyGate(3, per_user=1)
    assert gate.try_acquire("m0", order(0), "mallory") is True
    assert gate.try_acquire("m1", order(1), "mallory") is False  # over her share
    # bob is younger than mallory's waiter, but she is at her share: he goes
    assert gate.try_acquire("b1", order(3), "bob") is True
    assert gate.try_acquire("c1", order(4), "carol") is True
    assert gate.try_acquire("d1", order(5), "dave") is False  # full
    # mallory's slot frees: her waiter m1 is older than dave's, so it goes first
    assert gate.release("m0") == ["m1"]


def test_share_never_above_limit_and_defaults_to_limit() -> None:
    assert ConcurrencyGate(3, per_user=10).per_user == 3
    assert ConcurrencyGate(3).per_user == 3


def test_seed_keeps_requesters_for_the_share() -> None:
    gate = ConcurrencyGate(4, per_user=2)
    gate.seed({"r1": "mallory", "r2": "mallory"})
    assert gate.try_acquire("m", order(1), "mallory") is False
    assert gate.try_acquire("a", order(2), "alice") is True
