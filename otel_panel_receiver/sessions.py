"""The pure session rules: how one event changes a session and what it adds to the counters.

The rules keep the upstream receiver's duration semantics (docs/protocol.md, "The upstream
duration rule") but compute them as increments, so the counters only ever go up:

* a session is counted once, at the first event seen for its key, whatever its type;
* a heartbeat or end adds the gap since the session's latest time, capped at the session timeout
  or, in auto mode (timeout 0), at 1.25 x the payload's ``heartbeatInterval``;
* an end with no heartbeat before it adds ``end - start`` (uncapped in auto mode, as upstream);
* a repeated start, a duplicate time and a gap that would be negative add nothing;
* an event that arrives out of order is placed between its neighbours among the latest
  :data:`WINDOW` times, which gives exactly upstream's sorted-times result for any reordering
  within that window; an event older than the window adds nothing.

Nothing here does I/O. The state of a session packs into one integer (:func:`pack`), which is
what every store keeps: about 50 bytes in memory, one column in SQLite, one value in Redis.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import re
from collections.abc import Callable
from typing import Final

import msgspec

from otel_panel_receiver.errors import ConfigError
from otel_panel_receiver.model import END, HEARTBEAT, START, EventKind, PanelEvent, SessionUpdate

__all__ = ["WINDOW", "SessionRules", "SessionState", "pack", "session_key", "unpack"]

#: How many of a session's latest distinct event times are kept for out-of-order events.
WINDOW: Final = 4

_TIME_BITS: Final = 38  # covers every accepted timestamp (payload.MAX_TIME < 2**38)
_OFFSET_BITS: Final = 38  # a window time as its offset from the session's first: any accepted time
_OFFSET_MAX: Final = (1 << _OFFSET_BITS) - 1
_COUNT_BITS: Final = 3
_TIME_MASK: Final = (1 << _TIME_BITS) - 1
_COUNT_MASK: Final = (1 << _COUNT_BITS) - 1
_COUNT_AT: Final = 2 + _TIME_BITS  # where the packing's fields start (see pack)
_OFFSETS_AT: Final = _COUNT_AT + _COUNT_BITS
#: Where the window's i-th offset starts among the offsets, and the mask of the first i of them.
_OFFSET_AT: Final = tuple(_OFFSET_BITS * i for i in range(WINDOW + 1))
_OFFSETS_MASK: Final = tuple((1 << _OFFSET_BITS * i) - 1 for i in range(WINDOW + 1))
_LOW_MASK: Final = (1 << _OFFSETS_AT) - 1


class SessionState(msgspec.Struct, frozen=True):
    """What the rules remember of one session.

    ``first`` is the earliest event time seen; ``times`` the latest distinct event times,
    ascending, at most :data:`WINDOW` of them; ``heartbeats`` whether any heartbeat arrived;
    ``ended`` whether an end arrived.
    """

    first: int
    times: tuple[int, ...]
    heartbeats: bool = False
    ended: bool = False


def pack(state: SessionState) -> int:
    """Pack a state into one non-negative integer (see :func:`unpack`)."""
    value, first = 0, state.first
    for t in reversed(state.times):
        offset = t - first
        value = (value << _OFFSET_BITS) | (offset if offset < _OFFSET_MAX else _OFFSET_MAX)
    value = (value << _COUNT_BITS) | len(state.times)
    value = (value << _TIME_BITS) | state.first
    return (value << 2) | (state.heartbeats << 1) | state.ended


def unpack(value: int) -> SessionState:
    """Return the state that :func:`pack` packed into ``value``."""
    ended, heartbeats = bool(value & 1), bool(value & 2)
    value >>= 2
    first = value & _TIME_MASK
    value >>= _TIME_BITS
    count = value & _COUNT_MASK
    value >>= _COUNT_BITS
    times = []
    for _ in range(count):
        times.append(first + (value & _OFFSET_MAX))
        value >>= _OFFSET_BITS
    return SessionState(first, tuple(times), heartbeats, ended)


class SessionRules:
    """Apply events to session states under one ``--session-timeout``.

    ``timeout`` is in seconds; 0 selects auto mode, where each gap is capped at 1.25 x the
    event's own ``heartbeatInterval``.
    """

    __slots__ = ("timeout",)

    def __init__(self, timeout: float = 0.0) -> None:
        if timeout < 0:
            raise ConfigError(f"the session timeout must be >= 0 s, got {timeout}")
        self.timeout = timeout

    def cap(self, event: PanelEvent) -> float:
        """Return the most one gap between consecutive events may add."""
        return self.timeout if self.timeout > 0 else 1.25 * event.options.heartbeat_interval

    def apply(
        self, state: SessionState | None, event: PanelEvent, *, adopt: bool = False
    ) -> tuple[SessionState, SessionUpdate]:
        """Return the session's new state and what this event added.

        ``adopt``: a session the store does not know (``state`` None) was counted before the
        store lost it; it is tracked from this event on but not started again.
        """
        return self._apply(state, event, self.cap(event), adopt)

    def _apply(
        self, state: SessionState | None, event: PanelEvent, cap: float, adopt: bool
    ) -> tuple[SessionState, SessionUpdate]:
        kind, t = event.kind, event.time
        if state is None:
            ended = kind is END
            new = SessionState(t, (t,), kind is HEARTBEAT, ended)
            return new, SessionUpdate(started=not adopt, duration=0.0, ended=ended, start_time=t)
        if kind is START:  # a repeated or late start changes nothing (upstream drops it)
            return state, SessionUpdate(False, 0.0, False, state.first)
        heartbeats = state.heartbeats or kind is HEARTBEAT
        added = self._added(state, kind, t, heartbeats, cap)
        new = SessionState(
            min(state.first, t),
            _insert(state.times, t),
            heartbeats,
            state.ended or kind is END,
        )
        return new, SessionUpdate(False, added, kind is END, new.first)

    def updater(
        self, event: PanelEvent, *, adopt: Callable[[], bool] | None = None
    ) -> Callable[[int | None], tuple[int, SessionUpdate]]:
        """Return the store update for ``event``: packed state in, packed state and update out.

        What a session store's atomic ``apply`` runs; it has no side effects, so a shared store
        may run it again after a conflicting write. ``adopt`` is asked, inside the update,
        whether a session the store does not know is to be adopted rather than started.
        """
        # A partial, not a closure: half the instructions to make (callgrind), each payload.
        return functools.partial(self._update, event, self.cap(event), adopt)

    def _update(
        self, event: PanelEvent, cap: float, adopt: Callable[[], bool] | None, packed: int | None
    ) -> tuple[int, SessionUpdate]:
        if packed is None:
            state, result = self._apply(None, event, cap, adopt is not None and adopt())
            return pack(state), result
        kind = event.kind
        if kind is not START:
            done = self._later(packed, kind is END, event.time, cap)
            if done is not None:
                return done
        state, result = self._apply(unpack(packed), event, cap, False)
        return pack(state), result

    def _later(
        self, packed: int, end: bool, t: int, cap: float
    ) -> tuple[int, SessionUpdate] | None:
        """Apply a heartbeat (or an end) at ``t`` after all of a packed state's times, the usual
        case, on the packed integer: the same state and update as ``_apply`` on ``unpack``
        and ``pack`` after, without making either. ``None`` for any other case (or a value
        that is not a packing), which is left to them."""
        low = packed & _LOW_MASK  # the flags, first and count: shifted as a small integer
        first = low >> 2 & _TIME_MASK
        count = low >> _COUNT_AT
        if not 0 < count <= WINDOW:
            return None
        offsets = packed >> _OFFSETS_AT & _OFFSETS_MASK[count]
        last = first + (offsets >> _OFFSET_AT[count - 1])
        if t <= last:
            return None  # a repeat, or out of order: the rules place it
        gap = t - last
        heartbeats = low & 2 or not end
        if heartbeats:
            added = cap if cap < gap else gap  # min(gap, cap) without a call: 1,500 fewer
        else:  # start .. end with no heartbeat: the whole span, as upstream
            added = float(gap if self.timeout <= 0 else min(gap, self.timeout))
        if count == WINDOW:  # the earliest time leaves the window
            offsets >>= _OFFSET_BITS
            count -= 1
        # (t - first) < 2**38: both are times.
        state = (offsets | (t - first) << _OFFSET_AT[count]) << _OFFSETS_AT
        state |= (count + 1) << _COUNT_AT | first << 2 | (2 if heartbeats else 0) | (end or low & 1)
        return state, SessionUpdate(False, added, end, first)

    def _added(
        self, state: SessionState, kind: EventKind, t: int, heartbeats: bool, cap: float
    ) -> float:
        times = state.times
        if t in times:
            return 0.0
        if t > times[-1]:
            gap = t - times[-1]
            if not heartbeats:  # start .. end with no heartbeat: the whole span, as upstream
                return float(gap if self.timeout <= 0 else min(gap, self.timeout))
            return min(gap, cap)
        if not heartbeats:
            return 0.0  # an end before the start: upstream's negative duration, made 0
        if t < state.first:
            return min(state.first - t, cap)
        if t > times[0] or times[0] == state.first:  # inside the window: split a gap
            i = bisect.bisect(times, t)
            a, b = times[i - 1], times[i]
            return max(0.0, min(t - a, cap) + min(b - t, cap) - min(b - a, cap))
        return 0.0  # older than the window: its neighbours are no longer known


def _insert(times: tuple[int, ...], t: int) -> tuple[int, ...]:
    if t in times:
        return times
    if t > times[-1]:
        grown = (*times, t)
    else:
        i = bisect.bisect(times, t)
        grown = (*times[:i], t, *times[i:])
    return grown[-WINDOW:]


_CANONICAL_UUID: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def session_key(event: PanelEvent) -> int:
    """Return the session's 128-bit key.

    A canonical lower-case UUID is its own key (and later its trace id). Any other non-empty
    ``uuid`` is hashed as it is. An empty one (Post Start off, or a 1.x payload) is replaced by
    what the payload carries about its page view: host, dashboard uid, user id or login, and
    ``timeOrigin`` (the page load time; for 1.x payloads, which have none, the event time).
    """
    uuid = event.uuid
    if uuid:
        if _CANONICAL_UUID.fullmatch(uuid):
            return int(uuid.replace("-", ""), 16)
        return _hash("uuid", uuid)
    user = str(event.user.id) if event.user.id else f"login:{event.user.login}"
    origin = event.time if event.legacy else event.time_origin
    return _hash("view", event.host.address, event.dashboard.uid, user, str(origin))


def _hash(*parts: str) -> int:
    digest = hashlib.blake2b("\x1f".join(parts).encode("utf-8", "surrogatepass"), digest_size=16)
    return int.from_bytes(digest.digest(), "big")
