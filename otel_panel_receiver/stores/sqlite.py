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

Faults: what SQLite or the file system refuses (a read-only or deleted file, a full disk, a
lock held past ``timeout``) raises :class:`StoreUnavailable`, and the connection is opened
again at the next call, so the store serves again as soon as the file does; nothing is opened
in the constructor, so a broken file never stops a worker from starting. At most once a second
the file's identity (device and inode) is compared with the one opened: a file deleted or
replaced under the receiver is reported (logged, counted in :attr:`resets`, its time in
:attr:`reset_at`) and the new one opened: the receiver then adopts the sessions the new file
does not know instead of counting them again (``receiver.py``).

Evicted sessions leave a tombstone (their state) in a table of at most :attr:`tombstones`
rows: one that comes back continues where it was, as if it had never left.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import threading
import time
import urllib.parse
import weakref
from collections.abc import Callable, Iterator
from typing import Final

from otel_panel_receiver.errors import StoreUnavailable
from otel_panel_receiver.stores._bounds import Bounded
from otel_panel_receiver.stores._protocol import EvictionCallback, R, Update

__all__ = ["SqliteSessionStore", "WriterLock"]

log = logging.getLogger(__name__)

_CHUNK: Final = 10_000  # most rows one transaction drops, so no writer waits long
_IDENTITY_EVERY: Final = 1.0  # seconds between two checks that the file is still the one opened
#: Pages of write-ahead log past which a writer checkpoints by itself: only if the background
#: checkpoints (every ``checkpoint_interval``) fall behind, which bounds the log (~40 MiB).
_CHECKPOINT_BACKSTOP: Final = 10_000

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
    """CREATE TABLE IF NOT EXISTS evicted (
        seq INTEGER PRIMARY KEY,
        key BLOB NOT NULL UNIQUE,
        state BLOB NOT NULL,
        touched REAL NOT NULL
    )""",
)
_TAKE: Final = "DELETE FROM sessions WHERE key = ? RETURNING state"
_PUT: Final = "INSERT INTO sessions (key, state, touched) VALUES (?, ?, ?)"
_GET: Final = "SELECT state FROM sessions WHERE key = ?"
_COUNT: Final = "SELECT count FROM meta"
_ADD: Final = "UPDATE meta SET count = count + ? RETURNING count"
_EVICT: Final = """
DELETE FROM sessions WHERE seq IN (SELECT seq FROM sessions ORDER BY seq LIMIT ?)
RETURNING seq, key, state, touched
"""
_BURY: Final = "INSERT OR REPLACE INTO evicted (key, state, touched) VALUES (?, ?, ?)"
_TRIM: Final = "DELETE FROM evicted WHERE seq <= (SELECT max(seq) FROM evicted) - ?"
_UNEARTH: Final = "DELETE FROM evicted WHERE key = ? RETURNING state, touched"
_FORGET: Final = "DELETE FROM evicted WHERE touched <= ?"
# Idle sessions are the ones in front of the first active one (as in the memory store): a walk
# from the front that stops there, with no index on ``touched`` to update at every apply.
_EXPIRE: Final = """
DELETE FROM sessions WHERE seq IN (
    SELECT seq FROM sessions
    WHERE seq < ifnull((SELECT seq FROM sessions WHERE touched > ? ORDER BY seq LIMIT 1), 1 << 62)
    ORDER BY seq LIMIT ?
)
RETURNING seq, key, state, touched
"""


