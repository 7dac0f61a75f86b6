"""The JSON shapes the panel sends, as lenient msgspec types: every field may be missing or null.

Only this package uses them: ``_convert.py`` turns them into the frozen model of ``model.py``.
Field names are the payload's own (``camelCase`` on the wire through ``rename``).
"""

from __future__ import annotations

from typing import Annotated, Any, Final

import msgspec
from msgspec import UNSET, Meta, UnsetType

__all__ = [
    "MAX_TIME",
    "BuildInfo",
    "Dashboard",
    "Envelope",
    "Environment",
    "Host",
    "LicenseInfo",
    "Options",
    "Payload",
    "Raw",
    "Scalar",
    "TimeRange",
    "User",
    "Variable",
]

#: Latest accepted timestamp (9999-12-31T23:59:59Z): rejects milliseconds sent as seconds.
MAX_TIME: Final = 253_402_300_799

# Every timestamp is integer unix seconds; other integers must fit OTLP's int64.
UnixTime = Annotated[int, Meta(ge=0, le=MAX_TIME)]
Int64 = Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)]
Scalar = str | Int64 | float | bool | None


class Options(msgspec.Struct, rename="camel"):
    server: str | None = None
    dashboard: str | None = None
    show_details: bool | None = None
    post_start: bool | None = None
    post_end: bool | None = None
    post_heartbeat: bool | None = None
    heartbeat_interval: float | str | None = None
    heartbeat_always: bool | None = None
    flatten: bool | None = None


class BuildInfo(msgspec.Struct):
    version: str | None = None
    commit: str | None = None
    env: str | None = None
    edition: str | None = None


class LicenseInfo(msgspec.Struct, rename="camel"):
    has_license: bool | None = None
    expiry: Int64 | None = None
    state_info: str | None = None


class Host(msgspec.Struct, rename="camel"):
    hostname: str | None = None
    port: str | None = None
    protocol: str | None = None
    build_info: BuildInfo | None = None
    license_info: LicenseInfo | None = None
    endpoint: str | None = None  # 1.x: "host:port"


class Dashboard(msgspec.Struct):
    name: str | None = None
    uid: str | None = None


class User(msgspec.Struct, rename="camel"):
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


class Variable(msgspec.Struct):
    name: str | None = None
    label: str | None = None
    type: str | None = None
    multi: bool | None = None
    values: list[Scalar] | None = None
    value: str | list[Scalar] | None = None  # 1.x: the raw current value


class Raw(msgspec.Struct):
    # An absolute range's raw value is a moment object: an ISO string once JSON.stringify'd,
    # or its internals (with the ISO string under "_d") once flattened.
    from_: str | dict[str, Any] | None = msgspec.field(default=None, name="from")
    to: str | dict[str, Any] | None = None


class TimeRange(msgspec.Struct):
    from_: UnixTime | None = msgspec.field(default=None, name="from")
    to: UnixTime | None = None
    raw: Raw | None = None


class Environment(msgspec.Struct, rename="camel"):  # 1.x
    host: Host | None = None
    time_range: TimeRange | None = None
    dashboard: Dashboard | None = None


class Payload(msgspec.Struct, rename="camel"):
    uuid: str | None = None
    type: str | None = None
    has_focus: bool | None = None
    options: Options | UnsetType | None = UNSET
    host: Host | UnsetType | None = UNSET
    dashboard: Dashboard | UnsetType | None = UNSET
    user: User | UnsetType | None = UNSET
    variables: list[Variable] | None = None
    time_range: TimeRange | UnsetType | None = UNSET
    time_zone: str | None = None
    time_origin: UnixTime | None = None
    time: UnixTime | None = None
    environment: Environment | UnsetType | None = UNSET  # 1.x
    context: User | UnsetType | None = UNSET  # 1.x


_NONE: Final = msgspec.Raw(b"")  # a group the payload does not have


class Envelope(msgspec.Struct, rename="camel"):
    """A payload with its repeating groups left as their JSON text, for the fast path.

    The groups a viewer's payloads repeat unchanged (options, host, dashboard, user,
    variables) stay ``msgspec.Raw``: the decoder converts each distinct text once. A missing
    group is an empty ``msgspec.Raw``. The 1.x groups are only noticed, for the general path.
    """

    uuid: str | None = None
    type: str | None = None
    has_focus: bool | None = None
    options: msgspec.Raw = _NONE
    host: msgspec.Raw = _NONE
    dashboard: msgspec.Raw = _NONE
    user: msgspec.Raw = _NONE
    variables: msgspec.Raw = _NONE
    time_range: TimeRange | UnsetType | None = UNSET
    time_zone: str | None = None
    time_origin: UnixTime | None = None
    time: UnixTime | None = None
    environment: msgspec.Raw = _NONE  # 1.x
    context: msgspec.Raw = _NONE  # 1.x
