"""End to end over OTLP: the CLI under real gunicorn pushes to a real collector.

The receiver pushes OTLP/HTTP to **rotel** (the OpenTelemetry collector the ``rotel`` wheel
ships), which forwards metrics to a real **VictoriaMetrics 1.112** at its OTLP ingest
(``/opentelemetry/v1/metrics``) and logs and traces to
:class:`~tests.support.otlp_sink.OtlpSink`, a protocol-faithful OTLP/HTTP receiver standing in
for Loki and Tempo (neither can be installed here). A few hundred generated sessions are
replayed; then:

* PromQL on VictoriaMetrics gives, per label set L, the same totals as the receiver's own
  ``/metrics`` and as the independent oracle of ``tests/support/oracle.py``. VictoriaMetrics keeps
  an OTLP sum's name as sent, with no unit or ``_total`` suffix: ``grafana_analytics_sessions`` and
  ``grafana_analytics_sessions_duration`` (``/metrics`` says ``..._total`` and
  ``..._duration_seconds_total``); resource attributes become labels (``service.name``...);
* the sink got one log record per accepted payload;
* it got one span per session: for a session that sent an ``end``, from its first event to the
  end; for one that did not, from its first to its last event once it has been idle for
  ``--trace-idle-timeout`` (6 s here). A session's trace id is its uuid without dashes.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.lanes import post_bodies
from tests.support.metrics import VALUES_AT_ONCE, by_label_set, diff_series, scrape, vm_series
from tests.support.oracle import LABELS, LabelSet, expected_counters
from tests.support.otlp_sink import OtlpSink, attributes
from tests.support.peers import (
    promql,
    require_rotel,
    rotel_argv,
    victoria_metrics,
    vm_flush,
)
from tests.support.procs import free_port, listening, require_binary, running, wait_until
from tests.support.traffic import SITES, USERS, Event, generate_traffic, lanes, start_and_end

pytestmark = [pytest.mark.peers, pytest.mark.slow]

SESSIONS = 300
CONNECTIONS = 4
IDLE_TIMEOUT = 6.0  # longer than the widest gap between two posts of one session on a slow host
NS = 1_000_000_000
#: Metric names: as VictoriaMetrics stores the OTLP sums, and as the receiver's /metrics has them.
VM_SESSIONS, VM_DURATION = "grafana_analytics_sessions", "grafana_analytics_sessions_duration"
PULL_SESSIONS = "grafana_analytics_sessions_total"
PULL_DURATION = "grafana_analytics_sessions_duration_seconds_total"
#: Fast pushes, so the test waits seconds, not minutes (all standard SDK variables).
PUSH_ENV = {
    **VALUES_AT_ONCE,  # pulled and pushed values are compared at once
    "OTEL_METRIC_EXPORT_INTERVAL": "1000",
    "OTEL_BLRP_SCHEDULE_DELAY": "200",
    "OTEL_BSP_SCHEDULE_DELAY": "200",
}


@dataclass(frozen=True, slots=True)
class Pushed:
    """What the receiver was sent, and what arrived at each hop."""

    events: tuple[Event, ...]
    extra: list[Event]
    statuses: list[int]
    pulled: dict[str, dict[LabelSet, float]]
    stored: dict[str, dict[LabelSet, float]]
    instance_ids: set[str]
    quiet_spans: list[Any]
    spans: list[Any]
    logs: list[Any]
    stdout: list[str]


def pulled_series(port: int, metric: str) -> dict[LabelSet, float]:
    """Return every series of ``metric`` on the receiver's ``/metrics`` by label set L."""
    return by_label_set(scrape(f"http://127.0.0.1:{port}/metrics", metric), LABELS)


def replay(port: int, events: Sequence[Event]) -> list[int]:
    """POST the events on ``CONNECTIONS`` connections, each session's events on one, in order."""
    with ThreadPoolExecutor(CONNECTIONS) as pool:
        results = pool.map(
            lambda lane: post_bodies(port, [e.encode() for e in lane]), lanes(events, CONNECTIONS)
        )
        return [status for result in results for status, _ in result]


