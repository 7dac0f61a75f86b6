"""The session rules: counted once, capped gaps, upstream's worked examples.

The rules are those of docs/protocol.md, "Sessions and durations"; the worked examples those of
"The upstream duration rule".
"""

from __future__ import annotations

import itertools

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from otel_panel_receiver.model import EventKind, PanelEvent, PanelOptions
from otel_panel_receiver.sessions import (
    WINDOW,
    SessionRules,
    SessionState,
    pack,
    session_key,
    unpack,
)

T0 = 1_618_803_734
KINDS = {"start": EventKind.START, "hb": EventKind.HEARTBEAT, "end": EventKind.END}


def event(kind: str, offset: int, interval: float = 60.0, **fields: object) -> PanelEvent:
    return PanelEvent(
        uuid=str(fields.pop("uuid", "3f0c6a9e-2b7d-4c1e-9a51-7d2e4b8f6c10")),
        kind=KINDS[kind],
        type={"hb": "heartbeat"}.get(kind, kind),
        time=T0 + offset,
        options=PanelOptions(heartbeat_interval=interval),
        **fields,  # type: ignore[arg-type]
    )


def replay(events: list[PanelEvent], timeout: float = 0.0) -> tuple[int, float]:
    """Return (sessions counted, total duration) for one session's events in arrival order."""
    rules, state, sessions, duration = SessionRules(timeout), None, 0, 0.0
    for ev in events:
        state, update = rules.apply(state, ev)
        sessions += update.started
        duration += update.duration
        state = unpack(pack(state))  # what a store keeps must be enough
    return sessions, duration


def parse(events: str, interval: float) -> list[PanelEvent]:
    """Return the events of ``"start 0, hb 60, end 185"``, offsets in seconds."""
    out = []
    for item in events.split(", "):
        kind, offset = item.split(" ")
        out.append(event(kind, int(offset), interval))
    return out


# The worked examples of docs/protocol.md, "The upstream duration rule", observed on upstream.
WORKED_EXAMPLES = [
    ("start 0, hb 60, end 185", 60, 0, 135),
    ("hb 0, hb 60, hb 400", 60, 0, 135),
    ("start 0, end 7200", 60, 0, 7200),
    ("hb 1, hb 0, hb 7200", 3600, 0, 4501),
    ("start 0, end 100", 60, 30, 30),
    ("start 0, hb 60, hb 400", 60, 30, 60),
    ("end 0", 60, 0, 0),
    ("end 0", 60, 30, 0),
    ("start 0, start 500, end 100", 60, 0, 100),
    # Upstream records -100 here and panics at the next scrape; a counter cannot go down.
    ("start 2000, end 1900", 60, 0, 0),
]


@pytest.mark.parametrize(("events", "interval", "timeout", "expected"), WORKED_EXAMPLES)
def test_upstreams_worked_examples_give_upstreams_durations(
    events: str, interval: float, timeout: float, expected: float
) -> None:
    sessions, duration = replay(parse(events, interval), timeout)
    assert sessions == 1
    assert duration == expected


def test_a_session_is_counted_once_whatever_its_first_event() -> None:
    for first in ("start", "hb", "end"):
        sessions, _ = replay([event(first, 0), event("hb", 60), event("end", 70)])
        assert sessions == 1


def test_start_only_session_adds_no_duration() -> None:
    assert replay([event("start", 0)]) == (1, 0.0)


def test_auto_cap_uses_decimal_heartbeat_interval() -> None:
    # 1.25 x 30.5 = 38.125: a 100 s gap adds the cap, a 30 s gap adds itself.
    assert replay(parse("start 0, hb 30, hb 130", 30.5)) == (1, 30 + 38.125)


def test_auto_mode_with_interval_zero_adds_nothing_for_heartbeat_sessions() -> None:
    # Kept from upstream ("The upstream duration rule"): the cap is 1.25 x 0.
    assert replay(parse("start 0, hb 60, end 120", 0)) == (1, 0.0)


def test_duplicate_times_add_nothing() -> None:
    assert replay(parse("start 0, hb 60, hb 60, end 60", 60)) == (1, 60.0)


