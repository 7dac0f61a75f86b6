"""Every session store keeps the same promises; the shared ones keep them across processes.

One suite runs over the memory, LMDB, SQLite and Redis stores, each opened by its URL. Redis is a
real ``redis-server`` (``scripts/install-peers.sh``) started once for the session on a free
port, emptied before each test. Time is a fake clock wherever it matters, so nothing here sleeps.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any, Protocol

import pytest

from otel_panel_receiver.errors import ConfigError, StoreUnavailable
from otel_panel_receiver.stores import EvictionCallback, MemorySessionStore, SessionStore
from otel_panel_receiver.stores import lmdb as lmdb_module
from otel_panel_receiver.stores import sqlite as sqlite_module
from otel_panel_receiver.stores.factory import open_store
from otel_panel_receiver.stores.lmdb import LmdbSessionStore
from otel_panel_receiver.stores.redis import RedisSessionStore
from otel_panel_receiver.stores.sqlite import SqliteSessionStore
from otel_panel_receiver.testing import FakeClock
from tests.support.mounts import fill, remount, tmpfs
from tests.support.peers import RedisServer, redis_server

STATE_210_BITS = (1 << 209) | 0x5A5A_1234_FFFF


class Store(SessionStore, Protocol):
    evicted: int
    expired: int
    resumed: int

    def get(self, key: int) -> int | None: ...


Opener = Callable[..., Store]


def put(store: SessionStore, key: int, value: int = 1) -> int | None:
    seen: list[int | None] = []

    def fn(old: int | None) -> tuple[int, None]:
        seen.append(old)
        return value, None

    store.apply(key, fn)
    return seen[-1]  # a store may run fn again after a conflict; the last run is what counts


def increment(old: int | None) -> tuple[int, None]:
    return (old or 0) + 1, None


@pytest.fixture(scope="session")
def redis_peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """Run one redis-server for the whole session."""
    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def redis_url(redis_peer: RedisServer) -> str:
    """Return the URL of the session's redis-server, emptied."""
    import redis

    with redis.Redis.from_url(redis_peer.url) as client:
        client.flushall()
    return redis_peer.url


