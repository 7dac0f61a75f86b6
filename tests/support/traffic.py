"""Deterministic analytics-panel traffic: the events of many panel sessions, in time order.

The generator plays panel sessions the way the ``macropower-analytics-panel`` plugin (v2.x)
sends them (docs/protocol.md, "The payload"): several Grafana hosts (default and non-default
ports), dashboards (names with quotes, backslashes and non-ASCII text, a sub-path uid, the home
dashboard), users (admin, editors, viewers, anonymous) and template variables. A session is a
``start``, a heartbeat every ``heartbeatInterval`` while the tab has focus (ticks without focus
are skipped, so some gaps exceed the interval, unless ``heartbeatAlways``), and often an
``end``; some panels have Post Start off (``uuid: ""``), some flatten their payloads
(``flat.flatten``), some use an absolute time range. Every body is a full v2 payload. A
session's labels never change; its variables may. Events are ordered by time, sessions
interleaved.

What a receiver should count for them is ``tests.support.oracle``'s job, which reads only the
bodies.
"""

from __future__ import annotations

import functools
import json
import random
import uuid as uuid_lib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from otel_panel_receiver.testing import sample_payload

__all__ = [
    "SITES",
    "USERS",
    "Event",
    "Site",
    "User",
    "flatten",
    "generate_traffic",
    "lanes",
    "play_session",
    "start_and_end",
]

# --------------------------------------------------------------------------------------------
# The world the traffic comes from
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Host:
    """A Grafana server as the browser sees it (``location`` and ``config.buildInfo``)."""

    hostname: str
    port: str
    protocol: str
    version: str
    commit: str
    env: str
    edition: str = "Open Source"
    has_license: bool = False
    expiry: int = 0

    def wire(self) -> dict[str, Any]:
        """Return the payload's ``host`` object."""
        return {
            "hostname": self.hostname,
            "port": self.port,
            "protocol": self.protocol,
            "buildInfo": {
                "version": self.version,
                "commit": self.commit,
                "env": self.env,
                "edition": self.edition,
            },
            "licenseInfo": {
                "hasLicense": self.has_license,
                "expiry": self.expiry,
                "stateInfo": "",
            },
        }


@dataclass(frozen=True, slots=True)
class VariableDef:
    """A dashboard variable and the current values a user may pick (docs/protocol.md, "Variables").

    A choice is what ``current.value`` holds: a string, a list (then ``multi`` is true) or
    ``""``/``None`` (sent as ``values: []``).
    """

    name: str
    label: str
    type: str
    choices: tuple[Any, ...]

    def wire(self, value: Any) -> dict[str, Any]:
        """Return the payload's entry for this variable holding ``value``."""
        if isinstance(value, list):
            values = list(value)
        elif isinstance(value, str) and value:
            values = [value]
        else:
            values = []
        return {
            "name": self.name,
            "label": self.label,
            "type": self.type,
            "multi": isinstance(value, list),
            "values": values,
        }


@dataclass(frozen=True, slots=True)
class Dashboard:
    """A dashboard: the interpolated name, the uid from the URL, its time zone, its variables."""

    name: str
    uid: str
    time_zone: str
    variables: tuple[VariableDef, ...] = ()


@dataclass(frozen=True, slots=True)
class User:
    """A Grafana user as ``config.bootData.user`` gives it."""

    id: int
    login: str
    email: str
    name: str
    light_theme: bool
    org_role: str
    grafana_admin: bool
    can_edit: bool
    timezone: str
    locale: str

    def wire(self) -> dict[str, Any]:
        """Return the payload's ``user`` object: the 14 keys, in the plugin's order."""
        return {
            "isSignedIn": self.id != 0,
            "id": self.id,
            "login": self.login,
            "email": self.email,
            "name": self.name,
            "lightTheme": self.light_theme,
            "orgCount": 1 if self.id else 0,
            "orgId": 1,
            "orgName": "Main Org.",
            "orgRole": self.org_role,
            "isGrafanaAdmin": self.grafana_admin,
            "timezone": self.timezone,
            "locale": self.locale,
            "hasEditPermissionInFolders": self.can_edit,
        }


