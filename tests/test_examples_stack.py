"""The example stacks and the Dockerfile, cross-checked against the code and each other.

No container runs here (no image builder can be installed on this machine: see
``tests/test_container.py`` for the Dockerfile's steps): every file of ``examples/compose`` and
``examples/kubernetes`` is parsed, and what it names must exist: settings in the settings
table, files in the repository, ports that agree, images with a pinned tag, the receiver's
image at the package's version, the collector's variables all given.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from otel_panel_receiver.config import env_name, options
from otel_panel_receiver.panel import PLUGIN_ID
from otel_panel_receiver.version import __version__

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "examples" / "compose"
KUBERNETES = REPO / "examples" / "kubernetes"
#: Standard OpenTelemetry variables the receiver honours besides its settings table: the
#: exporter switches (``export/otlp.exporter_setting``) and the resource (the SDK's).
OTEL_STANDARD = {"OTEL_METRICS_EXPORTER", "OTEL_LOGS_EXPORTER", "OTEL_TRACES_EXPORTER",
                 "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES"}  # fmt: skip


def known_variables() -> set[str]:
    """Return every environment variable the receiver reads."""
    source = "\n".join(p.read_text() for p in (REPO / "otel_panel_receiver").rglob("*.py"))
    assert '"GRAFANA_TOKEN"' in source and 'f"OTEL_{signal.upper()}_EXPORTER"' in source
    return {env_name(field) for field in options()} | OTEL_STANDARD | {"GRAFANA_TOKEN"}


def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((COMPOSE / "docker-compose.yml").read_text())
    return doc


def kubernetes() -> list[dict[str, Any]]:
    return [doc for path in sorted(KUBERNETES.glob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text()) if doc]  # fmt: skip


def by_kind(kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for d in kubernetes() if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def dockerfile() -> list[tuple[str, str]]:
    """Return the Dockerfile's instructions, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", (REPO / "Dockerfile").read_text())
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip())
            for line in text.splitlines() if line.strip() and not line.startswith("#")]  # fmt: skip


def image_env() -> dict[str, str]:
    """Return the variables the runtime stage of the Dockerfile sets."""
    pairs = [arg.split() for op, arg in dockerfile() if op == "ENV"][-1]
    return dict(pair.split("=", 1) for pair in pairs)


def port_of(address: str) -> int:
    return int(address.rpartition(":")[2])


def test_every_image_has_a_pinned_tag_and_the_receiver_is_this_version() -> None:
    images = [s["image"] for s in compose()["services"].values()]
    images += [c["image"] for d in kubernetes() if d["kind"] == "Deployment"
               for c in d["spec"]["template"]["spec"]["containers"]]  # fmt: skip
    for image in images:
        name, _, tag = image.rpartition(":")
        assert name and tag and tag != "latest" and "/" not in tag, image
    receivers = [i for i in images if "otel-panel-receiver:" in i and "redis" not in i]
    assert receivers and {i.rpartition(":")[2] for i in receivers} == {__version__}


def test_the_compose_stack_names_only_what_exists() -> None:
    services = compose()["services"]
    assert set(services) == {"grafana", "receiver", "prometheus", "otel-collector", "loki", "tempo"}
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            assert (COMPOSE / source).resolve().exists(), f"{name}: {source} does not exist"
    build = services["receiver"]["build"]
    assert (COMPOSE / build["context"] / build["dockerfile"]).resolve() == REPO / "Dockerfile"
    env = services["receiver"]["environment"]
    assert set(env) <= known_variables(), set(env) - known_variables()
    port = port_of(env["HTTP_ADDRESS"])
    assert services["receiver"]["ports"] == [f"{port}:{port}"]
    scrape = yaml.safe_load((COMPOSE / "prometheus.yml").read_text())
    assert scrape["scrape_configs"][0]["static_configs"][0]["targets"] == [f"receiver:{port}"]
    assert ("EXPOSE", str(port)) in dockerfile()
    assert PLUGIN_ID in services["grafana"]["environment"]["GF_INSTALL_PLUGINS"]


