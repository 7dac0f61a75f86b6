"""The event API: named events from a page or a backend, as OTel log records and a counter.

A batch is one JSON object::

    {"sessionId": "s-1", "userId": "42",
     "events": [{"name": "export_clicked", "ts": 1700000000000, "props": {"format": "csv"}}]}

Each valid event becomes one log record (``msg="Received event"``, its name, session, user,
time and properties) and adds 1 to ``grafana_analytics_events_total{event}``; an invalid one is
left out, counted and named in the answer (its index, what is wrong, its JSON path), and the
rest of its batch is recorded (202); a batch of invalid events only is a 400 naming the first.
``/v1/setUserId`` and ``/v1/setUserProps`` write one record each (``Session linked to user``,
``User properties set``): the receiver keeps no table of links, so what it holds stays
bounded and every worker and host answers alike; a log query joins the records by
``session_id``.

The user follows ``--user-labels`` as the panel's viewers do (clear, a daily keyed pseudonym,
or left out) and the fields named in ``--log-redact`` say ``[redacted]``. A viewer Grafana
vouched for (``--auth grafana``) is the user, whatever the batch claims. Every input has a
bound (events per batch, name, properties, value lengths), so a batch costs time linear in its
size and a flood of random names costs at most ``--metric-cardinality-limit`` series.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import msgspec
from opentelemetry.metrics import MeterProvider

from otel_panel_receiver.attributes import REDACTED, cut
from otel_panel_receiver.errors import PayloadError
from otel_panel_receiver.model import Viewer
from otel_panel_receiver.outcomes import Outcomes
from otel_panel_receiver.payload import load, validation_error
from otel_panel_receiver.privacy import viewer_key
from otel_panel_receiver.recorder import EVENTS, Recorder
from otel_panel_receiver.throttle import Throttle
from otel_panel_receiver.version import INSTRUMENTATION_SCOPE, __version__

__all__ = [
    "EVENT_MESSAGE",
    "LINK_MESSAGE",
    "MAX_EVENTS",
    "MAX_NAME",
    "MAX_PROPS",
    "MAX_VALUE",
    "PROPS_MESSAGE",
    "REQUESTS",
    "Events",
    "Intake",
    "InvalidItem",
    "ItemError",
    "Report",
    "decode_item",
]

log = logging.getLogger(__name__)

#: The request counter of the event API (by outcome, like the panel's payloads).
REQUESTS: Final = "grafana_analytics_event_requests"
#: The counter of events left out of their batch for being invalid.
REJECTED: Final = "grafana_analytics_events_rejected"
EVENT_MESSAGE: Final = "Received event"
LINK_MESSAGE: Final = "Session linked to user"
PROPS_MESSAGE: Final = "User properties set"

#: Most events in one batch.
MAX_EVENTS: Final = 500
#: Longest event name, session id and user id, in characters (a longer property name is cut).
MAX_NAME: Final = 128
#: Most properties of one event (or of one ``setUserProps``).
MAX_PROPS: Final = 64
#: Longest string property value kept; a longer one is cut and ends with ``…``.
MAX_VALUE: Final = 1024
#: Most item errors listed in one answer (all are counted).
MAX_LISTED: Final = 20
#: Latest event time accepted, in milliseconds (the year 9999).
_MAX_TS: Final = 253_402_300_799_999

Scalar = str | int | float | bool | None
T = TypeVar("T")


class _Batch(msgspec.Struct, forbid_unknown_fields=False):
    session_id: str | None = msgspec.field(default=None, name="sessionId")
    user_id: str | int | None = msgspec.field(default=None, name="userId")
    events: list[msgspec.Raw] | None = None
    props: dict[str, msgspec.Raw] | None = None


class _Item(msgspec.Struct, forbid_unknown_fields=False):
    name: str | None = None
    ts: float | None = None
    props: dict[str, msgspec.Raw] | None = None


_BATCH: Final = msgspec.json.Decoder(_Batch)
_ITEM: Final = msgspec.json.Decoder(_Item)
_SCALAR: Final = msgspec.json.Decoder(Scalar)


@dataclass(frozen=True, slots=True)
class ItemError:
    """Why one event of a batch was left out: its index, the problem, its JSON path."""

    index: int
    error: str
    path: str


@dataclass(slots=True)
class Report:
    """What became of a batch: items recorded, items left out, the first errors."""

    accepted: int = 0
    rejected: int = 0
    errors: list[ItemError] = field(default_factory=list)

    @property
    def refused(self) -> bool:
        """Whether nothing of the batch could be taken (every item was invalid)."""
        return self.rejected > 0 and not self.accepted

    def reject(self, index: int, exc: InvalidItem, array: str) -> None:
        """Count item ``index`` of ``array`` as left out; list it among the first errors."""
        self.rejected += 1
        if len(self.errors) < MAX_LISTED:
            self.errors.append(ItemError(index, exc.message, f"{array}[{index}]{exc.path}"))

    def answer(self) -> tuple[int, dict[str, Any]]:
        """Return the answer's status and JSON document.

        202 when something was recorded (or the batch was empty); 400 when every item was
        invalid, with the first one's error and path in the shape of every other 400.
        """
        doc: dict[str, Any] = {"accepted": self.accepted, "rejected": self.rejected}
        if self.errors:
            doc["errors"] = [
                {"index": e.index, "error": e.error, "path": e.path} for e in self.errors
            ]
        if self.refused:
            first = self.errors[0]
            return 400, {"error": first.error, "path": first.path, **doc}
        return 202, doc


class Events:
    """Decode event batches and user links; record them through the receiver's recorder.

    ``user_labels`` is ``--user-labels``: ``clear`` keeps the user id, ``pseudonymous`` puts
    ``pseudonym(user id)`` in its place (``privacy.Pseudonyms.label_of``), ``none`` leaves
    it out. ``redact``: the log fields written as ``[redacted]``; a property is named
    ``prop.<name>``. ``max_label_length`` cuts the event name on the counter's label.
    """

    def __init__(
        self,
        recorder: Recorder,
        meter_provider: MeterProvider,
        *,
        user_labels: str = "clear",
        pseudonym: Callable[[str], str] | None = None,
        redact: frozenset[str] = frozenset(),
        max_label_length: int = 128,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._recorder = recorder
        self._users = user_labels
        self._pseudonym = pseudonym
        self._redact = redact
        self._limit = max_label_length
        self._clock = clock
        self._intake = Intake(
            meter_provider,
            requests=REQUESTS,
            rejected=REJECTED,
            unit="{event}",
            what="Event",
            description="Requests to the event API, by outcome: accepted, or why refused.",
        )
        self.outcomes = self._intake.outcomes

    # -- the three requests -------------------------------------------------------------

    def batch(self, body: bytes, *, client: str = "", identity: Viewer | None = None) -> Report:
        """Record the valid events of one batch; raise ``PayloadError`` for a bad envelope.

        An invalid event is left out and named in the report, whether or not others are valid.
        """
        doc = self._envelope(body, client)
        events = self._intake.items(doc.events, "events", MAX_EVENTS, client)
        who = self._fields(doc, client, identity)
        now_ms = int(self._clock() * 1000)
        report = Report()
        names: Counter[str] = Counter()
        for index, raw in enumerate(events):
            try:
                name, ts, props = _item(raw, now_ms)
            except InvalidItem as exc:
                report.reject(index, exc, "events")
                continue
            report.accepted += 1
            names[cut(name, self._limit)] += 1
            fields = {"event": name, **who, "ts": ts, **props}
            self._recorder.emit_event(EVENT_MESSAGE, ts * 1_000_000, self._redacted(fields))
        if names:
            self._recorder.count([(EVENTS, {"event": n}, c) for n, c in names.items()])
        self._intake.done(report, client)
        return report

    def link(self, body: bytes, *, client: str = "", identity: Viewer | None = None) -> Report:
        """Record that a session belongs to a user (``/v1/setUserId``)."""
        doc = self._envelope(body, client)
        fields = self._fields(doc, client, identity)
        if "user_id" not in fields and self._users != "none":
            self._malformed(client, "userId is missing: expected the user's id", "userId")
        self._recorder.emit_event(LINK_MESSAGE, time.time_ns(), self._redacted(fields))
        self.outcomes.accepted()
        return Report(accepted=1)

    def user_props(
        self, body: bytes, *, client: str = "", identity: Viewer | None = None
    ) -> Report:
        """Record a user's properties (``/v1/setUserProps``)."""
        doc = self._envelope(body, client)
        fields = self._fields(doc, client, identity)
        try:
            fields.update(_props(doc.props))
        except InvalidItem as exc:
            self._malformed(client, exc.message, exc.path.lstrip("."))
        self._recorder.emit_event(PROPS_MESSAGE, time.time_ns(), self._redacted(fields))
        self.outcomes.accepted()
        return Report(accepted=1)

    # -- helpers ------------------------------------------------------------------------

    def _envelope(self, body: bytes, client: str) -> _Batch:
        return self._intake.envelope(body, _BATCH.decode, client)

    def _fields(self, doc: _Batch, client: str, identity: Viewer | None) -> dict[str, Any]:
        """Return a record's ``session_id`` and, as ``--user-labels`` allows, its ``user_id``."""
        session, user = self._who(doc, client, identity)
        return {"session_id": session} if user is None else {"session_id": session, "user_id": user}

    def _who(self, doc: _Batch, client: str, identity: Viewer | None) -> tuple[str, str | None]:
        """Return the batch's session id and the user as ``--user-labels`` allows to keep."""
        session = doc.session_id or ""
        if len(session) > MAX_NAME:
            self._malformed(client, f"sessionId is longer than {MAX_NAME} characters", "sessionId")
        if identity is not None:  # Grafana's word, not the batch's
            claimed = str(identity.id) if identity.id else identity.login
            viewer = viewer_key(identity)
        else:
            claimed = "" if doc.user_id is None else str(doc.user_id)
            viewer = f"id:{claimed}"  # a Grafana user id gets the panel's pseudonym
        if len(claimed) > MAX_NAME:
            self._malformed(client, f"userId is longer than {MAX_NAME} characters", "userId")
        if not claimed or self._users == "none":
            return session, None
        if self._users == "pseudonymous" and self._pseudonym is not None:
            return session, self._pseudonym(viewer)
        return session, claimed

    def _redacted(self, fields: dict[str, Any]) -> dict[str, Any]:
        for key in self._redact:
            if key in fields:
                fields[key] = REDACTED
        return fields

    def _malformed(self, client: str, message: str, path: str) -> None:
        self._intake.malformed(client, message, path)


