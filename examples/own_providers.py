"""Record into the host application's own OpenTelemetry providers, keeping the privacy View.

A host application that already has a MeterProvider (its readers, exporters and resource)
hands it to the receiver instead of letting the receiver build its own. The receiver's Views
(``session_views``) go on that provider: they keep the label set, drop the user labels when
asked (``users=False``), and bound the label sets per metric. The host serves every metric, its
own and the receiver's, on its one Prometheus endpoint; the receiver is mounted under
``/analytics`` (the panel's Endpoint is then ``/analytics/write``). The receiver's
``close()`` leaves the provider alone: it belongs to the host, which shuts it down.

Run it: ``gunicorn -b 127.0.0.1:8000 examples.own_providers:app``
"""

from __future__ import annotations

from typing import Any

import falcon
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import Counter
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from examples.embed import Mount
from otel_panel_receiver import ReceiverApp, Settings, Telemetry, create_app, session_views

#: The receiver's settings: user labels off, so no login or name reaches any metric.
SETTINGS = Settings(disable_user_metrics=True, disable_session_log=True)


class Metrics:
    """The host's ``/metrics``: everything its MeterProvider records, the receiver's included."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Encode the registry as the scraper's Accept asks."""
        encoder, resp.content_type = choose_encoder(req.get_header("Accept") or "")
        resp.data = encoder(self._registry)


class Home:
    """The host application's own page, counted in the host's own metric."""

    def __init__(self, requests: Counter) -> None:
        self._requests = requests

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Answer with a greeting."""
        self._requests.add(1)
        resp.content_type = falcon.MEDIA_TEXT
        resp.text = "the host application\n"


def build() -> tuple[Mount, ReceiverApp, MeterProvider]:
    """Return the host app, the receiver mounted in it, and the host's MeterProvider."""
    registry = CollectorRegistry(auto_describe=True)
    reader = PrometheusMetricReader(
        disable_target_info=True, scope_info_enabled=False, registry=registry
    )
    provider = MeterProvider(
        metric_readers=[reader], views=session_views(users=not SETTINGS.disable_user_metrics)
    )
    # No registry in the receiver's Telemetry: the host serves /metrics itself.
    receiver = create_app(SETTINGS, telemetry=Telemetry(meter_provider=provider))
    host: falcon.App[Any, Any] = falcon.App()
    host.add_route("/", Home(provider.get_meter("host-app").create_counter("host_requests")))
    host.add_route("/metrics", Metrics(registry))
    return Mount(host, "/analytics", receiver), receiver, provider


app, receiver, meter_provider = build()
