"""The LMDB session store: a memory-mapped file the worker processes of a host share.

What the several workers of one host use by default. A payload's update is one LMDB write
transaction (a B-tree in a shared memory map, no system call on the way), about a fifth of
the CPU of SQLite's and with no file lock to queue on (``docs/benchmarks.md``): this is what
lets a second worker add throughput instead of queueing on the file.

The store is a directory: ``data.mdb`` and ``lock.mdb`` (LMDB's), ``boot`` (below) and
``ledger.db``, an SQLite file for what must outlive the host (below). Named databases:

* ``sessions``: key (16 bytes) -> seq (8), last activity (8, a float), packed state;
* ``order``: seq -> key. A seq is the writer's clock in nanoseconds, past the last one this
  process gave (and past any taken), so the front of ``order`` is the least recently active
  session across all processes (the sweep and eviction read it there): one host, one clock;
  a clock stepped back only makes the sessions touched meanwhile look older. It is not read
  from the last entry: each LMDB call lets the GIL go, and under granian each one is a
  handoff to the server's threads (~3 µs of CPU);
* ``evicted`` and ``evicted_order``: the tombstones, in the same two shapes;
* ``marks``: key -> expiry (8), and ``mark_order``: expiry + key, the soonest first;
* ``journal``: seq -> a record of the usage ledger, until it is moved into ``ledger.db``;
  ``meta``: ``journal_seq``, the last seq moved out of the journal (where an emptied journal
  goes on from), and ``generation``, 16 random bytes made with the file, which tells a new
  file's seqs from an old one's.

Durability, chosen for speed: commits are not flushed to disk (``sync=False``), the pages are
written through the shared map. A process killed at any point loses nothing committed: the
pages are the kernel's, and LMDB's writer lock is a robust mutex that the next writer takes
back from a dead holder. An OS crash or power cut may lose or damage the file, so the store
keeps the boot id of the host that last opened it (``boot``): opened after the host
restarted, it starts over with a new file, reported as a reset like an SQLite file deleted
under the receiver, and the receiver adopts the sessions it no longer knows for one heartbeat
interval (``receiver.py``). Sessions and marks live minutes to a day, so that costs little.
What must outlive a power cut, the usage ledger (months of answers) and the secrets (the
ledger's viewer key), is in ``ledger.db``, an SQLite file in WAL mode, written at session
starts and a few times a minute.

The file grows in steps (:class:`Mapped`), each allocated on disk before the map may use it:
a write through a map to blocks a full disk cannot give kills the process (``SIGBUS``), where
a step that cannot be allocated only refuses the transaction (``StoreUnavailable``). Put the
store on a local file system that allocates in place (ext4, xfs, tmpfs; not a network file
system, not a copy-on-write one).

Faults are those of the SQLite store: what LMDB or the file system refuses raises
:class:`StoreUnavailable` and the file is opened again at the next call; at most once a second
the data file's identity is checked, and a file deleted or replaced under the receiver is
reported and replaced; a damaged file is replaced by a new one.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import struct
import threading
import time
from collections.abc import Callable, Sequence
from typing import ClassVar, Final, TypeVar

import lmdb

from otel_panel_receiver.errors import ConfigError, StoreUnavailable
from otel_panel_receiver.stores._bounds import Bounded
from otel_panel_receiver.stores._protocol import EvictionCallback, R, Update
from otel_panel_receiver.stores.sqlite import SqliteSessionStore

__all__ = ["LEDGER_FILE", "MAX_MARKS", "LmdbSessionStore", "Mapped", "boot_id", "map_size"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: The SQLite file in the store's directory that keeps the usage ledger and the secrets.
LEDGER_FILE: Final = "ledger.db"
#: Marks kept at most: past it, the ones that expire soonest go first (a flood of forged
#: viewers cannot fill the map).
MAX_MARKS: Final = 200_000
_CHUNK: Final = 10_000  # most sessions one transaction drops, so no writer waits long
_IDENTITY_EVERY: Final = 1.0  # seconds between two checks that the file is still the one opened
_BOOT_ID: Final = "/proc/sys/kernel/random/boot_id"
_HEAD: Final = struct.Struct(">8sd")  # seq, last activity: the front of a session's value
_EXPIRY: Final = struct.Struct(">d")
_NAMES: Final = (
    b"sessions", b"order", b"evicted", b"evicted_order", b"marks", b"mark_order", b"journal",
    b"meta",
)  # fmt: skip
#: Records of the usage ledger waiting to be moved into its SQLite file, at most (see
#: ``stores/usage.py``); past it, the oldest are dropped.
MAX_JOURNAL: Final = 100_000
_TRIM_EVERY: Final = 64  # appends between two checks of the journal's size
_now_ns = time.time_ns  # the clock of ``order``'s seqs
#: The first size of a map; each step doubles it, up to the map's maximum.
FIRST_MAP: Final = 8 << 20
# A session takes about 140 bytes of pages with its order entry (measured: 200,000 random
# keys); the maximum gives each of ``max_size`` four times that, plus room for the marks.
_BASE_MAP: Final = 64 << 20
_PER_SESSION: Final = 512
_UNBOUNDED_SESSIONS: Final = 2_000_000


def map_size(max_size: int) -> int:
    """Return the most bytes the map (and the data file) may grow to for ``max_size`` sessions.

    ``max_size`` 0 (no bound by count) gets room for about two million sessions; past what the
    map holds, new sessions are refused (``StoreUnavailable``), never the process.
    """
    return _BASE_MAP + (max_size or _UNBOUNDED_SESSIONS) * _PER_SESSION


def boot_id() -> str:
    """Return this boot's id on Linux, ``""`` where the system does not say."""
    try:
        with open(_BOOT_ID, encoding="ascii") as file:
            return file.read().strip()
    except OSError:
        return ""


