"""End to end: ``create_app()`` embedded in a host application, configured the OTel way.

The embedding example (``examples/embed.py``) runs under real gunicorn with only the standard
OpenTelemetry variables set: an OTLP endpoint, ``OTEL_SERVICE_NAME`` and
``OTEL_RESOURCE_ATTRIBUTES``. It pushes to a real collector (**rotel**), which forwards
everything to :class:`~tests.support.otlp_sink.OtlpSink`, a protocol-faithful OTLP/HTTP
receiver standing in for the backends (Loki, Tempo, Mimir cannot be installed here). The test
checks what arrives there: the user's resource attributes over the receiver's own, the session's
span, and its counter series, held at 0 (the receiver's ``--new-series-delay``, 90 s by default,
is longer than the test) with the series' own start time.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from otel_panel_receiver.testing import sample_payload
from tests.support.lanes import post_bodies
from tests.support.otlp_sink import OtlpSink
from tests.support.peers import require_rotel, rotel_argv
from tests.support.procs import REPO, free_port, listening, require_binary, running, wait_until

pytestmark = pytest.mark.peers

RESOURCE = "service.instance.id=pod-abc,service.version=9.9.9,deployment.environment.name=prod"
UUID_HEX = "3f0c6a9e2b7d4c1e9a517d2e4b8f6c10"


def test_an_embedded_app_pushes_with_the_users_service_name_and_resource_attributes(
    tmp_path: Path,
) -> None:
    gunicorn = require_binary("gunicorn", "pip install -e '.[test]'")
    rotel = require_rotel()
    with OtlpSink() as sink:
        http_port, grpc_port, port = free_port(), free_port(), free_port()
        collector = rotel_argv(
            rotel, tmp_path, http_port=http_port, grpc_port=grpc_port,
            metrics_url=f"{sink.url}/v1/metrics", logs_url=f"{sink.url}/v1/logs",
            traces_url=f"{sink.url}/v1/traces",
        )  # fmt: skip
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{http_port}",
            "OTEL_SERVICE_NAME": "grafana-usage",
            "OTEL_RESOURCE_ATTRIBUTES": RESOURCE,
            "OTEL_METRIC_EXPORT_INTERVAL": "500",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
        }
        argv = [gunicorn, "-b", f"127.0.0.1:{port}", "--chdir", str(REPO), "examples.embed:app"]
        with (
            listening(collector, port=http_port, log=tmp_path / "rotel.log"),
            running(
                argv, ready_url=f"http://127.0.0.1:{port}/", env=env, log=tmp_path / "host.log"
            ),
        ):
            bodies = [
                sample_payload(n) for n in ("v2-start.json", "v2-heartbeat.json", "v2-end.json")
            ]
            answers = post_bodies(port, bodies, path="/analytics/write")
            assert [status for status, _ in answers] == [201, 201, 201]
            wait_until(
                lambda: (
                    bool(list(sink.spans())) and "grafana_analytics_sessions" in sink.latest_sums()
                ),
                deadline=20,
                what="the session's span and counters at the backend",
            )
        resources = sink.resources()
        assert resources, "no metrics reached the collector's backend"
        for resource in resources:
            assert resource["service.name"] == "grafana-usage"
            assert resource["service.instance.id"] == "pod-abc"
            assert resource["service.version"] == "9.9.9"
            assert resource["deployment.environment.name"] == "prod"
        [span] = list(sink.spans())
        assert span.trace_id.hex() == UUID_HEX
        sums = sink.latest_sums()
        [(labels, sessions)] = sums["grafana_analytics_sessions"].items()
        assert ("dashboard_uid", "ZQZXRMXMk") in labels and sessions == 0.0  # held: new series
        starts = sink.start_times("grafana_analytics_sessions")
        assert starts and min(starts) > 1_700_000_000 * 10**9