def _options(
    *,
    start: bool = True,
    end: bool = True,
    heartbeat: bool = True,
    interval: float = 60,
    always: bool = False,
    flat: bool = False,
    legacy: bool = False,
) -> dict[str, Any]:
    """Return a panel's saved ``analyticsOptions`` (Grafana saves the keys alphabetically)."""
    options: dict[str, Any] = {
        "dashboard": "$__dashboard",
        "flatten": flat,
        "heartbeatAlways": always,
        "heartbeatInterval": interval,
        "postEnd": end,
        "postHeartbeat": heartbeat,
        "postStart": start,
        "server": "https://analytics.example.com/write",
        "showDetails": False,
    }
    if legacy:  # a panel first made with plugin 1.x keeps its old keys (docs/protocol.md, "Fields")
        options |= {"description": "", "hidden": True, "key": "", "noCors": True}
    return dict(sorted(options.items()))


@dataclass(frozen=True, slots=True)
class Site:
    """One analytics panel: a dashboard on a host, the panel's options and time range.

    ``time_range`` is a relative span in hours (``now-<h>h`` to ``now``) or an absolute
    ``(from, to)`` pair of unix seconds. ``weight`` is how often sessions land here.
    """

    host: Host
    dashboard: Dashboard
    options: Mapping[str, Any]
    time_range: int | tuple[int, int]
    weight: int


_PROD = Host("grafana.example.com", "", "https:", "8.1.5", "fdcf0a2a11", "production")
_DEV = Host("grafana.example.com", "3000", "http:", "8.1.5", "fdcf0a2a11", "development")
_LAB = Host("10.20.0.7", "3000", "http:", "7.5.11", "a1b2c3d4e5", "staging")
_ACME = Host(
    "monitoring.acme.io", "", "https:", "9.5.2", "cfcb3d9a4c", "production",
    "Enterprise", True, 1_767_225_600,
)  # fmt: skip
_OPS = Host("ops.acme.io", "8443", "https:", "10.4.1", "f2c1e0ab11", "", "Enterprise")

_ENV = VariableDef("env", "Environment", "custom", ("prod", "staging", "dev"))
_INSTANCE = VariableDef(
    "instance", "Instance", "query",
    (["web-1:9100"], ["web-1:9100", "web-2:9100"], ["web-2:9100", "db-1:9100"], "$__all"),
)  # fmt: skip
_REGION = VariableDef(
    "region", "", "custom", (["$__all"], ["eu-west-1"], ["us-east-1", "eu-west-1"])
)
_INTERVAL = VariableDef("interval", "Interval", "interval", ("1m", "5m", "1h"))
_SEARCH = VariableDef("search", "Search", "textbox", ("", "checkout", "ünïcode"))
_TEAM = VariableDef("team", "", "constant", ("platform",))
_FILTERS = VariableDef("Filters", "", "adhoc", (None,))
_DATASOURCE = VariableDef("datasource", "Data source", "datasource", ("Prometheus", "Thanos"))
# Numbers pass through as JSON numbers (docs/protocol.md, "Variables").
_SHARD = VariableDef("shard", "Shard", "query", ([1, 2], [3], ["1", "2"]))

_OVERVIEW = Dashboard("Service Overview", "ZQZXRMXMk", "browser", (_ENV, _INSTANCE))
_NODE = Dashboard(
    "Node Exporter Full", "rYdddlPWk", "utc", (_DATASOURCE, _INSTANCE, _INTERVAL, _FILTERS)
)
_PAYMENTS = Dashboard(
    "Überblick – Zahlungen",  # noqa: RUF001  # non-ASCII on purpose
    "p4yM3nts0",
    "Europe/Berlin",
    (_REGION, _SEARCH),
)
_LATENCY = Dashboard('Team "Blue" \\ Latency', "tb-latency", "browser", (_TEAM, _SHARD))
_ANALYTICS = Dashboard("Grafana Analytics", "IFquOMXGz", "utc")
_KIOSK = Dashboard("NOC wall", "d", "browser", (_ENV,))  # Grafana under /grafana/: uid "d"
_HOME = Dashboard("Home", "", "", ())  # the home dashboard at "/": no uid, no time zone

