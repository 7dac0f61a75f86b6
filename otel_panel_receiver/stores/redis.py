"""The Redis session store: session states shared by every receiver of a deployment.

Why a compare-and-set script rather than WATCH/MULTI: the rules run in Python, so an update is
optimistic either way (compute, write if the stored value is the one computed from). ``apply``
runs the rules on what it expects the session's value to be, and sends that value and the new
one to a Lua script that writes only if the stored value is still the expected one; if not, it
answers with the value it found and ``apply`` runs the rules again on that. No connection is
pinned while the rules run, and the touch, the size bound and the TTLs are done in the same
atomic step. What ``apply`` expects first is the value this process last wrote for the session
(a bounded memory of them), or none: a viewer's browser keeps its connection to one worker, and
a session starts with a start event, so most payloads are one round trip; one whose session
another process wrote last is two (a stale guess is not a conflict; one after a read is). A
round trip is most of what the store costs a payload: each is a send and a wake-up of Redis.

Each stored value carries a random token after the state. It makes every write unique, so a
state that went away and came back cannot pass for "unchanged", and a script that redis-py
sends again after a lost reply (it retries on connection errors) finds its own write and
reports success instead of applying the update twice.

Keys, under ``prefix``: ``s:<key as 32 hex digits>`` holds ``<state in hex>.<token>``; the
sorted set ``active`` scores each session by its last activity, in microseconds of ``clock``.
``clock`` keeps the latest score: a new score is at least that plus one, so the order is strict
even between hosts whose clocks tick alike or drift a little. The set drives LRU eviction at
``max_size`` and :meth:`sweep`, which hands idle sessions to ``on_evict``. Every key also gets
a Redis TTL of twice ``idle_ttl``, a safety net for when no receiver runs to sweep, long enough
that a sweep normally comes first.

Evicted sessions leave a tombstone: their value goes into the hash ``evicted`` and their
member into the sorted set ``evicted-order`` (by last activity), the most recent
:attr:`tombstones` kept. The script looks there only for a session it does not find: if the
tombstone is not the one the update ran on (none, for a guess), it answers with the tombstone
and writes nothing; the write that stores the session again removes its tombstone.

Faults: every call waits at most ``timeout`` seconds (connect and read); what Redis cannot do
then (gone, frozen, out of memory, a read-only replica) raises :class:`StoreUnavailable`, and
the next call connects again. The key ``born`` holds when the data began; the script makes it
when it is missing, so after Redis lost its data (a restart without persistence, a flush) it
changes: the change is reported (logged, counted in :attr:`resets`, its time in
:attr:`reset_at`), and the receiver adopts the sessions the emptied Redis does not know
instead of counting them again.

Needs Redis or Valkey 6.2 or later. The scripts build session key names from ``prefix``; on
Redis Cluster a prefix with a hash tag (``{opr}:``) puts every key in one slot.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from typing import Any, Final, cast

from otel_panel_receiver.errors import StoreUnavailable
from otel_panel_receiver.memo import Memo
from otel_panel_receiver.stores._bounds import Bounded
from otel_panel_receiver.stores._protocol import EvictionCallback, R, Update

__all__ = ["RedisSessionStore"]

log = logging.getLogger(__name__)

_CHUNK: Final = 1_000  # most sessions one script drops, so Redis never stalls long
_WRITTEN_KEPT: Final = 8_192  # sessions whose last written value a process remembers (~2 MB)
_TTL_FACTOR: Final = 2

# KEYS: session, active set, clock, tombstone hash, tombstone order, birth. ARGV: expected
# value ("" for none), new value, now (µs), member, ttl (ms, 0 for none), max_size (0 for
# none), batch, session key prefix, chunk, tombstones kept, the birth last seen ("" for
# none), the tombstone the update ran on ("" for none). Returns the value found when it is
# not the expected one; "t" and the tombstone ("" for none) when the session is not stored
# and that tombstone is not the one the update ran on; "!" and the birth when it is not the
# one last seen (Redis lost its data: nothing is written); else the birth followed by the
# evicted members and values. A value equal to the new one is this very write, sent again
# after a lost reply.
_CAS: Final = """
local cur = redis.call('GET', KEYS[1]) or ''
if cur ~= ARGV[1] and cur ~= ARGV[2] then
  if cur ~= '' then return cur end
  return {'t', redis.call('HGET', KEYS[4], ARGV[4]) or ''}
end
local born = redis.call('GET', KEYS[6])
if not born then born = ARGV[3]; redis.call('SET', KEYS[6], born) end
if ARGV[11] ~= '' and born ~= ARGV[11] then return {'!', born} end
if cur == '' then
  local tomb = redis.call('HGET', KEYS[4], ARGV[4]) or ''
  if tomb ~= ARGV[12] then return {'t', tomb} end
  if tomb ~= '' then
    redis.call('HDEL', KEYS[4], ARGV[4])
    redis.call('ZREM', KEYS[5], ARGV[4])
  end
