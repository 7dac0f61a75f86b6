"""Who may write and read: decisions over the facts of a request, with no HTTP here.

* ``--auth token``: a secret of ``--auth-token-file`` (one a line, so two can overlap while one
  is rotated out; the file is read again when it changes), as ``Authorization: Bearer`` or in
  the endpoint's query string (``/write?token=...``: the only thing the panel can send).
* ``--auth grafana``: the browser's Grafana session cookie, checked with Grafana itself
  (``grafana.py``); the verdict is kept ``--auth-cache-ttl`` under a hash of the cookie, never
  the cookie. The viewer's identity then comes from Grafana, not from the payload.
* ``--allowed-origins``: a browser's ``Origin`` must be one of them.
* ``--metrics-token-file``: ``GET /metrics`` needs one of its tokens.
* ``--rate-limit``: payloads per client address (the ``limits`` library), where the address is
  the peer's, or the one a ``--trusted-proxies`` proxy forwarded.

Every refusal says why, in words a person can act on; the web layer answers and counts it.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from otel_panel_receiver.errors import ConfigError
from otel_panel_receiver.model import Viewer
from otel_panel_receiver.outcomes import Outcome

__all__ = [
    "Access",
    "Allowed",
    "GrafanaUnavailable",
    "Refused",
    "RequestFacts",
    "SessionCheck",
    "TokenFile",
    "client_address",
    "parse_networks",
]

_CACHE_MAX: Final = 10_000
_RELOAD_EVERY: Final = 1.0


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What a decision reads of a request."""

    method: str
    origin: str  # the Origin header, "" when none
    authorization: str  # the Authorization header, "" when none
    query_token: str  # the ``token`` query parameter, "" when none
    cookie: str  # the Grafana session cookie's value, "" when none
    client: str  # the client's address (see :func:`client_address`)


@dataclass(frozen=True, slots=True)
class Allowed:
    """The request may go on; ``identity`` is the viewer Grafana vouched for, if any."""

    identity: Viewer | None = None


@dataclass(frozen=True, slots=True)
class Refused:
    """The request is refused: its outcome, HTTP status, message and extra headers."""

    outcome: Outcome
    status: int
    message: str
    headers: tuple[tuple[str, str], ...] = ()


class GrafanaUnavailable(Exception):
    """Grafana could not be asked (down, slow, answering 5xx): the check fails closed."""


class SessionCheck(Protocol):
    """Who a Grafana session cookie belongs to (``grafana.GrafanaUsers``, or a fake in tests)."""

    def viewer(self, cookie: str) -> Viewer | None:
        """Return the cookie's viewer, ``None`` for no valid session; raise GrafanaUnavailable."""
        ...


class TokenFile:
    """The tokens of a file, one a line (blank lines and ``#`` comments ignored), kept fresh.

    The file is read again when its modification time changes (looked at most once a
    second), so a token can be added and another removed without a restart.
    """

    def __init__(self, path: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._clock = clock
        self._lock = threading.Lock()
        self._mtime = -1.0
        self._next_look = 0.0
        self._tokens: tuple[bytes, ...] = ()
        self._reload()
        if not self._tokens:
            raise ConfigError(f"the token file {path!r} holds no token (one a line)")

    def _reload(self) -> None:
        try:
            mtime = os.stat(self.path).st_mtime
            if mtime == self._mtime:
                return
            with open(self.path, encoding="utf-8") as file:
                lines = [line.strip() for line in file]
        except OSError as exc:
            if self._mtime < 0:  # at start: a setting's fault
                raise ConfigError(f"cannot read the token file {self.path!r}: {exc}") from None
            return  # later: keep the tokens already read
        self._tokens = tuple(t.encode() for t in lines if t and not t.startswith("#"))
        self._mtime = mtime

    def accepts(self, token: str) -> bool:
        """Return whether ``token`` is one of the file's, comparing in constant time."""
        now = self._clock()
        with self._lock:
            if now >= self._next_look:
                self._next_look = now + _RELOAD_EVERY
                self._reload()
            tokens = self._tokens
        given = token.encode()
        # Every token compared, whatever matched: the time says nothing about which one.
        return bool(token) and sum(hmac.compare_digest(given, t) for t in tokens) > 0


def parse_networks(text: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """Return the networks of a comma list of addresses or CIDR blocks; raise ConfigError."""
    out = []
    for part in (p.strip() for p in text.split(",")):
        if part:
            try:
                out.append(ipaddress.ip_network(part, strict=False))
            except ValueError as exc:
                raise ConfigError(f"--trusted-proxies: {exc}") from None
    return tuple(out)


def client_address(
    peer: str,
    forwarded_for: str,
    trusted: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network],
) -> str:
    """Return the client's address: the peer's, unless the peer is a trusted proxy.

    Through trusted proxies, the rightmost address of ``X-Forwarded-For`` that is not itself
    a trusted proxy (what a client writes there itself is further left, and never believed).
    """
    if not trusted or not _trusted(peer, trusted):
        return peer
    for hop in reversed([h.strip() for h in forwarded_for.split(",") if h.strip()]):
        if not _trusted(hop, trusted):
            return hop
    return peer


def _trusted(
    address: str, trusted: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]
) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


