"""Who a viewer is, as much as the settings allow to keep: clear, pseudonymous, or not at all.

``--user-labels pseudonymous`` puts a keyed hash of the viewer's login in ``user_login`` and
``user_name``. The key is random, one per UTC day (the receiver's clock), kept in the session
store so that every worker and host of a deployment uses the same one, and deleted 48 hours
after it was made. Within a day a viewer always maps to the same label; once the key is gone
nobody, the receiver included, can tell whose label it was, and the next day's label differs.

The same daily key marks which viewers have been seen on which dashboard that day, for
``grafana_analytics_dashboard_viewers_total``: a marker is a hash of the day, the dashboard
and the viewer under that key, kept in the session store (``SessionStore.mark``) and deleted
48 hours later, like the key; even before that, it points to nobody without the key.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Callable
from typing import Final, Literal

from otel_panel_receiver.memo import Memo
from otel_panel_receiver.model import Dashboard, Host, PanelEvent, Viewer
from otel_panel_receiver.stores import SessionStore

__all__ = ["KEY_LIFETIME", "Pseudonyms", "UserLabels"]

UserLabels = Literal["clear", "pseudonymous", "none"]

#: How long a day's key lives: the day, and one more for sessions that cross midnight.
KEY_LIFETIME: Final = 48 * 3600.0
_DAY: Final = 86_400
_LABEL_BYTES: Final = 8  # 16 hex digits: distinct for any realistic number of daily viewers


def viewer_id(event: PanelEvent) -> str:
    """Return what identifies the viewer in a payload: the user id, else the login."""
    return viewer_key(event.user)


def viewer_key(user: Viewer) -> str:
    """Return what identifies a viewer: ``id:<user id>``, else ``login:<login>``."""
    return f"id:{user.id}" if user.id else f"login:{user.login}"


class Pseudonyms:
    """The daily keys of a deployment, and the labels and markers made with them."""

    def __init__(self, store: SessionStore, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock
        self._lock = threading.Lock()
        self._day = -1
        self._key = b""
        # Viewer markers and labels by the day and the groups they are made of.
        self._markers: Memo[tuple[int, Host, Dashboard, Viewer], int] = Memo()
        self._labels: Memo[tuple[int, Viewer], str] = Memo()

    def day(self) -> int:
        """Return the current UTC day (days since 1970-01-01, by the receiver's clock)."""
        return int(self._clock()) // _DAY

    def _today(self) -> tuple[int, bytes]:
        day = self.day()
        if day == self._day:  # read without the lock: the pair changes once a day
            return day, self._key
        with self._lock:
            if day != self._day:  # once a day per process: the store is asked, not each payload
                key = self._store.secret(f"pseudonym-key:{day}", KEY_LIFETIME)
                self._key, self._day = key, day  # the key first: a reader sees the day after it
            return self._day, self._key

    def prepare(self) -> None:
        """Have today's key at hand; raise ``StoreUnavailable`` if the store cannot give it.

        The receiver calls it before a payload's update, so that labelling the payload after
        the update cannot fail for want of the key.
        """
        if int(self._clock()) // _DAY != self._day:  # day(), without the calls: each payload
            self._today()

    def label(self, event: PanelEvent) -> str:
        """Return today's pseudonym of the event's viewer (``""`` for an anonymous one)."""
        if not event.user.id and not event.user.login:
            return ""
        day, key = self._today()
        label = self._labels.get((day, event.user))
        if label is None:
            label = self._labels.put((day, event.user), _label(key, viewer_id(event)))
        return label

    def label_of(self, viewer: str) -> str:
        """Return today's pseudonym of ``viewer`` (``id:<user id>`` or ``login:<login>``)."""
        return _label(self._today()[1], viewer)

    def marker(self, event: PanelEvent) -> int:
        """Return the store key that marks this viewer on this dashboard today."""
        day, key = self._today()
        groups = (day, event.host, event.dashboard, event.user)
        marker = self._markers.get(groups)
        if marker is None:
            parts = (event.host.address, event.dashboard.uid, viewer_id(event))
            marker = self._markers.put(groups, _marker(day, key, "viewer", parts))
        return marker

    def day_marker(self, kind: str, *parts: str) -> int:
        """Return a store key for ``parts`` today: a keyed hash that means nothing without
        the day's key (the web middleware's visitors use it too)."""
        day, key = self._today()
        return _marker(day, key, kind, parts)


def _label(key: bytes, viewer: str) -> str:
    digest = hmac.new(key, viewer.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()
    return "u" + digest[:_LABEL_BYTES].hex()


def _marker(day: int, key: bytes, kind: str, parts: tuple[str, ...]) -> int:
    text = "\x1f".join((kind, str(day), *parts))
    digest = hmac.new(key, text.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()
    return int.from_bytes(digest[:16], "big")