def test_end_after_heartbeats_is_capped_like_a_heartbeat() -> None:
    assert replay(parse("start 0, hb 60, end 1000", 60)) == (1, 60 + 75)


def test_heartbeat_after_end_keeps_counting_and_never_subtracts() -> None:
    # Upstream erases the end here ("Its session cache"); increments cannot go back.
    sessions, duration = replay(parse("start 0, end 100, hb 130", 60))
    assert (sessions, duration) == (1, 100 + 30)


def test_reordered_heartbeats_within_the_window_give_the_sorted_result() -> None:
    in_order = parse("start 0, hb 60, hb 120, hb 180, end 200", 60)
    for arrival in itertools.permutations(in_order[1:4]):
        events = [in_order[0], *arrival, in_order[4]]
        assert replay(events) == (1, 200.0), [e.time - T0 for e in events]


def test_reordering_that_splits_a_capped_gap_restores_both_parts() -> None:
    # hb 120 arrives after hb 240: the 0->240 gap first adds the cap (75), then splitting it
    # at 120 gives 75 + 75 = 150 in all, as sorting every time would.
    assert replay(parse("start 0, hb 240, hb 120", 60)) == (1, 150.0)


def test_event_older_than_the_window_adds_nothing() -> None:
    times = [0, 60, 120, 180, 240, 300]
    events = [event("start", 0)] + [event("hb", t) for t in times[1:]]
    _, before = replay(events)
    _, after = replay([*events, event("hb", 30)])
    assert len(times) > WINDOW
    assert after == before


def rules_reference(times: list[int], cap: float) -> float:
    """Upstream's algorithm for a session with heartbeats: sum of capped sorted gaps."""
    ordered = sorted(set(times))
    return sum(min(b - a, cap) for a, b in itertools.pairwise(ordered))


@given(
    offsets=st.lists(st.integers(0, 5000), min_size=1, max_size=12),
    interval=st.sampled_from([1.0, 10.0, 60.0, 30.5]),
    swaps=st.lists(st.integers(0, 10), max_size=3),
)
def test_in_order_or_nearly_in_order_heartbeats_match_upstream(
    offsets: list[int], interval: float, swaps: list[int]
) -> None:
    ordered = sorted(offsets)
    arrival = list(ordered)
    for i in swaps:  # swap adjacent arrivals: reordering within the window
        if i + 1 < len(arrival):
            arrival[i], arrival[i + 1] = arrival[i + 1], arrival[i]
    _, duration = replay([event("hb", t, interval) for t in arrival])
    assert duration == pytest.approx(rules_reference(arrival, 1.25 * interval))


@given(
    offsets=st.lists(st.integers(-10_000, 10_000), min_size=1, max_size=20),
    kinds=st.lists(st.sampled_from(["start", "hb", "end"]), min_size=20, max_size=20),
    timeout=st.sampled_from([0.0, 30.0]),
)
def test_no_event_sequence_subtracts_or_counts_a_session_twice(
    offsets: list[int], kinds: list[str], timeout: float
) -> None:
    rules, state, started = SessionRules(timeout), None, 0
    for offset, kind in zip(offsets, kinds, strict=False):
        state, update = rules.apply(state, event(kind, 20_000 + offset))
        started += update.started
        assert update.duration >= 0
    assert started == 1


@given(
    first=st.integers(0, 2**38 - 1),
    deltas=st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=WINDOW, unique=True),
    heartbeats=st.booleans(),
    ended=st.booleans(),
)
def test_unpack_of_pack_gives_the_state_back(
    first: int, deltas: list[int], heartbeats: bool, ended: bool
) -> None:
    state = SessionState(first, tuple(first + d for d in sorted(deltas)), heartbeats, ended)
    assert unpack(pack(state)) == state


def test_a_packed_state_fits_in_200_bits() -> None:
    state = SessionState(T0, (T0, T0 + 60, T0 + 120, T0 + 180), True, True)
    assert pack(state).bit_length() <= 200