class Mapped:
    """An LMDB environment of this process: opened on use, grown in steps, closed at forks.

    ``path`` is a directory (``subdir``) or a file; ``names`` its named databases, opened with
    it (:attr:`dbs`, in that order). LMDB allows one environment per file and process (closing
    a second would drop the first's locks), so :meth:`attach` gives every user of a path the
    same object, and the last :meth:`detach` closes it. An environment must not cross a
    ``fork``: every one is closed before each fork, with no transaction in flight, and each
    process opens its own on next use.

    The map starts at :data:`FIRST_MAP` (or the file's size) and doubles when a write finds
    it full, up to ``most`` bytes, the file's new blocks allocated first; other processes take
    the new size at their next transaction. With ``boot``, a file written under another boot
    id of the host is replaced by a new one (see the module's docstring). Every call runs in
    one transaction under :attr:`lock`, which keeps this process's threads off LMDB's own
    writer lock (they would wait on it holding the GIL).
    """

    _registry: ClassVar[dict[str, Mapped]] = {}
    _registry_lock: ClassVar = threading.Lock()

    def __init__(
        self, path: str, names: Sequence[bytes], most: int, subdir: bool, boot: Callable[[], str]
    ) -> None:
        self.path = path
        self.data = os.path.join(path, "data.mdb") if subdir else path
        self.names = tuple(names)
        self.most = most
        self.subdir = subdir
        self.boot = boot
        self.lock = threading.Lock()
        self.env: lmdb.Environment | None = None
        self.dbs: list[lmdb._Database] = []
        self.identity: tuple[int, int] = (0, 0)
        self.next_check = 0.0
        self.users = 0
        self.last_seq = 0  # the last seq of ``order`` this process gave
        #: Files found deleted, replaced, damaged or from another boot; and when, last.
        self.resets = 0
        self.reset_at = 0.0
        self.clock: Callable[[], float] = time.time

    @classmethod
    def attach(
        cls,
        path: str,
        names: Sequence[bytes],
        *,
        most: int,
        subdir: bool = True,
        boot: Callable[[], str] | None = None,
    ) -> Mapped:
        """Return this process's environment of ``path``, counting one more user."""
        key = os.path.realpath(path)
        with cls._registry_lock:
            mapped = cls._registry.get(key)
            if mapped is None:
                mapped = cls._registry[key] = cls(
                    path, names, most, subdir, boot or (lambda: "")
                )  # fmt: skip
            mapped.most = max(mapped.most, most)
            mapped.users += 1
            return mapped

    def detach(self) -> None:
        """Let one user go; the last closes the environment."""
        with self._registry_lock, self.lock:
            self.users -= 1
            if self.users == 0:
                self._registry.pop(os.path.realpath(self.path), None)
                self.drop()

    # -- transactions ------------------------------------------------------------------

    def run(self, body: Callable[[lmdb.Transaction], T], *, write: bool = True) -> T:
        """Run ``body`` in one transaction (committed, or aborted when it raises); return it.

        A full map grows one step and ``body`` runs again; a map another process grew is
        taken, and ``body`` runs again. Raises what LMDB and the file system raise.
        """
        with self.lock:
            while True:
                env = self._environment()
                try:
                    with env.begin(write=write) as txn:
                        return body(txn)
                except lmdb.MapFullError:
                    if not self._grow(env):
                        raise
                except lmdb.MapResizedError:
                    env.set_mapsize(0)  # older py-lmdb: take the size another process gave it

    def _grow(self, env: lmdb.Environment) -> bool:
        size = env.info()["map_size"]
        if size >= self.most:
            return False
        bigger = min(self.most, size * 2)
        _allocate(self.data, bigger)
        env.set_mapsize(bigger)
        return True

    # -- opening -----------------------------------------------------------------------

    def _environment(self) -> lmdb.Environment:
        """Return the environment, opening it when needed (call under :attr:`lock`).

        At most once a second, check first that the data file is still the one opened.
        """
        if self.env is not None and time.monotonic() >= self.next_check:
            self.next_check = time.monotonic() + _IDENTITY_EVERY
            try:
                info = os.stat(self.data)
                found = "replaced" if (info.st_dev, info.st_ino) != self.identity else ""
            except FileNotFoundError:
                found = "deleted"
            if found:
                self.lost(f"was {found} under the receiver")
                self.drop()
        if self.env is None:
            self.env = self._open()
        return self.env

    def _open(self) -> lmdb.Environment:
        """Open the file: after a reboot a new one, its first step allocated, the tables named.

        Under an ``flock`` of a side file, so one process decides and makes the file while the
        others wait.
        """
        side = os.path.join(self.path, "boot") if self.subdir else self.path + "-boot"
        fd = os.open(side, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            booted, written = self.boot(), os.pread(fd, 64, 0).decode("ascii", "replace")
            if booted and written != booted:
                if written and os.path.exists(self.data):
                    self.lost("was written before the host restarted")
                    self._remove()
                os.ftruncate(fd, 0)
                os.pwrite(fd, booted.encode("ascii"), 0)
            size = max(FIRST_MAP, _size(self.data))
            env = lmdb.open(
                self.path, subdir=self.subdir, map_size=size, max_dbs=len(self.names),
                sync=False, metasync=False, writemap=True, map_async=True, readahead=False,
                meminit=False, mode=0o600, max_readers=512,
            )  # fmt: skip
            try:
                _allocate(self.data, env.info()["map_size"])  # LMDB made the file sparse
                with env.begin(write=True) as txn:
                    self.dbs = [env.open_db(name, txn=txn) for name in self.names]
                info = os.stat(self.data)
            except BaseException:
                env.close()
                raise
        finally:
            os.close(fd)
        self.identity = (info.st_dev, info.st_ino)
        self.next_check = time.monotonic() + _IDENTITY_EVERY
        return env

    def _remove(self) -> None:
        lock = os.path.join(self.path, "lock.mdb") if self.subdir else self.path + "-lock"
        for name in (self.data, lock):
            with contextlib.suppress(FileNotFoundError):
                os.remove(name)

    def lost(self, how: str) -> None:
        """Count and report the file as lost: ``how`` says why."""
        self.resets += 1
        self.reset_at = self.clock()
        log.error(
            "Session store file %s: its sessions are lost and a new file is used; for one "
            "heartbeat interval, sessions it does not know are adopted, not counted again",
            how,
            extra={"fields": {"path": self.data}},
        )

    def damaged(self, exc: Exception) -> None:
        """Replace a file LMDB finds damaged by a new one at the next call (under the lock)."""
        self.drop()
        self.lost(f"is damaged ({exc})")
        self._remove()

    def drop(self) -> None:
        """Close the environment (under :attr:`lock`); the next call opens it again."""
        env, self.env = self.env, None
        if env is not None:
            env.close()

    @classmethod
    def before_fork(cls) -> None:
        cls._registry_lock.acquire()
        for mapped in cls._registry.values():
            mapped.lock.acquire()
            mapped.drop()

    @classmethod
    def after_fork(cls) -> None:
        for mapped in cls._registry.values():
            mapped.lock.release()
        cls._registry_lock.release()


os.register_at_fork(
    before=Mapped.before_fork, after_in_parent=Mapped.after_fork, after_in_child=Mapped.after_fork
)

_DAMAGE: Final = (lmdb.CorruptedError, lmdb.PageNotFoundError, lmdb.InvalidError)


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def _allocate(path: str, size: int) -> None:
    """Give the first ``size`` bytes of the data file their blocks on disk; keep its data."""
    fd = os.open(path, os.O_RDWR)
    try:
        if os.fstat(fd).st_blocks * 512 < size:
            os.posix_fallocate(fd, 0, size)
    finally:
        os.close(fd)


def _blob(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def _next(txn: lmdb.Transaction, db: lmdb._Database) -> bytes:
    """Return the seq after the last one of ``db`` (an order table), as its 8-byte key."""
    cursor = txn.cursor(db)
    last = int.from_bytes(cursor.key(), "big") if cursor.last() else 0
    return (last + 1).to_bytes(8, "big")


class LmdbSessionStore(Bounded):
    """Keep session states in an LMDB directory, bounded by size and by idleness.

    ``max_size`` and ``idle_ttl`` work as in the other stores (0 turns either bound off), over
    the sessions of every process that opens the directory. Touch times come from ``clock``,
    which must be wall-clock time: processes and restarts compare them. ``on_evict`` runs in
    the process that dropped the session, after the transaction. ``timeout`` bounds the
    ledger's waits on SQLite's lock; LMDB's own writer lock is held for microseconds.
    ``boot`` returns the host's boot id (see the module's docstring).
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
        boot: Callable[[], str] = boot_id,
    ) -> None:
        super().__init__(max_size=max_size, idle_ttl=idle_ttl, now=clock(), on_evict=on_evict)
        self.path = os.fspath(path)
        self.timeout = timeout
        self._clock = clock
        self._closed = False
        try:
            os.makedirs(self.path, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"session store {self.path!r}: {exc}") from None
        self._map = Mapped.attach(self.path, _NAMES, most=map_size(max_size), boot=boot)
        self._map.clock = clock
        #: The usage ledger's and the secrets' SQLite file: a store of no sessions, whose file
        #: handling (reconnection, identity checks, checkpoints, forks) is the SQLite store's.
        self.ledger = SqliteSessionStore(
            os.path.join(self.path, LEDGER_FILE), max_size=0, idle_ttl=0, clock=clock,
            timeout=timeout,
        )  # fmt: skip
        try:  # open now when possible; a file that cannot be used is reported at each call
            self._run(lambda txn: None, write=False)
        except StoreUnavailable as exc:
            log.error(
                "Session store cannot be opened; it is tried again at each payload",
                extra={"fields": {"path": self.path, "reason": str(exc)}},
            )

    # A reset is the directory's: every store object of this process that shares it sees it.
    @property
    def resets(self) -> int:
        return self._map.resets

    @resets.setter
    def resets(self, value: int) -> None:
        if "_map" in self.__dict__:  # Bounded's constructor sets 0 before there is a map
            self._map.resets = value

    @property
    def reset_at(self) -> float:
        return self._map.reset_at

    @reset_at.setter
    def reset_at(self, value: float) -> None:
        if "_map" in self.__dict__:
            self._map.reset_at = value

    def _run(self, body: Callable[[lmdb.Transaction], T], *, write: bool = True) -> T:
        """Run ``body`` in one transaction; what LMDB or the file system refuses becomes
        :class:`StoreUnavailable`, and the file is opened again at the next call."""
        if self._closed:
            raise StoreUnavailable(f"the session store {self.path!r} is closed")
        try:
            return self._map.run(body, write=write)
        except _DAMAGE as exc:
            with self._map.lock:
                self._map.damaged(exc)
            raise StoreUnavailable(f"session store {self.path!r}: {exc}") from exc
        except (lmdb.Error, OSError) as exc:
            with self._map.lock:
                self._map.drop()
            raise StoreUnavailable(f"session store {self.path!r}: {exc}") from exc

    # -- the protocol ------------------------------------------------------------------

    def apply(self, key: int, fn: Update[R]) -> R:
        """Run ``fn`` on the session's packed state and store the result, in one transaction."""
        now = self._clock()
        if self._sweep_due(now):
            self.sweep()
        k = key.to_bytes(16, "big")

        def update(txn: lmdb.Transaction) -> tuple[R, bool, list[tuple[int, int]]]:
            sessions, order, evicted, evicted_order = self._map.dbs[:4]
            old = txn.get(k, db=sessions)
            resumed = False
            if old is not None:
                txn.delete(old[:8], db=order)
                state = int.from_bytes(old[16:], "big")
            else:
                state = None
                buried = txn.pop(k, db=evicted) if self.tombstones else None
                if buried is not None:
                    txn.delete(buried[:8], db=evicted_order)
                    if not self.idle_ttl or now - _HEAD.unpack_from(buried)[1] < self.idle_ttl:
                        state, resumed = int.from_bytes(buried[16:], "big"), True
            new, result = fn(state)
            seq = self._seq(txn, k)
            txn.put(k, _HEAD.pack(seq, now) + _blob(new), db=sessions)
            dropped: list[tuple[int, int]] = []
            if old is None and self.max_size:
                count = txn.stat(sessions)["entries"]
                if count > self.max_size:
                    # Never the session just written: a clock stepped back may put it first.
                    n = min(max(self.batch, count - self.max_size), _CHUNK)
                    dropped = self._evict(txn, n, keep=k)
            return result, resumed, dropped

        result, resumed, dropped = self._run(update)
        if resumed:
            with self._counting:
                self.resumed += 1
        self._dropped(dropped, idle=False)
        return result

    def _seq(self, txn: lmdb.Transaction, k: bytes) -> bytes:
        """Put ``k`` at the back of ``order`` (see the module's docstring); return its seq."""
        order = self._map.dbs[1]
        seq = max(_now_ns(), self._map.last_seq + 1)
        while not txn.put(seq.to_bytes(8, "big"), k, db=order, overwrite=False):
            seq += 1  # taken by another process in the same nanosecond
        self._map.last_seq = seq
        return seq.to_bytes(8, "big")

    def _evict(self, txn: lmdb.Transaction, n: int, keep: bytes) -> list[tuple[int, int]]:
        """Move the ``n`` least recently active sessions (not ``keep``) to the tombstones;
        return them."""
        evicted, evicted_order = self._map.dbs[2:4]
        victims = self._front(txn, n, keep=keep)
        for k, value in victims:
            seq = _next(txn, evicted_order)
            txn.put(seq, k, db=evicted_order)
            txn.put(k, seq + value[8:], db=evicted)
        extra = txn.stat(evicted)["entries"] - self.tombstones
        cursor = txn.cursor(evicted_order)
        while extra > 0 and cursor.first():
            txn.delete(cursor.value(), db=evicted)
            cursor.delete()
            extra -= 1
        return _pairs(victims)

    def _front(
        self, txn: lmdb.Transaction, n: int, cutoff: float | None = None, keep: bytes = b""
    ) -> list[tuple[bytes, bytes]]:
        """Take up to ``n`` sessions from the front of ``order`` (with ``cutoff``, only those
        idle since then), passing ``keep`` over; return each ``(key, value)``, the least
        recently active first."""
        sessions, order = self._map.dbs[:2]
        taken: list[tuple[bytes, bytes]] = []
        cursor = txn.cursor(order)
        positioned = cursor.first()
        while len(taken) < n and positioned:
            k = bytes(cursor.value())
            if k == keep:
                positioned = cursor.next()
                continue
            value = txn.get(k, db=sessions)
            if value is not None and cutoff is not None and _HEAD.unpack_from(value)[1] > cutoff:
                break
            cursor.delete()
            if value is not None:
                txn.delete(k, db=sessions)
                taken.append((k, bytes(value)))
            positioned = cursor.first()
        return taken

    def sweep(self) -> int:
        """Drop every session idle for ``idle_ttl`` seconds or more; return how many."""
        if not self.idle_ttl:
            return 0
        cutoff = self._clock() - self.idle_ttl

        def expire(txn: lmdb.Transaction) -> list[tuple[bytes, bytes]]:
            evicted, evicted_order = self._map.dbs[2:4]
            victims = self._front(txn, _CHUNK, cutoff)
            cursor = txn.cursor(evicted_order)  # tombstones idle as long would start over
            stale = [(seq, k) for seq, k in cursor.iternext()
                     if _HEAD.unpack_from(txn.get(k, db=evicted) or _HEAD.pack(b"", 0))[1]
                     <= cutoff]  # fmt: skip
            for seq, k in stale:
                txn.delete(seq, db=evicted_order)
                txn.delete(k, db=evicted)
            return victims

        total = 0
        while True:
            victims = self._run(expire)
            total += self._dropped(_pairs(victims), idle=True)
            if len(victims) < _CHUNK:
                return total

    def get(self, key: int) -> int | None:
        """Return the session's packed state, or ``None``; a read that is not activity."""
        k = key.to_bytes(16, "big")
        value = self._run(lambda txn: txn.get(k, db=self._map.dbs[0]), write=False)
        return None if value is None else int.from_bytes(value[16:], "big")

    def secret(self, name: str, ttl: float) -> bytes:
        """Return the secret kept under ``name`` in the ledger's file, made at the first call."""
        return self.ledger.secret(name, ttl)

    def mark(self, key: int, ttl: float) -> bool:
        """Record ``key``; return whether it was new (an expired mark is not)."""
        now = self._clock()
        k = key.to_bytes(16, "big")

        def mark(txn: lmdb.Transaction) -> bool:
            marks, mark_order = self._map.dbs[4:6]
            old = txn.get(k, db=marks)
            if old is not None and _EXPIRY.unpack(old)[0] > now:
                return False  # the usual answer, in one call
            cursor = txn.cursor(mark_order)
            # A few expired marks go with each new one; past MAX_MARKS, the soonest to expire.
            for _ in range(16):
                if not cursor.first():
                    break
                (until,) = _EXPIRY.unpack_from(cursor.key())
                if until > now and txn.stat(marks)["entries"] < MAX_MARKS:
                    break
                txn.delete(cursor.key()[8:], db=marks)
                cursor.delete()
            if old is not None:  # expired (and maybe gone with the others just now)
                txn.delete(bytes(old) + k, db=mark_order)
            expiry = _EXPIRY.pack(now + ttl)
            txn.put(k, expiry, db=marks)
            txn.put(expiry + k, b"", db=mark_order)
            return True

        return self._run(mark)

    def journal(self, record: bytes) -> None:
        """Append ``record`` to the journal (past :data:`MAX_JOURNAL`, the oldest go).

        The size is checked at every :data:`_TRIM_EVERY`-th seq, so the journal holds at most
        ``MAX_JOURNAL + _TRIM_EVERY - 1`` records: an append is two LMDB calls in the usual
        case (the last seq, the record), each of which lets the GIL go.
        """

        def append(txn: lmdb.Transaction) -> None:
            journal, meta = self._map.dbs[6:8]
            cursor = txn.cursor(journal)
            if cursor.last():
                seq = int.from_bytes(cursor.key(), "big") + 1
            else:  # a new file, or a journal a drain emptied: its seq goes on from meta
                if txn.get(b"generation", db=meta) is None:  # the first record of a new file
                    txn.put(b"generation", os.urandom(16), db=meta)
                seq = int.from_bytes(txn.get(b"journal_seq", db=meta) or b"", "big") + 1
            cursor.put(seq.to_bytes(8, "big"), record, append=True)
            if seq % _TRIM_EVERY == 0:
                extra = txn.stat(journal)["entries"] - MAX_JOURNAL
                while extra > 0 and cursor.first():
                    cursor.delete()
                    extra -= 1

        self._run(append)

    def journaled(self, limit: int) -> tuple[bytes, list[tuple[int, bytes]]]:
        """Return the file's generation and up to ``limit`` records from the journal's front."""

        def read(txn: lmdb.Transaction) -> tuple[bytes, list[tuple[int, bytes]]]:
            journal, meta = self._map.dbs[6:8]
            records: list[tuple[int, bytes]] = []
            for seq, record in txn.cursor(journal):
                if len(records) >= limit:
                    break
                records.append((int.from_bytes(seq, "big"), bytes(record)))
            return bytes(txn.get(b"generation", db=meta) or b""), records

        return self._run(read, write=False)

    def forget_journal(self, generation: bytes, upto: int) -> None:
        """Drop the journal's records up to seq ``upto``, if the file is still ``generation``."""

        def forget(txn: lmdb.Transaction) -> None:
            journal, meta = self._map.dbs[6:8]
            if txn.get(b"generation", db=meta) != generation:
                return  # a new file: those records went with the old one
            cursor = txn.cursor(journal)
            while cursor.first() and int.from_bytes(cursor.key(), "big") <= upto:
                cursor.delete()
            # An emptied journal must not give its seqs again: the next append reads the last.
            given = int.from_bytes(txn.get(b"journal_seq", db=meta) or b"", "big")
            if upto > given:
                txn.put(b"journal_seq", upto.to_bytes(8, "big"), db=meta)

        self._run(forget)

    def ping(self) -> None:
        """Take the write lock and let it go: raise :class:`StoreUnavailable` if it cannot."""
        self._run(lambda txn: None)

    def __len__(self) -> int:
        return int(self._run(lambda txn: txn.stat(self._map.dbs[0])["entries"], write=False))

    def close(self) -> None:
        """Close what this process holds open; the sessions stay in the file."""
        if not self._closed:
            self._closed = True
            self._map.detach()
        self.ledger.close()


def _pairs(victims: list[tuple[bytes, bytes]]) -> list[tuple[int, int]]:
    """Return ``(key, packed state)`` of dropped sessions."""
    return [(int.from_bytes(k, "big"), int.from_bytes(value[16:], "big")) for k, value in victims]
