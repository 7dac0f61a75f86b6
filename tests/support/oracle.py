"""An independent oracle: the counters a receiver should expose for the bodies it was sent.

It reads only the bodies, as JSON objects (nested or flattened), and follows the upstream
receiver as ``docs/protocol.md`` describes it: its session cache ("Its session cache"), its
duration rule ("The upstream duration rule") and its label set L ("Its metrics"), with this
receiver's fixes ("Kept and fixed": no trailing colon on the default port; "Sessions and
durations": a session counted once, a derived key for ``uuid: ""``).

This module does **not** import ``otel_panel_receiver``, not even indirectly (only the standard
library), so that a misreading of the protocol shared by the package and its unit tests cannot
hide here; ``tests/test_support.py`` checks it in a fresh interpreter.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["LABELS", "Expected", "LabelSet", "expected_counters", "label_set"]

#: Label set L (docs/protocol.md, "Its metrics"), in the order the upstream code defines it.
LABELS: Final = (
    "grafana_host",
    "grafana_env",
    "dashboard_name",
    "dashboard_uid",
    "dashboard_timezone",
    "user_theme",
    "user_timezone",
    "user_locale",
    "user_role",
    "user_login",
    "user_name",
)

#: The values of :data:`LABELS`, in that order.
LabelSet = tuple[str, ...]


def _field(body: Mapping[str, Any], path: str, default: Any = "") -> Any:
    """Return a payload field by its dotted path, from a nested or a flattened body."""
    if path in body:
        return body[path]
    node: Any = body
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def label_set(body: Mapping[str, Any]) -> LabelSet:
    """Return label set L of one payload, ``grafana_host`` without upstream's trailing colon."""
    hostname, port = _field(body, "host.hostname"), _field(body, "host.port")
    if _field(body, "user.isGrafanaAdmin", False):
        role = "admin"
    elif _field(body, "user.hasEditPermissionInFolders", False):
        role = "editor"
    else:
        role = "user"
    return (
        f"{hostname}:{port}" if port else hostname,
        _field(body, "host.buildInfo.env"),
        _field(body, "dashboard.name"),
        _field(body, "dashboard.uid"),
        _field(body, "timeZone"),
        "light" if _field(body, "user.lightTheme", False) else "dark",
        _field(body, "user.timezone"),
        _field(body, "user.locale"),
        role,
        _field(body, "user.login"),
        _field(body, "user.name"),
    )


def _session_key(body: Mapping[str, Any]) -> tuple[Any, ...]:
    uuid = _field(body, "uuid")
    if uuid:
        return ("uuid", uuid)
    # Post Start off: the session is keyed by what the payload carries about its page view
    # (docs/protocol.md, "Sessions and durations").
    user = _field(body, "user.id", 0) or f"login:{_field(body, 'user.login')}"
    return (
        "view",
        _field(body, "host.hostname"),
        _field(body, "host.port"),
        _field(body, "dashboard.uid"),
        user,
        _field(body, "timeOrigin", 0),
    )


@dataclass(slots=True)
class _Cached:
    """What the upstream cache holds per session (docs/protocol.md, "Its session cache")."""

    start: int
    heartbeats: list[int]
    end: int | None
    latest: Mapping[str, Any]

    def duration(self, timeout: float) -> float | None:
        """Return upstream's duration for ``timeout``, or None for a start-only session.

        As docs/protocol.md, "The upstream duration rule" gives it (upstream's ``GetDuration``).
        """
        if self.heartbeats:
            interval = float(_field(self.latest, "options.heartbeatInterval", 0) or 0)
            cap = timeout if timeout > 0 else 1.25 * interval
            times = sorted(
                [self.start, *self.heartbeats, *([] if self.end is None else [self.end])]
            )
            return float(sum(min(b - a, cap) for a, b in itertools.pairwise(times)))
        if self.end is None:
            return None
        span = self.end - self.start
        return float(span if timeout <= 0 or span < timeout else timeout)


@dataclass(frozen=True, slots=True)
class Expected:
    """The counters a receiver should expose: per label set, sessions and duration seconds.

    A label set is in ``durations`` only when one of its sessions had a heartbeat or an end.
    """

    sessions: dict[LabelSet, int]
    durations: dict[LabelSet, float]


def expected_counters(bodies: Iterable[Mapping[str, Any]], *, timeout: float = 0.0) -> Expected:
    """Return the counters after ``bodies`` arrive in this order (``timeout`` 0 = auto).

    Follows upstream's cache (docs/protocol.md, "Its session cache"): a start only opens a
    session not yet seen; a heartbeat or end of an unseen session opens it at its own time;
    labels come from the latest stored payload. Each distinct session counts 1 (this receiver
    counts a session once).
    """
    cache: dict[tuple[Any, ...], _Cached] = {}
    for body in bodies:
        key, kind, t = _session_key(body), _field(body, "type"), int(_field(body, "time", 0))
        known = cache.get(key)
        if kind == "start":
            if known is None:
                cache[key] = _Cached(t, [], None, body)
        elif kind == "end":
            if known is None:
                cache[key] = _Cached(t, [], t, body)
            else:
                known.end, known.latest = t, body
        elif known is None:  # a heartbeat, or any other type (treated as one)
            cache[key] = _Cached(t, [t], None, body)
        else:  # upstream drops the end time here; the generated traffic never has it
            known.heartbeats.append(t)
            known.end, known.latest = None, body
    sessions: dict[LabelSet, int] = {}
    durations: dict[LabelSet, float] = {}
    for cached in cache.values():
        labels = label_set(cached.latest)
        sessions[labels] = sessions.get(labels, 0) + 1
        duration = cached.duration(timeout)
        if duration is not None:
            durations[labels] = durations.get(labels, 0.0) + duration
    return Expected(sessions, durations)
