"""A Django site with request analytics: one module, configured in code.

``DjangoUsageMiddleware`` in ``MIDDLEWARE`` records each request's route (Django's
``resolver_match.route``, never the raw path), browser, operating system, device, kind of
client, referrer and daily unique visitors; its options come from the ``OTEL_PANEL_USAGE``
setting. OpenTelemetry's WSGI middleware around the application records the request durations
and counts of the HTTP semantic conventions. The site owns its MeterProvider and serves
``/metrics`` from it.

Run it: ``gunicorn -b 127.0.0.1:8000 examples.django_app:application``
(with ``pip install '.[web]' django``).
"""

from __future__ import annotations

from typing import Any

import django
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.urls import path
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

REGISTRY = CollectorRegistry(auto_describe=True)
METER_PROVIDER = MeterProvider(
    metric_readers=[
        PrometheusMetricReader(
            disable_target_info=True, scope_info_enabled=False, registry=REGISTRY
        )
    ]
)


def home(request: HttpRequest) -> HttpResponse:
    """The site's front page."""
    return HttpResponse("home\n")


def report(request: HttpRequest, report_id: int) -> HttpResponse:
    """One report."""
    return HttpResponse(f"report {report_id}\n")


def metrics(request: HttpRequest) -> HttpResponse:
    """Everything the site's MeterProvider recorded, as the scraper's Accept asks."""
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return HttpResponse(encoder(REGISTRY), content_type=content_type)


urlpatterns = [
    path("", home),
    path("reports/<int:report_id>", report),
    path("metrics", metrics),
]

settings.configure(
    DEBUG=False,
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    SECRET_KEY="example-only",  # noqa: S106 - an example site with no sessions
    MIDDLEWARE=["otel_panel_receiver.middleware.DjangoUsageMiddleware"],
    OTEL_PANEL_USAGE={"meter_provider": METER_PROVIDER, "referrers": ("github.com",)},
)
django.setup()

from django.core.wsgi import get_wsgi_application  # noqa: E402 - after settings

application: Any = OpenTelemetryMiddleware(get_wsgi_application(), meter_provider=METER_PROVIDER)
