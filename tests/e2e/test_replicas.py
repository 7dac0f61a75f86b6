"""End to end: two replicas share one real Redis, as ``docs/deployment.md`` promises them.

"Every replica reads and writes session state in Redis ... A load balancer can send each request
anywhere. Each replica serves its own counters: scrape every replica and sum." Two CLI processes
(``--workers 1 --session-store redis://...``) on two ports share one ``redis-server``; generated
traffic (``tests/support/traffic.py``) comes from 16 connections at once, and every session's
consecutive events go to alternate replicas, in order. Per label set, the sum of both ``/metrics``
must equal what one in-process app shows for the same bodies, and the independent oracle.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from pathlib import Path

import pytest

from tests.support.lanes import replay_lanes
from tests.support.metrics import (
    DURATION_TOTAL,
    SESSIONS_TOTAL,
    VALUES_AT_ONCE,
    add_totals,
    diff_totals,
    scrape_totals,
    single_process_totals,
)
from tests.support.oracle import LABELS, expected_counters
from tests.support.peers import redis_server
from tests.support.procs import free_ports, require_binary, running
from tests.support.traffic import generate_traffic, lanes

pytestmark = [pytest.mark.peers, pytest.mark.slow]

SESSIONS = 500
CONNECTIONS = 16


def test_two_replicas_sharing_redis_sum_to_the_single_process_totals(tmp_path: Path) -> None:
    """A session whose events alternate between replicas is counted once, with its duration."""
    receiver = require_binary("otel-panel-receiver", "pip install -e '.[test]'")
    events = generate_traffic(SESSIONS)
    ports = free_ports(2)
    requests = [
        [(ports[(e.session + e.seq) % 2], e.encode()) for e in lane]
        for lane in lanes(events, CONNECTIONS)
    ]
    with redis_server(tmp_path) as redis, contextlib.ExitStack() as replicas:
        for n, port in enumerate(ports):
            argv = [receiver, "--workers", "1", "--session-store", redis.url,
                    "--http-address", f"127.0.0.1:{port}", "--disable-session-log"]  # fmt: skip
            url = f"http://127.0.0.1:{port}/healthz"
            log = tmp_path / f"replica-{n}.log"
            replicas.enter_context(running(argv, ready_url=url, env=VALUES_AT_ONCE, log=log))
        results = replay_lanes(requests)
        # One worker each: /metrics is the process's own reader, current at once.
        parts = [scrape_totals(port, LABELS) for port in ports]
    assert Counter(s for r in results for s in r.statuses) == {201: len(events)}
    assert all(part[SESSIONS_TOTAL] for part in parts), "a replica counted no session"
    summed = add_totals(*parts)
    single = single_process_totals((e.encode() for e in events), LABELS)
    diff = diff_totals(summed, single, LABELS)
    assert not diff, "sum of the replicas (got) != one process (want):\n" + "\n".join(diff)
    expected = expected_counters(e.body for e in events)
    oracle = {
        SESSIONS_TOTAL: {k: float(v) for k, v in expected.sessions.items()},
        DURATION_TOTAL: expected.durations,
    }
    diff = diff_totals(summed, oracle, LABELS)
    assert not diff, "sum of the replicas (got) != oracle (want):\n" + "\n".join(diff)
    assert sum(summed[SESSIONS_TOTAL].values()) == SESSIONS
