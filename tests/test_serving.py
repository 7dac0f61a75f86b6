"""Serving: one source of server settings, and every setting checked before a worker forks."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from otel_panel_receiver.config import Settings
from otel_panel_receiver.errors import ConfigError
from otel_panel_receiver.serving import (
    granian_options,
    granian_settings,
    gunicorn_settings,
    preflight,
    prepare_workers,
    server_options,
)


def test_a_bare_port_listens_on_all_interfaces_and_a_host_keeps_its_brackets() -> None:
    assert server_options(Settings(http_address=":8080")).bind == "0.0.0.0:8080"
    assert server_options(Settings(http_address="127.0.0.1:9")).bind == "127.0.0.1:9"
    assert server_options(Settings(http_address="[::1]:9")).bind == "[::1]:9"


def test_gunicorn_runs_one_gthread_worker_by_default() -> None:
    opts = gunicorn_settings(Settings())
    assert (opts["workers"], opts["threads"], opts["worker_class"]) == (1, 1, "gthread")
    assert opts["bind"] == ["0.0.0.0:8080"]
    assert opts["limit_request_line"] == 8190


def test_threads_default_to_four_with_a_store_that_waits_on_io() -> None:
    assert gunicorn_settings(Settings(workers=2, session_store="sqlite:///s.db"))["threads"] == 4
    # LMDB (the default with several workers) never waits: no thread pool under granian.
    assert Settings(workers=2).thread_count == 0
    assert gunicorn_settings(Settings(workers=2))["threads"] == 1
    assert gunicorn_settings(Settings(session_store="redis://r:6379/0"))["threads"] == 4
    assert gunicorn_settings(Settings(threads=8))["threads"] == 8


def test_granian_gets_the_same_address_workers_and_grace_as_gunicorn() -> None:
    settings = Settings(
        http_address="127.0.0.1:9000", workers=3, client_timeout=7.5, graceful_timeout=6.5
    )
    argv = granian_options(settings)
    kwargs = granian_settings(settings)
    gunicorn = gunicorn_settings(settings)

    def value(flag: str) -> str:
        return argv[argv.index(flag) + 1]

    assert gunicorn["bind"] == [f"{value('--host')}:{value('--port')}"]
    assert gunicorn["bind"] == [f"{kwargs['address']}:{kwargs['port']}"]
    assert int(value("--workers")) == kwargs["workers"] == gunicorn["workers"] == 3
    assert int(value("--workers-kill-timeout")) == kwargs["workers_kill_timeout"]
    assert kwargs["workers_kill_timeout"] == gunicorn["graceful_timeout"] == 7  # 6.5 s, up
    assert "--respawn-failed-workers" in argv and kwargs["respawn_failed_workers"]
    assert value("--interface") == kwargs["interface"] == "rsgi"
    assert int(value("--http1-header-read-timeout")) == 7500
    assert kwargs["http1_settings"].header_read_timeout == 7500
    assert value("--loop") == kwargs["loop"] == "uvloop"  # a dependency on this platform


def test_without_uvloop_granian_runs_asyncios_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as if it were not installed
    argv = granian_options(Settings())
    assert argv[argv.index("--loop") + 1] == granian_settings(Settings())["loop"] == "asyncio"


def test_under_granian_the_memory_store_runs_the_app_in_the_event_loop() -> None:
    assert Settings().thread_count == 0
    assert Settings(server="gunicorn").thread_count == 1
    assert gunicorn_settings(Settings())["threads"] == 1  # gunicorn needs a thread
    assert Settings(session_store="redis://r/0").thread_count == 4


def test_one_worker_needs_no_preparation() -> None:
    environ: dict[str, str] = {}
    assert prepare_workers(Settings(), 1, environ) == Settings()
    assert environ == {}


def test_several_workers_get_this_instances_lmdb_store_and_a_fresh_metrics_directory(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    environ: dict[str, str] = {}
    settings = prepare_workers(
        Settings(http_address="127.0.0.1:9100", data_dir=str(data)), 4, environ
    )
    try:
        assert settings.workers == 4
        assert settings.session_store == f"lmdb://{data}/sessions-127.0.0.1-9100"
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        assert os.listdir(settings.prometheus_multiproc_dir) == []
        assert environ == {
            "SESSION_STORE": settings.session_store,
            "PROMETHEUS_MULTIPROC_DIR": settings.prometheus_multiproc_dir,
            "WORKERS": "4",
        }
    finally:
        os.rmdir(settings.prometheus_multiproc_dir)


def test_two_instances_on_one_host_never_share_the_default_store(tmp_path: Path) -> None:
    a, b = (
        prepare_workers(Settings(http_address=f":{port}", data_dir=str(tmp_path)), 2)
        for port in (8080, 8081)
    )
    for s in (a, b):
        os.rmdir(s.prometheus_multiproc_dir)
    assert a.session_store != b.session_store


def test_a_named_metrics_directory_is_emptied_of_a_previous_runs_files(tmp_path: Path) -> None:
    (tmp_path / "counter_123.db").write_bytes(b"old")
    settings = prepare_workers(
        Settings(prometheus_multiproc_dir=str(tmp_path), session_store="redis://r/0"), 2
    )
    assert settings.prometheus_multiproc_dir == str(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_the_memory_store_with_several_workers_is_refused_whoever_asks_for_workers() -> None:
    with pytest.raises(ConfigError, match="needs a session store shared by the workers"):
        prepare_workers(Settings(session_store="memory"), 4)  # e.g. gunicorn -w 4


def test_a_data_directory_others_can_write_to_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    with pytest.raises(ConfigError, match="others can write to it"):
        prepare_workers(Settings(data_dir=str(shared)), 2)


@pytest.mark.parametrize(
    ("settings", "environ", "message"),
    [
        (Settings(session_store="bogus"), {}, "unknown session store 'bogus'"),
        (Settings(session_store="memory:"), {}, "unknown session store 'memory:'"),
        (Settings(session_store="sqlite:///nonexistent/dir/s.db"), {},
         "the directory '/nonexistent/dir' does not exist"),
        (Settings(session_store="redis://h:6379/x"), {}, "the database 'x' is not a number"),
        (Settings(otlp_endpoint="http://c:4318"), {"OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "5s"},
         "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT expected seconds as a number, got '5s'"),
        (Settings(otlp_endpoint="http://c:4318"), {"OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "x"},
         'OTEL_EXPORTER_OTLP_METRICS_PROTOCOL must be "http/protobuf" or "grpc"'),
    ],
)  # fmt: skip
def test_preflight_finds_what_would_fail_in_every_worker(
    settings: Settings, environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        preflight(settings, environ)


def test_preflight_names_a_missing_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "redis", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"needs the redis package: pip install"):
        preflight(Settings(session_store="redis://h:6379/0"), {})
    monkeypatch.setitem(__import__("sys").modules, "opentelemetry.exporter.otlp.proto.grpc", None)
    with pytest.raises(ConfigError, match=r"OTLP over grpc needs the grpc exporter"):
        preflight(Settings(otlp_endpoint="c:4317", otlp_protocol="grpc"), {})


def test_preflight_opens_nothing(tmp_path: Path) -> None:
    preflight(Settings(session_store=f"sqlite://{tmp_path}/s.db"), {})
    preflight(Settings(session_store="redis://127.0.0.1:1/0"), {})  # nothing listens there
    assert list(tmp_path.iterdir()) == []
