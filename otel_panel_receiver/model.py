"""Frozen value types for one decoded panel payload and for what a session update produced.

The groups a viewer's payloads repeat (options, host, dashboard, viewer, variables) keep their
hash once computed (``cache_hash``): the decoder hands out one value per distinct group, and the
recorder looks up what it derived from them by that value.
"""

from __future__ import annotations

import enum
from typing import Final

import msgspec

__all__ = [
    "END",
    "HEARTBEAT",
    "START",
    "BuildInfo",
    "Dashboard",
    "EventKind",
    "Host",
    "LicenseInfo",
    "PanelEvent",
    "PanelOptions",
    "SessionUpdate",
    "TimeRange",
    "Variable",
    "Viewer",
]


class EventKind(enum.Enum):
    """What a payload reports about its session; unknown types are treated as heartbeats."""

    START = "start"
    HEARTBEAT = "heartbeat"
    END = "end"


#: The kinds as module constants, for the code each payload runs: on Python 3.11 a member looked
#: up on its class goes through a descriptor (about 900 instructions), a global costs a few dozen.
START: Final = EventKind.START
HEARTBEAT: Final = EventKind.HEARTBEAT
END: Final = EventKind.END


class PanelOptions(msgspec.Struct, frozen=True, cache_hash=True):
    """The panel options the receiver acts on or logs (``analyticsOptions``)."""

    server: str = ""
    dashboard: str = ""
    show_details: bool = False
    post_start: bool = False
    post_end: bool = False
    post_heartbeat: bool = False
    heartbeat_interval: float = 0.0
    heartbeat_always: bool = False
    flatten: bool = False


class BuildInfo(msgspec.Struct, frozen=True, cache_hash=True):
    """Grafana's ``config.buildInfo``."""

    version: str = ""
    commit: str = ""
    env: str = ""
    edition: str = ""


class LicenseInfo(msgspec.Struct, frozen=True, cache_hash=True):
    """Grafana's ``config.licenseInfo``."""

    has_license: bool = False
    expiry: int = 0
    state_info: str = ""


class Host(msgspec.Struct, frozen=True, cache_hash=True):
    """Where Grafana runs, as the browser saw it (``location`` and build facts)."""

    hostname: str = ""
    port: str = ""
    protocol: str = ""
    build: BuildInfo = BuildInfo()
    license: LicenseInfo = LicenseInfo()

    @property
    def address(self) -> str:
        """Return ``hostname[:port]``: no trailing colon on the scheme's default port."""
        return f"{self.hostname}:{self.port}" if self.port else self.hostname


class Dashboard(msgspec.Struct, frozen=True, cache_hash=True):
    """The dashboard the panel sits on."""

    name: str = ""
    uid: str = ""


class Viewer(msgspec.Struct, frozen=True, cache_hash=True):
    """The Grafana user looking at the dashboard (``config.bootData.user``)."""

    is_signed_in: bool = False
    id: int = 0
    login: str = ""
    email: str = ""
    name: str = ""
    light_theme: bool = False
    org_count: int = 0
    org_id: int = 0
    org_name: str = ""
    org_role: str = ""
    is_grafana_admin: bool = False
    timezone: str = ""
    locale: str = ""
    has_edit_permission_in_folders: bool = False

    @property
    def theme(self) -> str:
        """Return ``"light"`` or ``"dark"``, the way the upstream receiver labels it."""
        return "light" if self.light_theme else "dark"

    @property
    def role(self) -> str:
        """Return ``admin``, ``editor`` or ``user``, as upstream does (``org_role`` is unused)."""
        if self.is_grafana_admin:
            return "admin"
        if self.has_edit_permission_in_folders:
            return "editor"
        return "user"


class Variable(msgspec.Struct, frozen=True, cache_hash=True):
    """One dashboard template variable; non-string values are kept as their JSON text."""

    name: str = ""
    label: str = ""
    type: str = ""
    multi: bool = False
    values: tuple[str, ...] = ()


class TimeRange(msgspec.Struct, frozen=True):
    """The panel's resolved time range in unix seconds, with the raw expressions."""

    start: int = 0
    end: int = 0
    raw_start: str = ""
    raw_end: str = ""


class PanelEvent(msgspec.Struct, frozen=True):
    """One decoded payload: a start, heartbeat or end of a dashboard session.

    ``type`` is the type string as received (logged verbatim); ``kind`` is what the receiver
    does with it. ``time`` is the payload's own unix-second timestamp.
    """

    uuid: str
    kind: EventKind
    type: str
    time: int
    has_focus: bool = False
    options: PanelOptions = PanelOptions()
    host: Host = Host()
    dashboard: Dashboard = Dashboard()
    user: Viewer = Viewer()
    variables: tuple[Variable, ...] = ()
    time_range: TimeRange = TimeRange()
    time_zone: str = ""
    time_origin: int = 0
    legacy: bool = False

    @property
    def type_is_known(self) -> bool:
        """Return whether ``type`` named one of the three event kinds."""
        return self.type == self.kind.value


class SessionUpdate(msgspec.Struct, frozen=True):
    """What one event did to its session: the facts the recorder turns into telemetry.

    ``started`` is the session's first sight (count it once); ``duration`` the seconds to add;
    ``ended`` that an ``end`` closed it; ``start_time`` the session's first event time.
    """

    started: bool
    duration: float
    ended: bool
    start_time: int
