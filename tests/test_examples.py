"""Every example runs: the embedding example mounts the receiver inside another WSGI app."""

from __future__ import annotations

import falcon.testing

from examples.embed import build
from tests.peers import payload


def test_embedded_receiver_counts_under_the_mount_point_and_host_routes_still_work() -> None:
    client = falcon.testing.TestClient(build())  # type: ignore[arg-type]
    assert client.simulate_get("/").text == "the host application\n"
    r = client.simulate_post("/analytics/write", body=payload("v2-start.json"))
    assert r.status_code == 201
    metrics = client.simulate_get("/analytics/metrics").text
    assert "grafana_analytics_sessions_total{" in metrics
    assert client.simulate_post("/write", body=payload("v2-start.json")).status_code == 404


def test_two_embedded_receivers_keep_separate_state() -> None:
    a, b = (falcon.testing.TestClient(build()) for _ in range(2))  # type: ignore[arg-type]
    a.simulate_post("/analytics/write", body=payload("v2-start.json"))
    assert "sessions_total{" in a.simulate_get("/analytics/metrics").text
    assert "sessions_total{" not in b.simulate_get("/analytics/metrics").text
