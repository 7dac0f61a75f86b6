"""Build the example Grafana dashboards as code; the JSON files beside this one are its output.

    python -m examples.grafana.dashboards          # write usage.json and usage-logs.json
    python -m examples.grafana.dashboards --check  # fail if the files differ from the code

Metric names come from the receiver's own constants, so a renamed metric cannot leave a
dashboard behind; ``tests/e2e/test_dashboards.py`` runs every PromQL expression here against a
real Prometheus scraping a receiver. Both dashboards pick their data source with a variable.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Final

from otel_panel_receiver.outcomes import PAYLOADS
from otel_panel_receiver.recorder import DURATION, SESSIONS, UP, VIEWERS
from otel_panel_receiver.self_metrics import DASHBOARD_INFO as INFO
from otel_panel_receiver.self_metrics import INVENTORY_UP, LAST_VIEW, TRACKED

__all__ = ["DASHBOARDS", "build", "main"]

HERE: Final = Path(__file__).parent
SCHEMA_VERSION: Final = 39  # Grafana 10.4 and 11

# The names /metrics gives the instruments: units and _total as the OTel exporter appends them.
SESSIONS_TOTAL: Final = f"{SESSIONS}_total"
DURATION_TOTAL: Final = f"{DURATION}_seconds_total"
VIEWERS_TOTAL: Final = f"{VIEWERS}_total"
PAYLOADS_TOTAL: Final = f"{PAYLOADS}_total"
LAST_VIEW_SECONDS: Final = f"{LAST_VIEW}_seconds"

PROMETHEUS: Final = {"type": "prometheus", "uid": "${datasource}"}
LOKI: Final = {"type": "loki", "uid": "${datasource}"}
#: The Grafana hosts picked (a regular expression over grafana_host).
HOSTS: Final = 'grafana_host=~"$host"'


def _sum_by(labels: str, metric: str, window: str = "$__range") -> str:
    return f"sum by ({labels}) (increase({metric}{{{HOSTS}}}[{window}]))"


class _Panels:
    """Lay panels out row by row on Grafana's 24-column grid, numbering them."""

    def __init__(self, datasource: dict[str, str]) -> None:
        self.datasource = datasource
        self.panels: list[dict[str, Any]] = []
        self._x = self._y = self._row_h = 0

    def add(
        self,
        kind: str,
        title: str,
        targets: list[dict[str, Any]],
        *,
        w: int = 12,
        h: int = 8,
        description: str = "",
        unit: str = "",
        options: dict[str, Any] | None = None,
        transformations: list[dict[str, Any]] | None = None,
    ) -> None:
        if self._x + w > 24:
            self._x, self._y, self._row_h = 0, self._y + self._row_h, 0
        defaults: dict[str, Any] = {"unit": unit} if unit else {}
        panel: dict[str, Any] = {
            "id": len(self.panels) + 1,
            "type": kind,
            "title": title,
            "description": description,
            "datasource": self.datasource,
            "gridPos": {"h": h, "w": w, "x": self._x, "y": self._y},
            "targets": [
                {"refId": chr(ord("A") + i), "datasource": self.datasource, **t}
                for i, t in enumerate(targets)
            ],
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": options or {},
        }
        if transformations:
            panel["transformations"] = transformations
        self.panels.append(panel)
        self._x += w
        self._row_h = max(self._row_h, h)


def _table(expr: str, legend: str = "") -> dict[str, Any]:
    return {"expr": expr, "instant": True, "range": False, "format": "table",
            "legendFormat": legend}  # fmt: skip


def _series(expr: str, legend: str) -> dict[str, Any]:
    return {"expr": expr, "instant": False, "range": True, "legendFormat": legend}


_HIDE_TIME: Final = [{"id": "organize", "options": {"excludeByName": {"Time": True}}}]