def _url(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if kind == "memory":
        return "memory"
    if kind == "sqlite":
        return f"sqlite://{tmp_path}/sessions.db"
    if kind == "lmdb":
        return f"lmdb://{tmp_path}/sessions"
    return str(request.getfixturevalue("redis_url"))


@pytest.fixture(params=["memory", "lmdb", "sqlite", "redis"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return _url(request.param, request, tmp_path)


@pytest.fixture(params=["lmdb", "sqlite", "redis"])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return _url(request.param, request, tmp_path)


def _opener(url: str) -> Iterator[Opener]:
    opened: list[SessionStore] = []

    def open_(
        *,
        max_size: int = 100_000,
        idle_ttl: float = 86_400.0,
        clock: Callable[[], float] | None = None,
        on_evict: EvictionCallback | None = None,
    ) -> Store:
        store = open_store(
            url, max_size=max_size, idle_ttl=idle_ttl, clock=clock, on_evict=on_evict
        )
        opened.append(store)
        return store  # type: ignore[return-value]  # every store has get() and the counters

    yield open_
    for store in opened:
        store.close()


@pytest.fixture
def opener(url: str) -> Iterator[Opener]:
    yield from _opener(url)


@pytest.fixture
def shared_opener(shared_url: str) -> Iterator[Opener]:
    yield from _opener(shared_url)


# --- what every store does -----------------------------------------------------------------


def test_a_secret_is_made_once_shared_and_remade_after_its_ttl(
    shared_opener: Opener, clock: FakeClock
) -> None:
    a, b = shared_opener(clock=clock), shared_opener(clock=clock)
    first = a.secret("day-1", ttl=60)
    assert len(first) == 32 and b.secret("day-1", ttl=60) == first  # every process, one secret
    assert a.secret("day-2", ttl=60) != first
    clock.advance(61)
    if isinstance(a, RedisSessionStore):  # Redis expires by its own clock, not the store's
        return
    assert a.secret("day-1", ttl=60) != first


def test_a_mark_is_new_once_and_not_a_session(opener: Opener, clock: FakeClock) -> None:
    store = opener(clock=clock)
    assert store.mark(7, ttl=60) is True
    assert store.mark(7, ttl=60) is False
    assert store.mark(8, ttl=60) is True
    assert len(store) == 0 and store.get(7) is None


def test_memory_marks_expire_oldest_first_and_a_fresh_one_stays(clock: FakeClock) -> None:
    store = MemorySessionStore(clock=clock)
    assert store.mark(7, ttl=60) is True
    clock.advance(30)
    assert store.mark(8, ttl=60) is True
    clock.advance(31)  # 7 is 61 s old, 8 is 31 s old
    assert store.mark(8, ttl=60) is False
    assert store.mark(7, ttl=60) is True  # expired: new again
    assert store.mark(7, ttl=60) is False


def test_lmdb_marks_expire_and_stay_bounded(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lmdb_module, "MAX_MARKS", 50)
    store = LmdbSessionStore(tmp_path / "s", max_size=0, idle_ttl=0, clock=clock)
    assert store.mark(7, ttl=60) is True
    clock.advance(61)
    assert store.mark(7, ttl=60) is True  # expired: new again
    assert store.mark(7, ttl=60) is False
    for key in range(1000, 1500):
        assert store.mark(key, ttl=3600) is True
    marks, mark_order = store._map.run(
        lambda txn: [txn.stat(db)["entries"] for db in store._map.dbs[4:6]], write=False
    )
    assert marks == mark_order == 50  # past the bound, those that expire soonest went
    assert store.mark(1499, ttl=3600) is False and store.mark(1000, ttl=3600) is True
    store.close()


def test_a_new_session_gets_none_then_its_stored_state(opener: Opener) -> None:
    store = opener()
    assert put(store, 1, 10) is None
    assert put(store, 1, 11) == 10
    assert store.get(1) == 11 and len(store) == 1


def test_apply_returns_what_fn_returns(opener: Opener) -> None:
    assert opener().apply(5, lambda old: (3, "result")) == "result"


@pytest.mark.parametrize("state", [0, 1, STATE_210_BITS, (1 << 256) - 1])
@pytest.mark.parametrize("key", [0, 42, (1 << 128) - 1])
def test_states_and_keys_of_any_size_come_back_unchanged(
    opener: Opener, key: int, state: int
) -> None:
    store = opener()
    put(store, key, state)
    assert put(store, key, 1) == state


def test_size_cap_evicts_the_least_recently_active_never_everything(
    opener: Opener, clock: FakeClock
) -> None:
    evicted: list[tuple[int, int]] = []
    # The clock stands still: the order of activity must not depend on distinct times.
    store = opener(max_size=200, clock=clock, on_evict=lambda k, s: evicted.append((k, s)))
    for key in range(200):
        put(store, key, key + 10_000)
    put(store, 0, 7)  # key 0 becomes the most recently active
    put(store, 1000)  # one over the cap: the oldest 1% (2 sessions) go
    assert evicted == [(1, 10_001), (2, 10_002)]
    assert len(store) == 199 and store.evicted == 2
    assert store.get(0) == 7 and store.get(1000) == 1 and store.get(1) is None
    for key in range(2000, 3000):
        put(store, key)
        assert 199 <= len(store) <= 200
    assert all(store.get(key) is not None for key in range(2801, 3000))


def test_idle_sessions_expire_with_their_state_and_active_ones_stay(
    opener: Opener, clock: FakeClock
) -> None:
    dropped: list[tuple[int, int]] = []
    store = opener(idle_ttl=100, clock=clock, on_evict=lambda k, s: dropped.append((k, s)))
    put(store, 1, STATE_210_BITS)
    put(store, 2, 22)
    clock.advance(60)
    put(store, 2, 23)
    clock.advance(50)  # key 1 idle 110 s, key 2 idle 50 s
    assert store.sweep() == 1
    assert dropped == [(1, STATE_210_BITS)]
    assert store.get(1) is None and store.get(2) == 23 and len(store) == 1
    assert store.expired == 1
    assert put(store, 1) is None  # an expired session starts afresh


def test_apply_sweeps_by_itself_once_the_sweep_interval_passed(
    opener: Opener, clock: FakeClock
) -> None:
    store = opener(idle_ttl=100, clock=clock)
    put(store, 1)
    clock.advance(200)
    put(store, 2)
    assert store.get(1) is None and len(store) == 1


def test_zero_turns_both_bounds_off(opener: Opener, clock: FakeClock) -> None:
    store = opener(max_size=0, idle_ttl=0, clock=clock)
    for key in range(500):
        put(store, key)
    clock.advance(10 * 365 * 86_400)
    assert store.sweep() == 0
    put(store, 1)
    assert len(store) == 500


def test_eviction_callbacks_run_outside_the_store(opener: Opener, clock: FakeClock) -> None:
    seen: list[tuple[int, int | None, int]] = []

    def on_evict(key: int, state: int) -> None:  # would deadlock inside the store's lock
        seen.append((key, store.get(key), len(store)))

    store = opener(max_size=2, clock=clock, on_evict=on_evict)
    for key in range(3):
        put(store, key)
    assert seen == [(0, None, 2)]


def test_an_evicted_session_that_comes_back_continues_from_its_tombstone(
    opener: Opener, clock: FakeClock
) -> None:
    """Eviction must not turn a live session's next event into a new session (issue: flood)."""
    store = opener(max_size=100, clock=clock)
    for key in range(100):
        put(store, key, key + 10_000)
    put(store, 1000)  # one over the cap: key 0 is evicted
    assert store.get(0) is None and store.evicted == 1
    assert put(store, 0, 7) == 10_000  # back with the state it had, not as a new session
    assert store.resumed == 1 and store.get(0) == 7
    assert put(store, 0, 8) == 7  # and it is a session like any other again
    assert store.resumed == 1


def test_tombstones_are_bounded_the_oldest_go_first(opener: Opener, clock: FakeClock) -> None:
    store = opener(max_size=100, clock=clock)
    kept = getattr(store, "tombstones", 0)
    assert kept == 64  # max(64, a tenth of max_size)
    for key in range(100):
        put(store, key, key + 10_000)
    for key in range(1000, 1100):  # evicts keys 0..99, one at a time
        put(store, key)
    assert store.evicted == 100
    # Each put below is a session back in the store, which evicts one more: the oldest kept
    # tombstone is probed first.
    assert put(store, 36, 1) == 10_036  # the last 64 are kept: 36..99
    assert put(store, 35) is None and put(store, 0) is None  # older ones are gone
    assert put(store, 99, 1) == 10_099


def test_an_idle_tombstone_goes_with_the_sweep(opener: Opener, clock: FakeClock) -> None:
    store = opener(max_size=100, idle_ttl=600, clock=clock)
    for key in range(101):
        put(store, key, key + 10_000)  # key 0 evicted
    clock.advance(601)
    store.sweep()
    assert put(store, 0) is None  # idle past the TTL: a new session, as an expired one is


def test_an_sqlite_file_deleted_or_replaced_under_the_store_is_found_and_replaced(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    monkeypatch.setattr(sqlite_module, "_IDENTITY_EVERY", 0.0)  # check at every call
    path = tmp_path / "sessions.db"
    store = SqliteSessionStore(path, max_size=0, idle_ttl=0, clock=clock)
    other = SqliteSessionStore(path, max_size=0, idle_ttl=0, clock=clock)
    put(store, 1, 11)
    assert store.resets == 0 and store.reset_at == 0.0
    clock.advance(5)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    assert put(store, 2, 22) is None
    assert store.resets == 1 and store.reset_at == clock()
    assert store.get(1) is None and store.get(2) == 22 and path.exists()  # a new file
    assert other.get(2) == 22 and other.resets == 1  # every process finds it
    assert "Session store file deleted" in caplog.text
    replacement = tmp_path / "replacement.db"
    SqliteSessionStore(replacement, max_size=0, idle_ttl=0).close()
    replacement.replace(path)
    assert put(store, 3, 33) is None and store.resets == 2
    assert "Session store file replaced" in caplog.text
    store.close()
    other.close()


def test_an_lmdb_file_deleted_or_replaced_under_the_store_is_found_and_replaced(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    monkeypatch.setattr(lmdb_module, "_IDENTITY_EVERY", 0.0)  # check at every call
    path = tmp_path / "sessions"
    store = LmdbSessionStore(path, max_size=100, idle_ttl=0, clock=clock)
    other = LmdbSessionStore(path, max_size=100, idle_ttl=0, clock=clock)
    put(store, 1, 11)
    assert store.resets == 0 and store.reset_at == 0.0
    clock.advance(5)
    (path / "data.mdb").unlink()
    assert put(store, 2, 22) is None
    assert store.resets == 1 and store.reset_at == clock()
    assert store.get(1) is None and store.get(2) == 22 and (path / "data.mdb").exists()
    assert other.get(2) == 22 and other.reset_at == clock()  # the process's other users see it
    assert "Session store file was deleted under the receiver" in caplog.text
    elsewhere = LmdbSessionStore(tmp_path / "elsewhere", max_size=100, idle_ttl=0)
    put(elsewhere, 9, 99)
    elsewhere.close()
    (tmp_path / "elsewhere" / "data.mdb").replace(path / "data.mdb")
    assert put(store, 3, 33) is None and store.resets == 2 and store.get(9) == 99
    assert "Session store file was replaced under the receiver" in caplog.text
    store.close()
    assert other.get(3) == 33  # closing one user leaves the shared environment open
    other.close()


def test_lmdb_orders_activity_by_the_clock_across_processes_and_never_evicts_the_newcomer(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The order of activity is kept by the host's clock, not by reading the last entry: two
    processes in the same nanosecond still get one place each, and a process whose clock is
    behind cannot evict the session it has just written."""
    ns = [5_000]
    monkeypatch.setattr(lmdb_module, "_now_ns", lambda: ns[0])
    evicted: list[int] = []
    store = LmdbSessionStore(
        tmp_path / "s", max_size=3, idle_ttl=0, clock=clock,
        on_evict=lambda k, s: evicted.append(k),
    )  # fmt: skip

    def elsewhere(at: int) -> None:  # the next write comes from another process at ``at``
        store._map.last_seq = 0
        ns[0] = at

    put(store, 1)
    elsewhere(5_000)  # the same nanosecond
    put(store, 2)
    elsewhere(6_000)
    put(store, 3)
    elsewhere(7_000)
    put(store, 4)  # one over the cap: 1, the least recently active, goes
    assert evicted == [1]
    elsewhere(100)  # a clock behind the others: the newcomer lands at the front
    put(store, 5)
    assert evicted == [1, 2]
    assert [store.get(k) is not None for k in (2, 3, 4, 5)] == [False, True, True, True]
    store.close()


def test_an_lmdb_store_written_before_the_host_restarted_starts_over_keeping_its_ledger(
    tmp_path: Path, clock: FakeClock, caplog: Any
) -> None:
    """After an OS crash a file written without flushes may be damaged: it is not trusted."""
    boot = ["boot-1"]

    def open_() -> LmdbSessionStore:
        return LmdbSessionStore(
            tmp_path / "s", max_size=100, idle_ttl=0, clock=clock, boot=lambda: boot[0]
        )

    store = open_()
    put(store, 1, 11)
    assert store.mark(5, 3600)
    secret = store.secret("viewer-key", 86_400)
    store.close()
    store = open_()  # a restart of the service, the same boot: everything is there
    assert store.get(1) == 11 and store.resets == 0 and not store.mark(5, 3600)
    store.close()
    boot[0] = "boot-2"
    clock.advance(30)
    store = open_()
    assert store.get(1) is None and len(store) == 0 and store.mark(5, 3600)
    assert store.resets == 1 and store.reset_at == clock()
    assert "written before the host restarted" in caplog.text
    assert store.secret("viewer-key", 86_400) == secret  # kept in the ledger's SQLite file
    store.close()


def test_an_lmdb_store_refuses_what_does_not_fit_and_never_kills_the_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each step of the file is allocated first: a full disk or map refuses, nothing more."""
    with tmpfs(tmp_path / "mnt", "4m") as mount:
        store = LmdbSessionStore(mount / "s", max_size=1000, idle_ttl=0)  # its first step: 8 MiB
        with pytest.raises(StoreUnavailable, match="No space left on device"):
            put(store, 1, 11)
        remount(mount, "size=128m")
        assert put(store, 1, 11) is None and store.get(1) == 11
        assert os.stat(mount / "s" / "data.mdb").st_blocks * 512 >= lmdb_module.FIRST_MAP
        store.close()
    monkeypatch.setattr(lmdb_module, "map_size", lambda max_size: lmdb_module.FIRST_MAP)
    store = LmdbSessionStore(tmp_path / "small", max_size=0, idle_ttl=0)
    with pytest.raises(StoreUnavailable, match="MDB_MAP_FULL"):
        for key in range(1_000_000):
            put(store, key, 1 << 200)
    assert store.get(key) is None and store.get(0) == 1 << 200  # the refused one changed nothing
    assert len(store) == key
    store.close()


def _insert_in_process(path: str, first: int, count: int, barrier: Barrier) -> None:
    store = LmdbSessionStore(path, max_size=0, idle_ttl=0)
    barrier.wait(30)
    try:
        for key in range(first, first + count):
            store.apply(key, increment)
    finally:
        store.close()


def test_an_lmdb_file_grows_in_allocated_steps_that_every_process_follows(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(3)
    per = 40_000  # 120,000 sessions: several times the first step of the map
    procs = [
        ctx.Process(target=_insert_in_process, args=(path, n * per, per, barrier)) for n in range(3)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    store = LmdbSessionStore(path, max_size=0, idle_ttl=0)
    assert len(store) == 3 * per and store.get(0) == 1 and store.get(3 * per - 1) == 1
    info = os.stat(Path(path) / "data.mdb")
    assert info.st_size > lmdb_module.FIRST_MAP and info.st_blocks * 512 >= info.st_size
    store.close()


def _die_holding_the_write_lock(path: str, ready: Any) -> None:
    store = LmdbSessionStore(path, max_size=100, idle_ttl=0)

    def die(old: int | None) -> tuple[int, None]:
        ready.set()
        os.kill(os.getpid(), signal.SIGKILL)
        return 0, None  # never reached

    store.apply(7, die)


def test_a_worker_killed_inside_an_lmdb_transaction_blocks_no_one_and_changes_nothing(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "s")
    store = LmdbSessionStore(path, max_size=100, idle_ttl=0)
    put(store, 7, 70)
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    child = ctx.Process(target=_die_holding_the_write_lock, args=(path, ready))
    child.start()
    assert ready.wait(30)
    child.join(30)
    assert child.exitcode == -signal.SIGKILL
    child.close()
    done = threading.Event()

    def write() -> None:
        put(store, 7, 71)
        done.set()

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    assert done.wait(10), "the dead worker's lock was never given back"
    assert store.get(7) == 71
    store.close()


def test_a_redis_that_lost_its_data_is_found(redis_url: str, clock: FakeClock) -> None:
    import redis

    store = RedisSessionStore(redis_url, max_size=0, idle_ttl=0, clock=clock)
    put(store, 1, 11)
    put(store, 1, 12)
    assert store.resets == 0
    with redis.Redis.from_url(redis_url) as client:
        client.flushall()
    clock.advance(3)
    assert put(store, 2) is None
    assert store.resets == 1 and store.reset_at == clock()
    store.close()


def test_a_read_only_sqlite_file_is_unavailable_until_it_is_writable_again(
    tmp_path: Path,
) -> None:
    """A connection opened on a read-only file stays read-only: the store opens it again."""
    with tmpfs(tmp_path / "mnt", "4m") as mount:
        store = SqliteSessionStore(mount / "sessions.db", max_size=0, idle_ttl=0)
        put(store, 1, 11)
        store.close()  # the worker stops; a file open for writing keeps a mount writable
        remount(mount, "ro")
        # The worker that starts now: built all the same, but unavailable.
        restarted = SqliteSessionStore(mount / "sessions.db", max_size=0, idle_ttl=0)
        with pytest.raises(StoreUnavailable, match=r"(?i)readonly|read-only|unable to open"):
            put(restarted, 1, 12)
        with pytest.raises(StoreUnavailable):
            restarted.ping()
        remount(mount, "rw")
        assert put(restarted, 1, 13) == 11  # nothing had changed
        restarted.close()


def test_a_full_disk_under_sqlite_is_unavailable_and_changes_nothing(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "mnt", "1m") as mount:
        store = SqliteSessionStore(mount / "sessions.db", max_size=0, idle_ttl=0)
        put(store, 1, 11)
        filler = fill(mount)
        with pytest.raises(StoreUnavailable, match="full"):
            for key in range(2, 5_000):  # pages run out within a few hundred sessions
                put(store, key, 1 << 1000)
        assert store.get(1) == 11
        filler.unlink()
        assert put(store, 1, 12) == 11
        store.close()


def test_concurrent_updates_of_one_key_from_threads_are_not_lost(opener: Opener) -> None:
    store = opener()

    def work() -> None:
        for _ in range(250):
            store.apply(42, increment)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.get(42) == 1000


def test_an_update_that_raises_changes_nothing(opener: Opener) -> None:
    store = opener()
    put(store, 1, 10)

    def fail(old: int | None) -> tuple[int, None]:
        raise RuntimeError("rules failed")

    with pytest.raises(RuntimeError, match="rules failed"):
        store.apply(1, fail)
    assert store.get(1) == 10 and len(store) == 1


def test_negative_limits_are_refused(opener: Opener) -> None:
    with pytest.raises(ValueError, match=">= 0"):
        opener(max_size=-1)


# --- what the shared stores do across store objects, processes and restarts ----------------


def test_two_store_objects_see_each_others_updates(shared_opener: Opener) -> None:
    a, b = shared_opener(), shared_opener()
    put(a, 1, 10)
    assert put(b, 1, 11) == 10
    assert a.get(1) == 11 and len(a) == len(b) == 1


def test_the_size_cap_bounds_the_sessions_of_all_store_objects(
    shared_opener: Opener, clock: FakeClock
) -> None:
    a, b = shared_opener(max_size=100, clock=clock), shared_opener(max_size=100, clock=clock)
    for key in range(150):
        put(a if key % 2 else b, key)
    assert 99 <= len(a) <= 100 and a.evicted + b.evicted == 150 - len(a)
    assert a.get(0) is None and b.get(149) is not None


def test_an_idle_session_expires_once_whichever_store_object_sweeps(
    shared_opener: Opener, clock: FakeClock
) -> None:
    dropped: list[int] = []
    a = shared_opener(idle_ttl=100, clock=clock, on_evict=lambda k, s: dropped.append(k))
    b = shared_opener(idle_ttl=100, clock=clock, on_evict=lambda k, s: dropped.append(k))
    put(a, 1)
    clock.advance(150)
    assert b.sweep() + a.sweep() == 1
    assert dropped == [1]


def test_sessions_survive_closing_and_reopening(shared_opener: Opener, clock: FakeClock) -> None:
    store = shared_opener(max_size=10, clock=clock)
    put(store, 1, STATE_210_BITS)
    put(store, 2, 22)
    store.close()
    store = shared_opener(max_size=10, clock=clock)
    assert store.get(1) == STATE_210_BITS and len(store) == 2
    put(store, 1, 11)  # and the order of activity survives too: key 2 goes first
    for key in range(100, 109):
        put(store, key)
    assert store.get(2) is None and store.get(1) == 11


def _increment_in_process(url: str, key: int, count: int, barrier: Barrier) -> None:
    barrier.wait(30)  # every process opens the (maybe new) store at the same moment
    store = open_store(url, max_size=1000, idle_ttl=3600)
    try:
        for _ in range(count):
            store.apply(key, increment)
    finally:
        store.close()


def test_processes_sharing_a_store_lose_no_increment(shared_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters, as gunicorn workers are
    barrier = ctx.Barrier(3)
    procs = [
        ctx.Process(target=_increment_in_process, args=(shared_url, 7, 300, barrier))
        for _ in range(3)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    for p in procs:
        p.close()
    store = open_store(shared_url, max_size=1000, idle_ttl=3600)
    try:
        assert isinstance(store, LmdbSessionStore | SqliteSessionStore | RedisSessionStore)
        assert store.get(7) == 900
    finally:
        store.close()


def _increment_inherited(store: SessionStore, count: int) -> None:
    for _ in range(count):
        store.apply(7, increment)
    store.close()


@pytest.mark.parametrize("kind", [LmdbSessionStore, SqliteSessionStore])
def test_a_file_store_opened_before_a_fork_works_on_both_sides(
    kind: type[LmdbSessionStore | SqliteSessionStore], tmp_path: Path
) -> None:
    store = kind(tmp_path / "s", max_size=1000, idle_ttl=3600)
    try:
        store.apply(7, increment)  # the parent's connection is open when it forks
        ctx = multiprocessing.get_context("fork")  # gunicorn --preload forks a loaded app
        with warnings.catch_warnings():
            # Python 3.12+ warns about forking with threads; the child touches only the store.
            warnings.simplefilter("ignore", DeprecationWarning)
            child = ctx.Process(target=_increment_inherited, args=(store, 300))
            child.start()
        for _ in range(300):
            store.apply(7, increment)
        child.join(60)
        assert child.exitcode == 0
        child.close()
        assert store.get(7) == 601
    finally:
        store.close()


def test_a_redis_write_sent_twice_after_a_lost_reply_counts_once(redis_url: str) -> None:
    store = RedisSessionStore(redis_url, max_size=10, idle_ttl=60)
    script, sent = store._cas, list[Any]()

    def resent(keys: Any, args: Any) -> Any:  # the first reply is lost, redis-py sends again
        if not sent:
            sent.append(script(keys, args))
        return script(keys, args)

    store._cas = resent  # type: ignore[assignment]
    try:
        store.apply(7, increment)
        store.apply(7, increment)
        assert store.get(7) == 2 and store.conflicts == 0
    finally:
        store.close()


def test_a_redis_update_is_one_round_trip_unless_another_process_wrote_last(
    redis_url: str,
) -> None:
    """Each round trip is a send and a wake-up of Redis: most of what a payload costs there."""
    a, b = (RedisSessionStore(redis_url, max_size=2, idle_ttl=60) for _ in range(2))
    a.client.script_load(a._cas.script)  # once per Redis, not a round trip of each update
    sent: list[str] = []
    for store in (a, b):
        command = store.client.execute_command

        def counted(*args: Any, _command: Any = command, **kw: Any) -> Any:
            sent.append(args[0])
            return _command(*args, **kw)

        store.client.execute_command = counted

    def trips(store: RedisSessionStore, key: int, value: int) -> tuple[int | None, list[str]]:
        sent.clear()
        return put(store, key, value), list(sent)  # the state the update ran on, what it sent

    one, two = ["EVALSHA"], ["EVALSHA", "EVALSHA"]
    try:
        assert trips(a, 1, 10) == (None, one)  # a new session: no read first
        assert trips(a, 1, 11) == (10, one)  # a wrote it last
        assert trips(b, 1, 12) == (11, two)  # b runs again on a's value
        assert trips(a, 1, 13) == (12, two)
        assert a.get(1) == 13 and a.conflicts == b.conflicts == 0  # a stale guess: no conflict
        put(b, 2, 20)
        put(b, 3, 30)  # one over max_size 2: b evicts session 1, which a wrote last
        assert b.evicted == 1 and b.get(1) is None
        assert trips(a, 1, 14) == (13, two) and a.resumed == 1  # from the tombstone
        put(b, 4, 40)  # evicts session 2, which a never wrote: its guess is "new"
        assert trips(a, 2, 21) == (20, two) and a.resumed == 2
    finally:
        a.close()
        b.close()


def test_redis_keys_get_a_safety_ttl_and_prefixes_keep_deployments_apart(redis_url: str) -> None:
    import redis

    a = RedisSessionStore(redis_url, max_size=10, idle_ttl=100, prefix="a:")
    b = RedisSessionStore(redis_url, max_size=10, idle_ttl=0, prefix="b:")
    try:
        put(a, 1, 10)
        put(b, 1, 20)
        assert a.get(1) == 10 and b.get(1) == 20
        with redis.Redis.from_url(redis_url) as client:
            assert 199_000 < client.pttl(f"a:s:{1:032x}") <= 200_000
            assert client.pttl(f"b:s:{1:032x}") == -1  # no idle expiry: no TTL either
    finally:
        a.close()
        b.close()


# --- open_store -------------------------------------------------------------------------------


def test_open_store_opens_the_store_a_url_names(tmp_path: Path, redis_peer: RedisServer) -> None:
    cases: list[tuple[str, type]] = [
        ("memory", MemorySessionStore),
        (f"sqlite://{tmp_path}/a.db", SqliteSessionStore),
        (f"sqlite:{tmp_path}/b.db", SqliteSessionStore),
        (f"sqlite://{tmp_path}/with%20space.db", SqliteSessionStore),
        (redis_peer.url, RedisSessionStore),
        (redis_peer.unix_url, RedisSessionStore),
    ]
    for url, kind in cases:
        store = open_store(url, max_size=10, idle_ttl=60)
        try:
            assert type(store) is kind
            put(store, 99, 5)
            assert put(store, 99, 6) == 5
        finally:
            store.close()
    assert {p.name for p in tmp_path.glob("*.db")} == {"a.db", "b.db", "with space.db"}


def test_a_relative_sqlite_path_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    open_store("sqlite:data/sessions.db", max_size=10, idle_ttl=60).close()
    assert (tmp_path / "data" / "sessions.db").is_file()


@pytest.mark.parametrize(
    "url",
    ["rediss://cache.example:6380/2", "redis://:secret@cache.example", "unix:///run/r.sock?db=3"],
)
def test_redis_urls_open_without_connecting(url: str) -> None:
    store = open_store(url, max_size=10, idle_ttl=60)
    assert isinstance(store, RedisSessionStore)
    store.close()


@pytest.mark.parametrize(
    "url",
    [
        "",
        "memcached://cache:11211",
        "/var/lib/sessions.db",
        "sqlite:",
        "sqlite://",
        "sqlite:///",
        "sqlite://host/sessions.db",
        "sqlite:///var/lib/",
        "redis:cache",
        "redis://cache:port/0",
        "redis://cache:99999/0",
        "redis://cache/sessions",
        "redis://cache/0?socket_timeout=soon",
        "unix://",
    ],
)
def test_a_bad_store_url_is_a_config_error_quoting_it_and_the_accepted_forms(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        open_store(url, max_size=10, idle_ttl=60)
    message = str(caught.value)
    assert repr(url) in message and "sqlite:///absolute/path.db" in message


def test_an_sqlite_file_that_cannot_be_opened_is_unavailable_until_it_can(
    tmp_path: Path,
) -> None:
    """A broken file never stops the store from being built: its calls fail, then work."""
    directory = tmp_path / "missing" / "dir"
    store = open_store(f"sqlite://{directory}/sessions.db", max_size=10, idle_ttl=60)
    with pytest.raises(StoreUnavailable, match="unable to open database file"):
        store.apply(1, lambda old: (1, old))
    directory.mkdir(parents=True)
    assert store.apply(1, lambda old: (1, old)) is None
    store.close()
    (tmp_path / "not-a-db").write_bytes(b"this is no SQLite database" * 100)
    store = open_store(f"sqlite://{tmp_path}/not-a-db", max_size=10, idle_ttl=60)
    with pytest.raises(StoreUnavailable, match="not a database"):
        store.ping()
    store.close()


def test_a_redis_url_without_the_redis_package_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(ConfigError, match=r"pip install 'otel-panel-receiver\[redis\]'"):
        open_store("redis://cache:6379/0", max_size=10, idle_ttl=60)


def _main_file_size(path: Path) -> int:
    return path.stat().st_size  # the database file itself, without its write-ahead log


@pytest.mark.parametrize(
    ("interval", "grows", "by_thread"),
    [(3600.0, False, False), (0.05, True, True), (0.0, True, False)],
    ids=["thread not due yet", "thread due", "no thread: the writers checkpoint"],
)
def test_the_sqlite_store_checkpoints_from_a_thread_not_in_a_payloads_commit(
    tmp_path: Path, interval: float, grows: bool, by_thread: bool
) -> None:
    # 1,000 sessions write several thousand pages of log, past SQLite's own threshold of
    # 1,000 pages, after which a writer copies them into the file in some payload's commit.
    # With the thread, a payload's commit never does (below the backstop): the file grows only
    # when the thread checkpoints.
    path = tmp_path / "s.db"
    store = SqliteSessionStore(path, max_size=0, idle_ttl=0, checkpoint_interval=interval)
    start = _main_file_size(path)
    for key in range(1, 1001):
        store.apply(key, lambda state: (1, None))
    deadline = time.monotonic() + 5.0
    while by_thread and store.checkpoints < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    grew = _main_file_size(path) > start
    checkpoints = store.checkpoints
    store.close()
    assert grew == grows
    assert (checkpoints > 0) == by_thread


def test_closing_the_sqlite_store_waits_for_a_stuck_checkpoint_at_most_its_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A checkpoint stuck in a frozen file system (here: a thread that never returns) must not
    # hang close() or a fork, which stop the checkpoint thread first.
    stuck = threading.Event()
    monkeypatch.setattr(sqlite_module._Checkpoints, "_run", lambda self, stop: stuck.wait())
    store = SqliteSessionStore(tmp_path / "s.db", max_size=0, idle_ttl=0, timeout=0.2)
    began = time.monotonic()
    store.close()
    assert time.monotonic() - began < 1.5
    stuck.set()