#: Every panel the traffic visits; the first sessions visit each once, in this order.
SITES: Final = (
    Site(_PROD, _OVERVIEW, _options(), 6, 30),
    Site(_PROD, _NODE, _options(interval=30, always=True), 24, 12),
    Site(_DEV, _OVERVIEW, _options(interval=10), 1, 10),  # same host name, port 3000
    Site(_DEV, _LATENCY, _options(interval=7.5), 3, 8),  # a decimal interval ("Decoding")
    Site(_LAB, _PAYMENTS, _options(heartbeat=False), 12, 10),  # start .. end, uncapped
    Site(_LAB, _KIOSK, _options(start=False, interval=30), 1, 10),  # uuid ""
    Site(_ACME, _PAYMENTS, _options(start=False, heartbeat=False), 6, 5),  # end only
    Site(_ACME, _ANALYTICS, _options(end=False, heartbeat=False), 168, 6),  # start only
    Site(_OPS, _NODE, _options(interval=15, flat=True), 1, 4),  # flattened
    Site(_OPS, _OVERVIEW, _options(flat=True), (1_618_790_400, 1_618_812_000), 2),
    Site(_PROD, _LATENCY, _options(interval=60, legacy=True), (1_618_700_000, 1_618_786_400), 4),
    Site(_ACME, _HOME, _options(interval=20, start=False, end=False), 1, 4),  # heartbeats only
)

#: Every user the traffic has; ``id`` 0 is an anonymous viewer.
USERS: Final = (
    User(
        7, "jdoe", "jdoe@example.com", "Jane Doe", False, "Editor", False, True, "browser", "en-US"
    ),
    User(1, "admin", "admin@localhost", "admin", False, "Admin", True, True, "utc", "en-US"),
    User(
        12,
        "mkowalski",
        "marta@example.com",
        "Marta Kowalski",
        True,
        "Viewer",
        False,
        False,
        "Europe/Warsaw",
        "pl-PL",
    ),
    User(
        23,
        "jose.mueller",
        "jm@example.com",
        "José Müller",
        False,
        "Editor",
        False,
        True,
        "",
        "de-DE",
    ),
    User(
        31,
        "yamada",
        "yamada@example.jp",
        "山田 太郎",
        True,
        "Viewer",
        False,
        False,
        "Asia/Tokyo",
        "ja-JP",
    ),
    User(44, "sre.oncall", "", "SRE On-Call", False, "None", False, False, "browser", "en-GB"),
    User(0, "", "", "", False, "Viewer", False, False, "", "en-US"),
)

