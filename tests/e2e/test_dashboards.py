"""End to end: every PromQL expression of the example dashboards and rules returns data.

The receiver (the command) gets generated plugin traffic, one malformed payload (so that the
"payloads refused" panel has something to show), and Grafana's inventory from the fake Grafana
(``tests/support/fake_grafana.py``: Grafana cannot be installed here) of dashboards nobody
opens (so that "never opened" has rows). A real Prometheus scrapes it every second with
``examples/prometheus/rules.yml`` loaded. Then every expression found in
``examples/grafana/*.json`` (template variables substituted as Grafana would) and every rule
is queried through Prometheus's API and must return data. The dashboard files are also checked
as Grafana dashboard models, and against their generator.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from examples.grafana import dashboards
from tests.support.fake_grafana import FakeGrafana
from tests.support.lanes import post_bodies
from tests.support.metrics import VALUES_AT_ONCE
from tests.support.peers import promql
from tests.support.procs import free_port, require_binary, running, wait_until
from tests.support.traffic import generate_traffic

REPO = Path(__file__).resolve().parents[2]
GRAFANA = REPO / "examples" / "grafana"
RULES = REPO / "examples" / "prometheus" / "rules.yml"
TOKEN = "glsa_dashboards_test"
#: What Grafana puts for its global variables, and the dashboards' own ones ("All" hosts).
SUBSTITUTE = {"$__range": "1h", "$__rate_interval": "1m", "$__interval": "15s", "$host": ".*"}


def dashboard_files() -> list[Path]:
    return sorted(GRAFANA.glob("*.json"))


def targets(dashboard: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield panel, target


def substitute(expr: str) -> str:
    for name, value in sorted(SUBSTITUTE.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(name, value)
    assert "$" not in expr, f"a variable the test does not know: {expr}"
    return expr


def test_the_dashboard_files_are_what_their_generator_writes() -> None:
    assert dashboards.main(["--check"]) == 0
    assert {p.name for p in dashboard_files()} == set(dashboards.DASHBOARDS)


@pytest.mark.parametrize("path", dashboard_files(), ids=lambda p: p.name)
def test_each_file_is_a_grafana_dashboard_model(path: Path) -> None:
    model = json.loads(path.read_text())
    assert model["schemaVersion"] == dashboards.SCHEMA_VERSION
    assert model["uid"] and model["title"] and isinstance(model["panels"], list)
    ids = [panel["id"] for panel in model["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    variables = {v["name"]: v for v in model["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    for panel, target in targets(model):
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert target["datasource"]["uid"] == "${datasource}", panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
    for panel in model["panels"]:
        refs = [t["refId"] for t in panel.get("targets", [])]
        assert len(refs) == len(set(refs)), panel["title"]


def test_the_rules_pass_promtool() -> None:
    promtool = require_binary("promtool", "apt-get install prometheus (scripts/install-peers.sh)")
    done = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True,
                          text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def prometheus_config(path: Path, target: str) -> Path:
    path.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": "otel-panel-receiver",
                            "static_configs": [{"targets": [target]}]}],
    }))  # fmt: skip
    return path


@pytest.mark.peers
@pytest.mark.slow
def test_every_promql_expression_of_the_dashboards_and_rules_returns_data(tmp_path: Path) -> None:
    receiver = require_binary("otel-panel-receiver", "pip install -e '.[test]'")
    prometheus = require_binary("prometheus", "apt-get install prometheus")
    port, prom_port = free_port(), free_port()
    token = tmp_path / "grafana-token"
    token.write_text(TOKEN)
    config = prometheus_config(tmp_path / "prometheus.yml", f"127.0.0.1:{port}")
    events = generate_traffic(120)
    with FakeGrafana() as grafana:
        grafana.tokens.add(TOKEN)
        for n in range(5):
            grafana.add_dashboard(f"unopened-{n}", f"Unopened {n}")
        argv = [receiver, "--http-address", f"127.0.0.1:{port}", "--grafana-url", grafana.url,
                "--grafana-token-file", str(token)]  # fmt: skip
        with (
            running(argv, ready_url=f"http://127.0.0.1:{port}/healthz", env=VALUES_AT_ONCE,
                    log=tmp_path / "receiver.log"),
            running([prometheus, f"--config.file={config}",
                     f"--storage.tsdb.path={tmp_path / 'data'}",
                     f"--web.listen-address=127.0.0.1:{prom_port}"],
                    ready_url=f"http://127.0.0.1:{prom_port}/-/ready",
                    log=tmp_path / "prometheus.log"),
        ):  # fmt: skip
            base = f"http://127.0.0.1:{prom_port}"
            wait_until(lambda: bool(promql(base, "grafana_analytics_up")), deadline=30,
                       what="the first scrape")  # fmt: skip
            statuses = [s for s, _ in post_bodies(port, (e.encode() for e in events))]
            statuses += [s for s, _ in post_bodies(port, [b'{"type": 5}'])]
            assert statuses.count(201) == len(events) and statuses[-1] == 400
            time.sleep(3)  # a few scrapes, and the rules evaluated on them
            model_exprs = [
                (f"{path.name}: {panel['title']} ({target['refId']})", target["expr"])
                for path in dashboard_files()
                for panel, target in targets(json.loads(path.read_text()))
                if target["datasource"]["type"] == "prometheus"
            ]
            rules = yaml.safe_load(RULES.read_text())["groups"]
            every_rule = [rule for group in rules for rule in group["rules"]]
            rule_exprs = [(r.get("record") or r["alert"], str(r["expr"])) for r in every_rule]
            recorded = [(f"the recorded {r['record']}", r["record"])
                        for r in every_rule if "record" in r]  # fmt: skip
            empty = []
            for where, expr in itertools.chain(model_exprs, recorded):
                if not promql(base, substitute(expr)):
                    empty.append(f"{where}: {expr}")
            # The alerts are quiet on this healthy receiver by design (nothing down, nothing
            # dropped): each must still be a query Prometheus accepts.
            for _name, expr in rule_exprs:
                promql(base, expr)
    assert model_exprs, "no PromQL found in the dashboards"
    assert not empty, "expressions with no data:\n" + "\n".join(empty)
