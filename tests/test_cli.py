"""The command line: upstream flags, exit status 2 on bad settings, real gunicorn serving."""

from __future__ import annotations

import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from otel_panel_receiver.cli import gunicorn_options, main
from otel_panel_receiver.config import Settings
from tests.peers import VENV_BIN, free_port, payload, running, stop


def test_bad_flag_exits_2_naming_the_flag_and_value(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--log-format", "xml"], {}) == 2
    assert '--log-format must be one of "logfmt","json" but got \'xml\'' in capsys.readouterr().err


def test_bad_env_var_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([], {"SESSION_TIMEOUT": "30"}) == 2
    assert "SESSION_TIMEOUT" in capsys.readouterr().err


def test_several_workers_with_the_memory_store_are_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--workers", "2", "--session-store", "memory"], {}) == 2
    assert "shared by the workers" in capsys.readouterr().err


def test_several_workers_default_to_the_sqlite_store() -> None:
    assert Settings(workers=2).store_url.startswith("sqlite:///")
    assert Settings(workers=1).store_url == "memory"
    assert Settings(workers=2, session_store="redis://r:6379/0").store_url == "redis://r:6379/0"


def test_gunicorn_runs_one_gthread_worker_by_default() -> None:
    opts = gunicorn_options(Settings())
    assert (opts["workers"], opts["threads"], opts["worker_class"]) == (1, 1, "gthread")
    assert opts["bind"] == ["0.0.0.0:8080"]


def test_threads_default_to_four_with_a_store_that_waits_on_io() -> None:
    assert gunicorn_options(Settings(workers=2))["threads"] == 4
    assert gunicorn_options(Settings(session_store="redis://r:6379/0"))["threads"] == 4
    assert gunicorn_options(Settings(threads=8))["threads"] == 8


def test_version_flag_via_python_dash_m() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "otel_panel_receiver", "--version"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert out.stdout.startswith("otel-panel-receiver ")


def post(url: str, body: bytes) -> int:
    req = urllib.request.Request(url, body, {"Content-Type": "text/plain;charset=UTF-8"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return int(resp.status)


@pytest.mark.peers
def test_cli_serves_under_real_gunicorn_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "receiver.log"
    argv = [str(VENV_BIN / "otel-panel-receiver"), "--http-address", f"127.0.0.1:{port}"]
    with running(argv, ready_url=f"{base}/healthz", log=log) as proc:
        assert post(f"{base}/write", payload("v2-start.json")) == 201
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as resp:
            assert b"grafana_analytics_sessions_total{" in resp.read()
        assert stop(proc, sig=signal.SIGTERM) == 0
    lines = log.read_text().splitlines()
    assert lines[0].startswith('level=info msg="Starting otel-panel-receiver"')
    assert any(line.startswith('level=info msg="Received session data"') for line in lines)