class _Verdicts:
    """Recent answers of Grafana, under a hash of the cookie, for ``ttl`` seconds."""

    def __init__(self, ttl: float, clock: Callable[[], float]) -> None:
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[bytes, tuple[float, Viewer | None]] = OrderedDict()

    def get(self, key: bytes) -> tuple[bool, Viewer | None]:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[0] <= self._clock():
                return False, None
            return True, entry[1]

    def put(self, key: bytes, viewer: Viewer | None) -> None:
        with self._lock:
            self._entries.pop(key, None)
            self._entries[key] = (self._clock() + self._ttl, viewer)
            while len(self._entries) > _CACHE_MAX:
                self._entries.popitem(last=False)


class Access:
    """Decide whether a request may write or read, from its facts.

    ``mode`` is ``none``, ``token`` or ``grafana``. ``allowed_origins`` empty means no
    ``Origin`` check (``*`` allows any); a request without ``Origin`` (not from a browser)
    passes that check. ``limit`` counts a client's payloads (``None``: no rate limit).
    """

    def __init__(
        self,
        *,
        mode: str = "none",
        tokens: TokenFile | None = None,
        sessions: SessionCheck | None = None,
        cache_ttl: float = 30.0,
        allowed_origins: Sequence[str] = (),
        metrics_tokens: TokenFile | None = None,
        limit: Callable[[str], bool] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if mode == "token" and tokens is None:
            raise ConfigError("--auth token needs --auth-token-file")
        if mode == "grafana" and sessions is None:
            raise ConfigError("--auth grafana needs --grafana-url")
        self.mode = mode
        self._tokens = tokens
        self._sessions = sessions
        self._verdicts = _Verdicts(cache_ttl, clock)
        self._origins = frozenset(o.rstrip("/") for o in allowed_origins)
        self._metrics_tokens = metrics_tokens
        self._limit = limit

    def origin_allowed(self, origin: str) -> bool:
        """Return whether a browser from ``origin`` may post (and gets CORS answers)."""
        if not self._origins or not origin:
            return True
        return "*" in self._origins or origin.rstrip("/") in self._origins

    def grants_cors(self, origin: str) -> bool:
        """Return whether ``origin`` gets CORS headers: origins are checked and it is allowed."""
        return self.checks_origins and bool(origin) and self.origin_allowed(origin)

    @property
    def open(self) -> bool:
        """Return whether anyone may post from anywhere: no auth, no origin check, no limit."""
        return self.mode == "none" and not self._origins and self._limit is None

    @property
    def checks_origins(self) -> bool:
        """Return whether origins are checked (and allowed ones get CORS headers)."""
        return bool(self._origins)

    def write(self, facts: RequestFacts) -> Allowed | Refused:
        """Decide on a ``POST`` of a payload."""
        if not self.origin_allowed(facts.origin):
            return Refused(
                "forbidden_origin", 403,
                f"origin {facts.origin!r} is not allowed to post here (--allowed-origins)",
            )  # fmt: skip
        if self._limit is not None and not self._limit(facts.client):
            return Refused(
                "rate_limited", 429, "too many payloads from this address; slow down",
                (("Retry-After", "60"),),
            )  # fmt: skip
        if self.mode == "token":
            return self._token(facts)
        if self.mode == "grafana":
            return self._grafana(facts)
        return Allowed()

    def metrics(self, facts: RequestFacts) -> Allowed | Refused:
        """Decide on a ``GET /metrics``."""
        tokens = self._metrics_tokens
        if tokens is None or tokens.accepts(_bearer(facts.authorization)):
            return Allowed()
        return Refused(
            "unauthorized", 401, "/metrics needs a token: Authorization: Bearer <token>",
            (("WWW-Authenticate", 'Bearer realm="metrics"'),),
        )  # fmt: skip

    def _token(self, facts: RequestFacts) -> Allowed | Refused:
        assert self._tokens is not None
        given = _bearer(facts.authorization) or facts.query_token
        if self._tokens.accepts(given):
            return Allowed()
        problem = "a wrong token" if given else "no token"
        return Refused(
            "unauthorized", 401,
            f"{problem}: post with ?token=<token> in the endpoint or Authorization: Bearer",
            (("WWW-Authenticate", 'Bearer realm="write"'),),
        )  # fmt: skip

    def _grafana(self, facts: RequestFacts) -> Allowed | Refused:
        assert self._sessions is not None
        if not facts.cookie:
            return Refused(
                "unauthorized", 401,
                "no Grafana session: serve the receiver under Grafana's own host, so that the "
                "browser sends its session cookie",
            )  # fmt: skip
        key = hashlib.sha256(facts.cookie.encode()).digest()
        known, viewer = self._verdicts.get(key)
        if not known:
            try:
                viewer = self._sessions.viewer(facts.cookie)
            except GrafanaUnavailable as exc:
                return Refused(
                    "grafana_unavailable", 503, f"cannot check the Grafana session now: {exc}",
                    (("Retry-After", "5"),),
                )  # fmt: skip
            self._verdicts.put(key, viewer)
        if viewer is None:
            return Refused("unauthorized", 401, "the Grafana session is not valid (log in again)")
        return Allowed(viewer)


def _bearer(header: str) -> str:
    scheme, _, token = header.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""
