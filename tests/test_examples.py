"""Every example runs: the receiver mounted in another WSGI app, with its own or the host's OTel."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import falcon.testing
import pytest

from examples import embed, own_providers
from otel_panel_receiver import ReceiverApp
from otel_panel_receiver.testing import sample_payload


@pytest.fixture
def embedded() -> Iterator[Callable[[], falcon.testing.TestClient]]:
    """Return a maker of clients of ``examples.embed``; each receiver is closed after the test."""
    receivers: list[ReceiverApp] = []

    def make() -> falcon.testing.TestClient:
        mount = embed.build()
        assert isinstance(mount.inner, ReceiverApp)
        receivers.append(mount.inner)
        return falcon.testing.TestClient(mount)

    yield make
    for receiver in receivers:
        receiver.close()


def test_embedded_receiver_counts_under_the_mount_point_and_host_routes_still_work(
    embedded: Callable[[], falcon.testing.TestClient],
) -> None:
    client = embedded()
    assert client.simulate_get("/").text == "the host application\n"
    r = client.simulate_post("/analytics/write", body=sample_payload("v2-start.json"))
    assert r.status_code == 201
    metrics = client.simulate_get("/analytics/metrics").text
    assert "grafana_analytics_sessions_total{" in metrics
    assert client.simulate_post("/write", body=sample_payload("v2-start.json")).status_code == 404


def test_two_embedded_receivers_keep_separate_state(
    embedded: Callable[[], falcon.testing.TestClient],
) -> None:
    a, b = embedded(), embedded()
    a.simulate_post("/analytics/write", body=sample_payload("v2-start.json"))
    assert "sessions_total{" in a.simulate_get("/analytics/metrics").text
    assert "sessions_total{" not in b.simulate_get("/analytics/metrics").text


def test_the_host_serves_its_own_and_the_receivers_metrics_without_user_labels() -> None:
    mount, receiver, provider = own_providers.build()
    try:
        client = falcon.testing.TestClient(mount)
        assert client.simulate_get("/").status_code == 200
        r = client.simulate_post("/analytics/write", body=sample_payload("v2-start.json"))
        assert r.status_code == 201
        metrics = client.simulate_get("/metrics").text
        assert "host_requests_total 1.0" in metrics
        assert "grafana_analytics_sessions_total{" in metrics
        assert "user_login" not in metrics and "user_name" not in metrics
        receiver.close()  # leaves the host's provider alone
        client.simulate_get("/")
        assert "host_requests_total 2.0" in client.simulate_get("/metrics").text
    finally:
        receiver.close()
        provider.shutdown()
