"""Build a realistic, rotating mix of panel payloads, shared by wrk and the in-process benchmarks.

One *round* is a few hundred dashboard sessions (several Grafana hosts, dashboards, users and
variables) whose start, heartbeat and end payloads are interleaved in time order, as a receiver
sees them. The round repeats forever: round ``c`` gives every session a new uuid (its last group
is ``c`` in hex) and shifts every time by ``c * span`` seconds, so each round brings new sessions.

A round is stored as templates ``(offset, pre, mid, post)``: the body of request ``i`` is
``pre + "%012x" % c + mid + str(base + offset + c * span) + post`` with ``c = i // len(round)``.
``post.lua`` does exactly that in wrk; :meth:`Mix.body` does it in Python.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgspec

__all__ = ["BASE_TIME", "Mix", "build_mix", "labelled_pair"]

BASE_TIME: Final = 1_700_000_000
HEARTBEAT_INTERVAL: Final = 60
_CYCLE: Final = "@CYCLE@"
_TIME: Final = "@TIME@"


@dataclass(frozen=True, slots=True)
class _Host:
    hostname: str
    port: str
    env: str
    version: str


@dataclass(frozen=True, slots=True)
class _Dashboard:
    name: str
    uid: str
    time_zone: str
    variables: tuple[dict[str, Any], ...]


@dataclass(frozen=True, slots=True)
class _User:
    id: int
    login: str
    name: str
    light: bool
    timezone: str
    locale: str
    admin: bool
    editor: bool


@dataclass(frozen=True, slots=True)
class Template:
    """One payload of a round, split around its cycle number and its time."""

    offset: int
    pre: str
    mid: str
    post: str
    kind: str
    session: int  # the session's number in the round: its uuid, with the cycle, is new per round


@dataclass(frozen=True, slots=True)
class Mix:
    """A round of payload templates that repeats with fresh uuids and later times."""

    templates: tuple[Template, ...]
    span: int
    base: int = BASE_TIME

    def body(self, index: int) -> bytes:
        """Return the body of request ``index``, as ``post.lua`` builds it."""
        cycle, position = divmod(index, len(self.templates))
        t = self.templates[position]
        time = self.base + t.offset + cycle * self.span
        return f"{t.pre}{cycle:012x}{t.mid}{time}{t.post}".encode()

    def bodies(self, count: int, start: int = 0) -> list[bytes]:
        """Return the bodies of requests ``start`` to ``start + count - 1``."""
        return [self.body(i) for i in range(start, start + count)]

    def session_starts(self, first_cycle: int = 0) -> Iterator[bytes]:
        """Yield start payloads of ever new sessions, round after round from ``first_cycle``."""
        positions = [i for i, t in enumerate(self.templates) if t.kind == "start"]
        cycle = first_cycle
        while True:
            base = cycle * len(self.templates)
            for position in positions:
                yield self.body(base + position)
            cycle += 1

    def write_wrk_data(self, path: Path) -> None:
        """Write the round for ``post.lua``: a header line, then one template a line."""
        lines = [f"{self.base}\t{self.span}"]
        lines += [f"{t.offset}\t{t.pre}\t{t.mid}\t{t.post}" for t in self.templates]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def sessions_in(self, start: int, count: int) -> int:
        """Return how many different sessions requests ``start`` to ``start + count - 1`` hold."""
        size = len(self.templates)
        return len(
            {(i // size, self.templates[i % size].session) for i in range(start, start + count)}
        )

    def count(self, kind: str) -> int:
        """Return how many payloads of one type a round holds."""
        return sum(t.kind == kind for t in self.templates)


def build_mix(sessions: int = 400, *, seed: int = 20240501) -> Mix:
    """Return a round of ``sessions`` interleaved sessions, the same for the same seed."""
    rng = random.Random(seed)
    hosts, dashboards, users = _hosts(), _dashboards(rng), _users(rng)
    events: list[tuple[int, int, dict[str, Any]]] = []
    for number in range(sessions):
        host = hosts[0] if rng.random() < 0.8 else hosts[1]
        dashboard = rng.choice(dashboards)
        user = rng.choice(users)
        flatten = rng.random() < 0.05  # the Telegraf option, rare in practice
        uuid = f"{number:08x}-{rng.getrandbits(16):04x}-4{rng.getrandbits(12):03x}-8000-{_CYCLE}"
        begin = rng.randrange(600)
        heartbeats = rng.choice((0, 1, 2, 3, 3, 4, 5, 6))
        times = [begin + HEARTBEAT_INTERVAL * k for k in range(heartbeats + 1)]
        kinds = ["start"] + ["heartbeat"] * heartbeats
        if rng.random() < 0.7:  # the others close the tab: no end ("When the panel sends")
            times.append(times[-1] + rng.randrange(1, HEARTBEAT_INTERVAL))
            kinds.append("end")
        for kind, offset in zip(kinds, times, strict=True):
            payload = _payload(kind, uuid, host, dashboard, user, flatten=flatten)
            events.append((offset, number, payload))
    events.sort(key=lambda e: (e[0], e[1]))
    span = max(offset for offset, _, _ in events) + HEARTBEAT_INTERVAL
    return Mix(tuple(_template(offset, number, p) for offset, number, p in events), span)


def labelled_pair(k: int, *, time: int = BASE_TIME) -> tuple[bytes, bytes]:
    """Return a start and a heartbeat of one session whose metric label set is the ``k``-th."""
    host = _hosts()[k % 2]
    dashboard = _Dashboard(f"Dashboard {k}", f"uid{k:07d}", "browser", ())
    user = _User(
        k % 97 + 1, f"user{k % 97}", f"User {k % 97}", False, "browser", "en-US", False, True
    )
    uuid = f"{k:08x}-0000-4000-8000-{0:012x}"
    bodies = []
    for kind, at in (("start", time), ("heartbeat", time + HEARTBEAT_INTERVAL)):
        payload = _payload(kind, uuid, host, dashboard, user, flatten=False)
        payload["time"] = at
        bodies.append(msgspec.json.encode(payload))
    return bodies[0], bodies[1]


def _template(offset: int, session: int, payload: dict[str, Any]) -> Template:
    text = msgspec.json.encode(payload).decode()
    pre, _, rest = text.partition(_CYCLE)
    mid, _, post = rest.partition(f'"{_TIME}"')  # the JSON string marker becomes a number
    if "\t" in text or "\n" in text or not post:
        raise ValueError("a template must hold its markers in order and no tab or newline")
    return Template(offset, pre, mid, post, payload["type"], session)


def _payload(
    kind: str, uuid: str, host: _Host, dashboard: _Dashboard, user: _User, *, flatten: bool
) -> dict[str, Any]:
    payload = {
        "uuid": uuid,
        "type": kind,
        "hasFocus": kind != "end",
        "options": {
            "server": "https://analytics.example.com/write",
            "dashboard": "$__dashboard",
            "showDetails": False,
            "postStart": True,
            "postEnd": True,
            "postHeartbeat": True,
            "heartbeatInterval": HEARTBEAT_INTERVAL,
            "heartbeatAlways": False,
            "flatten": flatten,
        },
        "host": {
            "hostname": host.hostname,
            "port": host.port,
            "protocol": "https:",
            "buildInfo": {
                "version": host.version,
                "commit": "fdcf0a2a11",
                "env": host.env,
                "edition": "Open Source",
            },
            "licenseInfo": {"hasLicense": False, "expiry": 0, "stateInfo": ""},
        },
        "dashboard": {"name": dashboard.name, "uid": dashboard.uid},
        "user": {
            "isSignedIn": True,
            "id": user.id,
            "login": user.login,
            "email": f"{user.login}@example.com",
            "name": user.name,
            "lightTheme": user.light,
            "orgCount": 1,
            "orgId": 1,
            "orgName": "Main Org.",
            "orgRole": "Admin" if user.admin else "Editor" if user.editor else "Viewer",
            "isGrafanaAdmin": user.admin,
            "timezone": user.timezone,
            "locale": user.locale,
            "hasEditPermissionInFolders": user.editor,
        },
        "variables": list(dashboard.variables),
        "timeRange": {
            "from": BASE_TIME - 21_600,
            "to": BASE_TIME,
            "raw": {"from": "now-6h", "to": "now"},
        },
        "timeZone": dashboard.time_zone,
        "timeOrigin": BASE_TIME - 3,
        "time": _TIME,
    }
    return _flatten(payload) if flatten else payload


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten like the panel's ``flat.flatten()``: dotted keys, indices, empty containers kept."""
    out: dict[str, Any] = {}
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for key, value in items:
        path = f"{prefix}{key}"
        if isinstance(value, dict | list) and value:
            out.update(_flatten(value, path + "."))
        else:
            out[path] = value
    return out


