"""Turn the lenient wire shapes into the frozen model: ``null`` and missing become zero values.

Written by hand because msgspec cannot decode ``null`` into a field's default: every wire field is
``X | None`` (the panel sends nulls, and flattened or hand-made payloads leave groups out), while
the model's fields are plain values. The 1.x payload shape is mapped onto a session start here.
"""

from __future__ import annotations

import math
from typing import Any, Final

import msgspec
from msgspec import UNSET

from otel_panel_receiver.errors import PayloadError
from otel_panel_receiver.model import (
    HEARTBEAT,
    START,
    BuildInfo,
    Dashboard,
    EventKind,
    Host,
    LicenseInfo,
    PanelEvent,
    PanelOptions,
    TimeRange,
    Variable,
    Viewer,
)
from otel_panel_receiver.payload import _wire as wire

__all__ = [
    "assemble",
    "to_dashboard",
    "to_event",
    "to_host",
    "to_options",
    "to_user",
    "to_variables",
]

_KINDS: Final = {kind.value: kind for kind in EventKind}


def to_event(doc: wire.Payload, now: int) -> PanelEvent:
    """Return the event a decoded payload describes; ``now`` stands in for a missing ``time``."""
    if doc.type is None and doc.uuid is None and _is_set(doc.environment, doc.context):
        return _legacy_event(doc, now)
    return assemble(
        doc,
        now,
        options=to_options(doc.options if isinstance(doc.options, wire.Options) else None),
        host=to_host(doc.host if isinstance(doc.host, wire.Host) else None),
        dashboard=to_dashboard(
            doc.dashboard if isinstance(doc.dashboard, wire.Dashboard) else None
        ),
        user=to_user(doc.user if isinstance(doc.user, wire.User) else None),
        variables=to_variables(doc.variables),
    )


def assemble(
    doc: wire.Payload | wire.Envelope,
    now: int,
    *,
    options: PanelOptions,
    host: Host,
    dashboard: Dashboard,
    user: Viewer,
    variables: tuple[Variable, ...],
) -> PanelEvent:
    """Return the event of a v2 payload whose groups are already converted."""
    type_ = doc.type or ""
    return PanelEvent(
        uuid=doc.uuid or "",
        kind=_KINDS.get(type_, HEARTBEAT),
        type=type_,
        time=now if doc.time is None else doc.time,
        has_focus=bool(doc.has_focus),
        options=options,
        host=host,
        dashboard=dashboard,
        user=user,
        variables=variables,
        time_range=_time_range(
            doc.time_range if isinstance(doc.time_range, wire.TimeRange) else None
        ),
        time_zone=doc.time_zone or "",
        time_origin=doc.time_origin or 0,
    )


def _is_set(*groups: object) -> bool:
    return any(group is not UNSET and group is not None for group in groups)


def _legacy_event(doc: wire.Payload, now: int) -> PanelEvent:
    """Map a 1.x payload (one per dashboard view, no uuid or type) onto a ``start``."""
    env = doc.environment if isinstance(doc.environment, wire.Environment) else wire.Environment()
    endpoint = (env.host.endpoint if env.host else None) or ""
    hostname, sep, port = endpoint.rpartition(":")
    if not sep or not port.isdigit():
        hostname, port = endpoint, ""
    return PanelEvent(
        uuid="",
        kind=START,
        type="start",
        time=now if doc.time is None else doc.time,
        options=to_options(doc.options if isinstance(doc.options, wire.Options) else None),
        host=Host(hostname=hostname, port=port),
        dashboard=to_dashboard(env.dashboard),
        user=to_user(doc.context if isinstance(doc.context, wire.User) else None),
        variables=to_variables(doc.variables),
        time_range=_time_range(env.time_range),
        legacy=True,
    )