def test_canonical_uuid_is_its_own_key_and_trace_id() -> None:
    uuid = "3f0c6a9e-2b7d-4c1e-9a51-7d2e4b8f6c10"
    assert session_key(event("start", 0, uuid=uuid)) == int(uuid.replace("-", ""), 16)


def test_non_canonical_uuids_are_distinct_keys() -> None:
    upper = "3F0C6A9E-2B7D-4C1E-9A51-7D2E4B8F6C10"
    lower = upper.lower()
    keys = {session_key(event("start", 0, uuid=u)) for u in (upper, lower, "x", "y")}
    assert len(keys) == 4


def test_empty_uuid_sessions_of_different_viewers_do_not_merge() -> None:
    from otel_panel_receiver.model import Dashboard, Host, Viewer

    def anon(user_id: int, origin: int, uid: str = "abc") -> PanelEvent:
        return event(
            "hb", 0, uuid="", user=Viewer(id=user_id), time_origin=origin,
            dashboard=Dashboard(uid=uid), host=Host(hostname="g"),
        )  # fmt: skip

    keys = {
        session_key(anon(1, 100)),
        session_key(anon(2, 100)),
        session_key(anon(1, 200)),
        session_key(anon(1, 100, "other")),
    }
    assert len(keys) == 4
    assert session_key(anon(1, 100)) == session_key(anon(1, 100))


def test_negative_timeout_is_refused() -> None:
    with pytest.raises(ValueError, match="session timeout"):
        SessionRules(-1)


def test_a_repeated_time_adds_nothing_even_centuries_after_the_start() -> None:
    far = (1 << 32) + 225  # 136 years on: past what 32 bits of seconds can hold
    events = [event("start", 0), event("hb", far, 300), event("hb", far, 300)]
    assert replay(events) == (1, 375.0)  # the first gap capped at 1.25 x 300; the repeat 0


def test_pack_keeps_every_accepted_time_exactly() -> None:
    from otel_panel_receiver.payload import MAX_TIME

    state = SessionState(0, (0, MAX_TIME - 1, MAX_TIME), True, True)
    assert unpack(pack(state)) == state


def slow_update(rules: SessionRules, packed: int, ev: PanelEvent) -> tuple[int, object]:
    """What a store's update of a known session did before in-order events took a shortcut."""
    state, update = rules.apply(unpack(packed), ev)
    return pack(state), update


@given(
    offsets=st.lists(st.integers(-400, 400) | st.integers(-(2**39), 2**39), min_size=2,
                     max_size=12),
    kinds=st.lists(st.sampled_from(["start", "hb", "end"]), min_size=12, max_size=12),
    interval=st.sampled_from([0.0, 10.0, 60.0, 30.5]),
    timeout=st.sampled_from([0.0, 30.0]),
)  # fmt: skip
def test_a_store_update_gives_what_the_rules_give_for_any_event_sequence(
    offsets: list[int], kinds: list[str], interval: float, timeout: float
) -> None:
    from otel_panel_receiver.payload import MAX_TIME

    rules, packed = SessionRules(timeout), None
    for offset, kind in zip(offsets, kinds, strict=False):
        ev = event(kind, 0, interval)
        ev = msgspec.structs.replace(ev, time=min(max(0, T0 + offset), MAX_TIME))
        if packed is None:
            packed, _ = rules.updater(ev)(None)
            continue
        assert rules.updater(ev)(packed) == slow_update(rules, packed, ev)
        packed, _ = slow_update(rules, packed, ev)


@given(
    packed=st.integers(0, 2**200),
    kind=st.sampled_from(["hb", "end"]),
    time=st.integers(0, 2**38 - 1),
    timeout=st.sampled_from([0.0, 30.0]),
)
def test_a_store_update_of_any_integer_gives_what_the_rules_give(
    packed: int, kind: str, time: int, timeout: float
) -> None:
    rules = SessionRules(timeout)
    ev = msgspec.structs.replace(event(kind, 0), time=time)
    try:
        expected: object = slow_update(rules, packed, ev)
    except IndexError as exc:  # no times: not a packing
        expected = type(exc)
    try:
        got: object = rules.updater(ev)(packed)
    except IndexError as exc:
        got = type(exc)
    assert got == expected
