"""Decode one request body into a :class:`PanelEvent`.

The fast path is a typed msgspec decode of the nested v2 schema. Payloads that lack the nested
groups (the panel's ``flatten`` option, hand-made minimal bodies, 1.x payloads) take a second,
generic path: decode to plain JSON values, undo ``flat.flatten()``, then convert with the same
types. Either way only :class:`PayloadError` leaves this module.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Final

import msgspec
from msgspec import UNSET, Meta, UnsetType

from otel_panel_receiver.errors import PayloadError
from otel_panel_receiver.model import (
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

__all__ = ["MAX_TIME", "decode"]

#: Latest accepted timestamp (9999-12-31T23:59:59Z): rejects milliseconds sent as seconds.
MAX_TIME: Final = 253_402_300_799

# Every timestamp is integer unix seconds; other integers must fit OTLP's int64.
UnixTime = Annotated[int, Meta(ge=0, le=MAX_TIME)]
Int64 = Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)]
Scalar = str | Int64 | float | bool | None

_KINDS: Final = {kind.value: kind for kind in EventKind}
_TYPE_NAMES: Final = {"int": "integer", "str": "string", "float": "number", "bool": "boolean"}
_TYPE_WORDS: Final = re.compile(r"\b(int|str|float|bool)\b")


class _Options(msgspec.Struct, rename="camel"):
    server: str | None = None
    dashboard: str | None = None
    show_details: bool | None = None
    post_start: bool | None = None
    post_end: bool | None = None
    post_heartbeat: bool | None = None
    heartbeat_interval: float | str | None = None
    heartbeat_always: bool | None = None
    flatten: bool | None = None


class _BuildInfo(msgspec.Struct):
    version: str | None = None
    commit: str | None = None
    env: str | None = None
    edition: str | None = None


class _LicenseInfo(msgspec.Struct, rename="camel"):
    has_license: bool | None = None
    expiry: Int64 | None = None
    state_info: str | None = None


class _Host(msgspec.Struct, rename="camel"):
    hostname: str | None = None
    port: str | None = None
    protocol: str | None = None
    build_info: _BuildInfo | None = None
    license_info: _LicenseInfo | None = None
    endpoint: str | None = None  # 1.x: "host:port"


class _Dashboard(msgspec.Struct):
    name: str | None = None
    uid: str | None = None


class _User(msgspec.Struct, rename="camel"):
    is_signed_in: bool | None = None
    id: Int64 | None = None
    login: str | None = None
    email: str | None = None
    name: str | None = None
    light_theme: bool | None = None
    org_count: Int64 | None = None
    org_id: Int64 | None = None
    org_name: str | None = None
    org_role: str | None = None
    is_grafana_admin: bool | None = None
    timezone: str | None = None
    locale: str | None = None
    has_edit_permission_in_folders: bool | None = None


class _Variable(msgspec.Struct):
    name: str | None = None
    label: str | None = None
    type: str | None = None
    multi: bool | None = None
    values: list[Scalar] | None = None
    value: str | list[Scalar] | None = None  # 1.x: the raw current value


class _Raw(msgspec.Struct):
    # An absolute range's raw value is a moment object: an ISO string once JSON.stringify'd,
    # or its internals (with the ISO string under "_d") once flattened.
    from_: str | dict[str, Any] | None = msgspec.field(default=None, name="from")
    to: str | dict[str, Any] | None = None


class _TimeRange(msgspec.Struct):
    from_: UnixTime | None = msgspec.field(default=None, name="from")
    to: UnixTime | None = None
    raw: _Raw | None = None


class _Environment(msgspec.Struct, rename="camel"):  # 1.x
    host: _Host | None = None
    time_range: _TimeRange | None = None
    dashboard: _Dashboard | None = None


class _Payload(msgspec.Struct, rename="camel"):
    uuid: str | None = None
    type: str | None = None
    has_focus: bool | None = None
    options: _Options | UnsetType | None = UNSET
    host: _Host | UnsetType | None = UNSET
    dashboard: _Dashboard | UnsetType | None = UNSET
    user: _User | UnsetType | None = UNSET
    variables: list[_Variable] | None = None
    time_range: _TimeRange | UnsetType | None = UNSET
    time_zone: str | None = None
    time_origin: UnixTime | None = None
    time: UnixTime | None = None
    environment: _Environment | UnsetType | None = UNSET  # 1.x
    context: _User | UnsetType | None = UNSET  # 1.x


_DECODER: Final = msgspec.json.Decoder(_Payload)
_GENERIC: Final = msgspec.json.Decoder()


def decode(body: bytes, *, now: int) -> PanelEvent:
    """Decode one payload; ``now`` stands in for a missing ``time``.

    Raises :class:`PayloadError` naming the problem and its JSON path.
    """
    if not body.strip():
        raise PayloadError("body is empty: expected one JSON object")
    wire = _load(body, _DECODER.decode)
    if _lacks_groups(wire):
        wire = _load(body, _convert_generic)
    return _to_event(wire, now)


def _lacks_groups(wire: _Payload) -> bool:
    return (
        wire.options is UNSET
        or wire.host is UNSET
        or wire.user is UNSET
        or wire.dashboard is UNSET
        or wire.time_range is UNSET
    )


def _load(body: bytes, how: Any) -> _Payload:
    try:
        result: _Payload = how(body)
    except msgspec.ValidationError as exc:
        raise _validation_error(exc) from None
    except msgspec.DecodeError as exc:
        raise PayloadError(f"body is not valid JSON: {_strip_path(str(exc))}") from None
    except RecursionError:
        raise PayloadError("body is nested too deeply") from None
    return result


def _convert_generic(body: bytes) -> _Payload:
    document = _GENERIC.decode(body)
    if not isinstance(document, dict):
        kind = "null" if document is None else type(document).__name__
        raise PayloadError(f"body must be a JSON object, got {_json_kind(kind)}")
    if any("." in key for key in document):
        document = unflatten(document)
    return msgspec.convert(document, _Payload)


def _json_kind(python_name: str) -> str:
    return {"list": "array", "str": "string", "int": "number", "float": "number"}.get(
        python_name, python_name
    )


def _validation_error(exc: msgspec.ValidationError) -> PayloadError:
    message = str(exc)
    path = ""
    marker = " - at `$"
    if marker in message:
        message, _, tail = message.partition(marker)
        path = tail.rstrip("`").lstrip(".")
    message = _TYPE_WORDS.sub(lambda m: _TYPE_NAMES[m.group(0)], message.replace("`", ""))
    message = message.replace(" | null", "")
    if message.startswith(("Expected integer >= 0", "Expected integer <= ")):
        message = f"{message}: a unix time in whole seconds"
    message = message[:1].lower() + message[1:]
    return PayloadError(message, path.replace(".from_", ".from"))


def _strip_path(message: str) -> str:
    return message.removeprefix("JSON is malformed: ")


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    """Undo ``flat.flatten()``: dotted keys become nested objects, numeric segments arrays.

    A dict whose keys are all numeric becomes a list in index order without filling gaps, so a
    hostile index costs nothing. A key that is both a value and a parent is a ``PayloadError``.
    """
    root: dict[str, Any] = {}
    for key, value in flat.items():
        parts = key.split(".")
        node = root
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None or child in ([], {}):
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise PayloadError("key is both a value and a parent", ".".join(parts[: depth + 1]))
            node = child
        leaf = parts[-1]
        if isinstance(node.get(leaf), dict) and node[leaf]:
            if value in ([], {}):
                continue  # flat keeps empty containers as values: nothing to merge
            raise PayloadError("key is both a value and a parent", key)
        node[leaf] = value
    result: dict[str, Any] = _listify(root)
    return result


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    items = {key: _listify(value) for key, value in node.items()}
    if items and all(key.isdigit() for key in items):
        return [items[key] for key in sorted(items, key=int)]
    return items


def _to_event(wire: _Payload, now: int) -> PanelEvent:
    if wire.type is None and wire.uuid is None and _is_set(wire.environment, wire.context):
        return _legacy_event(wire, now)
    type_ = wire.type or ""
    opts = _options(wire.options if isinstance(wire.options, _Options) else None)
    return PanelEvent(
        uuid=wire.uuid or "",
        kind=_KINDS.get(type_, EventKind.HEARTBEAT),
        type=type_,
        time=now if wire.time is None else wire.time,
        has_focus=bool(wire.has_focus),
        options=opts,
        host=_host(wire.host if isinstance(wire.host, _Host) else None),
        dashboard=_dashboard(wire.dashboard if isinstance(wire.dashboard, _Dashboard) else None),
        user=_user(wire.user if isinstance(wire.user, _User) else None),
        variables=_variables(wire.variables),
        time_range=_time_range(
            wire.time_range if isinstance(wire.time_range, _TimeRange) else None
        ),
        time_zone=wire.time_zone or "",
        time_origin=wire.time_origin or 0,
    )


def _is_set(*groups: object) -> bool:
    return any(group is not UNSET and group is not None for group in groups)


def _legacy_event(wire: _Payload, now: int) -> PanelEvent:
    """Map a 1.x payload (one per dashboard view, no uuid or type) onto a ``start``."""
    env = wire.environment if isinstance(wire.environment, _Environment) else _Environment()
    endpoint = (env.host.endpoint if env.host else None) or ""
    hostname, sep, port = endpoint.rpartition(":")
    if not sep or not port.isdigit():
        hostname, port = endpoint, ""
    return PanelEvent(
        uuid="",
        kind=EventKind.START,
        type="start",
        time=now if wire.time is None else wire.time,
        options=_options(wire.options if isinstance(wire.options, _Options) else None),
        host=Host(hostname=hostname, port=port),
        dashboard=_dashboard(env.dashboard),
        user=_user(wire.context if isinstance(wire.context, _User) else None),
        variables=_variables(wire.variables),
        time_range=_time_range(env.time_range),
        legacy=True,
    )


def _options(w: _Options | None) -> PanelOptions:
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


def _host(w: _Host | None) -> Host:
    if w is None:
        return Host()
    b = w.build_info or _BuildInfo()
    lic = w.license_info or _LicenseInfo()
    return Host(
        hostname=w.hostname or "",
        port=w.port or "",
        protocol=w.protocol or "",
        build=BuildInfo(b.version or "", b.commit or "", b.env or "", b.edition or ""),
        license=LicenseInfo(bool(lic.has_license), lic.expiry or 0, lic.state_info or ""),
    )


def _dashboard(w: _Dashboard | None) -> Dashboard:
    return Dashboard() if w is None else Dashboard(w.name or "", w.uid or "")


def _user(w: _User | None) -> Viewer:
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


def _variables(ws: list[_Variable] | None) -> tuple[Variable, ...]:
    if not ws:
        return ()
    return tuple(
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
    )


def _values(raw: str | list[Scalar] | None) -> tuple[str, ...]:
    if raw is None:
        return ()
    if isinstance(raw, str):  # 1.x sent the bare current value
        return (raw,) if raw else ()
    return tuple(v if isinstance(v, str) else _scalar_text(v) for v in raw)


def _scalar_text(value: Scalar) -> str:
    """Render a non-string variable value as its JSON text (``42``, ``true``, ``null``)."""
    return msgspec.json.encode(value).decode()


def _raw_text(raw: str | dict[str, Any] | None) -> str:
    if isinstance(raw, dict):  # flattened moment object: its Date serialised under "_d"
        iso = raw.get("_d")
        return iso if isinstance(iso, str) else ""
    return raw or ""


def _time_range(w: _TimeRange | None) -> TimeRange:
    if w is None:
        return TimeRange()
    raw = w.raw or _Raw()
    return TimeRange(w.from_ or 0, w.to or 0, _raw_text(raw.from_), _raw_text(raw.to))
