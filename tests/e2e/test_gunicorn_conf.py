"""``gunicorn -c python:otel_panel_receiver.gunicorn_conf``: a bad setting is one line, exit 2.

Real gunicorn, started as users start it; the master checks the settings before it forks.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support.procs import VENV_BIN

GUNICORN = str(VENV_BIN / "gunicorn")
CONF = "python:otel_panel_receiver.gunicorn_conf"
PREFIX = "otel-panel-receiver: error: "

pytestmark = pytest.mark.peers


def gunicorn(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run gunicorn with the receiver's config until it exits (it must not start serving)."""
    argv = [GUNICORN, "-c", CONF, "-b", "127.0.0.1:0", *args, "otel_panel_receiver.wsgi:app"]
    environ = {**os.environ, "DATA_DIR": str(tmp_path / "data"), **env}
    return subprocess.run(
        argv, env=environ, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize(
    ("env", "args", "problem"),
    [
        ({"WORKERS": "4", "SESSION_STORE": "memory"}, (),
         "4 workers (--workers, WORKERS or gunicorn -w): each needs a session store shared"),
        ({"SESSION_STORE": "memory"}, ("-w", "3"),
         "3 workers (--workers, WORKERS or gunicorn -w): each needs a session store shared"),
        ({"SESSION_STORE": "postgres://db/x"}, (), "unknown session store 'postgres://db/x'"),
        ({"SESSION_STORE": "redis://cache:6379/zero"}, (), "the database 'zero' is not a number"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_TIMEOUT": "abc"}, (),
         "OTEL_EXPORTER_OTLP_TIMEOUT expected seconds as a number, got 'abc'"),
        ({"SESSION_TIMEOUT": "30"}, (), "SESSION_TIMEOUT expected a duration"),
    ],
)  # fmt: skip
def test_a_setting_that_cannot_work_is_one_line_and_exit_2_before_any_worker(
    tmp_path: Path, env: dict[str, str], args: tuple[str, ...], problem: str
) -> None:
    done = gunicorn(tmp_path, env, *args)
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith(PREFIX) and problem in line, line
    assert "Booting worker" not in done.stderr and "Traceback" not in done.stderr


def test_an_app_that_fails_to_load_is_reported_by_gunicorn_alone(tmp_path: Path) -> None:
    argv = [GUNICORN, "-c", CONF, "-b", "127.0.0.1:0", "otel_panel_receiver.no_such_module:app"]
    done = subprocess.run(
        argv, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 3  # gunicorn's "Worker failed to boot"
    assert "No module named 'otel_panel_receiver.no_such_module'" in done.stderr
    assert "worker_exit" not in done.stderr and "AttributeError" not in done.stderr
