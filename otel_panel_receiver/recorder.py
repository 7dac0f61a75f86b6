"""The recorder: turn each event and its session update into OTel metrics and log records.

Only the OpenTelemetry **API** is used here; which SDK, readers and exporters sit behind the
providers is decided by ``export/providers.py`` (or by an embedding application).
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

from opentelemetry._logs import LoggerProvider, SeverityNumber
from opentelemetry.metrics import MeterProvider

from otel_panel_receiver.attributes import LogAttributes, metric_attributes, raw_payload
from otel_panel_receiver.memo import Memo
from otel_panel_receiver.model import START, PanelEvent, SessionUpdate
from otel_panel_receiver.traces import SessionTracer
from otel_panel_receiver.version import INSTRUMENTATION_SCOPE, __version__

__all__ = [
    "BUILD_INFO",
    "COUNTERS",
    "DURATION",
    "EVENTS",
    "INVALID_TYPE_MESSAGE",
    "LOG_MESSAGE",
    "SESSIONS",
    "UP",
    "VIEWERS",
    "Count",
    "Recorder",
    "Tally",
]

#: Instrument names; the Prometheus exporter appends the unit and ``_total``.
SESSIONS: Final = "grafana_analytics_sessions"
VIEWERS: Final = "grafana_analytics_dashboard_viewers"
DURATION: Final = "grafana_analytics_sessions_duration"
EVENTS: Final = "grafana_analytics_events"
BUILD_INFO: Final = "grafana_analytics_build_info"
UP: Final = "grafana_analytics_up"
LOG_MESSAGE: Final = "Received session data"

#: The payload and event counters: instrument name -> (unit, description).
COUNTERS: Final = {
    SESSIONS: ("{session}", "Number of sessions."),
    DURATION: ("s", "Duration of sessions."),
    VIEWERS: (
        "{viewer}",
        "Distinct signed-in viewers of a dashboard per UTC day: counted when a viewer's first "
        "session of the day on it starts.",
    ),
    EVENTS: ("{event}", "Events received through the event API, by name."),
}
#: One increment of a payload counter: instrument name, attributes, value.
Count = tuple[str, dict[str, str], float]
#: Receives a payload's increments before it is answered (``SeriesReader.tally``).
Tally = Callable[[list[Count]], None]
INVALID_TYPE_MESSAGE: Final = "Session has invalid type, defaulted to heartbeat"
# Enum members as globals: each log record would otherwise pay a descriptor call (model.py).
_INFO: Final = SeverityNumber.INFO
_WARN: Final = SeverityNumber.WARN


class Recorder:
    """Create the instruments once and record what each event did.

    ``users=False`` leaves the user labels out of the metric attributes (the providers also
    install a View that drops them, for instruments an embedder records into directly).
    ``session_log``, ``variable_log`` and ``raw_log`` mirror the upstream flags;
    ``max_label_length`` cuts longer label values (0: no limit). With a ``tracer``, each event
    also goes to its session's span. ``tally``, when given, also receives each payload's
    increments of the payload counters (:data:`COUNTERS`) before ``record`` returns: how the
    service puts them in its table of series (the workers' shared one, before the payload is
    answered); the attributes dicts it is given are shared by every payload of their label
    set, to be read and never changed. ``sdk_counters=False`` (only with a ``tally``) records
    them nowhere else: what the service does when no SDK reader but the table's would read
    them, which spares each payload the SDK's per-measurement attribute handling.
    """

    def __init__(
        self,
        meter_provider: MeterProvider,
        logger_provider: LoggerProvider | None = None,
        *,
        users: bool = True,
        session_log: bool = True,
        variable_log: bool = True,
        raw_log: bool = False,
        max_label_length: int = 0,
        pseudonym: Callable[[PanelEvent], str] | None = None,
        redact: frozenset[str] = frozenset(),
        tracer: SessionTracer | None = None,
        tally: Tally | None = None,
        sdk_counters: bool = True,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        meter = meter_provider.get_meter(INSTRUMENTATION_SCOPE, __version__)
        self._instruments = {
            name: meter.create_counter(name, unit=unit, description=description)
            for name, (unit, description) in COUNTERS.items()
        }
        meter.create_gauge(
            BUILD_INFO,
            description=(
                "A metric with a constant '1' value labeled by version, revision, branch, "
                "and pythonversion from which grafana_analytics was built."
            ),
        ).set(
            1,
            {
                "version": __version__,
                "revision": "",
                "branch": "",
                "pythonversion": platform.python_version(),
            },
        )
        # Kept for alert rules written against the upstream receiver; always 1 here.
        meter.create_gauge(UP, description="Was the last scrape successful.").set(1)
        self._event_logger = (
            logger_provider.get_logger(INSTRUMENTATION_SCOPE, __version__)
            if logger_provider is not None
            else None
        )
        self._logger = self._event_logger if session_log else None
        self._users = users
        self._max_label_length = max_label_length
        # Label set L by the groups it is made of: one shared, read-only dict per label set.
        self._labels: Memo[tuple[Any, ...], dict[str, str]] = Memo()
        self._pseudonym = pseudonym
        self._redact = redact
        self._variables = variable_log
        self._log_attributes = LogAttributes(variables=variable_log, redact=redact)
        self._raw = raw_log
        self.tracer = tracer
        self._tally = tally
        self._sdk = sdk_counters or tally is None
        self._clock_ns = clock_ns

    def record(
        self, event: PanelEvent, update: SessionUpdate, key: int, *, first_visit: bool = False
    ) -> None:
        """Count a new session, add the duration an event brought, log it, trace it.

        ``key`` is the session's key (``sessions.session_key``): the tracer's trace id.
        ``first_visit``: the viewer's first session on this dashboard today.
        """
        pseudonym = self._pseudonym(event) if self._pseudonym is not None and self._users else None
        groups = (event.host, event.dashboard, event.time_zone, event.user, pseudonym)
        attrs = self._labels.get(groups)
        if attrs is None:
            attrs = self._labels.put(
                groups,
                metric_attributes(
                    event,
                    users=self._users,
                    max_length=self._max_label_length,
                    pseudonym=pseudonym,
                ),
            )
        counts: list[Count] = []
        if first_visit:
            counts.append((VIEWERS, _dashboard_attributes(attrs), 1))
        if update.started:
            counts.append((SESSIONS, attrs, 1))
        if event.kind is not START:
            # Heartbeats and ends make the duration series exist even at 0, as upstream.
            counts.append((DURATION, attrs, update.duration))
        self.count(counts)
        if self._logger is not None:
            self._log(event)
        if self.tracer is not None:
            self.tracer.observe(key, event, update)

    def count(self, counts: list[Count]) -> None:
        """Add increments of the counters of :data:`COUNTERS` (and hand them to the tally)."""
        if self._sdk:
            instruments = self._instruments
            for name, attributes, value in counts:
                instruments[name].add(value, attributes)
        if self._tally is not None:
            self._tally(counts)

    def emit_event(self, message: str, timestamp_ns: int, attributes: dict[str, Any]) -> None:
        """Emit one log record of the event API (even with the session log off)."""
        if self._event_logger is None:
            return
        self._event_logger.emit(
            timestamp=timestamp_ns,
            observed_timestamp=self._clock_ns(),
            severity_number=_INFO,
            severity_text="info",
            body=message,
            attributes=attributes,
        )

    def _log(self, event: PanelEvent) -> None:
        assert self._logger is not None
        now = self._clock_ns()
        if not event.type_is_known and not event.legacy:
            self._logger.emit(
                timestamp=now,
                observed_timestamp=now,
                severity_number=_WARN,
                severity_text="warn",
                body=INVALID_TYPE_MESSAGE,
                attributes={"uuid": event.uuid, "type": event.type},
            )
        attributes: Mapping[str, Any]
        if self._raw:
            data = raw_payload(event, variables=self._variables, redact=self._redact)
            attributes = {"data": data}
        else:
            attributes = self._log_attributes(event)
        self._logger.emit(
            timestamp=now,
            observed_timestamp=now,
            severity_number=_INFO,
            severity_text="info",
            body=LOG_MESSAGE,
            attributes=attributes,  # nested under "data" in raw mode: extended attributes
        )


def _dashboard_attributes(attrs: dict[str, str]) -> dict[str, str]:
    return {key: attrs[key] for key in ("grafana_host", "dashboard_uid", "dashboard_name")}
