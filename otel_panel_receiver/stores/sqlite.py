"""The SQLite session store: one file shared by the worker processes of a host, kept on restart.

One table holds the sessions. Its ``seq`` column is the rowid: SQLite gives a new row
``max(seq) + 1``, and every update deletes and re-inserts its row, so ``seq`` order is the order
of last activity across all processes, ties included. Eviction and expiry both read the table
from its front, like the memory store reads its dict. A one-row ``meta`` table keeps the count,
because ``count(*)`` walks the whole table.

Each ``apply`` is one ``BEGIN IMMEDIATE`` transaction on the process's one connection, and
the rules run inside it. SQLite admits one writer per file at a time anyway, so the writers
queue before they begin: the threads of a process on a lock, the processes on a ``flock`` of
``<path>-lock``. The file is in WAL mode with ``synchronous=NORMAL``: a crashed process loses
nothing, a power cut may lose the last transactions but never corrupts the file.

A connection must not cross a ``fork`` (gunicorn ``--preload``): the store closes it before
every fork, with no transaction in flight, and each side opens its own on next use.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Final

from otel_panel_receiver.stores._bounds import Bounded
from otel_panel_receiver.stores._protocol import EvictionCallback, R, Update

__all__ = ["SqliteSessionStore"]

_BUSY_TIMEOUT: Final = 10.0  # seconds another process may hold the write lock before we fail
_CHUNK: Final = 10_000  # most rows one transaction drops, so no writer waits long

_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS sessions (
        seq INTEGER PRIMARY KEY,
        key BLOB NOT NULL UNIQUE,
        state BLOB NOT NULL,
        touched REAL NOT NULL
    )""",
    "CREATE TABLE IF NOT EXISTS meta (id INTEGER PRIMARY KEY CHECK (id = 0), count INTEGER)",
    "INSERT OR IGNORE INTO meta VALUES (0, 0)",
    "CREATE TABLE IF NOT EXISTS secrets (name TEXT PRIMARY KEY, value BLOB, until REAL)",
    "CREATE TABLE IF NOT EXISTS marks (key BLOB PRIMARY KEY, until REAL) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS marks_by_until ON marks (until)",
)
_TAKE: Final = "DELETE FROM sessions WHERE key = ? RETURNING state"
_PUT: Final = "INSERT INTO sessions (key, state, touched) VALUES (?, ?, ?)"
_GET: Final = "SELECT state FROM sessions WHERE key = ?"
_COUNT: Final = "SELECT count FROM meta"
_ADD: Final = "UPDATE meta SET count = count + ? RETURNING count"
_EVICT: Final = """
DELETE FROM sessions WHERE seq IN (SELECT seq FROM sessions ORDER BY seq LIMIT ?)
RETURNING seq, key, state
"""
# Idle sessions are the ones in front of the first active one (as in the memory store): a walk
# from the front that stops there, with no index on ``touched`` to update at every apply.
_EXPIRE: Final = """
DELETE FROM sessions WHERE seq IN (
    SELECT seq FROM sessions
    WHERE seq < ifnull((SELECT seq FROM sessions WHERE touched > ? ORDER BY seq LIMIT 1), 1 << 62)
    ORDER BY seq LIMIT ?
)
RETURNING seq, key, state
"""