# --------------------------------------------------------------------------------------------
# Wire encoding: JSON.stringify and flat.flatten
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Moment:
    """An absolute ``timeRange.raw`` value: a moment object in the browser.

    See docs/protocol.md, "Fields" (its ISO string) and "Flattened payloads" (its internals).
    """

    ms: int

    def iso(self) -> str:
        """Return what ``JSON.stringify`` makes of it: ISO-8601 UTC with milliseconds."""
        moment = datetime.fromtimestamp(self.ms // 1000, UTC)
        return f"{moment:%Y-%m-%dT%H:%M:%S}.{self.ms % 1000:03d}Z"

    def internals(self) -> list[tuple[str, Any]]:
        """Return what ``flat.flatten`` makes of it: the moment's internals, dotted."""
        return [
            (key, self.ms if key == "_i" else self.iso() if key == "_d" else value)
            for key, value in _moment_template()
        ]


@functools.cache
def _moment_template() -> tuple[tuple[str, Any], ...]:
    # The internals of a real moment object, as the plugin's flattened sample has them.
    sample = json.loads(sample_payload("v2-flattened-absolute-timerange.json"))
    prefix = "timeRange.raw.from."
    return tuple((k.removeprefix(prefix), v) for k, v in sample.items() if k.startswith(prefix))


def flatten(value: Mapping[str, Any]) -> dict[str, Any]:
    """Flatten like ``flat.flatten()`` 5.0.2 with default options ("Flattened payloads").

    Keys are joined with ``.``, arrays get numeric segments, empty arrays and objects stay as
    values, and a moment is walked into its internals.
    """
    out: dict[str, Any] = {}

    def step(obj: Mapping[str, Any] | Sequence[Any], prev: str) -> None:
        items = obj.items() if isinstance(obj, Mapping) else enumerate(obj)
        for key, item in items:
            path = f"{prev}.{key}" if prev else str(key)
            if isinstance(item, Moment):
                out.update((f"{path}.{k}", v) for k, v in item.internals())
            elif isinstance(item, (Mapping, list)) and item:
                step(item, path)
            else:
                out[path] = item

    step(value, "")
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, Moment):
        return value.iso()
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True, slots=True)
class Event:
    """One POST of the traffic: which session, its place in it, its time and its JSON body."""

    session: int
    seq: int
    time: int
    body: dict[str, Any] = field(repr=False)

    @property
    def type(self) -> str:
        """Return the payload type (``start``, ``heartbeat`` or ``end``)."""
        return str(self.body["type"])

    @property
    def flattened(self) -> bool:
        """Return whether the body was flattened."""
        return "options.flatten" in self.body

    def encode(self) -> bytes:
        """Return the body as ``JSON.stringify`` sends it: compact UTF-8, no trailing newline."""
        return json.dumps(self.body, separators=(",", ":"), ensure_ascii=False).encode()


# --------------------------------------------------------------------------------------------
# The generator
# --------------------------------------------------------------------------------------------

#: How many heartbeat intervals a panel stays mounted, and how likely each is.
_TICKS: Final = ((0, 3), (1, 3), (2, 3), (3, 2), (5, 2), (8, 2), (13, 1), (21, 1))
_BLUR_CHANCE: Final = 0.12  # a tick finds the tab without focus, for 1-4 ticks
_CLOSED_CHANCE: Final = 0.3  # the tab is closed: no end ("When the panel sends")
_VARIABLE_CHANGE: Final = 0.1


@dataclass(slots=True)
class _Session:
    index: int
    site: Site
    user: User
    uuid: str
    time_origin: int
    selection: list[Any]
    events: list[Event] = field(default_factory=list)

    def emit(self, kind: str, at_ms: int, focus: bool) -> None:
        time = at_ms // 1000
        site, dash = self.site, self.site.dashboard
        if isinstance(site.time_range, int):
            time_range: dict[str, Any] = {
                "from": time - site.time_range * 3600,
                "to": time,
                "raw": {"from": f"now-{site.time_range}h", "to": "now"},
            }
        else:
            start, end = site.time_range
            time_range = {
                "from": start,
                "to": end,
                "raw": {"from": Moment(start * 1000), "to": Moment(end * 1000)},
            }
        body = {
            "uuid": self.uuid,
            "type": kind,
            "hasFocus": focus,
            "options": dict(site.options),
            "host": site.host.wire(),
            "dashboard": {"name": dash.name, "uid": dash.uid},
            "user": self.user.wire(),
            "variables": [v.wire(s) for v, s in zip(dash.variables, self.selection, strict=True)],
            "timeRange": time_range,
            "timeZone": dash.time_zone,
            "timeOrigin": self.time_origin,
            "time": time,
        }
        wire = flatten(body) if site.options["flatten"] else _plain(body)
        self.events.append(Event(self.index, len(self.events), time, wire))