def _blob(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


class SqliteSessionStore(Bounded):
    """Keep session states in an SQLite file, bounded by size and by idleness.

    ``max_size`` and ``idle_ttl`` work as in the memory store (0 turns either bound off), over
    the sessions of every process that opens the file. Touch times come from ``clock``, which
    must be wall-clock time: processes and restarts compare them. ``on_evict`` runs in the
    process that dropped the session, after the transaction. ``timeout`` bounds how long a call
    waits for a lock SQLite holds (another process's write) before it fails.

    The write-ahead log is copied into the file by a thread of each process every
    ``checkpoint_interval`` seconds (0: only by the writers, past a backstop), not by the
    payload whose commit crosses SQLite's threshold: that checkpoint's fsync held the file
    lock, and every other worker's payload with it, for milliseconds (granian, two workers:
    p99 11 -> 9.4 ms, 3,650 -> 4,050 payloads/s).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_size: int,
        idle_ttl: float,
        clock: Callable[[], float] = time.time,
        on_evict: EvictionCallback | None = None,
        timeout: float = 2.0,
        checkpoint_interval: float = 0.1,
    ) -> None:
        super().__init__(max_size=max_size, idle_ttl=idle_ttl, now=clock(), on_evict=on_evict)
        self.path = os.fspath(path)
        self.timeout = timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._identity: tuple[int, int] = (0, 0)
        self._next_check = 0.0
        self._writer = WriterLock(self.path + "-lock")
        self._checkpoints = _Checkpoints(self.path, checkpoint_interval, timeout)
        self._closed = False
        try:  # open now when possible; a file that cannot be used is reported at each call
            with self._lock, self._failures():
                self._connection()
        except StoreUnavailable as exc:
            log.error(
                "Session store cannot be opened; it is tried again at each payload",
                extra={"fields": {"path": self.path, "reason": str(exc)}},
            )
        _close_before_fork(self)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
        )
        try:
            with self._writer.held():  # processes starting together queue, not fail "locked"
                self._prepare(conn)
            info = os.stat(self.path)
            self._checkpoints.start()
        except BaseException:
            conn.close()
            raise
        self._identity = (info.st_dev, info.st_ino)
        self._next_check = time.monotonic() + _IDENTITY_EVERY
        return conn

    def _prepare(self, conn: sqlite3.Connection) -> None:
        """Put a new connection in WAL mode and make the tables."""
        (mode,) = conn.execute("PRAGMA journal_mode=WAL").fetchone()
        if mode != "wal":  # SQLite falls back quietly where WAL cannot work (network FS)
            raise sqlite3.OperationalError(
                f"{self.path!r} cannot be shared in WAL mode (journal mode {mode!r}); "
                f"put the session store on a local file system"
            )
        conn.execute("PRAGMA synchronous=NORMAL")
        if self._checkpoints.interval:
            conn.execute(f"PRAGMA wal_autocheckpoint={_CHECKPOINT_BACKSTOP}")
        with conn:
            conn.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA:
                conn.execute(statement)

    def _connection(self) -> sqlite3.Connection:
        """Return this process's connection, opening it when needed (call under the lock).

        At most once a second, check first that the file is still the one opened: if it was
        deleted or replaced, report it and open the file now at the path.
        """
        if self._conn is not None and time.monotonic() >= self._next_check:
            self._next_check = time.monotonic() + _IDENTITY_EVERY
            try:
                info = os.stat(self.path)
                found = "replaced" if (info.st_dev, info.st_ino) != self._identity else ""
            except FileNotFoundError:
                found = "deleted"
            if found:
                self._replaced(found)
        if self._conn is None:
            if self._closed:
                raise sqlite3.ProgrammingError(f"the session store {self.path!r} is closed")
            self._conn = self._connect()
        return self._conn

    def _replaced(self, how: str) -> None:
        with self._counting:
            self.resets += 1
        self.reset_at = self._clock()
        log.error(
            "Session store file %s under the receiver: its sessions are lost and a new file "
            "is used; for one heartbeat interval, sessions it does not know are adopted, not "
            "counted again",
            how,
            extra={"fields": {"path": self.path}},
        )
        self._release()  # the lock file may have gone with it: both are opened again

    @contextlib.contextmanager
    def _failures(self) -> Iterator[None]:
        """Turn what SQLite or the file system refuses into :class:`StoreUnavailable`.

        The connection is dropped, so that the next call opens the file again: a connection
        opened on a read-only file stays read-only after the file is writable again.
        """
        try:
            yield
        except sqlite3.ProgrammingError:
            raise  # a closed store, or a bug: not the file's fault
        except (sqlite3.Error, OSError) as exc:
            with contextlib.suppress(sqlite3.Error, OSError):
                self._drop_connection()  # under the lock: the callers enter it first
            raise StoreUnavailable(f"session store {self.path!r}: {exc}") from exc

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    @contextlib.contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """Hold this process's lock, then the file's, for one write transaction.

        The file lock (:class:`WriterLock`) is what queues the processes. BEGIN IMMEDIATE and
        the busy timeout still guard against writers that do not take it (the sqlite3 shell).
        """
        with self._lock, self._failures():
            conn = self._connection()  # first: a replaced file releases the lock file too
            with self._writer.held(), conn:  # commits, or rolls back when the caller raises
                conn.execute("BEGIN IMMEDIATE")
                yield conn

    def transaction(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """Return a write transaction on this process's connection, as the store's own are.

        For what lives beside the sessions in the file (the usage ledger): one connection per
        file and process, since SQLite may hand a new connection the file descriptor a failed
        one opened read-only, and the store's reconnection and identity checks apply.
        """
        return self._writing()

    def apply(self, key: int, fn: Update[R]) -> R:
        """Run ``fn`` on the session's packed state and store the result, in one transaction."""
        now = self._clock()
        if self._sweep_due(now):
            self.sweep()
        k = key.to_bytes(16, "big")
        dropped: list[tuple[int, int]] = []
        resumed = False
        with self._writing() as conn:
            # fetchall, not fetchone: it steps a RETURNING statement to its end and resets it.
            taken = conn.execute(_TAKE, (k,)).fetchall()
            if not taken and self.tombstones:
                taken = [
                    (state,)
                    for state, touched in conn.execute(_UNEARTH, (k,)).fetchall()
                    if not self.idle_ttl or now - touched < self.idle_ttl
                ]
                resumed = bool(taken)
            state, result = fn(int.from_bytes(taken[0][0], "big") if taken else None)
            conn.execute(_PUT, (k, _blob(state), now))
            if not taken or resumed:
                ((count,),) = conn.execute(_ADD, (1,)).fetchall()
                if self.max_size and count > self.max_size:
                    # Never the row just written: count - 1 rows stand before it.
                    n = min(max(self.batch, count - self.max_size), _CHUNK)
                    rows = conn.execute(_EVICT, (n,)).fetchall()
                    conn.execute(_ADD, (-len(rows),)).fetchall()
                    conn.executemany(_BURY, [(key, state, t) for _, key, state, t in rows])
                    conn.execute(_TRIM, (self.tombstones,))
                    dropped = _pairs(rows)
        if resumed:
            with self._counting:
                self.resumed += 1
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
                rows = conn.execute(_EXPIRE, (cutoff, _CHUNK)).fetchall()
                if rows:
                    conn.execute(_ADD, (-len(rows),)).fetchall()
                conn.execute(_FORGET, (cutoff,))
            total += self._dropped(_pairs(rows), idle=True)
            if len(rows) < _CHUNK:
                return total

    def get(self, key: int) -> int | None:
        """Return the session's packed state, or ``None``; a read that is not activity."""
        with self._lock, self._failures():
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

    def ping(self) -> None:
        """Take the write lock and let it go: raise :class:`StoreUnavailable` if it cannot."""
        with self._writing():
            pass

    def __len__(self) -> int:
        with self._lock, self._failures():
            (count,) = self._connection().execute(_COUNT).fetchone()
        return int(count)

    def close(self) -> None:
        """Close what this process holds open; the sessions stay in the file."""
        with self._lock:
            self._closed = True
            self._release()

    def _release(self) -> None:
        self._checkpoints.stop()  # before a fork too: its connection must not be inherited
        self._drop_connection()
        self._writer.close()

    @property
    def checkpoints(self) -> int:
        """Return how many background checkpoints this process has made."""
        return self._checkpoints.done

    def _before_fork(self) -> None:
        self._lock.acquire()
        self._release()  # both reopen on next use, the parent and the child each its own

    def _after_fork(self) -> None:
        self._lock.release()


class _Checkpoints:
    """Checkpoint the write-ahead log of ``path`` from a thread, every ``interval`` seconds.

    PASSIVE checkpoints: writers go on meanwhile, and a checkpoint another process is making
    is not waited for. The thread and its connection belong to one process: :meth:`stop`
    before a fork, :meth:`start` again after (the store does both when it reopens).
    """

    def __init__(self, path: str, interval: float, wait: float) -> None:
        self.path = path
        self.interval = interval
        self._wait = wait
        self.done = 0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> None:
        """Start the thread, unless it runs or checkpoints are the writers' own."""
        if not self.interval or (self._thread is not None and self._thread.is_alive()):
            return
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(self._stop,), name="otel-panel-receiver-checkpoint",
            daemon=True,
        )  # fmt: skip
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread, which closes its connection; wait for it at most the store's timeout.

        A checkpoint stuck in a frozen file system must not hang ``close`` or a fork: the
        thread is then left to end by itself (it is a daemon).
        """
        thread, self._thread = self._thread, None
        self._stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(self._wait)

    def _run(self, stop: threading.Event) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while not stop.wait(self.interval):
                try:
                    if conn is None:  # mode=rw: a file deleted under us is not made again here
                        uri = f"file:{urllib.parse.quote(self.path)}?mode=rw"
                        conn = sqlite3.connect(uri, uri=True, timeout=0, isolation_level=None)
                        conn.execute("PRAGMA synchronous=NORMAL")  # fsync as the writers' would
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    self.done += 1
                except sqlite3.Error:  # the writers report what is wrong with the file
                    if conn is not None:
                        conn.close()
                    conn = None
        finally:
            if conn is not None:
                conn.close()


class WriterLock:
    """The queue of one SQLite file's writers across processes: ``flock`` on a side file.

    A waiter wakes as soon as the holder lets go, where SQLite's busy handler polls with sleeps
    of up to 100 ms and lets an unlucky process starve (with two workers writing each payload,
    that was the 60 ms p99 of the benchmarks). It is held for one short transaction, and a
    killed holder releases it. The side file is opened by each process on first use (a lock
    inherited across a fork would be the parent's too); :meth:`close` lets it go.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None
        self._pid = 0

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Hold the lock (waiting for it) for the ``with`` block."""
        if self._fd is None or self._pid != os.getpid():
            self._fd, self._pid = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600), os.getpid()
        fd = self._fd
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Close this process's side file (it is opened again on next use)."""
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None


def _pairs(rows: list[tuple[int, bytes, bytes, float]]) -> list[tuple[int, int]]:
    """Return ``(key, packed state)`` of dropped rows, the least recently active first."""
    rows.sort()  # RETURNING gives no order
    return [(int.from_bytes(key, "big"), int.from_bytes(state, "big")) for _, key, state, _ in rows]


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
