"""How the receiver is served: one source of server settings, and every check before a fork.

The ``otel-panel-receiver`` command, ``gunicorn -c python:otel_panel_receiver.gunicorn_conf``
and a granian command line all take their server settings from :func:`server_options`, and
all run :func:`prepare_workers` then :func:`preflight` in the parent process, so a bad setting
is one line and exit status 2 before any worker exists, never a traceback per worker.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
from collections.abc import Mapping, MutableMapping
from typing import Any, Final

from otel_panel_receiver.access import parse_networks
from otel_panel_receiver.app import build_access
from otel_panel_receiver.browser import schema_setting
from otel_panel_receiver.config import PROGRAM, Settings
from otel_panel_receiver.errors import ConfigError
from otel_panel_receiver.export import check_otlp, clear_directory
from otel_panel_receiver.stores import check_store_url

__all__ = [
    "ServerOptions",
    "event_loop",
    "granian_options",
    "gunicorn_settings",
    "preflight",
    "prepare_workers",
    "server_options",
]

#: Seconds a gunicorn worker may go without a heartbeat to its master before it is killed (a
#: worker frozen with the SQLite store's lock is killed, which releases the lock).
WORKER_TIMEOUT: Final = 30
#: Seconds a kept-alive connection may sit idle (browsers reuse them for heartbeats).
KEEPALIVE: Final = 5
#: Longest request line accepted, in bytes (a ``--path-prefix`` plus a query string).
REQUEST_LINE_LIMIT: Final = 8190


@dataclasses.dataclass(frozen=True, slots=True)
class ServerOptions:
    """What any WSGI server needs to serve the receiver as the settings say."""

    host: str
    port: int
    workers: int
    threads: int
    #: Seconds a worker has to finish its requests and flush its telemetry when told to stop
    #: (``--graceful-timeout``). The OTLP exporters time out after 5 s each.
    graceful_timeout: int = 20
    keepalive: int = KEEPALIVE
    request_line_limit: int = REQUEST_LINE_LIMIT

    @property
    def bind(self) -> str:
        """Return ``host:port`` as gunicorn takes it (brackets around an IPv6 host)."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def server_options(settings: Settings) -> ServerOptions:
    """Return the server settings for ``settings``: the one source every server path uses."""
    host, _, port = settings.http_address.rpartition(":")
    return ServerOptions(
        host=host.strip("[]") or "0.0.0.0",
        port=int(port),
        workers=settings.workers,
        threads=settings.thread_count,
        graceful_timeout=max(1, math.ceil(settings.graceful_timeout)),
    )


def gunicorn_settings(settings: Settings) -> dict[str, Any]:
    """Return gunicorn's settings, by gunicorn's names, for ``settings``."""
    options = server_options(settings)
    return {
        "bind": [options.bind],
        "workers": options.workers,
        "threads": max(1, options.threads),  # gunicorn runs the app in a thread
        # gthread even with one thread: it keeps the browsers' keep-alive connections open.
        "worker_class": "gthread",
        "graceful_timeout": options.graceful_timeout,
        "timeout": WORKER_TIMEOUT,
        "keepalive": options.keepalive,
        "limit_request_line": options.request_line_limit,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "warning",
        "proc_name": PROGRAM,
    }


#: The RSGI app granian serves: the receiver, each request read whole first (buffered.py).
GRANIAN_TARGET: Final = "otel_panel_receiver.rsgi:app"


def event_loop() -> str:
    """Return the event loop granian runs: uvloop where it is installed, else asyncio's.

    uvloop served about 25 % more payloads per second than asyncio's loop (one worker, the
    benchmarks' load); it is a dependency wherever it builds (not on Windows).
    """
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def granian_settings(settings: Settings) -> dict[str, Any]:
    """Return the keyword arguments of ``granian.Granian`` that serve the receiver."""
    from granian.constants import Interfaces, Loops
    from granian.http import HTTP1Settings
    from granian.log import LogLevels

    options = server_options(settings)
    return {
        "target": GRANIAN_TARGET,
        "address": options.host,
        "port": options.port,
        "interface": Interfaces.RSGI,
        "loop": Loops(event_loop()),
        "workers": options.workers,
        "websockets": False,
        "http1_settings": HTTP1Settings(header_read_timeout=int(settings.client_timeout * 1000)),
        "workers_kill_timeout": options.graceful_timeout,
        # A worker that dies (kill -9, out of memory) is replaced, as gunicorn does.
        "respawn_failed_workers": True,
        "respawn_interval": 1.0,
        "log_access": False,
        "log_level": LogLevels.warning,
    }


def granian_options(settings: Settings) -> list[str]:
    """Return the granian command line (before the target) equal to :func:`granian_settings`."""
    options = server_options(settings)
    return [
        "--interface", "rsgi",
        "--loop", event_loop(),
        "--host", options.host,
        "--port", str(options.port),
        "--workers", str(options.workers),
        "--no-ws",
        "--http1-header-read-timeout", str(int(settings.client_timeout * 1000)),
        "--workers-kill-timeout", str(options.graceful_timeout),
        "--respawn-failed-workers",
        "--respawn-interval", "1.0",
        "--no-access-log",
        "--log-level", "warning",
    ]  # fmt: skip


def prepare_workers(
    settings: Settings, workers: int, environ: MutableMapping[str, str] | None = None
) -> Settings:
    """Return the settings ``workers`` worker processes run with; call before forking them.

    With several workers, the session store defaults to this instance's LMDB directory in
    ``--data-dir`` (created if missing) and the multiprocess metrics directory is created (a
    temporary one unless named) and emptied of a previous run's files. When given, ``environ``
    receives the settings the workers must read from their environment (``SESSION_STORE``,
    ``PROMETHEUS_MULTIPROC_DIR``, ``WORKERS``). Raises :class:`ConfigError` for the memory
    store with several workers, or a directory that cannot be made.
    """
    settings = dataclasses.replace(settings, workers=max(1, workers))  # checks the store
    if settings.workers == 1:
        return settings
    store = settings.store_url
    directory = settings.prometheus_multiproc_dir
    try:
        if not settings.session_store:
            _own_directory(settings.data_dir)
        if not directory:
            directory = tempfile.mkdtemp(prefix="otel-panel-receiver-metrics-")
        clear_directory(directory)
    except OSError as exc:
        raise ConfigError(f"cannot prepare the workers' files: {exc}") from None
    if environ is not None:
        environ["SESSION_STORE"] = store
        environ["PROMETHEUS_MULTIPROC_DIR"] = directory
        environ["WORKERS"] = str(settings.workers)
    return dataclasses.replace(settings, session_store=store, prometheus_multiproc_dir=directory)


def _own_directory(path: str) -> None:
    """Create ``path`` (mode 0700) or check that only this user can write to it."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    info = os.stat(path)
    if info.st_uid != os.getuid() or info.st_mode & 0o022:
        raise ConfigError(
            f"--data-dir {path!r} belongs to another user or others can write to it; "
            f"name a directory of this user"
        )


def preflight(settings: Settings, environ: Mapping[str, str]) -> None:
    """Raise :class:`ConfigError` for a setting that would fail in the workers.

    The session store's URL (and an SQLite file's directory, and the Redis client library) and
    every OTLP setting (protocols, timeouts, the gRPC extra) and the browser metrics schema
    are checked; nothing connects.
    """
    check_store_url(settings.store_url)
    check_otlp(settings, environ)
    schema_setting(settings.browser_metrics_schema)
    build_access(settings)  # token files, rate limit, trusted proxies, auth mode
    parse_networks(settings.trusted_proxies)