def usage() -> dict[str, Any]:
    """Return "Dashboard usage": sessions, time, viewers, the never-opened, health."""
    never = f"{INFO} unless on (dashboard_uid) {LAST_VIEW_SECONDS}"
    by_dashboard = "dashboard_name, dashboard_uid"
    since = f"time() - max by ({by_dashboard}) ({LAST_VIEW_SECONDS}{{{HOSTS}}})"
    merged = [{"id": "merge", "options": {}}, *_HIDE_TIME]
    p = _Panels(PROMETHEUS)
    p.add(
        "stat",
        "Sessions",
        [_table(f"sum({_increase(SESSIONS_TOTAL)})")],
        w=6,
        h=4,
        description="Sessions started in the range picked.",
    )
    p.add(
        "stat",
        "Time spent",
        [_table(f"sum({_increase(DURATION_TOTAL)})")],
        w=6,
        h=4,
        unit="s",
        description="Time dashboards were open, all viewers together.",
    )
    p.add(
        "stat",
        "Viewer-days",
        [_table(f"sum({_increase(VIEWERS_TOTAL)})")],
        w=6,
        h=4,
        description="Distinct signed-in viewers of each dashboard per UTC day, summed.",
    )
    p.add(
        "stat",
        "Dashboards never opened",
        [_table(f"count({never})")],
        w=6,
        h=4,
        description="Dashboards of Grafana's inventory with no view kept "
        "(needs --grafana-url and --grafana-token-file).",
    )
    p.add(
        "timeseries",
        "Sessions started",
        [
            _series(
                _sum_by("dashboard_name", SESSIONS_TOTAL, "$__rate_interval"), "{{dashboard_name}}"
            )
        ],
        w=24,
    )
    p.add(
        "table",
        "Top dashboards",
        [
            _table(f"topk(20, {_sum_by(by_dashboard, SESSIONS_TOTAL)})"),
            _table(_sum_by(by_dashboard, DURATION_TOTAL)),
            _table(_sum_by(by_dashboard, VIEWERS_TOTAL)),
        ],
        h=10,
        description="Sessions (A), time spent (B) and viewer-days (C) per dashboard.",
        transformations=merged,
    )
    p.add(
        "table",
        "Never opened",
        [_table(never)],
        h=10,
        description="Every dashboard of Grafana's inventory with no view kept.",
        transformations=_HIDE_TIME,
    )
    p.add(
        "table",
        "Last view",
        [_table(f"sort({since})")],
        h=10,
        unit="s",
        description="Time since each dashboard was last opened, the longest first (kept by the "
        "receiver: no range query).",
        transformations=_HIDE_TIME,
    )
    p.add(
        "table",
        "Sessions per user",
        [
            _table(_sum_by("user_login", SESSIONS_TOTAL)),
            _table(_sum_by("user_login", DURATION_TOTAL)),
        ],
        h=10,
        description="With --user-labels clear (logins) or pseudonymous (u + 16 hex characters, "
        "new each UTC day); empty with --user-labels none.",
        transformations=merged,
    )
    for label, title, width in (
        ("user_role", "By role", 6),
        ("user_theme", "By theme", 6),
        ("user_locale", "By locale", 6),
        ("user_timezone", "By time zone", 6),
        ("dashboard_timezone", "By dashboard time zone", 12),
    ):
        p.add(
            "piechart",
            title,
            [_table(_sum_by(label, SESSIONS_TOTAL), f"{{{{{label}}}}}")],
            w=width,
            options={"reduceOptions": {"calcs": ["lastNotNull"], "values": True}},
        )
    p.add(
        "table",
        "Grafana hosts",
        [_table(_sum_by("grafana_host, grafana_env", SESSIONS_TOTAL))],
        description="Where sessions come from (Grafana versions: the logs dashboard).",
        transformations=_HIDE_TIME,
    )
    refused = f'{PAYLOADS_TOTAL}{{outcome!="accepted"}}[$__rate_interval]'
    p.add(
        "timeseries",
        "Payloads refused",
        [_series(f"sum by (outcome) (increase({refused}))", "{{outcome}}")],
        description="Payloads the receiver refused, by reason (the browser never shows them).",
    )
    p.add("stat", "Receiver up", [_table(f"min({UP})")], w=6, h=4)
    p.add(
        "stat",
        "Inventory poll",
        [_table(f"min({INVENTORY_UP})")],
        w=6,
        h=4,
        description="1 when the last poll of Grafana's dashboards worked.",
    )
    p.add("stat", "Sessions tracked", [_table(f"sum({TRACKED})")], w=6, h=4)
    accepted = f'{PAYLOADS_TOTAL}{{outcome="accepted"}}[$__range]'
    p.add("stat", "Payloads accepted", [_table(f"sum(increase({accepted}))")], w=6, h=4)
    variables = [_datasource("prometheus", "Prometheus"), _hosts()]
    return _dashboard("otel-panel-receiver-usage", "Dashboard usage", p.panels, variables)


def _increase(metric: str) -> str:
    return f"increase({metric}{{{HOSTS}}}[$__range])"


