"""Reading the receiver's counters back, from ``/metrics`` or VictoriaMetrics, and comparing them.

Series are keyed by their label set (the values of the label names given, an absent label read
as ``""``), so that two sources can be compared per label set with ``==``.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence

from tests.support.peers import promql

__all__ = [
    "DURATION_TOTAL",
    "SESSIONS_TOTAL",
    "VALUES_AT_ONCE",
    "Totals",
    "add_totals",
    "by_label_set",
    "diff_series",
    "diff_totals",
    "scrape",
    "scrape_totals",
    "single_process_totals",
    "totals_of",
    "vm_series",
    "wait_stable_totals",
]

#: The two counters of the receiver, as ``/metrics`` names them.
SESSIONS_TOTAL = "grafana_analytics_sessions_total"
DURATION_TOTAL = "grafana_analytics_sessions_duration_seconds_total"
#: Per metric, per label set (the values of the names given): the value.
Totals = dict[str, dict[tuple[str, ...], float]]
#: The environment of a receiver whose values a test reads right after sending (``/metrics`` or
#: OTLP): a new series shows its value at once, not 0 for ``--new-series-delay``
#: (tests/e2e/test_increase.py is about that delay).
VALUES_AT_ONCE = {"NEW_SERIES_DELAY": "0"}


def scrape(url: str, metric: str) -> list[tuple[dict[str, str], float]]:
    """Return the samples named ``metric`` of a Prometheus text exposition at ``url``."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == metric
    ]


def by_label_set(
    samples: Iterable[tuple[Mapping[str, str], float]],
    names: Sequence[str],
    *,
    ignore: Callable[[str], bool] = lambda name: False,
) -> dict[tuple[str, ...], float]:
    """Key samples by the values of ``names`` (an absent label reads ``""``).

    Every other label must be ``ignore``-d (target or resource labels); two samples with one
    key are an error.
    """
    out: dict[tuple[str, ...], float] = {}
    for labels, value in samples:
        extra = {k for k in labels if k not in names and not ignore(k)}
        assert not extra, f"unexpected labels {extra} in {dict(labels)}"
        key = tuple(labels.get(name, "") for name in names)
        assert key not in out, f"two series for one label set: {dict(labels)}"
        out[key] = value
    return out


def vm_series(base: str, metric: str, names: Sequence[str]) -> dict[tuple[str, ...], float]:
    """Return the latest value of every series of ``metric`` in VictoriaMetrics, keyed by ``names``.

    Labels from OTLP resource attributes (``service.name``...) keep their dots and are ignored.
    """
    rows = [(r["metric"], float(r["value"][1])) for r in promql(base, metric)]
    return by_label_set(rows, names, ignore=lambda name: name == "__name__" or "." in name)


def diff_series(
    got: Mapping[tuple[str, ...], float],
    want: Mapping[tuple[str, ...], float],
    names: Sequence[str],
    *,
    limit: int = 12,
) -> list[str]:
    """Return one readable line per label set whose value differs (at most ``limit``)."""
    lines = [
        f"{dict(zip(names, key, strict=True))}: got {got.get(key)}, want {want.get(key)}"
        for key in sorted(set(got) | set(want))
        if got.get(key) != want.get(key)
    ]
    return lines[:limit] + ([f"... and {len(lines) - limit} more"] if len(lines) > limit else [])


def totals_of(text: str, names: Sequence[str]) -> Totals:
    """Return both counters of a Prometheus text exposition, by label set (``by_label_set``)."""
    from prometheus_client.parser import text_string_to_metric_families

    rows: dict[str, list[tuple[dict[str, str], float]]] = {SESSIONS_TOTAL: [], DURATION_TOTAL: []}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in rows:
                rows[sample.name].append((sample.labels, sample.value))
    return {metric: by_label_set(samples, names) for metric, samples in rows.items()}


def scrape_totals(port: int, names: Sequence[str]) -> Totals:
    """Return both counters of one ``/metrics`` answer on 127.0.0.1:``port``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        return totals_of(resp.read().decode(), names)


def add_totals(*parts: Totals) -> Totals:
    """Return the sum of several processes' totals, per metric and label set."""
    out: Totals = {SESSIONS_TOTAL: {}, DURATION_TOTAL: {}}
    for part in parts:
        for metric, series in part.items():
            for key, value in series.items():
                out[metric][key] = out[metric].get(key, 0.0) + value
    return out


def wait_stable_totals(
    port: int, names: Sequence[str], *, quiet: float, deadline: float = 20.0
) -> Totals:
    """Return ``/metrics``' totals once they stayed the same for ``quiet`` seconds.

    Give ``quiet`` longer than the workers' export interval: then no delta is still on its way.
    """
    end = time.monotonic() + deadline
    last, since = scrape_totals(port, names), time.monotonic()
    while time.monotonic() - since < quiet:
        if time.monotonic() > end:
            raise TimeoutError(f"/metrics on port {port} still changed after {deadline} s")
        time.sleep(0.1)
        now = scrape_totals(port, names)
        if now != last:
            last, since = now, time.monotonic()
    return last


def single_process_totals(bodies: Iterable[bytes], names: Sequence[str]) -> Totals:
    """Return the totals one in-process app (memory store, Prometheus reader) shows for ``bodies``.

    The reference for the multi-process layouts: the same bodies in the same per-session order
    through ``create_app`` and ``falcon.testing``, then its own ``/metrics``.
    """
    from falcon.testing import TestClient

    from otel_panel_receiver import Settings, create_app

    app = create_app(Settings(disable_session_log=True, new_series_delay=0))
    try:
        client = TestClient(app)
        for body in bodies:
            status = client.simulate_post("/write", body=body).status_code
            assert status == 201, f"the in-process app answered {status}"
        text = client.simulate_get("/metrics").text
    finally:
        app.close()
    return totals_of(text, names)


def diff_totals(got: Totals, want: Totals, names: Sequence[str]) -> list[str]:
    """Return one readable line per metric and label set whose value differs."""
    return [
        f"{metric} {line}"
        for metric in (SESSIONS_TOTAL, DURATION_TOTAL)
        for line in diff_series(got.get(metric, {}), want.get(metric, {}), names)
    ]
