"""Turn an event into metric, log and span attributes; the privacy rules live here only.

Metric attributes are the label set L of the upstream receiver, with the same names, so
Prometheus rules and Grafana dashboards keep working. Log attributes are the fields of the
upstream "Received session data" line, in the same order (docs/protocol.md, "Its metrics" and
"Its log line").
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Final

from otel_panel_receiver.memo import Memo
from otel_panel_receiver.model import Dashboard, Host, PanelEvent, Variable, Viewer

__all__ = [
    "CUT_MARK",
    "LOG_FIELDS",
    "METRIC_LABELS",
    "REDACTED",
    "USER_LABELS",
    "LogAttributes",
    "LogFields",
    "SharedPart",
    "UniqueKeys",
    "cut",
    "log_attributes",
    "metric_attributes",
    "raw_payload",
    "span_attributes",
    "variable_keys",
]

#: Most variables put on a session span (the SDK keeps 128 attributes per span).
MAX_SPAN_VARIABLES: Final = 64

#: The user labels that ``--disable-user-metrics`` removes.
USER_LABELS: Final = ("user_login", "user_name")

#: Label set L, in the order the upstream receiver defines it.
METRIC_LABELS: Final = (
    "grafana_host",
    "grafana_env",
    "dashboard_name",
    "dashboard_uid",
    "dashboard_timezone",
    "user_theme",
    "user_timezone",
    "user_locale",
    "user_role",
    *USER_LABELS,
)

#: The fixed fields of the per-payload log line, in upstream's order (variables follow).
LOG_FIELDS: Final = (
    "uuid",
    "type",
    "has_focus",
    "host",
    "build",
    "license",
    "dashboard_name",
    "dashboard_uid",
    "dashboard_timezone",
    "user_id",
    "user_login",
    "user_email",
    "user_name",
    "user_theme",
    "user_role",
    "user_locale",
    "user_timezone",
    "time_from",
    "time_to",
    "time_from_raw",
    "time_to_raw",
    "timeorigin",
    "time",
)
_FIXED: Final = frozenset(LOG_FIELDS) | {"level", "msg"}


#: What ends a label value cut at the length limit.
CUT_MARK: Final = "…"


def metric_attributes(
    event: PanelEvent, *, users: bool = True, max_length: int = 0, pseudonym: str | None = None
) -> dict[str, str]:
    """Return label set L for the event; without ``users`` the user labels are left out.

    With a ``pseudonym``, both user labels hold it instead of the login and the name. A value
    longer than ``max_length`` characters (0: no limit) is cut to that length, its last
    character replaced by :data:`CUT_MARK`: a label value has no length bound of its own, and
    every character of it is repeated on every scrape.
    """
    host, user = event.host, event.user
    attrs = {
        "grafana_host": host.address,
        "grafana_env": host.build.env,
        "dashboard_name": event.dashboard.name,
        "dashboard_uid": event.dashboard.uid,
        "dashboard_timezone": event.time_zone,
        "user_theme": user.theme,
        "user_timezone": user.timezone,
        "user_locale": user.locale,
        "user_role": user.role,
    }
    if users:
        attrs["user_login"] = user.login if pseudonym is None else pseudonym
        attrs["user_name"] = user.name if pseudonym is None else pseudonym
    if max_length:
        for key, value in attrs.items():
            if len(value) > max_length:
                attrs[key] = cut(value, max_length)
    return attrs


def cut(value: str, max_length: int) -> str:
    """Return ``value`` cut to ``max_length`` characters, its last one ``…`` (0: no limit)."""
    if not max_length or len(value) <= max_length:
        return value
    return value[: max_length - 1] + CUT_MARK


#: What a redacted log field says instead of its value.
REDACTED: Final = "[redacted]"


def log_attributes(
    event: PanelEvent, *, variables: bool = True, redact: frozenset[str] = frozenset()
) -> LogFields:
    """Return the fields of the per-payload log line, variables last unless disabled.

    A variable whose name is empty or equal to a fixed field or an earlier variable is logged
    under ``var_<name>`` (then ``var_<name>_2``, ...): no line is dropped and no field is
    overwritten, unlike upstream. The fields named in ``redact`` say :data:`REDACTED`.
    (:class:`LogAttributes` makes the same fields, remembering the parts that repeat.)
    """
    return LogAttributes(variables=variables, redact=redact)(event)


class LogFields(Mapping[str, Any]):
    """The fields of one per-payload log line: a read-only mapping, and its ``parts``.

    ``parts`` are the dicts the fields are made of, in order, with distinct keys. A part that
    is a :class:`SharedPart` is shared by every line of its group and never changed, so a
    renderer may remember how it rendered it (``export/logformat.py``) and need not merge the
    parts at all; they are merged into one dict the first time the fields are read as a
    mapping (by the OTLP export, say).
    """

    __slots__ = ("_merged", "parts")

    def __init__(self, parts: tuple[dict[str, Any], ...]) -> None:
        self.parts = parts
        self._merged: dict[str, Any] | None = None

    def _fields(self) -> dict[str, Any]:
        merged = self._merged
        if merged is None:
            merged = {}
            for part in self.parts:
                merged.update(part)
            self._merged = merged
        return merged

    def __getitem__(self, key: str) -> Any:
        return self._fields()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields())

    def __len__(self) -> int:
        return len(self._fields())

    def __bool__(self) -> bool:  # without merging the parts
        return any(self.parts)

    def __contains__(self, key: object) -> bool:
        return key in self._fields()

    def items(self) -> Any:
        """Return the fields' items (a dict's view)."""
        return self._fields().items()

    def keys(self) -> Any:
        """Return the fields' keys (a dict's view)."""
        return self._fields().keys()

    def values(self) -> Any:
        """Return the fields' values (a dict's view)."""
        return self._fields().values()

    def __eq__(self, other: object) -> bool:
        return self._fields() == (other._fields() if isinstance(other, LogFields) else other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"LogFields({self._fields()!r})"


class SharedPart(dict[str, Any]):
    """The log fields of one host, dashboard, viewer or set of variables: made once, never
    changed, shared by the lines of every payload that carries the same group."""

    __slots__ = ()


class LogAttributes:
    """Make the fields of the per-payload log line (see :func:`log_attributes`).

    The fields of a host, a dashboard (with the payload's time zone), a viewer and a set of
    variables are made once per distinct group and remembered (:class:`Memo`), as
    :class:`SharedPart` s; only the session, time and event fields are made per payload.
    """

    def __init__(self, *, variables: bool = True, redact: frozenset[str] = frozenset()) -> None:
        self._variables = variables
        self._redact = redact
        self._hosts: Memo[Host, SharedPart] = Memo()
        self._dashboards: Memo[tuple[Dashboard, str], SharedPart] = Memo()
        self._viewers: Memo[Viewer, SharedPart] = Memo()
        self._variable_sets: Memo[tuple[Variable, ...], SharedPart] = Memo()

    def __call__(self, event: PanelEvent) -> LogFields:
        """Return the fields of ``event``'s line."""
        tr = event.time_range
        head = {"uuid": event.uuid, "type": event.type, "has_focus": event.has_focus}
        tail = {
            "time_from": tr.start,
            "time_to": tr.end,
            "time_from_raw": tr.raw_start,
            "time_to_raw": tr.raw_end,
            "timeorigin": event.time_origin,
            "time": event.time,
        }
        if self._redact:
            head, tail = self._redacted(head), self._redacted(tail)
        host = self._hosts.get(event.host)
        if host is None:
            host = self._hosts.put(event.host, self._shared(_host_fields(event.host)))
        dashboard_key = (event.dashboard, event.time_zone)
        dashboard = self._dashboards.get(dashboard_key)
        if dashboard is None:
            fields = {
                "dashboard_name": event.dashboard.name,
                "dashboard_uid": event.dashboard.uid,
                "dashboard_timezone": event.time_zone,
            }
            dashboard = self._dashboards.put(dashboard_key, self._shared(fields))
        user = self._viewers.get(event.user)
        if user is None:
            user = self._viewers.put(event.user, self._shared(_viewer_fields(event.user)))
        variables = event.variables
        if not (self._variables and variables):
            return LogFields((head, host, dashboard, user, tail))
        named = self._variable_sets.get(variables)
        if named is None:
            texts = map(_variable_text, variables)
            fields = dict(zip(variable_keys(variables), texts, strict=True))
            named = self._variable_sets.put(variables, self._shared(fields))
        return LogFields((head, host, dashboard, user, tail, named))

    def _shared(self, fields: dict[str, Any]) -> SharedPart:
        return SharedPart(self._redacted(fields))

    def _redacted(self, fields: dict[str, Any]) -> dict[str, Any]:
        for key in self._redact:
            if key in fields:
                fields[key] = REDACTED
        return fields


def _host_fields(host: Host) -> dict[str, Any]:
    build, lic = host.build, host.license
    return {
        "host": f"{host.protocol}//{host.address}",
        "build": (
            f"(commit={build.commit}, edition={build.edition}, env={build.env}, "
            f"version={build.version})"
        ),
        "license": (
            f"(state={lic.state_info}, expiry={lic.expiry}, "
            f"license={'true' if lic.has_license else 'false'})"
        ),
    }


def _viewer_fields(user: Viewer) -> dict[str, Any]:
    return {
        "user_id": user.id,
        "user_login": user.login,
        "user_email": user.email,
        "user_name": user.name,
        "user_theme": user.theme,
        "user_role": user.role,
        "user_locale": user.locale,
        "user_timezone": user.timezone,
    }


def variable_keys(variables: tuple[Variable, ...]) -> list[str]:
    """Return a distinct log key per variable, none equal to a fixed field."""
    names = [var.name for var in variables]
    if len(set(names)) == len(names) and all(name and name not in _FIXED for name in names):
        return names  # the usual case: each variable keeps its name
    keys = UniqueKeys(_FIXED)
    return [keys.add(var.name) for var in variables]


class UniqueKeys:
    """Hand out distinct keys: ``key``, or ``var_<key>`` (``var_<key>_2``, ...) when it is taken.

    The one rule by which no log field is lost or overwritten, whatever a variable is called.
    ``taken`` is the set of keys handed out (or reserved at the start). Each ``var_`` base
    remembers its next number, so n variables of one name cost O(n), not O(n²).
    """

    __slots__ = ("_next", "taken")

    def __init__(self, reserved: Iterable[str] = ()) -> None:
        self.taken = set(reserved)
        self._next: dict[str, int] = {}

    def add(self, key: str) -> str:
        """Return a key for ``key`` that is not taken (``key`` itself unless empty or taken)."""
        if key and key not in self.taken:
            self.taken.add(key)
            return key
        base = f"var_{key}"
        n = self._next.get(base, 1)
        result = base if n == 1 else f"{base}_{n}"
        while result in self.taken:
            n += 1
            result = f"{base}_{n}"
        self._next[base] = n + 1
        self.taken.add(result)
        return result


def _variable_text(var: Variable) -> str:
    return (
        f"(label={var.label}, type={var.type}, multi={'true' if var.multi else 'false'}, "
        f"count={len(var.values)}, values=[{','.join(var.values)}])"
    )


#: The ``user`` keys of the raw payload that each log field name stands for.
_RAW_USER_FIELDS: Final = {
    "user_id": "id", "user_login": "login", "user_email": "email", "user_name": "name",
}  # fmt: skip


def raw_payload(
    event: PanelEvent, *, variables: bool = True, redact: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """Return the event in the v2 wire shape, for ``--log-raw`` (the fields upstream logs).

    The user fields named in ``redact`` (by their log field names) say :data:`REDACTED`.
    """
    payload = _raw(event, variables=variables)
    for field in redact:
        if field in _RAW_USER_FIELDS:
            payload["user"][_RAW_USER_FIELDS[field]] = REDACTED
    return payload


def _raw(event: PanelEvent, *, variables: bool) -> dict[str, Any]:
    host, user, opts, tr = event.host, event.user, event.options, event.time_range
    return {
        "uuid": event.uuid,
        "type": event.type,
        "hasFocus": event.has_focus,
        "options": {
            "postStart": opts.post_start,
            "postEnd": opts.post_end,
            "postHeartbeat": opts.post_heartbeat,
            "heartbeatInterval": opts.heartbeat_interval,
            "heartbeatAlways": opts.heartbeat_always,
        },
        "host": {
            "hostname": host.hostname,
            "port": host.port,
            "protocol": host.protocol,
            "buildInfo": {
                "version": host.build.version,
                "commit": host.build.commit,
                "env": host.build.env,
                "edition": host.build.edition,
            },
            "licenseInfo": {
                "hasLicense": host.license.has_license,
                "expiry": host.license.expiry,
                "stateInfo": host.license.state_info,
            },
        },
        "dashboard": {"name": event.dashboard.name, "uid": event.dashboard.uid},
        "user": {
            "isSignedIn": user.is_signed_in,
            "id": user.id,
            "login": user.login,
            "email": user.email,
            "name": user.name,
            "lightTheme": user.light_theme,
            "orgCount": user.org_count,
            "orgId": user.org_id,
            "orgName": user.org_name,
            "orgRole": user.org_role,
            "isGrafanaAdmin": user.is_grafana_admin,
            "timezone": user.timezone,
            "locale": user.locale,
            "hasEditPermissionInFolders": user.has_edit_permission_in_folders,
        },
        "variables": [
            {
                "name": v.name,
                "label": v.label,
                "type": v.type,
                "multi": v.multi,
                "values": list(v.values),
            }
            for v in (event.variables if variables else ())
        ],
        "timeRange": {
            "from": tr.start,
            "to": tr.end,
            "raw": {"from": tr.raw_start, "to": tr.raw_end},
        },
        "timeZone": event.time_zone,
        "timeOrigin": event.time_origin,
        "time": event.time,
    }


def span_attributes(event: PanelEvent, *, users: bool = True) -> dict[str, Any]:
    """Return a session span's attributes; user attributes (``user.*``) only with ``users``.

    Names follow OpenTelemetry's conventions where one exists (``user.id``, ``user.name``,
    ``user.full_name``, ``user.email``, ``user.roles``), so a collector can drop them by prefix.
    """
    host, dash = event.host, event.dashboard
    attrs: dict[str, Any] = {
        "session.id": event.uuid,
        "grafana.host": host.address,
        "grafana.env": host.build.env,
        "grafana.version": host.build.version,
        "grafana.dashboard.name": dash.name,
        "grafana.dashboard.uid": dash.uid,
        "grafana.dashboard.timezone": event.time_zone,
        "grafana.heartbeat_interval": event.options.heartbeat_interval,
    }
    if users:
        user = event.user
        attrs["user.id"] = str(user.id)
        attrs["user.name"] = user.login
        attrs["user.full_name"] = user.name
        attrs["user.email"] = user.email
        attrs["user.roles"] = (user.role,)
    for var in event.variables[:MAX_SPAN_VARIABLES]:
        attrs[f"grafana.variable.{var.name}"] = var.values
    return attrs
