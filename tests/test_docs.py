"""The docs name what the code does: every metric, label and log field, every setting.

A metric the receiver exports, a label of its session counters or a field of its log line that
``docs/reference.md`` does not name fails here, as do links between the docs that lead nowhere.
"""

from __future__ import annotations

import re
from pathlib import Path

import falcon.testing
import pytest

from otel_panel_receiver import Settings, create_app
from otel_panel_receiver.attributes import LOG_FIELDS, METRIC_LABELS
from otel_panel_receiver.testing import sample_payload

REPO = Path(__file__).resolve().parents[1]
REFERENCE = (REPO / "docs" / "reference.md").read_text()


def exported_metric_names() -> set[str]:
    """Return the families a receiver with every feature on exposes (one worker)."""
    app = create_app(Settings(new_series_delay=0), environ={})
    try:
        client = falcon.testing.TestClient(app)
        for name in ("v2-start.json", "v2-heartbeat.json", "v2-end.json"):
            client.simulate_post("/write", body=sample_payload(name))
        client.simulate_post("/write", body=b"{")
        text = client.simulate_get("/metrics").text
    finally:
        app.close()
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}


def test_every_metric_of_the_receiver_is_in_the_reference() -> None:
    names = {n for n in exported_metric_names() if not n.startswith("process_")}
    names |= {"grafana_analytics_otlp_export_failures", "grafana_analytics_dashboard_info",
              "grafana_analytics_inventory_up", "grafana_analytics_series_retired"}  # fmt: skip
    missing = {n for n in names if n not in REFERENCE}
    assert not missing, f"not in docs/reference.md: {sorted(missing)}"


@pytest.mark.parametrize("name", [*METRIC_LABELS, *LOG_FIELDS])
def test_every_label_and_log_field_is_in_the_reference(name: str) -> None:
    assert f"`{name}`" in REFERENCE


def test_links_between_the_docs_lead_somewhere() -> None:
    broken = []
    for doc in [REPO / "README.md", REPO / "SECURITY.md", REPO / "PRIVACY.md",
                *(REPO / "docs").glob("*.md")]:  # fmt: skip
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (doc.parent / target).exists():
                broken.append(f"{doc.relative_to(REPO)}: {target}")
    assert not broken, broken