end
local now = tonumber(ARGV[3])
local last = tonumber(redis.call('GET', KEYS[3]) or '0')
if now <= last then now = last + 1 end
local score = string.format('%.0f', now)
local ttl = tonumber(ARGV[5])
if ttl > 0 then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl)
  redis.call('SET', KEYS[3], score, 'PX', ttl)
  redis.call('ZADD', KEYS[2], score, ARGV[4])
  redis.call('PEXPIRE', KEYS[2], ttl)
else
  redis.call('SET', KEYS[1], ARGV[2])
  redis.call('SET', KEYS[3], score)
  redis.call('ZADD', KEYS[2], score, ARGV[4])
end
local max = tonumber(ARGV[6])
if max == 0 then return {born} end
local size = redis.call('ZCARD', KEYS[2])
if size <= max then return {born} end
local n = math.min(math.max(size - max, tonumber(ARGV[7])), tonumber(ARGV[9]), size - 1)
local popped = redis.call('ZPOPMIN', KEYS[2], n)
local out = {born}
for i = 1, #popped, 2 do
  local value = redis.call('GETDEL', ARGV[8] .. popped[i])
  if value then
    out[#out + 1] = popped[i]; out[#out + 1] = value
    redis.call('HSET', KEYS[4], popped[i], value)
    redis.call('ZADD', KEYS[5], popped[i + 1], popped[i])
  end
end
local excess = redis.call('ZCARD', KEYS[5]) - tonumber(ARGV[10])
if excess > 0 then
  local gone = redis.call('ZPOPMIN', KEYS[5], excess)
  for i = 1, #gone, 2 do redis.call('HDEL', KEYS[4], gone[i]) end
end
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[4], ttl)
  redis.call('PEXPIRE', KEYS[5], ttl)
