"""End to end: browser metrics through the real command (two workers sharing LMDB) and Prometheus.

Many clients post batches of counter and histogram points at once, to whichever worker takes
the connection, while a real Prometheus scrapes every second. Every scrape of ``/metrics`` must
show the totals computed here from what was sent (each value compared with each bound), and
Prometheus' ``increase()`` over the run must count all of them: new series are held at 0 for
``--new-series-delay``, histograms as counters. A gauge takes the last value set and leaves
``/metrics`` once its ttl has passed, whichever worker set it.
"""

from __future__ import annotations

import json
import random
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.support.metrics import scrape
from tests.support.peers import INSTALL_PEERS
from tests.support.procs import free_port, require_binary, running
from tests.support.prometheus import JOB, prometheus

pytestmark = pytest.mark.peers

BOUNDS = (0.5, 1.0, 2.0, 4.0)
PAGES = ("home", "search", "checkout")
BUTTONS = ("buy", "share", "save", "close")
SCHEMA = {
    "metrics": {
        "clicks": {"type": "counter", "help": "Clicks.", "labels": {"button": list(BUTTONS)}},
        "load": {
            "type": "histogram",
            "help": "Load time.",
            "unit": "s",
            "buckets": list(BOUNDS),
            "labels": {"page": list(PAGES)},
        },
        "tabs": {"type": "gauge", "help": "Open tabs.", "ttl": 3, "labels": {"page": ["home"]}},
    }
}
BATCHES = 240
DELAY = 4.0


def post(port: int, points: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
    data = json.dumps({"metrics": points}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/metrics", data=data)
    with urllib.request.urlopen(request, timeout=10) as resp:
        return resp.status, json.loads(resp.read())


def traffic(seed: int) -> list[list[dict[str, Any]]]:
    rng = random.Random(seed)
    batches = []
    for _ in range(BATCHES):
        points: list[dict[str, Any]] = []
        for _ in range(rng.randint(1, 12)):
            if rng.random() < 0.5:
                points.append({"name": "clicks", "labels": {"button": rng.choice(BUTTONS)},
                               "value": rng.choice([1, 1, 2, 5])})  # fmt: skip
            else:
                value = rng.choice([*BOUNDS, round(rng.uniform(0, 6), 3)])
                points.append({"name": "load", "labels": {"page": rng.choice(PAGES)},
                               "value": value})  # fmt: skip
        batches.append(points)
    return batches


def expected(batches: list[list[dict[str, Any]]]) -> dict[tuple[str, str, str], float]:
    """Return every sample /metrics must show: (name, label, value) -> total."""
    want: Counter[tuple[str, str, str]] = Counter()
    for points in batches:
        for p in points:
            if p["name"] == "clicks":
                want["clicks_total", "button", p["labels"]["button"]] += p["value"]
                continue
            page, value = p["labels"]["page"], p["value"]
            want["load_seconds_count", "page", page] += 1
            want["load_seconds_sum", "page", page] += value
            for bound in (*BOUNDS, float("inf")):
                if value <= bound:
                    le = "+Inf" if bound == float("inf") else str(bound)
                    want["load_seconds_bucket", f"{page} le", le] += 1
    return dict(want)


def shown(port: int) -> dict[tuple[str, str, str], float]:
    got: dict[tuple[str, str, str], float] = {}
    url = f"http://127.0.0.1:{port}/metrics"
    for labels, value in scrape(url, "clicks_total"):
        got["clicks_total", "button", labels["button"]] = value
    for name in ("load_seconds_count", "load_seconds_sum", "load_seconds_bucket"):
        for labels, value in scrape(url, name):
            if name == "load_seconds_bucket":
                got[name, f"{labels['page']} le", labels["le"]] = value
            else:
                got[name, "page", labels["page"]] = value
    return got


def test_two_workers_and_prometheus_count_every_browser_point(tmp_path: Path) -> None:
    batches = traffic(17)
    want = expected(batches)
    receiver = require_binary("otel-panel-receiver", "pip install -e '.[test]'")
    binary = require_binary("prometheus", INSTALL_PEERS)
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(SCHEMA))
    port = free_port()
    argv = [receiver, "--http-address", f"127.0.0.1:{port}", "--workers", "2",
            "--data-dir", str(tmp_path / "data"), "--new-series-delay", f"{DELAY}s",
            "--browser-metrics-schema", str(schema)]  # fmt: skip
    with (
        running(argv, ready_url=f"http://127.0.0.1:{port}/healthz", log=tmp_path / "log"),
        prometheus(binary, tmp_path, f"127.0.0.1:{port}", interval=1) as prom,
    ):
        prom.wait_for_scrape(after=0, deadline=40)
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda points: post(port, points), batches))
        assert {status for status, _ in answers} == {202}
        assert sum(doc["accepted"] for _, doc in answers) == sum(map(len, batches))
        # The gauge, set by one worker then another (the last value wins).
        for tabs in (3, 1, 4):
            post(port, [{"name": "tabs", "labels": {"page": "home"}, "value": tabs}])
        for _ in range(4):
            assert [v for _, v in scrape(f"http://127.0.0.1:{port}/metrics", "tabs")] == [4.0]
        time.sleep(DELAY + 1.5)  # every series is out of its delay
        for _ in range(4):  # whichever worker answers
            got = shown(port)
            assert got.keys() == want.keys()
            for key, value in want.items():
                assert got[key] == pytest.approx(value), key
        last = prom.wait_for_scrape(after=time.time(), deadline=30)
        for button in BUTTONS:
            counted = prom.value(
                f"sum(increase(clicks_total{{job='{JOB}',button='{button}'}}[1h]))", last
            )
            assert counted == pytest.approx(want["clicks_total", "button", button], rel=0.005)
        for page in PAGES:
            for le in (*map(str, BOUNDS), "+Inf"):
                query = f"sum(increase(load_seconds_bucket{{page='{page}',le='{le}'}}[1h]))"
                counted = prom.value(query, last)
                sent = want["load_seconds_bucket", f"{page} le", le]
                assert counted == pytest.approx(sent, rel=0.005), (page, le)
        # Every series began at 0 in Prometheus: nothing was lost to a first sample.
        for metric in ("clicks_total", "load_seconds_count"):
            for values in prom.samples(metric, last):
                assert values[0] == 0, (metric, values[:3])
        # The gauge's ttl (3 s) has passed with nothing set since: gone from every worker's
        # answer, and Prometheus stored its last value while it lasted.
        assert scrape(f"http://127.0.0.1:{port}/metrics", "tabs") == []
        assert scrape(f"http://127.0.0.1:{port}/metrics", "tabs") == []
        assert prom.value(f"max_over_time(tabs{{job='{JOB}'}}[1h])", last) == 4.0