def test_the_collector_gets_every_variable_its_configuration_names() -> None:
    lines = (REPO / "otel-collector.yaml").read_text().splitlines()
    config = "\n".join(line.split("#", 1)[0] for line in lines)  # comments name no variable
    wanted = set(re.findall(r"\$\{env:([A-Z0-9_]+)\}", config))
    given = set(compose()["services"]["otel-collector"]["environment"])
    assert wanted and wanted <= given, wanted - given
    receiver = compose()["services"]["receiver"]["environment"]
    assert receiver["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"
    assert "0.0.0.0:4318" in config


def test_grafana_is_provisioned_with_the_dashboards_and_their_data_sources() -> None:
    grafana = compose()["services"]["grafana"]
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in grafana["volumes"])
    provider = yaml.safe_load(
        (COMPOSE / mounts_source(mounts, "/etc/grafana/provisioning/dashboards")
         / "otel-panel-receiver.yaml").read_text()
    )  # fmt: skip
    path = provider["providers"][0]["options"]["path"]
    dashboards = (COMPOSE / mounts_source(mounts, path)).resolve()
    assert sorted(p.name for p in dashboards.glob("*.json")) == ["usage-logs.json", "usage.json"]
    provisioned = COMPOSE / mounts_source(mounts, "/etc/grafana/provisioning/datasources")
    sources = yaml.safe_load((provisioned / "datasources.yaml").read_text())
    kinds = {s["type"] for s in sources["datasources"]}
    assert {"prometheus", "loki", "tempo"} <= kinds
    for source in sources["datasources"]:
        host = source["url"].split("//")[1].split(":")[0]
        assert host in compose()["services"], source["url"]


def mounts_source(mounts: dict[str, str], target: str) -> str:
    (source,) = [s for s, t in mounts.items() if t == target]
    return source


def test_the_kubernetes_files_agree_with_the_settings_and_each_other() -> None:
    deployment = by_kind("Deployment", "otel-panel-receiver")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value", "") for e in container["env"]}
    assert set(env) <= known_variables(), set(env) - known_variables()
    prefix = env["PATH_PREFIX"]
    assert container["readinessProbe"]["httpGet"]["path"] == f"{prefix}/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == f"{prefix}/healthz"
    port = container["ports"][0]
    service = by_kind("Service", "otel-panel-receiver")
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]
    assert port["containerPort"] == port_of(image_env()["HTTP_ADDRESS"])
    monitor = by_kind("ServiceMonitor", "otel-panel-receiver")
    assert monitor["spec"]["endpoints"][0]["path"] == f"{prefix}/metrics"
    ingress = by_kind("Ingress", "otel-panel-receiver")
    (path,) = ingress["spec"]["rules"][0]["http"]["paths"]
    assert (
        path["path"] == f"{prefix}/write"
        and path["backend"]["service"]["name"] == "otel-panel-receiver"
    )
    assert deployment["spec"]["replicas"] > 1 and env["SESSION_STORE"].startswith("redis://")
    redis_host = env["SESSION_STORE"].split("//")[1].split(":")[0]
    by_kind("Service", redis_host)  # the store's host is the Redis Service
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    graceful = next(f for f in options() if f.name == "graceful_timeout").default
    assert grace > graceful
    user = deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
    assert ("USER", str(user)) in dockerfile()


def test_the_dockerfile_is_multi_stage_non_root_locked_and_checks_health() -> None:
    steps = dockerfile()
    assert [arg for op, arg in steps if op == "FROM"] == ["${PYTHON} AS build", "${PYTHON}"]
    assert any(op == "RUN" and "-c constraints.txt" in arg for op, arg in steps)
    assert any(op == "COPY" and arg.startswith("--from=build") for op, arg in steps)
    user = [arg for op, arg in steps if op == "USER"]
    assert user and user[-1] not in ("0", "root")
    health = [arg for op, arg in steps if op == "HEALTHCHECK"]
    assert health and "/healthz" in health[0]
    assert ("ENTRYPOINT", '["otel-panel-receiver"]') in steps
    labels = " ".join(arg for op, arg in steps if op == "LABEL")
    for key in ("title", "version", "licenses", "source"):
        assert f"org.opencontainers.image.{key}=" in labels
    for op, arg in steps:
        if op == "COPY" and not arg.startswith("--from"):
            for source in arg.split()[:-1]:
                assert (REPO / source).exists(), source


@pytest.mark.parametrize("path", sorted(KUBERNETES.glob("*.yaml")) + sorted(COMPOSE.glob("*.y*ml")),
                         ids=lambda p: p.name)  # fmt: skip
def test_each_example_file_parses(path: Path) -> None:
    assert list(yaml.safe_load_all(path.read_text()))