def play_session(
    rng: random.Random,
    index: int,
    site: Site,
    user: User,
    t0: int,
    *,
    used_origins: set[int] | None = None,
) -> list[Event]:
    """Return the events one panel mount sends, in time order; never an empty list.

    ``used_origins`` holds the ``timeOrigin`` values taken by ``uuid: ""`` sessions so far, so
    that each such session is distinct under the derived key (docs/protocol.md, "Sessions and
    durations").
    """
    opts = site.options
    interval = float(opts["heartbeatInterval"])
    origin = t0 - rng.randrange(900)  # the page loaded a while before this panel mounted
    if not opts["postStart"] and used_origins is not None:
        while origin in used_origins:
            origin -= 1
        used_origins.add(origin)
    session = _Session(
        index,
        site,
        user,
        str(uuid_lib.UUID(int=rng.getrandbits(128), version=4)) if opts["postStart"] else "",
        origin,
        [rng.choice(v.choices) for v in site.dashboard.variables],
    )
    t0_ms = t0 * 1000 + rng.randrange(1000)
    if opts["postStart"]:
        session.emit("start", t0_ms, rng.random() < 0.95)
    if opts["postHeartbeat"]:
        ticks = rng.choices([t for t, _ in _TICKS], weights=[w for _, w in _TICKS])[0]
        _heartbeats(rng, session, t0_ms, interval, ticks)
        end_ms = t0_ms + int((ticks + rng.uniform(0.05, 0.95)) * interval * 1000) + 50
    else:
        end_ms = t0_ms + rng.randrange(2_000, 2 * 3600_000)
    if opts["postEnd"] and (rng.random() >= _CLOSED_CHANCE or not session.events):
        session.emit("end", end_ms, rng.random() < 0.9)
    if not session.events:  # a heartbeat-only panel whose tab never had focus: one tick more
        session.emit("heartbeat", end_ms, True)
    return session.events


def start_and_end(site: Site, user: User, t0: int, seconds: int, *, seed: int = 0) -> list[Event]:
    """Return one session of ``site`` that sends only a start and, ``seconds`` later, an end."""
    rng = random.Random(seed)
    session = _Session(
        0,
        site,
        user,
        str(uuid_lib.UUID(int=rng.getrandbits(128), version=4)),
        t0 - 3,
        [v.choices[0] for v in site.dashboard.variables],
    )
    session.emit("start", t0 * 1000 + 250, True)
    session.emit("end", (t0 + seconds) * 1000 + 250, True)
    return session.events


def _heartbeats(
    rng: random.Random, session: _Session, t0_ms: int, interval: float, ticks: int
) -> None:
    always = session.site.options["heartbeatAlways"]
    blurred = 0
    for k in range(1, ticks + 1):
        at_ms = t0_ms + int(k * interval * 1000) + rng.randrange(40)  # setInterval drift
        if blurred == 0 and rng.random() < _BLUR_CHANCE:
            blurred = rng.randint(1, 4)
        focus = blurred == 0
        blurred = max(0, blurred - 1)
        if focus and session.selection and rng.random() < _VARIABLE_CHANGE:
            i = rng.randrange(len(session.selection))
            session.selection[i] = rng.choice(session.site.dashboard.variables[i].choices)
        if focus or always:  # without heartbeatAlways a tick without focus sends nothing
            session.emit("heartbeat", at_ms, focus)


def generate_traffic(
    sessions: int = 300, *, seed: int = 20210419, start: int = 1_618_790_400, span: int = 3 * 3600
) -> tuple[Event, ...]:
    """Return the events of ``sessions`` panel sessions, ordered by time, sessions interleaved.

    The same arguments always give the same events. Sessions start within ``span`` seconds of
    ``start``; the first ``len(SITES)`` sessions visit each site once.
    """
    rng = random.Random(seed)
    used_origins: set[int] = set()
    weights = [s.weight for s in SITES]
    events: list[Event] = []
    for index in range(sessions):
        site = SITES[index] if index < len(SITES) else rng.choices(SITES, weights=weights)[0]
        user = rng.choice(USERS)
        t0 = start + rng.randrange(span)
        events += play_session(rng, index, site, user, t0, used_origins=used_origins)
    events.sort(key=lambda e: (e.time, e.session, e.seq))
    return tuple(events)


def lanes(events: Iterable[Event], n: int) -> list[list[Event]]:
    """Split events into ``n`` lanes by session, each lane keeping the events' order."""
    out: list[list[Event]] = [[] for _ in range(n)]
    for event in events:
        out[event.session % n].append(event)
    return out
