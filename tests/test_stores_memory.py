"""The memory store: atomic per-key updates, LRU eviction at the cap, idle expiry, no flush."""

from __future__ import annotations

import threading

import pytest

from otel_panel_receiver.stores import MemorySessionStore, SessionStore


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def put(store: SessionStore, key: int, value: int = 1) -> int | None:
    seen: list[int | None] = []

    def fn(old: int | None) -> tuple[int, None]:
        seen.append(old)
        return value, None

    store.apply(key, fn)
    return seen[0]


def test_apply_passes_none_for_a_new_key_then_the_stored_state() -> None:
    store = MemorySessionStore()
    assert put(store, 1, 10) is None
    assert put(store, 1, 11) == 10
    assert store.get(1) == 11 and len(store) == 1


def test_apply_returns_the_functions_result() -> None:
    store = MemorySessionStore()
    assert store.apply(5, lambda old: (3, "result")) == "result"


def test_large_packed_states_survive_storage() -> None:
    store = MemorySessionStore()
    big = (1 << 200) + 12345
    put(store, 7, big)
    assert store.get(7) == big


def test_size_cap_evicts_the_least_recently_active_never_everything() -> None:
    evicted: list[int] = []
    store = MemorySessionStore(max_size=200, on_evict=lambda key, state: evicted.append(key))
    for key in range(200):
        put(store, key)
    put(store, 0)  # key 0 becomes the most recently active
    put(store, 1000)  # one over the cap: the oldest 1% (2 sessions) go
    assert len(store) == 199
    assert evicted == [1, 2]
    assert store.get(0) is not None and store.get(1000) is not None
    assert store.evicted == 2


def test_max_size_zero_means_unbounded() -> None:
    store = MemorySessionStore(max_size=0, idle_ttl=0)
    for key in range(5000):
        put(store, key)
    assert len(store) == 5000


def test_idle_sessions_expire_and_active_ones_stay() -> None:
    clock = FakeClock()
    dropped: list[tuple[int, int]] = []
    store = MemorySessionStore(
        idle_ttl=100, clock=clock, on_evict=lambda key, state: dropped.append((key, state))
    )
    put(store, 1, 11)
    put(store, 2, 22)
    clock.now += 60
    put(store, 2, 23)
    clock.now += 50  # key 1 idle 110 s, key 2 idle 50 s
    assert store.sweep() == 1
    assert dropped == [(1, 11)]
    assert store.get(1) is None and store.get(2) == 23
    assert store.expired == 1


def test_apply_sweeps_by_itself_once_the_sweep_interval_passed() -> None:
    clock = FakeClock()
    store = MemorySessionStore(idle_ttl=100, clock=clock)
    put(store, 1)
    clock.now += 200
    put(store, 2)
    assert store.get(1) is None and len(store) == 1


def test_concurrent_updates_of_one_key_are_not_lost() -> None:
    store = MemorySessionStore()

    def work() -> None:
        for _ in range(2000):
            store.apply(42, lambda old: ((old or 0) + 1, None))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.get(42) == 8000


def test_negative_limits_are_refused() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        MemorySessionStore(max_size=-1)


def test_memory_store_satisfies_the_protocol() -> None:
    store: SessionStore = MemorySessionStore()
    assert len(store) == 0
    store.close()
