"""The command line: upstream flags, exit status 2 on bad settings, real gunicorn serving."""

from __future__ import annotations

import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from otel_panel_receiver.cli import main
from otel_panel_receiver.testing import sample_payload
from tests.support.procs import VENV_BIN, free_port, running, stop


def test_bad_flag_exits_2_naming_the_flag_and_value(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--log-format", "xml"], {}) == 2
    assert '--log-format must be one of "logfmt","json" but got \'xml\'' in capsys.readouterr().err


def test_bad_environment_variable_exits_2_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([], {"SESSION_TIMEOUT": "30"}) == 2
    assert "SESSION_TIMEOUT" in capsys.readouterr().err


def test_several_workers_with_the_memory_store_are_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--workers", "2", "--session-store", "memory"], {}) == 2
    assert "shared by the workers" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "environ", "message"),
    [
        (["--session-store", "mysql://db"], {}, "unknown session store 'mysql://db'"),
        (["--session-store", "sqlite:///no/such/dir/s.db"], {}, "'/no/such/dir' does not exist"),
        (["--session-store", "lmdb:///no/such/dir/s"], {}, "'/no/such/dir' does not exist"),
        (["--session-store", "lmdb://host/s"], {}, "names a host; the store is local"),
        ([], {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_TIMEOUT": "abc"},
         "OTEL_EXPORTER_OTLP_TIMEOUT expected seconds as a number, got 'abc'"),
        ([], {"OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "http://c", "OTEL_EXPORTER_OTLP_PROTOCOL": "udp"},
         "OTEL_EXPORTER_OTLP_PROTOCOL must be one of"),
    ],
)  # fmt: skip
def test_settings_that_would_fail_in_the_workers_exit_2_before_serving(
    argv: list[str], environ: dict[str, str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv, environ) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_python_dash_m_version_prints_the_program_and_its_version() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "otel_panel_receiver", "--version"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert out.stdout.startswith("otel-panel-receiver ")


def post(url: str, body: bytes) -> int:
    """POST ``body`` as the panel does; return the status."""
    req = urllib.request.Request(url, body, {"Content-Type": "text/plain;charset=UTF-8"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return int(resp.status)


def test_a_bad_store_url_is_one_line_on_stderr_and_exit_2_from_the_command() -> None:
    argv = [str(VENV_BIN / "otel-panel-receiver"), "--workers", "2", "--session-store", "sqlite:"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        "otel-panel-receiver: error: session store 'sqlite:' names no file; "
        "use sqlite:///absolute/path.db or sqlite:relative/path.db"
    ]
    assert out.stdout == ""


@pytest.mark.peers
def test_cli_serves_under_real_gunicorn_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "receiver.log"
    argv = [str(VENV_BIN / "otel-panel-receiver"), "--http-address", f"127.0.0.1:{port}"]
    with running(argv, ready_url=f"{base}/healthz", log=log) as proc:
        assert post(f"{base}/write", sample_payload("v2-start.json")) == 201
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as resp:
            assert b"grafana_analytics_sessions_total{" in resp.read()
        assert stop(proc, sig=signal.SIGTERM) == 0
    lines = log.read_text().splitlines()
    assert lines[0].startswith('level=info msg="Starting otel-panel-receiver"')
    assert any(line.startswith('level=info msg="Received session data"') for line in lines)
