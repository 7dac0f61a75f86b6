"""The usage ledger: per dashboard, its last view, its sessions per day and who viewed it when.

What the answers are made of (``GET /api/dashboards/usage``, the ``dashboards`` command, the
``grafana_analytics_dashboard_last_view_timestamp_seconds`` gauge). It lives where the sessions
live, so workers and hosts share it and it survives restarts: beside them in the SQLite file
(in the LMDB store's directory, an SQLite file of its own), under the same prefix in Redis, or
in the process with the memory store.

Per dashboard (``grafana_host`` and ``dashboard_uid``): its latest name, the time of its last
view (the receiver's clock: browser clocks lie), the sessions started on it per UTC day, and
for each viewer (a keyed hash, never a name) the last day they opened it. Bounded: at most
``max_dashboards`` dashboards (the least recently viewed go first, with all they hold), days
older than ``retention`` are dropped, and at most ``max_viewers`` viewer entries in all, over
every dashboard (the least recently seen go first; those of a dashboard that went stay until
pushed out, never reported). The inventory of Grafana's dashboards is kept here too, as one
blob.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final, Protocol

import msgspec

from otel_panel_receiver.errors import StoreUnavailable
from otel_panel_receiver.stores._protocol import SessionStore
from otel_panel_receiver.stores.lmdb import LmdbSessionStore
from otel_panel_receiver.stores.redis import RedisSessionStore
from otel_panel_receiver.stores.sqlite import SqliteSessionStore

__all__ = [
    "DAY",
    "DashboardUsage",
    "LastView",
    "LmdbUsage",
    "MemoryUsage",
    "RedisUsage",
    "SqliteUsage",
    "UsageLedger",
    "open_usage",
]

DAY: Final = 86_400
#: Viewer entries kept in all (a dashboard and a viewer's hash each): a flood of forged logins
#: pushes out the least recently seen, never grows the ledger.
MAX_VIEWERS: Final = 100_000


@dataclass(frozen=True, slots=True)
class DashboardUsage:
    """One dashboard seen in traffic: its last view and what the window held."""

    host: str
    uid: str
    name: str
    last_view: float
    sessions: int
    viewers: int


#: A dashboard and its last view: host, uid, name, unix seconds.
LastView = tuple[str, str, str, float]

#: One view as the ledgers note it: host, uid, name, unix seconds, whether a session started,
#: the viewer's hash (or b"").
Record = tuple[str, str, str, float, bool, bytes]


class UsageLedger(Protocol):
    """Where the usage of dashboards is kept (see the module's docstring)."""

    def record(
        self, host: str, uid: str, name: str, at: float, *, started: bool, viewer: bytes
    ) -> None:
        """Note a view at ``at``; count a session if ``started``; the viewer's hash, or b""."""
        ...

    def report(self, since: float) -> list[DashboardUsage]:
        """Return every dashboard held, with its sessions and viewers since ``since``."""
        ...

    def views(self) -> list[LastView]:
        """Return every dashboard held with its last view alone (what the gauge reads)."""
        ...

    def put_blob(self, name: str, value: bytes) -> None:
        """Keep ``value`` under ``name`` (the inventory)."""
        ...

    def get_blob(self, name: str) -> bytes | None:
        """Return what is kept under ``name``, or ``None``."""
        ...

    def close(self) -> None:
        """Release what is held open."""
        ...


def _day(at: float) -> int:
    return int(at // DAY)


class _Limits:
    def __init__(self, max_dashboards: int, max_viewers: int, retention: float) -> None:
        self.max_dashboards = max_dashboards
        self.max_viewers = max_viewers
        self.retention_days = max(1, int(retention // DAY))


class MemoryUsage(_Limits):
    """The ledger of one process (with the memory session store)."""

    def __init__(
        self,
        *,
        max_dashboards: int = 10_000,
        max_viewers: int = MAX_VIEWERS,
        retention: float = 93 * DAY,
    ) -> None:
        super().__init__(max_dashboards, max_viewers, retention)
        self._lock = threading.Lock()
        # (host, uid) -> [name, last view, {day: sessions}], by last view
        self._dashboards: dict[tuple[str, str], list[Any]] = {}
        # (host, uid, viewer) -> last day, the least recently seen first
        self._viewers: dict[tuple[str, str, bytes], int] = {}
        self._blobs: dict[str, bytes] = {}

    def record(
        self, host: str, uid: str, name: str, at: float, *, started: bool, viewer: bytes
    ) -> None:
        """Note a view; count a session if ``started``."""
        day = _day(at)
        with self._lock:
            # (No max() calls: this runs for each session, and a call costs more than the rest.)
            entry = self._dashboards.pop((host, uid), None) or [name, at, {}]
            entry[0] = name
            if at > entry[1]:  # noqa: PLR1730  # max(), as above
                entry[1] = at
            self._dashboards[host, uid] = entry  # the most recently viewed at the end
            days: dict[int, int] = entry[2]
            if started:
                sessions = days.get(day)
                if sessions is None:  # a new day: the days it puts past the retention go
                    for old in [d for d in days if d <= day - self.retention_days]:
                        del days[old]
                    sessions = 0
                days[day] = sessions + 1
            if viewer:
                viewers = self._viewers
                seen = viewers.pop((host, uid, viewer), day)
                viewers[host, uid, viewer] = seen if seen > day else day
                while len(viewers) > self.max_viewers:
                    del viewers[next(iter(viewers))]
            while len(self._dashboards) > self.max_dashboards:
                del self._dashboards[next(iter(self._dashboards))]

    def report(self, since: float) -> list[DashboardUsage]:
        """Return every dashboard held, with its sessions and viewers since ``since``."""
        first = _day(since)
        with self._lock:
            viewers: dict[tuple[str, str], int] = {}
            for (host, uid, _), day in self._viewers.items():
                if day >= first:
                    viewers[host, uid] = viewers.get((host, uid), 0) + 1
            return [
                DashboardUsage(
                    host, uid, name, last,
                    sum(n for d, n in days.items() if d >= first),
                    viewers.get((host, uid), 0),
                )
                for (host, uid), (name, last, days) in self._dashboards.items()
            ]  # fmt: skip

    def views(self) -> list[LastView]:
        """Return every dashboard held with its last view."""
        with self._lock:
            return [(h, u, name, last) for (h, u), (name, last, _) in self._dashboards.items()]

    def put_blob(self, name: str, value: bytes) -> None:
        """Keep ``value`` under ``name``."""
        self._blobs[name] = value

    def get_blob(self, name: str) -> bytes | None:
        """Return what is kept under ``name``."""
        return self._blobs.get(name)

    def close(self) -> None:
        """Nothing is held open."""


_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS usage_dashboards (
        host TEXT NOT NULL, uid TEXT NOT NULL, name TEXT NOT NULL, last REAL NOT NULL,
        PRIMARY KEY (host, uid)
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS usage_dashboards_by_last ON usage_dashboards (last)",
    """CREATE TABLE IF NOT EXISTS usage_days (
        host TEXT NOT NULL, uid TEXT NOT NULL, day INTEGER NOT NULL, sessions INTEGER NOT NULL,
        PRIMARY KEY (host, uid, day)
    ) WITHOUT ROWID""",
    # seq: the order of last sight over every dashboard, which bounds the entries in all.
    """CREATE TABLE IF NOT EXISTS usage_viewers (
        seq INTEGER PRIMARY KEY, host TEXT NOT NULL, uid TEXT NOT NULL, viewer BLOB NOT NULL,
        day INTEGER NOT NULL, UNIQUE (host, uid, viewer)
    )""",
    "CREATE TABLE IF NOT EXISTS blobs (name TEXT PRIMARY KEY, value BLOB NOT NULL)",
)
_FORGET: Final = (
    "DELETE FROM usage_dashboards WHERE host = ? AND uid = ?",
    "DELETE FROM usage_days WHERE host = ? AND uid = ?",
)
_TRIM_VIEWERS: Final = (
    "DELETE FROM usage_viewers WHERE seq <= (SELECT max(seq) FROM usage_viewers) - ?"
)
_REPORT: Final = """
SELECT d.host, d.uid, d.name, d.last,
    (SELECT ifnull(sum(s.sessions), 0) FROM usage_days s
     WHERE s.host = d.host AND s.uid = d.uid AND s.day >= ?1),
    (SELECT count(*) FROM usage_viewers v WHERE v.host = d.host AND v.uid = d.uid AND v.day >= ?1)
FROM usage_dashboards d ORDER BY d.last
"""


class SqliteUsage(_Limits):
    """The ledger in the session store's SQLite file, shared by the workers of a host.

    Its tables sit beside the sessions and go through the store's own connection and
    transactions (``SqliteSessionStore.transaction``), created when first used after each
    (re)connection.
    """

    def __init__(
        self,
        store: SqliteSessionStore,
        *,
        max_dashboards: int = 10_000,
        max_viewers: int = MAX_VIEWERS,
        retention: float = 93 * DAY,
    ) -> None:
        super().__init__(max_dashboards, max_viewers, retention)
        self.path = store.path
        self._store = store
        self._ready = False

    @contextlib.contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        try:
            with self._store.transaction() as conn:
                if not self._ready:
                    for statement in _SCHEMA:
                        conn.execute(statement)
                yield conn
        except StoreUnavailable:
            self._ready = False  # a new file after a failure may lack the tables
            raise
        self._ready = True

    def record(
        self, host: str, uid: str, name: str, at: float, *, started: bool, viewer: bytes
    ) -> None:
        """Note a view; count a session if ``started``."""
        with self._connection() as conn:
            self._record(conn, [(host, uid, name, at, started, viewer)])

    def _record(self, conn: sqlite3.Connection, records: Iterable[Record]) -> None:
        """Note views in the open transaction, in their order.

        They are folded first, so that each dashboard, day and viewer is written once however
        many records name it (a second of a busy receiver's journal names the same few
        dashboards and viewers thousands of times): its name is the last record's, its last
        view the latest, its sessions per day summed, each viewer's day the latest, and the
        viewers ordered by their last record. The bounds are applied once, at the end.
        """
        dashboards: dict[tuple[str, str], list[Any]] = {}  # -> [name, last view, latest day]
        days: dict[tuple[str, str, int], int] = {}
        viewers: dict[tuple[str, str, bytes], int] = {}  # -> day, the least recent record first
        for host, uid, name, at, started, viewer in records:
            day = _day(at)
            entry = dashboards.get((host, uid))
            if entry is None:
                entry = dashboards[host, uid] = [name, at, None]
            else:
                entry[0], entry[1] = name, max(entry[1], at)
            if started:
                days[host, uid, day] = days.get((host, uid, day), 0) + 1
                entry[2] = day if entry[2] is None else max(entry[2], day)
            if viewer:
                before = viewers.pop((host, uid, viewer), day)
                viewers[host, uid, viewer] = max(before, day)
        added = False
        for (host, uid), (name, at, _) in dashboards.items():
            known = conn.execute(
                "UPDATE usage_dashboards SET name = ?, last = max(last, ?) "
                "WHERE host = ? AND uid = ?",
                (name, at, host, uid),
            ).rowcount
            if not known:
                conn.execute(
                    "INSERT INTO usage_dashboards VALUES (?, ?, ?, ?)", (host, uid, name, at)
                )
                added = True
        conn.executemany(
            "INSERT INTO usage_days VALUES (?, ?, ?, ?) ON CONFLICT DO UPDATE "
            "SET sessions = sessions + excluded.sessions",
            [(host, uid, day, n) for (host, uid, day), n in days.items()],
        )
        conn.executemany(
            "DELETE FROM usage_days WHERE host = ? AND uid = ? AND day <= ?",
            [
                (host, uid, latest - self.retention_days)
                for (host, uid), (_, _, latest) in dashboards.items()
                if latest is not None
            ],
        )
        if added:
            ((count,),) = conn.execute("SELECT count(*) FROM usage_dashboards").fetchall()
            if count > self.max_dashboards:
                oldest = conn.execute(
                    "SELECT host, uid FROM usage_dashboards ORDER BY last LIMIT ?",
                    (count - self.max_dashboards,),
                ).fetchall()
                for statement in _FORGET:
                    conn.executemany(statement, oldest)
        for (host, uid, viewer), day in viewers.items():
            seen = conn.execute(
                "DELETE FROM usage_viewers WHERE host = ? AND uid = ? AND viewer = ? RETURNING day",
                (host, uid, viewer),
            ).fetchall()
            conn.execute(
                "INSERT INTO usage_viewers (host, uid, viewer, day) VALUES (?, ?, ?, ?)",
                (host, uid, viewer, max([day, *(d for (d,) in seen)])),
            )
        if viewers:
            conn.execute(_TRIM_VIEWERS, (self.max_viewers,))

    def report(self, since: float) -> list[DashboardUsage]:
        """Return every dashboard held, with its sessions and viewers since ``since``."""
        with self._connection() as conn:
            rows = conn.execute(_REPORT, (_day(since),)).fetchall()
        return [DashboardUsage(*row) for row in rows]

    def views(self) -> list[LastView]:
        """Return every dashboard held with its last view."""
        with self._connection() as conn:
            rows = conn.execute("SELECT host, uid, name, last FROM usage_dashboards").fetchall()
        return [(host, uid, name, float(last)) for host, uid, name, last in rows]

    def put_blob(self, name: str, value: bytes) -> None:
        """Keep ``value`` under ``name``."""
        with self._connection() as conn:
            conn.execute("INSERT OR REPLACE INTO blobs VALUES (?, ?)", (name, value))

    def get_blob(self, name: str) -> bytes | None:
        """Return what is kept under ``name``."""
        with self._connection() as conn:
            row = conn.execute("SELECT value FROM blobs WHERE name = ?", (name,)).fetchone()
        return None if row is None else bytes(row[0])

    def close(self) -> None:
        """The connection is the session store's."""


_JOURNAL: Final = msgspec.msgpack.Encoder()
_RECORD_OF: Final = msgspec.msgpack.Decoder(Record)
_DRAIN_EVERY: Final = 1.0  # seconds between two moves of the journal into the SQLite file
_DRAIN_BATCH: Final = 10_000  # most records one SQLite transaction takes


class LmdbUsage(SqliteUsage):
    """The ledger of the LMDB store: journaled in its map, kept in the SQLite file beside it.

    A record goes to the store's journal, one short LMDB transaction that a
    killed process keeps, instead of an SQLite transaction per session start under the file
    lock every worker queues on. A thread of each process moves what the journal holds into
    the SQLite ledger (``ledger.db``) every second, and :meth:`report` and :meth:`views` move
    it first, so answers include every record. Each record is applied once and in order: the
    SQLite file remembers the journal's generation and the last seq applied, in the same
    transaction as the records, and the move holds the SQLite file lock, so two processes
    never apply one record twice. What an OS crash takes from the map is at most the last
    second's records (the map is then started over, see ``stores/lmdb.py``); the rest is in
    SQLite, on disk.
    """

    def __init__(
        self,
        store: LmdbSessionStore,
        *,
        max_dashboards: int = 10_000,
        max_viewers: int = MAX_VIEWERS,
        retention: float = 93 * DAY,
    ) -> None:
        super().__init__(
            store.ledger,
            max_dashboards=max_dashboards,
            max_viewers=max_viewers,
            retention=retention,
        )
        self._map = store
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._stop = threading.Event()
        self._moving = threading.Lock()

    def record(
        self, host: str, uid: str, name: str, at: float, *, started: bool, viewer: bytes
    ) -> None:
        """Note a view; count a session if ``started`` (in the journal, moved within a second)."""
        if self._pid != os.getpid():  # the first record of this process (a worker after a fork)
            self._start()
        self._map.journal(_JOURNAL.encode((host, uid, name, at, started, viewer)))

    def _start(self) -> None:
        self._pid, self._stop = os.getpid(), threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(self._stop,), name="otel-panel-receiver-ledger", daemon=True
        )
        self._thread.start()

    def _run(self, stop: threading.Event) -> None:
        while not stop.wait(_DRAIN_EVERY):
            with contextlib.suppress(StoreUnavailable):  # the stores log their outages
                self.move()

    def move(self) -> int:
        """Move what the journal holds into the SQLite ledger; return how many records."""
        moved = 0
        with self._moving:
            while True:
                generation, records = self._map.journaled(_DRAIN_BATCH)
                if not records:
                    return moved
                with self._connection() as conn:
                    conn.execute(_JOURNAL_MARK_TABLE)
                    row = conn.execute("SELECT generation, seq FROM usage_journal").fetchone()
                    done = row[1] if row is not None and row[0] == generation else 0
                    fresh = [_RECORD_OF.decode(record) for seq, record in records if seq > done]
                    self._record(conn, fresh)
                    moved += len(fresh)
                    last = records[-1][0]
                    conn.execute(
                        "INSERT OR REPLACE INTO usage_journal VALUES (0, ?, ?)", (generation, last)
                    )
                self._map.forget_journal(generation, last)
                if len(records) < _DRAIN_BATCH:
                    return moved

    def report(self, since: float) -> list[DashboardUsage]:
        """Return every dashboard held, with its sessions and viewers since ``since``."""
        self.move()
        return super().report(since)

    def views(self) -> list[LastView]:
        """Return every dashboard held with its last view."""
        self.move()
        return super().views()

    def close(self) -> None:
        """Stop this process's thread, after a last move of the journal (kept if it fails)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(5.0)
        with contextlib.suppress(StoreUnavailable):
            self.move()


_JOURNAL_MARK_TABLE: Final = (
    "CREATE TABLE IF NOT EXISTS usage_journal "
    "(id INTEGER PRIMARY KEY CHECK (id = 0), generation BLOB NOT NULL, seq INTEGER NOT NULL)"
)


# KEYS: dashboards hash, order set, viewers' order set (``<field>:<viewer>`` by last sight, over
# every dashboard). ARGV: field, name, at, day, started, viewer, max dashboards, max viewers in
# all, retention days, key prefix. The field is host and uid, hex-encoded; the viewer too.
_RECORD: Final = """
local field = ARGV[1]
local at = tonumber(ARGV[3])
local day = tonumber(ARGV[4])
local days, viewers = ARGV[10] .. 'd:' .. field, ARGV[10] .. 'v:' .. field
local old = redis.call('ZSCORE', KEYS[2], field)
if old and tonumber(old) > at then at = tonumber(old) end
redis.call('HSET', KEYS[1], field, ARGV[2])
redis.call('ZADD', KEYS[2], at, field)
if ARGV[5] == '1' then
  redis.call('HINCRBY', days, day, 1)
  for _, d in ipairs(redis.call('HKEYS', days)) do
    if tonumber(d) <= day - tonumber(ARGV[9]) then redis.call('HDEL', days, d) end
  end
end
if ARGV[6] ~= '' then
  redis.call('ZADD', viewers, 'GT', day, ARGV[6])
  redis.call('ZADD', KEYS[3], at, field .. ':' .. ARGV[6])
  local extra = redis.call('ZCARD', KEYS[3]) - tonumber(ARGV[8])
  if extra > 0 then
    local popped = redis.call('ZPOPMIN', KEYS[3], extra)
    for i = 1, #popped, 2 do
      local sep = string.find(popped[i], ':', 1, true)
      redis.call('ZREM', ARGV[10] .. 'v:' .. string.sub(popped[i], 1, sep - 1),
                 string.sub(popped[i], sep + 1))
    end
  end
end
if not old then
  local extra = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[7])
  if extra > 0 then
    local popped = redis.call('ZPOPMIN', KEYS[2], extra)
    for i = 1, #popped, 2 do
      redis.call('HDEL', KEYS[1], popped[i])
      -- Its viewers stay until the viewers' bound pushes them out, as in the other stores.
      redis.call('DEL', ARGV[10] .. 'd:' .. popped[i])
    end
  end
end
return 1
"""


class RedisUsage(_Limits):
    """The ledger in Redis, beside the sessions, shared by every receiver of a deployment."""

    def __init__(
        self,
        store: RedisSessionStore,
        *,
        max_dashboards: int = 10_000,
        max_viewers: int = MAX_VIEWERS,
        retention: float = 93 * DAY,
    ) -> None:
        super().__init__(max_dashboards, max_viewers, retention)
        self._client = client = store.client
        self._failures = store.failures  # the same connection, the same errors
        self._prefix = f"{store.prefix}u:"
        self._keys = (f"{self._prefix}names", f"{self._prefix}last", f"{self._prefix}viewers")
        self._record = client.register_script(_RECORD)

    def record(
        self, host: str, uid: str, name: str, at: float, *, started: bool, viewer: bytes
    ) -> None:
        """Note a view; count a session if ``started``."""
        field = f"{host}\x1f{uid}".encode().hex()
        limits = (self.max_dashboards, self.max_viewers, self.retention_days, self._prefix)
        args = (field, name, at, _day(at), "1" if started else "0", viewer.hex(), *limits)
        with self._failures():
            self._record(self._keys, args)

    def report(self, since: float) -> list[DashboardUsage]:
        """Return every dashboard held, with its sessions and viewers since ``since``."""
        first = _day(since)
        with self._failures():
            names: dict[bytes, bytes] = self._client.hgetall(self._keys[0])
            lasts = dict(self._client.zrange(self._keys[1], 0, -1, withscores=True))
            fields = [f for f in names if f in lasts]
            pipe = self._client.pipeline(transaction=False)
            for field in fields:
                pipe.hgetall(self._prefix + "d:" + field.decode())
                pipe.zcount(self._prefix + "v:" + field.decode(), first, "+inf")
            replies = pipe.execute()
        out = []
        for i, field in enumerate(fields):
            host, uid = _host_uid(field)
            days: dict[bytes, bytes] = replies[2 * i]
            sessions = sum(int(n) for d, n in days.items() if int(d) >= first)
            out.append(DashboardUsage(host, uid, names[field].decode(), float(lasts[field]),
                                      sessions, int(replies[2 * i + 1])))  # fmt: skip
        return out

    def views(self) -> list[LastView]:
        """Return every dashboard held with its last view."""
        with self._failures():
            names: dict[bytes, bytes] = self._client.hgetall(self._keys[0])
            lasts = dict(self._client.zrange(self._keys[1], 0, -1, withscores=True))
        return [(*_host_uid(field), names[field].decode(), float(lasts[field]))
                for field in names if field in lasts]  # fmt: skip

    def put_blob(self, name: str, value: bytes) -> None:
        """Keep ``value`` under ``name``."""
        with self._failures():
            self._client.set(f"{self._prefix}blob:{name}", value)

    def get_blob(self, name: str) -> bytes | None:
        """Return what is kept under ``name``."""
        with self._failures():
            value: bytes | None = self._client.get(f"{self._prefix}blob:{name}")
        return value

    def close(self) -> None:
        """The client belongs to the session store."""


def _host_uid(field: bytes) -> tuple[str, str]:
    """Return the host and uid a Redis field (their hex) names."""
    host, _, uid = bytes.fromhex(field.decode()).decode().partition("\x1f")
    return host, uid


def open_usage(
    store: SessionStore,
    *,
    max_dashboards: int = 10_000,
    max_viewers: int = MAX_VIEWERS,
    retention: float = 93 * DAY,
) -> UsageLedger:
    """Return the ledger that lives with ``store``: in its SQLite file (for LMDB, the SQLite
    file in its directory), its Redis under its prefix, or in this process for the memory
    store (or a store of an embedder's own)."""
    inner = getattr(store, "store", store)  # under a GuardedStore
    if isinstance(inner, LmdbSessionStore):
        return LmdbUsage(
            inner, max_dashboards=max_dashboards, max_viewers=max_viewers, retention=retention
        )
    if isinstance(inner, SqliteSessionStore):
        return SqliteUsage(
            inner, max_dashboards=max_dashboards, max_viewers=max_viewers, retention=retention
        )
    if isinstance(inner, RedisSessionStore):
        return RedisUsage(
            inner, max_dashboards=max_dashboards, max_viewers=max_viewers, retention=retention
        )
    return MemoryUsage(max_dashboards=max_dashboards, max_viewers=max_viewers, retention=retention)