def to_options(w: wire.Options | None) -> PanelOptions:
    if w is None:
        return PanelOptions()
    return PanelOptions(
        server=w.server or "",
        dashboard=w.dashboard or "",
        show_details=bool(w.show_details),
        post_start=bool(w.post_start),
        post_end=bool(w.post_end),
        post_heartbeat=bool(w.post_heartbeat),
        heartbeat_interval=_interval(w.heartbeat_interval),
        heartbeat_always=bool(w.heartbeat_always),
        flatten=bool(w.flatten),
    )


def _interval(value: float | str | None) -> float:
    """Return the heartbeat interval in seconds; unusable values count as 0 (no auto cap)."""
    if isinstance(value, str):
        text = value
        try:
            value = float(text.strip())
        except ValueError:
            raise PayloadError(
                f"heartbeatInterval must be a number of seconds, got {text[:40]!r}",
                "options.heartbeatInterval",
            ) from None
    if value is None or not math.isfinite(value) or value < 0:
        return 0.0
    return float(value)


def to_host(w: wire.Host | None) -> Host:
    if w is None:
        return Host()
    b = w.build_info or wire.BuildInfo()
    lic = w.license_info or wire.LicenseInfo()
    return Host(
        hostname=w.hostname or "",
        port=w.port or "",
        protocol=w.protocol or "",
        build=BuildInfo(b.version or "", b.commit or "", b.env or "", b.edition or ""),
        license=LicenseInfo(bool(lic.has_license), lic.expiry or 0, lic.state_info or ""),
    )


def to_dashboard(w: wire.Dashboard | None) -> Dashboard:
    return Dashboard() if w is None else Dashboard(w.name or "", w.uid or "")


def to_user(w: wire.User | None) -> Viewer:
    if w is None:
        return Viewer()
    return Viewer(
        is_signed_in=bool(w.is_signed_in),
        id=w.id or 0,
        login=w.login or "",
        email=w.email or "",
        name=w.name or "",
        light_theme=bool(w.light_theme),
        org_count=w.org_count or 0,
        org_id=w.org_id or 0,
        org_name=w.org_name or "",
        org_role=w.org_role or "",
        is_grafana_admin=bool(w.is_grafana_admin),
        timezone=w.timezone or "",
        locale=w.locale or "",
        has_edit_permission_in_folders=bool(w.has_edit_permission_in_folders),
    )


def to_variables(ws: list[wire.Variable] | None) -> tuple[Variable, ...]:
    if not ws:
        return ()
    return tuple(
        [
            Variable(
                name=w.name or "",
                label=w.label or "",
                type=w.type or "",
                multi=bool(w.multi)
                if w.values is not None or w.multi is not None
                else isinstance(w.value, list),
                values=_values(w.values if w.values is not None else w.value),
            )
            for w in ws
        ]
    )


def _values(raw: str | list[wire.Scalar] | None) -> tuple[str, ...]:
    if raw is None:
        return ()
    if isinstance(raw, str):  # 1.x sent the bare current value
        return (raw,) if raw else ()
    for value in raw:  # strings, almost always: kept as they are
        if type(value) is not str:
            return tuple([v if type(v) is str else _scalar_text(v) for v in raw])
    return tuple(raw)  # type: ignore[arg-type]  # every item is a str


def _scalar_text(value: wire.Scalar) -> str:
    """Render a non-string variable value as its JSON text (``42``, ``true``, ``null``)."""
    return msgspec.json.encode(value).decode()


def _raw_text(raw: str | dict[str, Any] | None) -> str:
    if isinstance(raw, dict):  # flattened moment object: its Date serialised under "_d"
        iso = raw.get("_d")
        return iso if isinstance(iso, str) else ""
    return raw or ""


def _time_range(w: wire.TimeRange | None) -> TimeRange:
    if w is None:
        return TimeRange()
    raw = w.raw or wire.Raw()
    start, end = raw.from_, raw.to
    return TimeRange(
        w.from_ or 0,
        w.to or 0,
        start if type(start) is str else _raw_text(start),  # str: the usual case, no call
        end if type(end) is str else _raw_text(end),
    )