end
return out
"""

# KEYS: active set, tombstone hash, tombstone order. ARGV: cutoff score, limit, session key
# prefix. Returns how many members were dropped, then the members and values of those still
# stored. Tombstones as idle as the cutoff go too.
_SWEEP: Final = """
local old = redis.call('ZRANGE', KEYS[3], '-inf', ARGV[1], 'BYSCORE', 'LIMIT', 0, ARGV[2])
if #old > 0 then
  redis.call('ZREMRANGEBYRANK', KEYS[3], 0, #old - 1)
  redis.call('HDEL', KEYS[2], unpack(old))
end
local idle = redis.call('ZRANGE', KEYS[1], '-inf', ARGV[1], 'BYSCORE', 'LIMIT', 0, ARGV[2])
if #idle == 0 then return {0} end
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, #idle - 1)
local out = {#idle}
for _, member in ipairs(idle) do
  local value = redis.call('GETDEL', ARGV[3] .. member)
  if value then out[#out + 1] = member; out[#out + 1] = value end
end
return out
"""


def _no_size(key: int) -> int:
    return 0


def _state(value: bytes) -> int:
    return int(value.partition(b".")[0], 16)


def _pairs(flat: list[bytes]) -> list[tuple[int, int]]:
    """Return ``(key, packed state)`` of a script's ``member, value, member, value, ...``."""
    return [(int(flat[i], 16), _state(flat[i + 1])) for i in range(0, len(flat), 2)]


class RedisSessionStore(Bounded):
    """Keep session states in Redis, bounded by size and by idleness, shared by many hosts.

    ``url`` is any URL redis-py takes (``redis://``, ``rediss://``, ``unix://``). ``max_size``
    and ``idle_ttl`` work as in the memory store over all sessions under ``prefix``; ``clock``
    must be wall-clock time. ``fn`` may run more than once per ``apply`` (once per conflict),
    so it must not have side effects. ``on_evict`` runs in the process that dropped the session.
    ``timeout`` bounds each connect and each reply, in seconds.
    """

    def __init__(
        self,
        url: str,
        *,
        max_size: int,
        idle_ttl: float,
        clock: Callable[[], float] = time.time,
        on_evict: EvictionCallback | None = None,
        prefix: str = "opr:",
        timeout: float = 2.0,
    ) -> None:
        import redis

        super().__init__(max_size=max_size, idle_ttl=idle_ttl, now=clock(), on_evict=on_evict)
        self.prefix = prefix
        self.timeout = timeout
        self._clock = clock
        self._failure: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        # Settings in the URL's query string win over these (redis-py's from_url merges them).
        self._client = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        self._cas = self._client.register_script(_CAS)
        self._sweep = self._client.register_script(_SWEEP)
        self._session_prefix = f"{prefix}s:"
        self._active = f"{prefix}active"
        self._tombs = (f"{prefix}evicted", f"{prefix}evicted-order")
        self._shared = (self._active, f"{prefix}clock", *self._tombs, f"{prefix}born")
        self._limits = (
            math.ceil(idle_ttl * 1000 * _TTL_FACTOR),
            max_size,
            self.batch,
            self._session_prefix,
            _CHUNK,
            self.tombstones,
        )
        self._born: bytes | None = None
        # What this process last wrote for a session: the value its next update expects.
        self._written: Memo[int, bytes] = Memo(kept=_WRITTEN_KEPT, size=_no_size)
        self.conflicts = 0

    @property
    def client(self) -> Any:
        """The redis-py client (the usage ledger shares it)."""
        return self._client

    @contextlib.contextmanager
    def failures(self) -> Iterator[None]:
        """Turn what Redis cannot do now into :class:`StoreUnavailable` (the usage ledger's too)."""
        try:
            yield
        except self._failure as exc:
            raise StoreUnavailable(f"session store Redis: {type(exc).__name__}: {exc}") from exc

    def apply(self, key: int, fn: Update[R]) -> R:
        """Run ``fn`` on the session's packed state and store the result if no one came between."""
        now = self._clock()
        if self._sweep_due(now):
            self.sweep()
        member = f"{key:032x}"
        keys = (self._session_prefix + member, *self._shared)
        written = self._written
        # The value expected (the last this process wrote, a guess until Redis answers one),
        # the tombstone the update runs on when the session is not stored, whether read.
        expected, tomb, read = written.get(key, b""), b"", False
        with self.failures():
            while True:
                found = expected or tomb
                state, result = fn(_state(found) if found else None)
                new = f"{state:x}.{os.urandom(6).hex()}".encode()
                args = (expected, new, int(now * 1_000_000), member, *self._limits,
                        self._born or b"", tomb)  # fmt: skip
                reply: bytes | list[bytes] = self._cas(keys, args)
                if isinstance(reply, bytes):  # another value is stored: run on that one
                    expected, tomb = reply, b""
                elif reply[0] == b"t":  # none is, and another tombstone: run on that one
                    expected, tomb = b"", reply[1]
                elif reply[0] == b"!":
                    # Redis lost its data since the last call: note it, then run the update
                    # again, so that a session it forgot is adopted rather than started.
                    self._check_birth(reply[1])
                    expected, tomb, read = b"", b"", False
                    continue
                else:
                    break
                if read:  # what it ran on was read: someone wrote in between
                    with self._counting:
                        self.conflicts += 1
                read = True
                now = self._clock()
        written.put(key, new)
        self._check_birth(reply[0])
        if tomb:
            with self._counting:
                self.resumed += 1
        self._dropped(_pairs(reply[1:]), idle=False)
        return result

    def _check_birth(self, born: bytes) -> None:
        """Note the data's birth time; a new one means Redis lost its data under us."""
        if born == self._born:
            return
        if self._born is not None:
            with self._counting:
                self.resets += 1
            log.error(
                "Session store Redis lost its data (restarted without persistence, or "
                "flushed): its sessions are lost; for one heartbeat interval, sessions it does "
                "not know are adopted, not counted again",
                extra={"fields": {"prefix": self.prefix}},
            )
            self.reset_at = self._clock()
        self._born = born

    def sweep(self) -> int:
        """Drop every session idle for ``idle_ttl`` seconds or more; return how many."""
        if not self.idle_ttl:
            return 0
        cutoff = int((self._clock() - self.idle_ttl) * 1_000_000)
        total = 0
        while True:
            with self.failures():
                reply: list[Any] = self._sweep(
                    (self._active, *self._tombs), (cutoff, _CHUNK, self._session_prefix)
                )
            total += self._dropped(_pairs(reply[1:]), idle=True)
            if int(reply[0]) < _CHUNK:
                return total

    def get(self, key: int) -> int | None:
        """Return the session's packed state, or ``None``; a read that is not activity."""
        with self.failures():
            value = cast("bytes | None", self._client.get(f"{self._session_prefix}{key:032x}"))
        return None if value is None else _state(value)

    def secret(self, name: str, ttl: float) -> bytes:
        """Return the secret kept under ``name`` in Redis (its own TTL), made at the first call."""
        key = f"{self.prefix}secret:{name}"
        with self.failures():
            self._client.set(key, os.urandom(32), nx=True, px=max(1, math.ceil(ttl * 1000)))
            value = cast("bytes | None", self._client.get(key))
        if value is None:  # expired between the two calls: make the next one
            return self.secret(name, ttl)
        return value

    def mark(self, key: int, ttl: float) -> bool:
        """Record ``key`` in Redis (its own TTL); return whether it was new."""
        name = f"{self.prefix}m:{key:032x}"
        with self.failures():
            return bool(self._client.set(name, b"1", nx=True, px=max(1, math.ceil(ttl * 1000))))

    def ping(self) -> None:
        """Ask Redis for a PONG: raise :class:`StoreUnavailable` if none comes in time."""
        with self.failures():
            self._client.ping()

    def __len__(self) -> int:
        with self.failures():
            return int(self._client.zcard(self._active))

    def close(self) -> None:
        """Close the connections; the sessions stay in Redis."""
        self._client.close()