def _blob(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


class SqliteSessionStore(Bounded):
    """Keep session states in an SQLite file, bounded by size and by idleness.

    ``max_size`` and ``idle_ttl`` work as in the memory store (0 turns either bound off), over
    the sessions of every process that opens the file. Touch times come from ``clock``, which
    must be wall-clock time: processes and restarts compare them. ``on_evict`` runs in the
    process that dropped the session, after the transaction.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_size: int,
        idle_ttl: float,
        clock: Callable[[], float] = time.time,
        on_evict: EvictionCallback | None = None,
    ) -> None:
        super().__init__(max_size=max_size, idle_ttl=idle_ttl, now=clock(), on_evict=on_evict)
        self.path = os.fspath(path)
        self._clock = clock
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._lockfile: int | None = None
        self._closed = False
        try:
            with self._writing() as conn:
                for statement in _SCHEMA:
                    conn.execute(statement)
        except BaseException:
            self.close()
            raise
        _close_before_fork(self)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=_BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
        )
        try:
            (mode,) = conn.execute("PRAGMA journal_mode=WAL").fetchone()
            if (
                mode != "wal"
            ):  # SQLite falls back quietly where WAL cannot work (network file systems)
                raise sqlite3.OperationalError(
                    f"{self.path!r} cannot be shared in WAL mode (journal mode {mode!r}); "
                    f"put the session store on a local file system"
                )
            conn.execute("PRAGMA synchronous=NORMAL")
        except BaseException:
            conn.close()
            raise
        return conn

    def _connection(self) -> sqlite3.Connection:
        """Return this process's connection, opening it on first use (call under the lock)."""
        if self._conn is None:
            if self._closed:
                raise sqlite3.ProgrammingError(f"the session store {self.path!r} is closed")
            self._conn = self._connect()
        return self._conn

    @contextlib.contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """Hold this process's lock, then the file's, for one write transaction.

        The file lock (``flock`` on a side file) is what queues the processes: a waiter wakes
        as soon as it is free, where SQLite's busy handler polls with sleeps of up to 100 ms
        and lets an unlucky process starve. BEGIN IMMEDIATE and the busy timeout still guard
        against writers that do not take the file lock (the sqlite3 shell, say).
        """
        with self._lock:
            if self._lockfile is None:
                if self._closed:
                    raise sqlite3.ProgrammingError(f"the session store {self.path!r} is closed")
                self._lockfile = os.open(self.path + "-lock", os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(self._lockfile, fcntl.LOCK_EX)
            try:
                conn = self._connection()
                with conn:  # commits, or rolls back when the caller or SQLite raises
                    conn.execute("BEGIN IMMEDIATE")
                    yield conn
            finally:
                fcntl.flock(self._lockfile, fcntl.LOCK_UN)

    def apply(self, key: int, fn: Update[R]) -> R:
        """Run ``fn`` on the session's packed state and store the result, in one transaction."""
        now = self._clock()
        if self._sweep_due(now):
            self.sweep()
        k = key.to_bytes(16, "big")
        dropped: list[tuple[int, int]] = []
        with self._writing() as conn:
            # fetchall, not fetchone: it steps a RETURNING statement to its end and resets it.
            taken = conn.execute(_TAKE, (k,)).fetchall()
            state, result = fn(int.from_bytes(taken[0][0], "big") if taken else None)
            conn.execute(_PUT, (k, _blob(state), now))
            if not taken:
                ((count,),) = conn.execute(_ADD, (1,)).fetchall()
                if self.max_size and count > self.max_size:
                    # Never the row just written: count - 1 rows stand before it.
                    n = min(max(self.batch, count - self.max_size), _CHUNK)
                    dropped = self._take(conn, _EVICT, (n,))
        self._dropped(dropped, idle=False)
        return result

    def sweep(self) -> int:
        """Drop every session idle for ``idle_ttl`` seconds or more; return how many."""
        if not self.idle_ttl:
            return 0
        cutoff = self._clock() - self.idle_ttl
        total = 0
        while True:
            with self._writing() as conn:
                dropped = self._take(conn, _EXPIRE, (cutoff, _CHUNK))
            total += self._dropped(dropped, idle=True)
            if len(dropped) < _CHUNK:
                return total

    @staticmethod
    def _take(
        conn: sqlite3.Connection, sql: str, params: tuple[float, ...]
    ) -> list[tuple[int, int]]:
        rows: list[tuple[int, bytes, bytes]] = conn.execute(sql, params).fetchall()
        if rows:
            conn.execute(_ADD, (-len(rows),)).fetchall()
        rows.sort()  # RETURNING gives no order; callbacks see the least recent first
        return [
            (int.from_bytes(key, "big"), int.from_bytes(state, "big")) for _, key, state in rows
        ]

    def get(self, key: int) -> int | None:
        """Return the session's packed state, or ``None``; a read that is not activity."""
        with self._lock:
            row = self._connection().execute(_GET, (key.to_bytes(16, "big"),)).fetchone()
        return None if row is None else int.from_bytes(row[0], "big")

    def secret(self, name: str, ttl: float) -> bytes:
        """Return the secret kept under ``name`` in the file, made at the first call."""
        now = self._clock()
        with self._writing() as conn:
            conn.execute("DELETE FROM secrets WHERE until <= ?", (now,))
            conn.execute(
                "INSERT OR IGNORE INTO secrets VALUES (?, ?, ?)", (name, os.urandom(32), now + ttl)
            )
            ((value,),) = conn.execute("SELECT value FROM secrets WHERE name = ?", (name,))
        return bytes(value)

    def mark(self, key: int, ttl: float) -> bool:
        """Record ``key`` in the file; return whether it was new."""
        now = self._clock()
        with self._writing() as conn:
            # A few expired marks go with each new one: the table never holds much dead weight.
            conn.execute(
                "DELETE FROM marks WHERE key IN "
                "(SELECT key FROM marks WHERE until <= ? ORDER BY until LIMIT 16)",
                (now,),
            )
            cursor = conn.execute(
                "INSERT OR IGNORE INTO marks VALUES (?, ?)", (key.to_bytes(16, "big"), now + ttl)
            )
            return cursor.rowcount == 1

    def __len__(self) -> int:
        with self._lock:
            (count,) = self._connection().execute(_COUNT).fetchone()
        return int(count)

    def close(self) -> None:
        """Close what this process holds open; the sessions stay in the file."""
        with self._lock:
            self._closed = True
            self._release()

    def _release(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._lockfile is not None:
            os.close(self._lockfile)
            self._lockfile = None

    def _before_fork(self) -> None:
        self._lock.acquire()
        self._release()  # both reopen on next use, the parent and the child each its own

    def _after_fork(self) -> None:
        self._lock.release()


def _close_before_fork(store: SqliteSessionStore) -> None:
    """Close the store's connection at each fork, with no transaction in flight.

    SQLite forbids using a connection in a process other than the one that opened it, and
    closing an inherited one can drop the locks of the child's own connections. The hooks hold
    the store weakly: registrations cannot be undone, and must not keep the store alive.
    """
    ref = weakref.ref(store)

    def before() -> None:
        if (s := ref()) is not None:
            s._before_fork()

    def after() -> None:
        if (s := ref()) is not None:
            s._after_fork()

    os.register_at_fork(before=before, after_in_parent=after, after_in_child=after)