@pytest.fixture(scope="module")
def pushed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pushed]:
    """Run VictoriaMetrics, rotel, the sink and the receiver; replay the traffic; collect."""
    receiver = require_binary("otel-panel-receiver", "pip install -e '.[test]'")
    rotel = require_rotel()
    tmp: Path = tmp_path_factory.mktemp("e2e-otlp-collector")
    events = generate_traffic(SESSIONS)
    # After the quiet period, one more session: traffic after the idle sweeps is still counted.
    extra = start_and_end(SITES[0], USERS[0], 1_618_800_000, 60, seed=7)
    with OtlpSink() as sink, victoria_metrics(tmp) as vm:
        http_port, grpc_port, port = free_port(), free_port(), free_port()
        collector = rotel_argv(
            rotel, tmp, http_port=http_port, grpc_port=grpc_port,
            metrics_url=f"{vm}/opentelemetry/v1/metrics",
            logs_url=f"{sink.url}/v1/logs", traces_url=f"{sink.url}/v1/traces",
        )  # fmt: skip
        argv = [
            receiver,
            "--http-address", f"127.0.0.1:{port}",
            "--otlp-endpoint", f"http://127.0.0.1:{http_port}",
            "--trace-idle-timeout", f"{IDLE_TIMEOUT}s",
        ]  # fmt: skip
        with (
            listening(collector, port=http_port, log=tmp / "rotel.log"),
            running(
                argv,
                ready_url=f"http://127.0.0.1:{port}/healthz",
                env=PUSH_ENV,
                log=tmp / "receiver.log",
            ),
        ):
            statuses = replay(port, events)
            quiet_since = time.monotonic()
            pulled = {
                VM_SESSIONS: pulled_series(port, PULL_SESSIONS),
                VM_DURATION: pulled_series(port, PULL_DURATION),
            }
            stored: dict[str, dict[LabelSet, float]] = {}

            def stored_equals_pulled() -> bool:
                vm_flush(vm)
                stored.update({name: vm_series(vm, name, LABELS) for name in pulled})
                return stored == pulled

            with contextlib.suppress(TimeoutError):  # the tests compare and show the difference
                wait_until(stored_equals_pulled, deadline=20, what="VictoriaMetrics == /metrics")
            instance_ids = {
                r["metric"].get("service.instance.id", "") for r in promql(vm, VM_SESSIONS)
            }
            # Idle for longer than the timeout (plus the sweep period and the span batch delay).
            time.sleep(max(0.0, quiet_since + IDLE_TIMEOUT + 2.5 - time.monotonic()))
            quiet_spans = list(sink.spans())
            statuses += [status for status, _ in post_bodies(port, [e.encode() for e in extra])]
            total = len({e.session for e in events}) + 1
            with contextlib.suppress(TimeoutError):  # the tests count what arrived
                wait_until(
                    lambda: (
                        len(list(sink.spans())) >= total
                        and len(list(sink.log_records())) >= len(events) + len(extra)
                    ),
                    deadline=10,
                    what="every span and log record at the sink",
                )
            spans, logs = list(sink.spans()), list(sink.log_records())
            stdout = (tmp / "receiver.log").read_text(errors="replace").splitlines()
        yield Pushed(
            events, extra, statuses, pulled, stored, instance_ids, quiet_spans, spans, logs, stdout
        )


def test_every_write_is_answered_201_while_pushing(pushed: Pushed) -> None:
    """Every payload is accepted with a collector attached."""
    assert Counter(pushed.statuses) == {201: len(pushed.events) + len(pushed.extra)}


@pytest.mark.parametrize("metric", [VM_SESSIONS, VM_DURATION])
def test_victoria_metrics_holds_the_receivers_totals_per_label_set(
    pushed: Pushed, metric: str
) -> None:
    """PromQL on VictoriaMetrics gives, per label set, what the receiver's /metrics gives."""
    assert pushed.pulled[metric], "the receiver exposed no series"
    diff = diff_series(pushed.stored.get(metric, {}), pushed.pulled[metric], LABELS)
    assert not diff, "VictoriaMetrics (got) != /metrics (want):\n" + "\n".join(diff)


def test_victoria_metrics_totals_equal_the_oracle(pushed: Pushed) -> None:
    """The pushed totals are the oracle's: sessions and duration seconds per label set."""
    expected = expected_counters(e.body for e in pushed.events)
    sessions = {k: float(v) for k, v in expected.sessions.items()}
    diff = diff_series(pushed.stored.get(VM_SESSIONS, {}), sessions, LABELS)
    diff += diff_series(pushed.stored.get(VM_DURATION, {}), expected.durations, LABELS)
    assert not diff, "VictoriaMetrics (got) != oracle (want):\n" + "\n".join(diff)
    assert sum(pushed.stored[VM_SESSIONS].values()) == SESSIONS
    assert len(pushed.instance_ids) == 1  # one worker: one service.instance.id, one series each


