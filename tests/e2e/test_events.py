"""End to end: the event API served by the real command (granian, two workers sharing LMDB).

Batches posted and sent in ``?q=`` by several clients at once reach whichever worker accepts
the connection; every scrape must count each event once, and each must be one log line.
"""

from __future__ import annotations

import json
import random
import urllib.parse
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.support.metrics import scrape
from tests.support.procs import free_port, require_binary, running

pytestmark = pytest.mark.peers

NAMES = ("opened", "export_clicked", "filter_changed", "shared")
BATCHES = 120


def send(port: int, doc: dict[str, Any], *, get: bool) -> tuple[int, dict[str, Any]]:
    base = f"http://127.0.0.1:{port}/v1/events"
    data = json.dumps(doc).encode()
    if get:
        request = urllib.request.Request(f"{base}?q={urllib.parse.quote(data)}")
    else:
        request = urllib.request.Request(base, data=data, method="POST")
    with urllib.request.urlopen(request, timeout=10) as resp:
        return resp.status, json.loads(resp.read())


def test_two_workers_count_every_event_once_and_log_each(tmp_path: Path) -> None:
    rng = random.Random(7)
    batches: list[dict[str, Any]] = [
        {
            "sessionId": f"s-{n}",
            "userId": str(n % 9),
            "events": [
                {"name": rng.choice(NAMES), "props": {"n": n, "page": "/d/abc"}}
                for _ in range(rng.randint(1, 8))
            ],
        }
        for n in range(BATCHES)
    ]
    sent = Counter(e["name"] for b in batches for e in b["events"])
    binary = require_binary("otel-panel-receiver", "pip install -e '.[test]'")
    port = free_port()
    log = tmp_path / "log"
    argv = [binary, "--http-address", f"127.0.0.1:{port}", "--workers", "2",
            "--data-dir", str(tmp_path / "data"), "--new-series-delay", "0"]  # fmt: skip
    with running(argv, ready_url=f"http://127.0.0.1:{port}/healthz", log=log):
        with ThreadPoolExecutor(8) as pool:
            sends = (lambda i: send(port, batches[i], get=i % 3 == 0), range(BATCHES))
            answers = list(pool.map(*sends))
        assert {status for status, _ in answers} == {202}
        assert sum(doc["accepted"] for _, doc in answers) == sum(sent.values())
        for _ in range(5):  # whichever worker answers the scrape
            samples = scrape(f"http://127.0.0.1:{port}/metrics", "grafana_analytics_events_total")
            assert {labels["event"]: value for labels, value in samples} == dict(sent)
    lines = [line for line in log.read_text().splitlines() if 'msg="Received event"' in line]
    assert Counter(line.split("event=")[1].split()[0] for line in lines) == sent