def _hosts() -> tuple[_Host, ...]:
    return (
        _Host("grafana.example.com", "", "production", "10.4.2"),
        _Host("grafana-staging.example.com", "3000", "staging", "11.0.0"),
    )


_DASHBOARD_NAMES: Final = (
    "Service Overview",
    "Node Exporter Full",
    "Kubernetes / Compute Resources / Namespace",
    "Payments API",
    "Postgres",
    "Business KPIs",
    "On-call",
    "Traffic",
)


def _dashboards(rng: random.Random) -> list[_Dashboard]:
    dashboards = []
    for name in _DASHBOARD_NAMES:
        uid = "".join(
            rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz0123456789")
            for _ in range(9)
        )
        zone = rng.choice(("browser", "browser", "utc", "Europe/Berlin"))
        dashboards.append(_Dashboard(name, uid, zone, tuple(_variables(rng))))
    return dashboards


def _variables(rng: random.Random) -> list[dict[str, Any]]:
    pool = [
        ("datasource", "Data source", "datasource", ["Prometheus"]),
        ("job", "Job", "query", ["node"]),
        ("instance", "Instance", "query", ["web-1:9100", "web-2:9100", "db-1:9100"]),
        ("region", "", "custom", ["$__all"]),
        ("interval", "Interval", "interval", ["5m"]),
        ("namespace", "Namespace", "query", ["payments", "checkout"]),
    ]
    chosen = rng.sample(pool, rng.randrange(0, 5))
    return [
        {"name": n, "label": label, "type": t, "multi": len(v) > 1, "values": v}
        for n, label, t, v in chosen
    ]


def _users(rng: random.Random) -> list[_User]:
    users = []
    for k in range(40):
        users.append(
            _User(
                id=k + 2,
                login=f"user{k:02d}",
                name=f"User Number {k}",
                light=rng.random() < 0.3,
                timezone=rng.choice(("browser", "browser", "utc", "America/New_York")),
                locale=rng.choice(("en-US", "en-US", "de-DE", "fr-FR")),
                admin=k < 2,
                editor=k < 15,
            )
        )
    return users