class Intake:
    """What every batch endpoint does around its items: count, refuse, log.

    Requests are counted by outcome in ``requests`` (an :class:`Outcomes`), items left out of
    their batch in ``rejected``; a line is logged for them at most every 10 s. ``what`` names
    an item in the log (``Event``).
    """

    def __init__(
        self,
        meter_provider: MeterProvider,
        *,
        requests: str,
        rejected: str,
        unit: str,
        what: str,
        description: str,
    ) -> None:
        self.outcomes = Outcomes(
            meter_provider,
            name=requests,
            unit="{request}",
            description=description,
            what=f"{what} request",
        )
        meter = meter_provider.get_meter(INSTRUMENTATION_SCOPE, __version__)
        self._rejected = meter.create_counter(
            rejected, unit=unit, description=f"{what}s left out of their batch as invalid."
        )
        self._what = what
        self._throttle = Throttle()

    def envelope(self, body: bytes, decode: Callable[[bytes], T], client: str) -> T:
        """Return the batch decoded strictly; a 400 naming the fault, counted, if it is not."""
        try:
            return load(body, decode)
        except PayloadError as exc:  # the payload's own words: empty, not JSON, wrong types
            self.malformed(client, exc.message, exc.path)
        raise AssertionError("unreachable")  # pragma: no cover

    def items(self, items: list[T] | None, field: str, most: int, client: str) -> list[T]:
        """Return the batch's array ``field``: present, and at most ``most`` items long."""
        if items is None:
            self.malformed(client, f"{field} is missing: expected an array", field)
        assert items is not None
        if len(items) > most:
            message = f"{field} has {len(items)} items, more than the limit of {most}"
            self.malformed(client, message, field)
        return items

    def malformed(self, client: str, message: str, path: str) -> None:
        """Count and log a refused batch; raise the ``PayloadError`` its 400 names."""
        self.outcomes.rejected("malformed", status=400, client=client, detail=message)
        raise PayloadError(message, path)

    def done(self, report: Report, client: str) -> None:
        """Count the batch (accepted, or refused when none of its items was valid)."""
        if report.rejected:
            self._rejected.add(report.rejected)
            first = report.errors[0]
            self._log_rejected(client, report.rejected, f"{first.error} at {first.path}")
        if report.refused:
            self.outcomes.count("malformed")  # logged just above
        else:
            self.outcomes.accepted()

    def _log_rejected(self, client: str, count: int, first: str) -> None:
        unlogged = self._throttle.admit("item")
        if unlogged is None:
            return
        fields: dict[str, object] = {"client": client, "rejected": count, "first": first}
        if unlogged:
            fields["not_logged_since_last"] = unlogged
        log.warning(f"{self._what}s left out of their batch", extra={"fields": fields})


