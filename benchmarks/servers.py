"""Start WSGI servers on loopback, wait for them, read their CPU time, and always stop them.

Free ports and the wait for a server's health URL are the tests' (``tests.support.procs``).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from otel_panel_receiver import load_settings
from otel_panel_receiver.serving import GRANIAN_TARGET, event_loop, granian_options
from tests.support.procs import REPO, VENV_BIN, free_port, wait_http

__all__ = [
    "BENCHMARKS",
    "REPO",
    "VENV_BIN",
    "AppSpec",
    "Launcher",
    "Server",
    "ServerSpec",
    "describe",
    "group_cpu_seconds",
    "machine_busy_seconds",
    "running",
]

BENCHMARKS: Final = REPO / "benchmarks"
_TICK: Final = os.sysconf("SC_CLK_TCK")
#: What starts the server: its own command line naming the WSGI target; the receiver's
#: ``otel-panel-receiver`` command (gunicorn gthread inside); or gunicorn with the receiver's
#: config file (``-c python:otel_panel_receiver.gunicorn_conf``, whose hooks prepare workers);
#: or a program that serves by itself (``binary``: the upstream Go receiver, ``target`` its path).
Launcher = Literal["server", "cli", "gunicorn-conf", "binary"]
_CONF: Final = "python:otel_panel_receiver.gunicorn_conf"
#: What granian serves for each WSGI target: the same app, read whole first (buffered.py).
_RSGI_TARGETS: Final = {
    "otel_panel_receiver.wsgi:app": GRANIAN_TARGET,
    "benchmarks.bare_wsgi:app": "benchmarks.bare_rsgi:app",
}


@dataclass(frozen=True, slots=True)
class AppSpec:
    """A WSGI app to serve: its ``module:attribute`` target, the environment it reads, how it
    is launched, and extra command-line words (the CLI's flags); ``baseline`` marks the bare
    app the receiver is compared with."""

    name: str
    target: str
    env: Mapping[str, str] = field(default_factory=dict)
    health: str = "/healthz"
    launcher: Launcher = "server"
    args: tuple[str, ...] = ()
    baseline: bool = False


@dataclass(frozen=True, slots=True)
class ServerSpec:
    """A WSGI server and how it is started: ``kind`` is ``gunicorn-sync``, ``gunicorn-gthread``
    or ``granian``; ``threads`` applies to gthread only."""

    kind: str
    workers: int = 1
    threads: int = 4

    @property
    def label(self) -> str:
        """Return the name shown in tables."""
        if self.kind == "gunicorn-gthread":
            return f"gunicorn gthread ({self.threads} thread{'s' if self.threads > 1 else ''})"
        return self.kind.replace("-", " ")

    @property
    def program(self) -> str:
        """Return the executable's name (looked up in the venv)."""
        return "granian" if self.kind == "granian" else "gunicorn"

    def argv(self, app: AppSpec, port: int) -> list[str]:
        """Return the command line serving ``app`` on ``127.0.0.1:port``."""
        if app.launcher == "binary":  # a program that is its own server (the Go receiver)
            return [app.target, f"--http-address=127.0.0.1:{port}", *app.args]
        if app.launcher == "cli":
            if self.kind != "gunicorn-gthread":
                raise ValueError(f"the CLI row is its gunicorn gthread server, not {self.kind}")
            return [
                str(VENV_BIN / "otel-panel-receiver"), "--server", "gunicorn",
                "--http-address", f"127.0.0.1:{port}", "--workers", str(self.workers), *app.args,
            ]  # fmt: skip
        if app.launcher == "gunicorn-conf":
            if self.program != "gunicorn":
                raise ValueError(f"the gunicorn config file does not start {self.kind}")
            # --threads always: the config file sets threads (4 with a shared store), and
            # gunicorn quietly runs gthread instead of sync when threads > 1.
            kind, threads = ("gthread", self.threads) if "gthread" in self.kind else ("sync", 1)
            return [
                str(VENV_BIN / "gunicorn"), "-c", _CONF, "-k", kind, "-w", str(self.workers),
                "--threads", str(threads), "--bind", f"127.0.0.1:{port}", "--chdir", str(REPO),
                *app.args, app.target,
            ]  # fmt: skip
        exe = str(VENV_BIN / self.program)
        if self.kind == "granian":
            options = self._granian_options(app, port)
            # granian serves RSGI: each app wrapped the way the command serves the receiver.
            target = _RSGI_TARGETS.get(app.target, app.target)
            return [exe, *options, "--working-dir", str(REPO), target]
        worker = ["--worker-class", "sync"]
        if self.kind == "gunicorn-gthread":
            worker = ["--worker-class", "gthread", "--threads", str(self.threads)]
        return [
            exe, "--bind", f"127.0.0.1:{port}", "--workers", str(self.workers), *worker,
            "--keep-alive", "5", "--log-level", "warning", "--chdir", str(REPO), app.target,
        ]  # fmt: skip

    def _granian_options(self, app: AppSpec, port: int) -> list[str]:
        """Return granian's options: the receiver's from its settings, the bare app's own."""
        if app.baseline:
            return [
                "--interface", "rsgi", "--loop", event_loop(),  # the receiver's loop
                "--host", "127.0.0.1", "--port", str(port),
                "--workers", str(self.workers), "--no-ws", "--no-access-log",
                "--log-level", "warning",
            ]  # fmt: skip
        # The settings the served app reads from its environment, as gunicorn's are derived.
        address = ("--http-address", f"127.0.0.1:{port}", "--workers", str(self.workers))
        return granian_options(load_settings(address, app.env))


@dataclass(frozen=True, slots=True)
class Server:
    """A started server: its process (leader of its own process group) and base URL."""

    proc: subprocess.Popen[bytes]
    url: str
    argv: tuple[str, ...]

    def stop(self, grace: float = 10.0) -> float | None:
        """Stop the server: SIGTERM, then SIGKILL after ``grace`` seconds; safe to call twice.

        Return how long the graceful stop took, or ``None`` when it had to be killed.
        """
        took: float | None = None
        if self.proc.poll() is None:
            began = time.monotonic()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(grace)
                took = time.monotonic() - began
        # Workers left behind by a leader that died first go with the group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        return took


@contextlib.contextmanager
def running(
    server: ServerSpec,
    app: AppSpec,
    *,
    base_env: Mapping[str, str] | None = None,
    deadline: float = 30.0,
    grace: float = 10.0,
) -> Iterator[Server]:
    """Serve ``app`` with ``server`` on a free loopback port for the duration of the block.

    The block may stop the server itself (to time the stop); otherwise it is stopped on exit,
    killed after ``grace`` seconds. The environment is ``base_env`` (default: this process's)
    plus the app's own variables. The app's stdout (the per-payload log lines) goes to
    /dev/null; stderr is kept in a temporary file and shown if the server fails to start.
    """
    port = free_port()
    argv = server.argv(app, port)
    env = {**(os.environ if base_env is None else base_env), **app.env}
    # The repository first: ``benchmarks.bare_wsgi`` must import whatever the server's cwd.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=errors,
            env=env,
            cwd=REPO,
            start_new_session=True,  # its own process group: CPU accounting and a clean stop
        )
        live = Server(proc, f"http://127.0.0.1:{port}", tuple(argv))
        try:
            try:
                wait_http(f"{live.url}{app.health}", proc=proc, deadline=deadline)
            except (RuntimeError, TimeoutError):
                errors.seek(0)
                sys.stderr.write(errors.read().decode(errors="replace")[-4000:])
                raise
            yield live
        finally:
            live.stop(grace)  # at once if the block stopped it already


def group_cpu_seconds(pgid: int) -> float:
    """Return the user + system CPU seconds of every live process in process group ``pgid``."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue  # the process ended meanwhile
        # Fields after the parenthesised command name, which may itself hold spaces.
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid:  # field 5, pgrp
            total += int(fields[11]) + int(fields[12])  # fields 14 and 15, utime and stime
    return total / _TICK


def machine_busy_seconds() -> float:
    """Return the CPU seconds every process on the machine has used since boot (/proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _TICK


def describe(argv: Sequence[str], env: Mapping[str, str] | None = None) -> str:
    """Return a command line for the docs: the app's environment first, venv, repository and
    temporary paths shortened, no port."""
    words = [f"{key}={value}" for key, value in (env or {}).items()] + list(argv)
    text = " ".join(words).replace(str(VENV_BIN) + "/", "").replace(str(REPO), ".")
    text = re.sub(re.escape(tempfile.gettempdir()) + r"/otel-panel-bench-[^/\s]*", "$TMP", text)
    return re.sub(r"(127\.0\.0\.1:|--port )\d+", r"\1PORT", text)
