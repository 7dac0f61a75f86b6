"""otel-collector.yaml: every pipeline is wired, and its privacy rules match our attributes.

No OpenTelemetry Collector (contrib) can be installed here, so this checks the file's structure
and its rules against the receiver's own attribute names; the routes themselves are exercised
end to end with rotel, VictoriaMetrics, Prometheus and InfluxDB in tests/e2e.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from otel_panel_receiver.attributes import (
    METRIC_LABELS,
    USER_LABELS,
    log_attributes,
    span_attributes,
)
from otel_panel_receiver.payload import decode
from otel_panel_receiver.testing import sample_payload
from tests.support.procs import REPO


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO / "otel-collector.yaml").read_text())
    return data


def test_every_signal_has_a_pipeline_from_the_otlp_receiver(config: dict[str, Any]) -> None:
    pipelines = config["service"]["pipelines"]
    assert set(pipelines) == {"logs", "traces", "metrics"}
    for pipeline in pipelines.values():
        assert pipeline["receivers"] == ["otlp"]
        assert pipeline["processors"][0] == "memory_limiter"
        assert pipeline["processors"][-1] == "batch"


def test_every_component_used_is_defined(config: dict[str, Any]) -> None:
    for pipeline in config["service"]["pipelines"].values():
        for kind in ("receivers", "processors", "exporters"):
            for name in pipeline[kind]:
                assert name in config[kind], f"{kind}: {name} is used but not defined"
    for name in config["service"]["extensions"]:
        assert name in config["extensions"]


def test_each_signal_goes_to_its_backend(config: dict[str, Any]) -> None:
    pipelines = config["service"]["pipelines"]
    assert pipelines["logs"]["exporters"] == ["otlphttp/loki"]
    assert pipelines["traces"]["exporters"] == ["otlp/tempo"]
    assert set(pipelines["metrics"]["exporters"]) == {"prometheusremotewrite", "influxdb"}
    assert (
        config["exporters"]["prometheusremotewrite/influxdb1"]["endpoint"].find(
            "/api/v1/prom/write?db="
        )
        > 0
    )


def _patterns(statements: list[str]) -> list[re.Pattern[str]]:
    """Return the regexes of the OTTL string literals (``\\\\`` in OTTL is one backslash)."""
    literals = [m for s in statements for m in re.findall(r'"(.*?)"\)', s)]
    return [re.compile(m.replace("\\\\", "\\")) for m in literals]


def test_privacy_transform_removes_exactly_the_user_attributes(config: dict[str, Any]) -> None:
    event = decode(sample_payload("v2-start.json"), now=0)
    transform = config["processors"]["transform/drop_users"]
    [log_rules] = transform["log_statements"]
    [span_rules] = transform["trace_statements"]
    for rules, attrs in (
        (log_rules, log_attributes(event)),
        (span_rules, span_attributes(event)),
    ):
        patterns = _patterns(rules["statements"])
        dropped = {k for k in attrs if any(p.search(k) for p in patterns)}
        assert dropped and all(k.startswith("user") for k in dropped)
        assert not {k for k in attrs if k.startswith(("user_", "user.")) and k not in dropped}


def test_metric_privacy_sums_over_every_label_but_the_user_ones(config: dict[str, Any]) -> None:
    [rule] = config["processors"]["metricstransform/drop_users"]["transforms"]
    [operation] = rule["operations"]
    assert operation["action"] == "aggregate_labels"
    assert operation["aggregation_type"] == "sum"
    assert tuple(operation["label_set"]) == tuple(x for x in METRIC_LABELS if x not in USER_LABELS)
    assert re.match(rule["include"], "grafana_analytics_sessions_duration")