def test_one_log_record_per_accepted_payload(pushed: Pushed) -> None:
    """The sink got exactly one "Received session data" record per payload, fields intact."""
    sent = Counter((str(e.body["uuid"]), e.type, e.time) for e in (*pushed.events, *pushed.extra))
    got: Counter[tuple[str, str, int]] = Counter()
    for record in pushed.logs:
        assert record.body.string_value == "Received session data"
        assert record.severity_text == "info"
        attrs = attributes(record.attributes)
        got[(attrs["uuid"], attrs["type"], attrs["time"])] += 1
    assert got == sent


def test_stdout_has_one_line_per_payload_and_no_export_failure(pushed: Pushed) -> None:
    """With the collector up, stdout holds the start line and one line per payload, no more."""
    payload_lines = [line for line in pushed.stdout if 'msg="Received session data"' in line]
    others = [line for line in pushed.stdout if 'msg="Received session data"' not in line]
    assert len(payload_lines) == len(pushed.events) + len(pushed.extra)
    assert [line.split(" version=")[0] for line in others] == [
        'level=info msg="Starting otel-panel-receiver"'
    ]


def _sessions(events: Sequence[Event]) -> dict[int, list[Event]]:
    out: dict[int, list[Event]] = {}
    for event in events:
        out.setdefault(event.session, []).append(event)
    return out


def _expected_span(events: Sequence[Event]) -> tuple[Any, ...]:
    """Return (uuid, start ns, end ns, end reason, duration) of one session's span."""
    expected = expected_counters(e.body for e in events)
    ended = events[-1].type == "end"
    return (
        str(events[0].body["uuid"]),
        events[0].time * NS,
        events[-1].time * NS,
        "end" if ended else "idle",
        sum(expected.durations.values(), 0.0),
    )


def _span_key(span: Any) -> tuple[Any, ...]:
    attrs = attributes(span.attributes)
    session_id = attrs["session.id"]
    return (
        session_id if "-" in session_id else "",
        span.start_time_unix_nano,
        span.end_time_unix_nano,
        attrs["session.end_reason"],
        attrs["session.duration_counted"],
    )


def _check_spans(spans: Sequence[Any], sessions: Sequence[list[Event]]) -> None:
    assert {s.name for s in spans} == {"grafana.dashboard.session"}
    got = Counter(_span_key(s) for s in spans)
    want = Counter(_expected_span(evs) for evs in sessions)
    missing, unexpected = want - got, got - want
    assert not missing and not unexpected, (
        f"{sum(missing.values())} spans missing, e.g. {list(missing)[:3]}; "
        f"{sum(unexpected.values())} unexpected, e.g. {list(unexpected)[:3]}"
    )
    for span in spans:
        session_id = attributes(span.attributes)["session.id"]
        # uuid without dashes; with Post Start off, the derived key, also in session.id
        assert span.trace_id.hex() == session_id.replace("-", "")
        assert not span.parent_span_id
    assert len({s.trace_id for s in spans}) == len(spans)


def test_one_span_per_ended_session_from_first_event_to_end(pushed: Pushed) -> None:
    """Each session that sent an end has one span: first event to end, trace id = uuid hex."""
    ended = [evs for evs in _sessions(pushed.events).values() if evs[-1].type == "end"]
    assert ended and any(evs[0].body["uuid"] == "" for evs in ended)
    finished = [s for s in pushed.spans if attributes(s.attributes)["session.end_reason"] == "end"]
    _check_spans(finished, [*ended, pushed.extra])


def test_sessions_without_an_end_get_their_span_after_the_idle_timeout(pushed: Pushed) -> None:
    """Each session that never sent an end has one span, first to last event, reason idle."""
    open_ = [evs for evs in _sessions(pushed.events).values() if evs[-1].type != "end"]
    assert open_
    idle = [s for s in pushed.spans if attributes(s.attributes)["session.end_reason"] != "end"]
    _check_spans(idle, open_)


def test_ended_sessions_spans_arrive_without_further_traffic(pushed: Pushed) -> None:
    """The spans of ended sessions reach the sink within the quiet period after the replay."""
    ended = sum(1 for evs in _sessions(pushed.events).values() if evs[-1].type == "end")
    reasons = Counter(attributes(s.attributes)["session.end_reason"] for s in pushed.quiet_spans)
    assert reasons["end"] == ended


def test_idle_spans_are_written_without_further_traffic(pushed: Pushed) -> None:
    """The idle sessions' spans arrive once the timeout has passed, with no further /write."""
    open_ = [evs for evs in _sessions(pushed.events).values() if evs[-1].type != "end"]
    idle = [
        s for s in pushed.quiet_spans if attributes(s.attributes)["session.end_reason"] != "end"
    ]
    assert len(idle) == len(open_)
