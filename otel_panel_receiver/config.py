"""Settings: one table of options from which the parser, the env reading and the docs are made.

Each field of :class:`Settings` is declared once with :func:`_option` (default, parser, help).
Its flag is the field name in kebab case (``--http-address``), its environment variable the
name in upper case without prefix (``HTTP_ADDRESS``), as the upstream receiver has them.
Precedence: flag, then environment variable, then default. Nothing here reads the process
environment by itself: callers pass ``argv`` and ``environ``.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Literal, cast

from otel_panel_receiver.errors import ConfigError
from otel_panel_receiver.version import __version__

__all__ = [
    "PROGRAM",
    "Settings",
    "build_parser",
    "load_settings",
    "options",
    "parse_duration",
    "render_markdown",
    "to_environ",
]

PROGRAM: Final = "otel-panel-receiver"
DESCRIPTION: Final = (
    "An OpenTelemetry-native receiver for the macropower-analytics-panel Grafana plugin."
)

_UNITS: Final = {
    "ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0,
    "d": 86_400.0,
}  # fmt: skip
_DURATION_PART: Final = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h|d)")


def parse_duration(text: str) -> float:
    """Parse a Go duration (``0``, ``30s``, ``1h30m``, ``1.5h``, ``250ms``) into seconds.

    Days are accepted too (``30d``), which Go's durations lack.
    """
    value = text.strip()
    if value in ("0", "0s"):
        return 0.0
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(value):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if not value or pos != len(value):
        raise ValueError(f'expected a duration such as "30s", "5m" or "1h30m", got {text!r}')
    return total


def _positive_duration(text: str) -> float:
    value = parse_duration(text)
    if value <= 0:
        raise ValueError(f'expected a duration above 0 such as "2s" or "500ms", got {text!r}')
    return value


#: The parsers of settings that are durations (written ``30s``, shown as durations).
_DURATIONS: Final = (parse_duration, _positive_duration)


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _count(text: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise ValueError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise ValueError(f"expected a number >= 0, got {text!r}")
    return value


def _positive(text: str) -> int:
    value = _count(text)
    if value < 1:
        raise ValueError(f"expected a number >= 1, got {text!r}")
    return value


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in allowed:
            names = ",".join(f'"{a}"' for a in allowed)
            raise ValueError(f"must be one of {names} but got {text!r}")
        return text

    return parse


def _address(text: str) -> str:
    _, sep, port = text.strip().rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise ValueError(f'expected "host:port" or ":port", got {text!r}')
    return text.strip()


def _url(text: str) -> str:
    value = text.strip()
    if value and not re.match(r"^(https?://)?[^\s/]+(:\d+)?(/\S*)?$", value):
        raise ValueError(f'expected a URL such as "http://collector:4318", got {text!r}')
    return value


def _directory(text: str) -> str:
    value = text.strip()
    if not value.startswith("/"):
        raise ValueError(f"expected an absolute directory path, got {text!r}")
    return value.rstrip("/") or "/"


def _prefix(text: str) -> str:
    value = text.strip().rstrip("/")
    if value and (not value.startswith("/") or "//" in value or " " in value):
        raise ValueError(f'expected a URL path such as "/analytics", got {text!r}')
    return value


def _option(
    default: Any,
    parse: Callable[[str], Any],
    help: str,  # the argparse word for it
    *,
    metavar: str = "",
    upstream: bool = False,
    env: str = "",
    flag: str = "",
) -> Any:
    meta = {
        "parse": parse,
        "help": help,
        "metavar": metavar,
        "upstream": upstream,
        "env": env,
        "flag": flag,
    }
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    """Every setting of the receiver, with its default."""

    http_address: str = _option(
        ":8080", _address, "Listen address for /write, /metrics, /healthz and /readyz.",
        metavar="HOST:PORT", upstream=True,
    )  # fmt: skip
    session_timeout: float = _option(
        0.0, parse_duration,
        "The most one gap between a session's events may add to its duration; "
        "0 = auto: 1.25 x the payload's heartbeatInterval.",
        metavar="DURATION", upstream=True,
    )  # fmt: skip
    max_cache_size: int = _option(
        100_000, _count,
        "Most sessions kept per process; beyond it the least recently active are evicted "
        "(never a wholesale flush). 0 = unlimited.",
        metavar="N", upstream=True,
    )  # fmt: skip
    log_format: Literal["logfmt", "json"] = _option(
        "logfmt", _choice("logfmt", "json"), "Format of the lines on stdout.",
        metavar="logfmt|json", upstream=True,
    )  # fmt: skip
    log_raw: bool = _option(
        False, _bool, "Log each payload as one JSON object under data (forces JSON).",
        upstream=True,
    )  # fmt: skip
    disable_user_metrics: bool = _option(
        False, _bool, "Drop the user_login and user_name labels (an OTel View).", upstream=True
    )
    user_labels: Literal["clear", "pseudonymous", "none"] = _option(
        "clear", _choice("clear", "pseudonymous", "none"),
        "What the user_login and user_name labels hold: the viewer's login and name (clear), a "
        "keyed hash of the login whose key changes every UTC day and is deleted after 48 h "
        "(pseudonymous), or nothing: the labels are dropped (none, as --disable-user-metrics). "
        "See PRIVACY.md.",
        metavar="clear|pseudonymous|none",
    )  # fmt: skip
    log_redact: str = _option(
        "", str.strip,
        "Comma list of per-payload log fields written as [redacted] (for example "
        "user_email,user_login,user_name,user_id), on stdout and over OTLP; the event API's "
        "fields too (user_id, session_id, prop.NAME).",
        metavar="FIELDS",
    )  # fmt: skip
    disable_session_log: bool = _option(
        False, _bool, 'No "Received session data" log record per payload.', upstream=True
    )
    disable_variable_log: bool = _option(
        False, _bool, "No dashboard variables in the per-payload log record.", upstream=True
    )
    disable_event_api: bool = _option(
        False, _bool,
        "Do not serve the event API (/v1/events, /v1/setUserId, /v1/setUserProps): named "
        "events from pages and backends as log records and grafana_analytics_events_total.",
    )  # fmt: skip
    browser_metrics_schema: str = _option(
        "", str.strip,
        "JSON file of the browser metrics POST /v1/metrics takes: names, kinds (counter, "
        "gauge with ttl, histogram with buckets), label names and their allowed values. "
        "Without one, every name is unknown and refused. See docs/browser-metrics.md.",
        metavar="FILE",
    )  # fmt: skip
    session_ttl: float = _option(
        86_400.0, parse_duration,
        "Forget a session after this long without events (a later event starts a new one).",
        metavar="DURATION",
    )  # fmt: skip
    max_body_size: int = _option(
        65_536, _positive,
        "Largest accepted /write body in bytes (413 beyond); the browser's keepalive "
        "limit is 64 KiB.",
        metavar="BYTES",
    )  # fmt: skip
    path_prefix: str = _option(
        "", _prefix, 'Serve every route under this path, e.g. "/analytics".', metavar="PATH"
    )
    max_label_length: int = _option(
        128, _count,
        "Longest metric label value in characters; a longer one (a dashboard title, say) is "
        "cut and ends with \u2026. 0 = no limit.",
        metavar="N",
    )  # fmt: skip
    new_series_delay: float = _option(
        90.0, parse_duration,
        "Expose a counter series at 0 for this long after its first scrape, then with its "
        "value, so that Prometheus stores a 0 first and increase() counts the first sessions "
        "of a new dashboard or viewer. Longer than the longest scrape interval of any "
        "Prometheus that scrapes the receiver; 0 = off (for VictoriaMetrics alone, say).",
        metavar="DURATION",
    )  # fmt: skip
    openmetrics_created: bool = _option(
        False, _bool,
        "Add each counter series' _created (when it began) to the OpenMetrics exposition, for "
        "Prometheus 3 with --enable-feature=created-timestamp-zero-ingestion, which then counts "
        "a new series' first value at once. Other Prometheus versions store _created as one "
        "more series per counter series.",
    )  # fmt: skip
    metric_cardinality_limit: int = _option(
        10_000, _positive,
        "Most label sets per metric in /metrics; past it the least recently updated series is "
        "retired (logged, counted in grafana_analytics_series_retired_total; one that comes "
        "back starts again from 0). Over OTLP, further label sets go to the SDK's "
        'otel_metric_overflow="true" series.',
        metavar="N",
    )  # fmt: skip
    otlp_endpoint: str = _option(
        "", _url,
        "Base URL (http/protobuf) or address (grpc) of an OTLP collector; metrics, logs and "
        "session traces are pushed there besides /metrics. Off when empty. The standard "
        "per-signal OTEL_EXPORTER_OTLP_*_ENDPOINT variables also switch a signal on.",
        metavar="URL", env="OTEL_EXPORTER_OTLP_ENDPOINT",
    )  # fmt: skip
    otlp_protocol: Literal["", "http/protobuf", "grpc"] = _option(
        "", _choice("http/protobuf", "grpc"),
        "OTLP transport; grpc needs the [grpc] extra. Empty: http/protobuf.",
        metavar="http/protobuf|grpc", env="OTEL_EXPORTER_OTLP_PROTOCOL",
    )  # fmt: skip
    trace_idle_timeout: float = _option(
        600.0, parse_duration,
        "Close the span of a session with no event for this long (its end never came).",
        metavar="DURATION",
    )  # fmt: skip
    session_store: str = _option(
        "", str.strip,
        "Where session state lives: memory, lmdb:///path/to/dir (all workers of one host; "
        "survives restarts, not a power cut), sqlite:///path/to.db (all workers of one host; "
        "survives restarts and power cuts) or redis://host:port/db (many hosts). Empty: "
        "memory with one worker, else an LMDB directory of this instance in --data-dir, named "
        "after --http-address (sessions-8080 for :8080).",
        metavar="URL",
    )  # fmt: skip
    store_timeout: float = _option(
        2.0, _positive_duration,
        "Longest a payload waits on the session store (a Redis reply or connection, another "
        "process's SQLite lock) before it is answered 503 with Retry-After; after a failure "
        "the store is not tried again for a second.",
        metavar="DURATION",
    )  # fmt: skip
    data_dir: str = _option(
        # A fixed path in a shared directory: serving.prepare_workers makes it 0700 and refuses
        # one that another user owns or could write to.
        "/var/tmp/otel-panel-receiver", _directory,  # noqa: S108
        "Directory for the files the receiver keeps itself (the default multi-worker session "
        "store); created if missing.",
        metavar="DIR",
    )  # fmt: skip
    prometheus_multiproc_dir: str = _option(
        "", str,
        "Directory for the table of series the workers share, which any of them serves at "
        "/metrics; empty: none with one worker, a fresh temporary one with several.",
        metavar="DIR", env="PROMETHEUS_MULTIPROC_DIR",
    )  # fmt: skip
    multiproc_export_interval: float = _option(
        1.0, parse_duration,
        "How often the SDK's counts and gauges are added to the table /metrics serves (the "
        "session counters go there as each payload is recorded).",
        metavar="DURATION",
    )  # fmt: skip
    auth: Literal["none", "token", "grafana"] = _option(
        "none", _choice("none", "token", "grafana"),
        "Who may post payloads: none (anybody who can reach /write), token (a secret of "
        "--auth-token-file, in the endpoint's ?token= or Authorization: Bearer) or grafana "
        "(a valid Grafana session cookie, checked with --grafana-url; the viewer's identity "
        "then comes from Grafana, not from the payload). See SECURITY.md.",
        metavar="none|token|grafana",
    )  # fmt: skip
    auth_token_file: str = _option(
        "", str.strip,
        "File of the tokens --auth token accepts, one a line; read again when it changes, so "
        "tokens can be rotated without a restart.",
        metavar="FILE",
    )  # fmt: skip
    metrics_token_file: str = _option(
        "", str.strip,
        "File of the tokens GET /metrics needs (Authorization: Bearer), one a line; empty: "
        "/metrics is open.",
        metavar="FILE",
    )  # fmt: skip
    grafana_url: str = _option(
        "", _url,
        "Grafana's root URL as the receiver reaches it, for --auth grafana and the dashboard "
        "inventory.",
        metavar="URL",
    )  # fmt: skip
    grafana_token_file: str = _option(
        "", str.strip,
        "A file holding a Grafana service-account token (Viewer is enough) with which the "
        "receiver lists Grafana's dashboards every --inventory-interval, for the usage report "
        "and grafana_analytics_dashboard_info; reread at each poll. The GRAFANA_TOKEN variable "
        "may hold the token itself instead. Needs --grafana-url.",
        metavar="FILE",
    )  # fmt: skip
    inventory_interval: float = _option(
        600.0, _positive_duration,
        "How often Grafana's dashboards are listed (one process of the deployment polls; a "
        "failed poll is tried again every quarter of it, at most every minute).",
        metavar="DURATION",
    )  # fmt: skip
    usage_retention: float = _option(
        93 * 86_400.0, _positive_duration,
        "How long the usage ledger keeps sessions per day and viewers per dashboard (the longest "
        "window the usage report can answer for); a dashboard's last view is kept as long as "
        "the dashboard is among the --metric-cardinality-limit most recently viewed.",
        metavar="DURATION",
    )  # fmt: skip
    grafana_cookie: str = _option(
        "grafana_session", str.strip,
        "The name of Grafana's session cookie (Grafana's login_cookie_name).",
        metavar="NAME",
    )  # fmt: skip
    auth_cache_ttl: float = _option(
        30.0, parse_duration,
        "How long Grafana's verdict on a session cookie is kept (under a hash of the cookie).",
        metavar="DURATION",
    )  # fmt: skip
    allowed_origins: str = _option(
        "", str.strip,
        "Comma list of the origins browsers may post from (https://grafana.example.com); "
        "others get 403, allowed ones get CORS answers. Empty: no Origin check; * = any.",
        metavar="ORIGINS",
    )  # fmt: skip
    rate_limit: str = _option(
        "", str.strip,
        'Most payloads per client address, e.g. "120/minute" (off when empty: behind a proxy '
        "every client shares the proxy's address unless --trusted-proxies names it).",
        metavar="N/PERIOD",
    )  # fmt: skip
    trusted_proxies: str = _option(
        "", str.strip,
        "Comma list of proxy addresses or CIDR blocks whose X-Forwarded-For is believed, to "
        "find a client's address.",
        metavar="CIDRS",
    )  # fmt: skip
    server: Literal["granian", "gunicorn"] = _option(
        "granian", _choice("granian", "gunicorn"),
        "The command's HTTP server. granian reads every request whole before any Python code "
        "runs, so slow or stalled clients hold no thread; gunicorn (gthread) gives each "
        "request a thread from its first byte (see docs/deployment.md).",
        metavar="granian|gunicorn",
    )  # fmt: skip
    workers: int = _option(1, _positive, "Worker processes of the command's server.", metavar="N")
    threads: int = _option(
        0, _count,
        "Threads per worker for the app; 0 = auto: with the memory store none under granian "
        "(the app runs in its event loop) and 1 under gunicorn, where more threads only "
        "contend for the GIL; 4 with SQLite or Redis, whose calls wait on I/O.",
        metavar="N",
    )  # fmt: skip
    client_timeout: float = _option(
        10.0, parse_duration,
        "How long a client may take to send a request's headers, and then its body; past it "
        "the request is answered 408 (granian; gunicorn bounds neither).",
        metavar="DURATION",
    )  # fmt: skip
    graceful_timeout: float = _option(
        20.0, _positive_duration,
        "On SIGTERM, how long the workers have to answer the requests in flight and flush "
        "their telemetry before they are killed (well under Kubernetes' 30 s grace period); "
        "stalled clients are dropped.",
        metavar="DURATION",
    )  # fmt: skip

    @property
    def user_label_mode(self) -> Literal["clear", "pseudonymous", "none"]:
        """Return what the user labels hold: ``--disable-user-metrics`` means ``none``."""
        return "none" if self.disable_user_metrics else self.user_labels

    @property
    def log_format_effective(self) -> Literal["logfmt", "json"]:
        """Return the format lines are written in: raw logging forces JSON."""
        return "json" if self.log_raw else self.log_format

    def __post_init__(self) -> None:
        if self.workers > 1 and self.session_store == "memory":
            raise ConfigError(
                f"{self.workers} workers (--workers, WORKERS or gunicorn -w): each needs a "
                f"session store shared by the workers, not memory, or it counts its own "
                f"sessions; leave --session-store (SESSION_STORE) empty for LMDB in "
                f"--data-dir, or name lmdb:///path/to/dir, sqlite:///path/to/sessions.db or "
                f"redis://host:port/db"
            )

    @property
    def store_url(self) -> str:
        """Return the session store to open: the named one, or the default for the workers.

        The default with several workers is an LMDB directory of this instance: in
        ``data_dir``, named after the listen address, so two receivers on one host never share
        sessions.
        """
        if self.session_store:
            return self.session_store
        if self.workers == 1:
            return "memory"
        host, _, port = self.http_address.rpartition(":")
        name = "-".join(part for part in (re.sub(r"[^\w.-]", "_", host), port) if part)
        return f"lmdb://{self.data_dir.rstrip('/')}/sessions-{name}"

    @property
    def thread_count(self) -> int:
        """Return the app's threads per worker: the setting, or the choice for store and server.

        0 means none: granian runs the app in its event loop. The memory and LMDB stores never
        wait (an LMDB transaction is microseconds in a shared map, its writer lock is
        held that long), so the app runs in the loop; SQLite and Redis may wait on a disk or a
        network, and so may ``--auth grafana``: 4 threads then. Handing each request to a
        thread costs more than the payload itself (measured: granian, one worker, LMDB store:
        4 threads, 1,400 payloads/s at 890 µs of CPU each; in the loop, see
        ``docs/benchmarks.md``).
        """
        if self.threads:
            return self.threads
        waits = self.store_url != "memory" and not self.store_url.startswith("lmdb:")
        if waits or self.auth == "grafana":
            return 4  # each call of the app may wait on a disk or a network
        return 0 if self.server == "granian" else 1


def options() -> tuple[dataclasses.Field[Any], ...]:
    """Return the settings table: the fields of :class:`Settings` in declaration order."""
    return dataclasses.fields(Settings)


def flag(field: dataclasses.Field[Any]) -> str:
    """Return the command-line flag of a setting."""
    return str(field.metadata["flag"] or "--" + field.name.replace("_", "-"))


def env_name(field: dataclasses.Field[Any]) -> str:
    """Return the environment variable of a setting (OpenTelemetry's own name where one exists)."""
    return str(field.metadata["env"] or field.name.upper())


def build_parser() -> argparse.ArgumentParser:
    """Return the CLI parser; each flag defaults to ``None`` meaning "not given"."""
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description=DESCRIPTION,
        epilog="Each flag can also be set by the environment variable named in brackets.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    for field in options():
        help_text = f"{field.metadata['help']} [{env_name(field)}; default {_shown(field)}]"
        if field.type in ("bool", bool):
            parser.add_argument(flag(field), action="store_const", const="true", help=help_text)
        else:
            parser.add_argument(flag(field), metavar=field.metadata["metavar"], help=help_text)
    return parser


def load_settings(argv: Sequence[str] = (), environ: Mapping[str, str] | None = None) -> Settings:
    """Build settings from flags, then environment variables, then defaults.

    Raises :class:`ConfigError` naming the setting, its source and the bad value.
    """
    args = build_parser().parse_args(list(argv))
    environ = environ or {}
    values: dict[str, Any] = {}
    for field in options():
        given = getattr(args, field.name)
        source = flag(field)
        if given is None and env_name(field) in environ:
            given, source = environ[env_name(field)], env_name(field)
        if given is None or (given == "" and field.default == ""):
            continue  # not given, or given empty where empty is the default
        try:
            values[field.name] = field.metadata["parse"](given)
        except ValueError as exc:
            raise ConfigError(f"{source} {exc}") from None
    return Settings(**values)


def to_environ(settings: Settings) -> dict[str, str]:
    """Return the environment variables that give ``settings`` back through :func:`load_settings`.

    How the command hands its settings, flags included, to worker processes that read them
    from their environment (granian's).
    """
    out: dict[str, str] = {}
    for field in options():
        value = getattr(settings, field.name)
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif field.metadata["parse"] in _DURATIONS:
            text = f"{value!r}s" if value else "0"
        else:
            text = str(value)
        out[env_name(field)] = text
    return out


def _shown(field: dataclasses.Field[Any]) -> str:
    default = field.default
    if field.metadata["parse"] in _DURATIONS:
        return _duration_text(cast(float, default))
    if isinstance(default, bool):
        return "false" if not default else "true"
    return repr(default) if isinstance(default, str) else str(default)


def _duration_text(seconds: float) -> str:
    if seconds == 0:
        return "0"
    if seconds % 86_400 == 0 and seconds > 86_400:
        return f"{int(seconds // 86_400)}d"
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def render_markdown() -> str:
    """Return ``docs/configuration.md``, generated from the settings table."""
    lines = [
        "# Configuration",
        "",
        "<!-- Generated from otel_panel_receiver/config.py by scripts/gen-config-docs.sh. -->",
        "",
        "Every setting is a command-line flag and an environment variable (no prefix, as in the",
        "upstream receiver). Precedence: flag, then environment variable, then default. Boolean",
        "variables accept `true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`. Durations use Go's",
        "syntax (`30s`, `5m`, `1h30m`); a bare number other than `0` is an error, as upstream.",
        "An invalid value stops the program with exit status 2 and a message naming it.",
        "",
        "| flag | environment | default | upstream | meaning |",
        "| --- | --- | --- | --- | --- |",
    ]
    for field in options():
        default = f"`{field.default}`" if field.default != "" else "(empty)"
        if not isinstance(field.default, str):
            default = f"`{_shown(field)}`"
        lines.append(
            f"| `{flag(field)}` | `{env_name(field)}` | {default} | "
            f"{'yes' if field.metadata['upstream'] else ''} | {field.metadata['help']} |"
        )
    return "\n".join(lines) + "\n"
