"""A Flask application with request analytics, served beside its own Prometheus endpoint.

``UsageMiddleware`` wraps the Flask app: OpenTelemetry's WSGI instrumentation records request
durations and counts by the HTTP semantic conventions, and the middleware adds routes (Flask's
rule, never the raw path), browsers, operating systems, devices, kinds of client, referrers and
daily unique visitors, each on a counter of its own. The app owns its MeterProvider and serves
``/metrics`` from it.

Run it: ``gunicorn -b 127.0.0.1:8000 examples.flask_app:app`` (with ``pip install '.[web]' flask``).
"""

from __future__ import annotations

from flask import Flask, Response, request
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from otel_panel_receiver.middleware import UsageMiddleware, flask_routes


def build(*, trusted_proxies: str = "") -> tuple[Flask, MeterProvider]:
    """Return the Flask app, its WSGI callable wrapped, and its MeterProvider."""
    registry = CollectorRegistry(auto_describe=True)
    reader = PrometheusMetricReader(
        disable_target_info=True, scope_info_enabled=False, registry=registry
    )
    provider = MeterProvider(metric_readers=[reader])
    flask = Flask(__name__)

    @flask.get("/")
    def home() -> str:
        return "home\n"

    @flask.get("/reports/<int:report_id>")
    def report(report_id: int) -> str:
        return f"report {report_id}\n"

    @flask.post("/reports")
    def new_report() -> tuple[str, int]:
        return "created\n", 201

    @flask.get("/metrics")
    def metrics() -> Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return Response(encoder(registry), content_type=content_type)

    flask_routes(flask)  # the rule of each request, never its raw path
    flask.wsgi_app = UsageMiddleware(  # type: ignore[method-assign]
        flask.wsgi_app,
        provider,
        referrers=("github.com", "grafana.com"),
        trusted_proxies=trusted_proxies,
    )
    return flask, provider


app, meter_provider = build()
