"""Settings: upstream flags and env vars, precedence, errors, and the generated docs page."""

from __future__ import annotations

import pytest

from otel_panel_receiver.config import (
    Settings,
    env_name,
    flag,
    load_settings,
    options,
    parse_duration,
    render_markdown,
)
from otel_panel_receiver.errors import ConfigError
from tests.support.procs import REPO

UPSTREAM = {
    "--http-address": ("HTTP_ADDRESS", ":8080"),
    "--session-timeout": ("SESSION_TIMEOUT", 0.0),
    "--max-cache-size": ("MAX_CACHE_SIZE", 100_000),
    "--log-format": ("LOG_FORMAT", "logfmt"),
    "--log-raw": ("LOG_RAW", False),
    "--disable-user-metrics": ("DISABLE_USER_METRICS", False),
    "--disable-session-log": ("DISABLE_SESSION_LOG", False),
    "--disable-variable-log": ("DISABLE_VARIABLE_LOG", False),
}


def test_every_upstream_flag_exists_with_its_env_var_and_default() -> None:
    table = {"--" + f.name.replace("_", "-"): (f.name.upper(), f.default) for f in options()}
    for name, expected in UPSTREAM.items():
        assert table[name] == expected


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0", 0), ("30s", 30), ("5m", 300), ("1h30m", 5400), ("1.5h", 5400), ("250ms", 0.25)],
)
def test_durations_use_go_syntax(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["30", "", "s", "1x", "-5s", "1h 30m"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_flag_beats_environment_beats_default() -> None:
    env = {"SESSION_TIMEOUT": "1m", "MAX_CACHE_SIZE": "5"}
    s = load_settings(["--session-timeout", "30s"], env)
    assert (s.session_timeout, s.max_cache_size, s.log_format) == (30.0, 5, "logfmt")


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("1", True), ("false", False)])
def test_boolean_environment_variables_accept_true_1_and_false(value: str, expected: bool) -> None:
    assert load_settings([], {"DISABLE_USER_METRICS": value}).disable_user_metrics is expected


def test_a_boolean_flag_alone_sets_true() -> None:
    assert load_settings(["--log-raw"], {}).log_raw is True


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (
            ["--log-format", "xml"],
            {},
            '--log-format must be one of "logfmt","json" but got \'xml\'',
        ),
        ([], {"LOG_FORMAT": "xml"}, "LOG_FORMAT must be one of"),
        ([], {"SESSION_TIMEOUT": "30"}, "SESSION_TIMEOUT expected a duration"),
        (["--max-cache-size", "-1"], {}, "--max-cache-size expected a number >= 0"),
        (["--http-address", "8080"], {}, '--http-address expected "host:port"'),
        (["--path-prefix", "analytics"], {}, "--path-prefix expected a URL path"),
        ([], {"LOG_RAW": "maybe"}, "LOG_RAW expected true or false, got 'maybe'"),
    ],
)
def test_bad_values_name_the_setting_and_the_value(
    argv: list[str], env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_settings(argv, env)


def test_log_raw_forces_the_json_format() -> None:
    assert Settings(log_raw=True, log_format="logfmt").log_format_effective == "json"


def test_several_workers_with_the_memory_store_cannot_be_configured() -> None:
    with pytest.raises(ConfigError, match="needs a session store shared by the workers"):
        Settings(workers=2, session_store="memory")
    with pytest.raises(ConfigError, match="needs a session store shared by the workers"):
        load_settings([], {"WORKERS": "4", "SESSION_STORE": "memory"})


def test_the_default_store_is_memory_for_one_worker_and_this_instances_lmdb_for_several() -> None:
    assert Settings(workers=1).store_url == "memory"
    assert Settings(workers=2).store_url == "lmdb:///var/tmp/otel-panel-receiver/sessions-8080"
    assert (
        Settings(workers=2, http_address="127.0.0.1:9000", data_dir="/srv/opr").store_url
        == "lmdb:///srv/opr/sessions-127.0.0.1-9000"
    )
    assert Settings(workers=2, http_address="[::1]:81").store_url.endswith("/sessions-___1_-81")
    assert Settings(workers=2, session_store="redis://r:6379/0").store_url == "redis://r:6379/0"


def test_path_prefix_loses_its_trailing_slash() -> None:
    assert load_settings(["--path-prefix", "/analytics/"], {}).path_prefix == "/analytics"


def test_configuration_doc_is_generated_from_the_table() -> None:
    doc = (REPO / "docs" / "configuration.md").read_text()
    assert doc == render_markdown()
    for field in options():
        assert f"`{env_name(field)}`" in doc and f"`{flag(field)}`" in doc


def test_otlp_settings_use_the_standard_opentelemetry_variables() -> None:
    s = load_settings(
        [], {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    )
    assert (s.otlp_endpoint, s.otlp_protocol) == ("http://c:4318", "grpc")
    assert load_settings(["--otlp-endpoint", "http://d:4318"], {}).otlp_endpoint == "http://d:4318"
