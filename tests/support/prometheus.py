"""A real Prometheus for the end-to-end tests: run one that scrapes a target, and query it."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.procs import free_port, running, wait_until

#: The scrape job of the receiver.
JOB = "panel_receiver"


class Prometheus:
    """A running Prometheus and the few API calls the tests need."""

    def __init__(self, base: str) -> None:
        self.base = base

    def get(self, path: str, **params: str) -> Any:
        url = f"{self.base}{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as resp:
            doc = json.load(resp)
        assert doc["status"] == "success", doc
        return doc["data"]

    def last_scrape(self) -> float:
        """Return the time of the latest stored scrape of the receiver (0 before any)."""
        rows = self.get("/api/v1/query", query=f'timestamp(up{{job="{JOB}"}})')["result"]
        return float(rows[0]["value"][1]) if rows else 0.0

    def wait_for_scrape(self, after: float, deadline: float) -> float:
        """Wait for a stored scrape that began after ``after``; return its time."""
        wait_until(lambda: self.last_scrape() > after + 0.01, deadline=deadline,
                   interval=0.1, what=f"a scrape of the receiver after {after}")  # fmt: skip
        return self.last_scrape()

    def samples(self, metric: str, at: float) -> list[list[float]]:
        """Return every series' raw sample values of the last hour before ``at``."""
        data = self.get("/api/v1/query", query=f'{metric}{{job="{JOB}"}}[1h]', time=str(at))
        return [[float(v) for _, v in row["values"]] for row in data["result"]]

    def value(self, expr: str, at: float) -> float:
        """Return the single value of an instant query at ``at``."""
        [row] = self.get("/api/v1/query", query=expr, time=str(at))["result"]
        return float(row["value"][1])


def _config(path: Path, target: str, interval: int) -> Path:
    path.write_text(
        "global:\n"
        f"  scrape_interval: {interval}s\n"
        f"  scrape_timeout: {min(interval, 10)}s\n"
        "scrape_configs:\n"
        f"  - job_name: {JOB}\n"
        "    static_configs:\n"
        f"      - targets: ['{target}']\n"
    )
    return path


@contextmanager
def prometheus(
    binary: str, tmp: Path, target: str, *, interval: int, flags: Sequence[str] = ()
) -> Iterator[Prometheus]:
    """Run a Prometheus that scrapes ``target`` every ``interval`` seconds, for the block."""
    port = free_port()
    argv = [
        binary,
        f"--config.file={_config(tmp / 'prometheus.yml', target, interval)}",
        f"--storage.tsdb.path={tmp / 'prometheus-data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        *flags,
    ]
    url = f"http://127.0.0.1:{port}"
    with running(argv, ready_url=f"{url}/-/ready", log=tmp / "prometheus.log"):
        yield Prometheus(url)
