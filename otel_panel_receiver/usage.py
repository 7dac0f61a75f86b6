"""Answers about dashboards: which are used, by how many, how recently, and which never are.

:class:`Usage` notes each payload's dashboard in the usage ledger (``stores/usage.py``) and
answers the report: every dashboard of Grafana's inventory (``inventory.py``) and every one seen
in traffic, with its folder, url, last view, the sessions and distinct viewers of a window.
Traffic and inventory are matched by ``dashboard_uid``: the host a browser uses is often not the
URL the receiver polls.

A view's time is the receiver's clock when the payload arrived (browser clocks lie). Session
starts are always written; a dashboard's other events refresh its last view at most once a
``refresh`` per process, so heartbeats cost the ledger little. Viewers are kept as keyed hashes
(HMAC-SHA256 under a key the store keeps for the retention period), never as names, and not at
all with ``--user-labels none``. Host, uid and name are cut to ``max_length`` characters
(``--max-label-length``), as labels are.
"""

from __future__ import annotations

import csv
import datetime
import hashlib
import hmac
import io
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from otel_panel_receiver.attributes import cut
from otel_panel_receiver.memo import Memo
from otel_panel_receiver.model import Dashboard, Host, PanelEvent, SessionUpdate, Viewer
from otel_panel_receiver.privacy import viewer_id
from otel_panel_receiver.stores import SessionStore
from otel_panel_receiver.stores.usage import DashboardUsage, UsageLedger

__all__ = [
    "CSV_FIELDS",
    "InventoryDashboard",
    "Usage",
    "UsageRow",
    "csv_text",
    "row_document",
]

_KEYS_HELD: Final = 10_000  # dashboards whose last write this process remembers


@dataclass(frozen=True, slots=True)
class InventoryDashboard:
    """A dashboard of Grafana's inventory."""

    uid: str
    name: str
    folder: str
    url: str


@dataclass(frozen=True, slots=True)
class UsageRow:
    """One line of the report: a dashboard, where it is, and how it was used."""

    uid: str
    name: str
    folder: str
    url: str
    hosts: tuple[str, ...]  #: the grafana_host values traffic to it came from
    last_view: float | None  #: unix seconds; None: never seen in traffic
    sessions: int  #: sessions started in the window
    viewers: int | None  #: distinct viewers in the window; None when viewers are not kept
    in_inventory: bool  #: False: seen in traffic only (deleted, or another Grafana)