class InvalidItem(Exception):
    """One item of a batch cannot be taken: what is wrong, and where in the item (``.a.b``)."""

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.path = path


def decode_item(raw: msgspec.Raw, decode: Callable[[msgspec.Raw], T], what: str) -> T:
    """Decode one item of a batch; raise ``InvalidItem`` naming the fault and where."""
    try:
        return decode(raw)
    except msgspec.ValidationError as exc:
        error = validation_error(exc)
        raise InvalidItem(error.message, f".{error.path}" if error.path else "") from None
    except RecursionError:
        raise InvalidItem(f"{what} is nested too deeply") from None


def _item(raw: msgspec.Raw, now_ms: int) -> tuple[str, int, dict[str, Any]]:
    """Return one event's name, time (ms) and properties; raise ``InvalidItem`` naming the fault."""
    item = decode_item(raw, _ITEM.decode, "event")
    name = item.name
    if not name:
        raise InvalidItem("name is missing: expected the event's name", ".name")
    if len(name) > MAX_NAME:
        raise InvalidItem(f"name is longer than {MAX_NAME} characters", ".name")
    ts = now_ms
    if item.ts is not None:
        if not math.isfinite(item.ts) or not 0 <= item.ts <= _MAX_TS:
            raise InvalidItem(
                "ts must be a time in milliseconds since 1970 (as Date.now() gives)", ".ts"
            )
        ts = int(item.ts)
    return name, ts, _props(item.props)


def _props(raw: dict[str, msgspec.Raw] | None) -> dict[str, Any]:
    """Return properties as log fields ``prop.<name>``; null values are left out."""
    if not raw:
        return {}
    if len(raw) > MAX_PROPS:
        raise InvalidItem(
            f"props has {len(raw)} entries, more than the limit of {MAX_PROPS}", ".props"
        )
    fields: dict[str, Any] = {}
    for key, value in raw.items():
        path = f".props.{key}"
        try:
            scalar = _SCALAR.decode(value)
        except msgspec.ValidationError as exc:
            got = str(exc).rpartition("got ")[2].strip("`") or "something else"
            got = {"object": "an object", "array": "an array"}.get(got, got)
            raise InvalidItem(
                f"a property must be a string, number, boolean or null, got {got}", path
            ) from None
        except RecursionError:
            raise InvalidItem(
                "a property must be a string, number, boolean or null", path
            ) from None
        if scalar is None:
            continue
        name = f"prop.{cut(key, MAX_NAME)}"
        fields[name] = cut(scalar, MAX_VALUE) if isinstance(scalar, str) else scalar
    return fields