def usage_logs() -> dict[str, Any]:
    """Return "Dashboard usage logs": time ranges, variables and Grafana versions, on Loki.

    For logs sent over OTLP through ``otel-collector.yaml`` (Loki 3 keeps the record's
    attributes as structured metadata: no parser needed). For stdout JSON lines shipped by an
    agent, add ``| json`` after the stream selector.
    """
    starts = '{service_name="otel-panel-receiver"} |= "Received session data" | type="start"'
    p = _Panels(LOKI)
    ranges = f"sum by (time_from_raw, time_to_raw) (count_over_time({starts} [$__range]))"
    picked = f'count_over_time({starts} | ${{variable}}!="" [$__range])'
    versions = f'{starts} | regexp "version=(?P<version>[^,)]+)"'
    roles = f"sum by (user_role) (count_over_time({starts} [$__range]))"
    p.add(
        "table",
        "Time ranges picked",
        [{"expr": f"topk(20, {ranges})", "queryType": "instant"}],
        h=10,
        description="The time range each session opened with.",
    )
    p.add(
        "table",
        "Values of the variable $variable",
        [
            {
                "expr": f"topk(50, sum by (dashboard_name, ${{variable}}) ({picked}))",
                "queryType": "instant",
            }
        ],
        h=10,
        description="The values the sessions opened with, of the dashboard variable named in "
        "$variable (each variable is a log attribute of its own name).",
    )
    p.add(
        "table",
        "Grafana versions",
        [
            {
                "expr": f"sum by (host, version) (count_over_time({versions} [$__range]))",
                "queryType": "instant",
            }
        ],
        description="From the build each session's Grafana reports.",
    )
    p.add(
        "table",
        "Roles",
        [{"expr": roles, "queryType": "instant"}],
        description="admin, editor or user, as the upstream receiver derives them; the panel's "
        "payload carries no organisation the receiver keeps.",
    )
    selector = '{service_name="otel-panel-receiver"} |= "Received session data"'
    p.add("logs", "Payloads", [{"expr": selector, "queryType": "range"}], w=24, h=12)
    variable = {"name": "variable", "label": "Variable", "type": "textbox", "query": "env",
                "current": {"text": "env", "value": "env"}, "hide": 0}  # fmt: skip
    return _dashboard("otel-panel-receiver-usage-logs", "Dashboard usage logs", p.panels,
                      [_datasource("loki", "Loki"), variable])  # fmt: skip


def _datasource(kind: str, label: str) -> dict[str, Any]:
    return {"name": "datasource", "label": label, "type": "datasource", "query": kind,
            "current": {}, "hide": 0, "refresh": 1, "options": []}  # fmt: skip


def _hosts() -> dict[str, Any]:
    query = f"label_values({SESSIONS_TOTAL}, grafana_host)"
    return {"name": "host", "label": "Grafana host", "type": "query", "datasource": PROMETHEUS,
            "query": {"query": query, "refId": "hosts"}, "definition": query, "refresh": 2,
            "includeAll": True, "allValue": ".*", "multi": True,
            "current": {"text": "All", "value": "$__all"}, "options": [], "sort": 1}  # fmt: skip


def _dashboard(
    uid: str, title: str, panels: list[dict[str, Any]], variables: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "uid": uid, "title": title, "tags": ["otel-panel-receiver"], "editable": True,
        "schemaVersion": SCHEMA_VERSION, "version": 1, "time": {"from": "now-7d", "to": "now"},
        "refresh": "", "timezone": "browser", "graphTooltip": 1,
        "templating": {"list": variables}, "annotations": {"list": []}, "panels": panels,
        "description": "Built by examples/grafana/dashboards.py (otel-panel-receiver).",
    }  # fmt: skip


#: File name -> builder.
DASHBOARDS: Final = {"usage.json": usage, "usage-logs.json": usage_logs}


def build() -> dict[str, str]:
    """Return each dashboard file's text."""
    return {name: json.dumps(make(), indent=2, ensure_ascii=False) + "\n"
            for name, make in DASHBOARDS.items()}  # fmt: skip


def main(argv: list[str]) -> int:
    """Write the files, or with ``--check`` say which differ from the code (exit 1)."""
    stale = []
    for name, text in build().items():
        path = HERE / name
        if "--check" in argv:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    for name in stale:
        print(f"examples/grafana/{name} differs from dashboards.py: run "
              f"python -m examples.grafana.dashboards", file=sys.stderr)  # fmt: skip
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