class Usage:
    """Note dashboard views in ``ledger``; build the report with the inventory given."""

    def __init__(
        self,
        ledger: UsageLedger,
        store: SessionStore,
        *,
        viewers: bool = True,
        retention: float = 93 * 86_400.0,
        refresh: float = 60.0,
        max_length: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ledger = ledger
        self.viewers = viewers
        self.retention = retention
        self._store = store
        self._refresh = refresh
        self._max_length = max_length
        self._clock = clock
        self._lock = threading.Lock()
        self._written: dict[tuple[str, str], float] = {}
        self._key = b""
        self._key_until = 0.0
        self._hashed: Memo[tuple[bytes, Viewer], bytes] = Memo()  # viewers' keyed hashes
        # (host, uid) and name as noted, by the groups they are cut from
        self._places: Memo[tuple[Host, Dashboard], tuple[tuple[str, str], str]] = Memo()
        #: Writes to the ledger by this process (what the last-view gauge watches).
        self.changes = 0

    def seen(self, event: PanelEvent, update: SessionUpdate) -> None:
        """Note the event's dashboard: a session start always, a view at most once a refresh.

        Raises ``StoreUnavailable`` when the ledger cannot take it now.
        """
        groups = (event.host, event.dashboard)
        place = self._places.get(groups)
        if place is None:
            limit = self._max_length  # what a client names is kept no longer than a label
            at = (cut(event.host.address, limit), cut(event.dashboard.uid, limit))
            place = self._places.put(groups, (at, cut(event.dashboard.name, limit)))
        at, name = place
        host, uid = at
        if not uid:
            return
        now = self._clock()
        # Read without the lock: a race costs one more note of the same view, nothing more.
        if not update.started and now - self._written.get(at, 0.0) < self._refresh:
            return
        with self._lock:
            if len(self._written) >= _KEYS_HELD:
                self._written.clear()
            self._written[at] = now
        viewer = b""
        if self.viewers and (event.user.id or event.user.login):
            key = self._viewer_key(now)
            hashed = self._hashed.get((key, event.user))
            if hashed is None:
                digest = hmac.new(key, viewer_id(event).encode(), hashlib.sha256).digest()
                hashed = self._hashed.put((key, event.user), digest[:16])
            viewer = hashed
        self.ledger.record(host, uid, name, now, started=update.started, viewer=viewer)
        self.changes += 1

    def _viewer_key(self, now: float) -> bytes:
        """Return the deployment's viewer key, asked of the store at most once an hour."""
        if now >= self._key_until:
            self._key = self._store.secret("usage-viewer-key", self.retention)
            self._key_until = now + 3600.0
        return self._key

    def report(
        self,
        inventory: Sequence[InventoryDashboard],
        *,
        window: float,
        unused: float | None = None,
    ) -> list[UsageRow]:
        """Return the rows of the report over the last ``window`` seconds.

        Sorted by sessions, most first. With ``unused``, only the dashboards not viewed for
        that long are kept, the never-opened ones first, then the longest unviewed.
        """
        now = self._clock()
        seen: dict[str, list[DashboardUsage]] = {}
        for usage in self.ledger.report(now - window):
            seen.setdefault(usage.uid, []).append(usage)
        rows = [self._row(d, seen.pop(d.uid, [])) for d in inventory]
        rows += [self._row(InventoryDashboard(uid, "", "", ""), usages, known=False)
                 for uid, usages in seen.items()]  # fmt: skip
        if unused is None:
            return sorted(rows, key=lambda r: (-r.sessions, -(r.last_view or 0.0), r.uid))
        cutoff = now - unused
        idle = [r for r in rows if r.last_view is None or r.last_view < cutoff]
        return sorted(idle, key=lambda r: (r.last_view is not None, r.last_view or 0.0, r.uid))

    def _row(
        self, dashboard: InventoryDashboard, usages: list[DashboardUsage], *, known: bool = True
    ) -> UsageRow:
        latest = max(usages, key=lambda u: u.last_view, default=None)
        return UsageRow(
            uid=dashboard.uid,
            name=dashboard.name or (latest.name if latest is not None else ""),
            folder=dashboard.folder,
            url=dashboard.url,
            hosts=tuple(sorted({u.host for u in usages})),
            last_view=latest.last_view if latest is not None else None,
            sessions=sum(u.sessions for u in usages),
            viewers=sum(u.viewers for u in usages) if self.viewers else None,
            in_inventory=known,
        )


#: The columns of the CSV report, in order.
CSV_FIELDS: Final = ("uid", "name", "folder", "url", "hosts", "last_view_iso", "last_view",
                     "sessions", "viewers", "in_inventory")  # fmt: skip


def row_document(row: UsageRow) -> dict[str, object]:
    """Return a row as the JSON report has it (``last_view_iso`` in UTC, ``None`` for never)."""
    iso = None
    if row.last_view is not None:
        iso = datetime.datetime.fromtimestamp(row.last_view, datetime.UTC).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        )
    return {
        "uid": row.uid, "name": row.name, "folder": row.folder, "url": row.url,
        "hosts": list(row.hosts), "last_view": row.last_view, "last_view_iso": iso,
        "sessions": row.sessions, "viewers": row.viewers, "in_inventory": row.in_inventory,
    }  # fmt: skip


def csv_text(documents: Sequence[Mapping[str, object]]) -> str:
    """Return report rows (as :func:`row_document` gives them) as CSV with a header line."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for doc in documents:
        cells = []
        for name in CSV_FIELDS:
            value = doc[name]
            if isinstance(value, list):
                value = " ".join(str(v) for v in value)
            cells.append(_cell("" if value is None else str(value)))
        writer.writerow(cells)
    return out.getvalue()


def _cell(text: str) -> str:
    """Keep a spreadsheet from running a cell as a formula (names come from browsers)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
