"""The test helpers themselves: waiting leaks no socket, the oracle is right and independent.

The generated traffic is checked too: it holds every case the end-to-end tests need.
"""

from __future__ import annotations

import gc
import itertools
import json
import subprocess
import sys
import threading
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, ClassVar

import pytest

from otel_panel_receiver.testing import sample_payload
from tests.support.oracle import Expected, expected_counters, label_set
from tests.support.procs import REPO, wait_http
from tests.support.traffic import Event, generate_traffic


class _Starting(BaseHTTPRequestHandler):
    """Answer 503 to the first two requests, as a starting Prometheus does, then 200."""

    answers: ClassVar[list[int]] = []

    def do_GET(self) -> None:
        status = self.answers.pop(0) if self.answers else 200
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def starting_server() -> Iterator[str]:
    """Serve ``_Starting`` on a free loopback port for the test; yield its URL."""
    _Starting.answers = [503, 503]
    server = HTTPServer(("127.0.0.1", 0), _Starting)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/-/ready"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_wait_http_closes_the_sockets_of_the_answers_it_refuses(starting_server: str) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        wait_http(starting_server, deadline=10)
        gc.collect()  # an HTTPError left open warns when it is collected
    assert _Starting.answers == [], "the server did not answer 503 twice first"
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert leaks == []


def test_wait_http_names_the_url_and_the_last_error_at_the_deadline(starting_server: str) -> None:
    _Starting.answers = [503] * 1000
    with pytest.raises(TimeoutError, match=r"/-/ready did not answer within 0\.3 s .*503"):
        wait_http(starting_server, deadline=0.3)
    gc.collect()  # a refused answer left open would warn here, an error under filterwarnings


def test_the_oracle_imports_only_the_standard_library() -> None:
    # A fresh interpreter: in this one, other tests have imported the package long ago.
    probe = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "import tests.support.oracle\n"
        "new = {name.split('.')[0] for name in set(sys.modules) - before}\n"
        "print(sorted(new - set(sys.stdlib_module_names) - {'tests'}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]", done.stdout


# --------------------------------------------------------------------------------------------
# The oracle, against upstream's worked examples; the traffic, against what the e2e tests need
# --------------------------------------------------------------------------------------------

#: Sessions of the traffic checked here: as many as tests/e2e/test_prometheus.py replays.
SESSIONS = 400
T0 = 1_618_803_734


def _bodies(events: str, interval: float = 60) -> list[dict[str, Any]]:
    """Return minimal bodies of one session from ``"start@0 heartbeat@60 end@185"``."""
    out = []
    for item in events.split():
        kind, _, offset = item.partition("@")
        out.append(
            {
                "uuid": "3f0c6a9e-2b7d-4c1e-9a51-7d2e4b8f6c10",
                "type": kind,
                "options": {"heartbeatInterval": interval},
                "time": T0 + int(offset),
            }
        )
    return out


@pytest.mark.parametrize(
    ("events", "interval", "timeout", "duration"),
    [
        ("start@0 heartbeat@60 end@185", 60, 0, 135),
        ("heartbeat@0 heartbeat@60 heartbeat@400", 60, 0, 135),
        ("start@0 end@7200", 60, 0, 7200),
        ("heartbeat@1 heartbeat@0 heartbeat@7200", 3600, 0, 4501),
        ("start@0 end@100", 60, 30, 30),
        ("start@0 heartbeat@60 heartbeat@400", 60, 30, 60),
        ("end@0", 60, 0, 0),
        ("start@0 start@500 end@100", 60, 0, 100),
        ("start@0 heartbeat@7 heartbeat@22 end@25", 7.5, 0, 7 + 9.375 + 3),
    ],
)
def test_oracle_reproduces_upstreams_worked_examples(
    events: str, interval: float, timeout: float, duration: float
) -> None:
    """The oracle gives the durations of docs/protocol.md, "The upstream duration rule".

    And 1.25 x a decimal interval as the cap.
    """
    expected = expected_counters(_bodies(events, interval), timeout=timeout)
    assert list(expected.sessions.values()) == [1]
    assert list(expected.durations.values()) == [duration]


def test_oracle_gives_a_start_only_session_no_duration_series() -> None:
    """A session with only a start counts 1 and has no duration series ("Its metrics")."""
    expected = expected_counters(_bodies("start@0"))
    assert list(expected.sessions.values()) == [1]
    assert expected.durations == {}


@pytest.mark.parametrize("style", ["nested", "flattened"])
def test_oracle_labels_the_sample_session_with_label_set_l_and_no_trailing_colon(
    style: str,
) -> None:
    """The sample start/heartbeat/end give 135 s under L, host without a trailing colon."""
    names = ["v2-start", "v2-heartbeat", "v2-end"]
    if style == "flattened":
        names[:2] = ["v2-start-flattened", "v2-heartbeat-flattened"]
    expected = expected_counters(json.loads(sample_payload(f"{name}.json")) for name in names)
    labels = (
        "grafana.example.com", "production", "Service Overview", "ZQZXRMXMk", "browser", "dark",
        "browser", "en-US", "editor", "jdoe", "Jane Doe",
    )  # fmt: skip
    assert expected == Expected({labels: 1}, {labels: 135.0})


def _skipped_heartbeat(events: Sequence[Event]) -> bool:
    """Return whether two heartbeats of a session are more than 1.25 intervals apart."""
    body = events[0].body
    interval = (
        body["options.heartbeatInterval"]
        if events[0].flattened
        else body["options"]["heartbeatInterval"]
    )
    beats = [e.time for e in events if e.type == "heartbeat"]
    return any(b - a > 1.25 * interval for a, b in itertools.pairwise(beats))


def test_traffic_is_deterministic_and_covers_every_case() -> None:
    """The same seed gives the same bytes, and the traffic holds every case the e2e test needs."""
    events = generate_traffic(SESSIONS)
    assert [e.encode() for e in events] == [e.encode() for e in generate_traffic(SESSIONS)]
    assert [e.encode() for e in events] != [e.encode() for e in generate_traffic(SESSIONS, seed=1)]
    per_session: dict[int, list[Event]] = {}
    for event in events:
        per_session.setdefault(event.session, []).append(event)
    assert len(per_session) == SESSIONS
    assert all(  # each session's events in time order, labels stable
        [e.time for e in evs] == sorted(e.time for e in evs)
        and len({label_set(e.body) for e in evs}) == 1
        for evs in per_session.values()
    )
    kinds = Counter(tuple(e.type for e in evs[:1] + evs[-1:]) for evs in per_session.values())
    assert kinds[("start", "end")] and kinds[("start", "start")] and kinds[("end", "end")]
    assert kinds[("heartbeat", "end")] and kinds[("heartbeat", "heartbeat")]
    assert any(e.flattened for e in events) and any(e.body["uuid"] == "" for e in events)
    assert any(_skipped_heartbeat(evs) for evs in per_session.values())
    assert max(len(e.encode()) for e in events) < 65_536  # the browser's keepalive limit
    expected = expected_counters(e.body for e in events)
    hosts = {labels[0] for labels in expected.sessions}
    assert {"grafana.example.com", "grafana.example.com:3000"} <= hosts
    assert set(expected.durations) < set(expected.sessions)  # some label sets are start-only
    assert 0.0 in expected.durations.values()  # some have only zero-length sessions
    assert any(v % 1 for v in expected.durations.values())  # 1.25 x 7.5 caps some gaps
